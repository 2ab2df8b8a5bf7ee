//! The chat generation loop (`vqrae_lm::converse`, `vqrae_lm::generate_text`) on a tiny chat
//! model written as a GGUF here (tokenizer and template in its metadata), and on the real
//! SmolLM2-135M-Instruct (`scripts/setup-smollm2.sh`, or `$VQRAE_SMOLLM2_GGUF`; the test that
//! needs it fails, saying so, when it is absent).

mod common;

use common::smollm2_path;

mod tiny_chat;

use std::path::Path;

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Device};
use vqrae_lm::chat::ChatMessage;
use vqrae_lm::converse::{ChatModel, WeightForm};
use vqrae_lm::generate_text::{generate, GenerateOptions, TextStream};
use vqrae_lm::gguf::{write_llama_gguf, GgufWriteOptions};
use vqrae_lm::SamplingConfig;

const F32: WeightForm = WeightForm::Dequantized(DType::F32);

/// A tiny chat model of context `context` written to `dir` and loaded.
fn tiny(dir: &Path, context: usize, quantized: bool) -> Result<ChatModel> {
    let cfg = tiny_chat::config(context);
    let path = dir.join("tiny.gguf");
    tiny_chat::write(&path, &cfg, &tiny_chat::weights(&cfg, 7)?, quantized)?;
    let form = if quantized {
        WeightForm::Quantized
    } else {
        F32
    };
    Ok(ChatModel::from_gguf(&path, form, &Device::Cpu)?)
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(text)]
}

#[test]
fn a_reply_is_its_ids_text_and_streams_as_it_comes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = tiny(dir.path(), 64, false)?;
    let chat = m.chat();
    let messages = user("hello world");
    let prompt = chat.prompt_ids(&messages)?;
    assert_eq!(prompt[0], 1); // <|im_start|>
    let greedy = SamplingConfig::greedy();
    let mut pieces = String::new();
    let reply = chat.reply_streaming(&messages, &greedy, 12, |p| pieces.push_str(p))?;
    assert_eq!(reply.prompt_tokens, prompt.len());
    assert_eq!(reply.text, m.tok.decode(&reply.ids)?);
    assert_eq!(pieces, reply.text);
    assert!(reply.stopped || reply.ids.len() == 12);
    assert!(
        !reply.ids.is_empty() && reply.ids.iter().all(|&id| id > 2),
        "{:?}",
        reply.ids
    );
    // deterministic, and the same as the loop on the prompt's ids
    assert_eq!(chat.reply(&messages, &greedy, 12)?, reply);
    let stops = vqrae_lm::chat::stop_ids(&m.tok);
    let rows = generate(
        &m.model,
        &[prompt],
        &GenerateOptions::greedy(12, stops),
        |_, _| {},
    )?;
    assert_eq!(rows[0].ids, reply.ids);
    // a seeded sampled reply repeats with its seed
    let sampled = SamplingConfig {
        temperature: 0.8,
        top_p: Some(0.9),
        seed: 3,
        ..SamplingConfig::default()
    };
    assert_eq!(
        chat.reply(&messages, &sampled, 12)?,
        chat.reply(&messages, &sampled, 12)?
    );
    Ok(())
}

/// Conversations of different lengths in one left-padded batch get the replies they get
/// alone; `on_token` reports each row's ids in order.
#[test]
fn a_batch_replies_as_each_conversation_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = tiny(dir.path(), 64, false)?;
    let chat = m.chat();
    let conversations = vec![
        user("hi"),
        vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("hello world"),
        ],
        user("what?"),
    ];
    let greedy = SamplingConfig::greedy();
    let mut seen = vec![Vec::new(); 3];
    let batch = chat.reply_batch(&conversations, &greedy, 10, |row, id| seen[row].push(id))?;
    for ((conv, got), streamed) in conversations.iter().zip(&batch).zip(&seen) {
        assert_eq!(got, &chat.reply(conv, &greedy, 10)?);
        assert_eq!(streamed, &got.ids);
    }
    Ok(())
}

/// A row ends at its first stop id (excluded), while the other rows go on.
#[test]
fn rows_stop_at_a_stop_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = tiny(dir.path(), 64, false)?;
    let prompts = vec![m.chat().prompt_ids(&user("hello"))?, vec![5, 6, 7]];
    let free = generate(
        &m.model,
        &prompts,
        &GenerateOptions::greedy(8, vec![]),
        |_, _| {},
    )?;
    assert!(free.iter().all(|g| !g.stopped && g.ids.len() == 8));
    // the first id of row 0 not seen before in it becomes a stop id
    let ids = &free[0].ids;
    let Some(k) = (1..ids.len()).find(|&k| !ids[..k].contains(&ids[k])) else {
        bail!("row 0 repeats one id: {ids:?}");
    };
    let stop = ids[k];
    let cut = generate(
        &m.model,
        &prompts,
        &GenerateOptions::greedy(8, vec![stop]),
        |_, _| {},
    )?;
    assert!(cut[0].stopped);
    assert_eq!(cut[0].ids, ids[..k]);
    let other = &free[1].ids;
    let expect = other
        .iter()
        .position(|&id| id == stop)
        .unwrap_or(other.len());
    assert_eq!(cut[1].ids, other[..expect]);
    Ok(())
}

/// A model whose every logit is 0 draws id 0, `<|endoftext|>`, an end-of-turn token of the
/// template's vocabulary: the reply is empty and stopped, nothing streamed.
#[test]
fn the_template_end_of_turn_tokens_end_a_reply() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = tiny_chat::config(64);
    let path = dir.path().join("silent.gguf");
    let weights = tiny_chat::silent(&tiny_chat::weights(&cfg, 7)?)?;
    tiny_chat::write(&path, &cfg, &weights, false)?;
    let m = ChatModel::from_gguf(&path, F32, &Device::Cpu)?;
    let mut streamed = 0;
    let reply = m
        .chat()
        .reply_streaming(&user("hello"), &SamplingConfig::greedy(), 5, |_| {
            streamed += 1
        })?;
    assert!(reply.stopped && reply.ids.is_empty() && reply.text.is_empty());
    assert_eq!(streamed, 0);
    Ok(())
}

#[test]
fn a_prompt_past_the_context_is_an_error_naming_both_numbers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = tiny(dir.path(), 64, false)?;
    let chat = m.chat();
    let messages = user("hello");
    let n = chat.prompt_ids(&messages)?.len();
    let greedy = SamplingConfig::greedy();
    // exactly filling the context is fine
    let ok = chat.reply(&messages, &greedy, 64 - n)?;
    assert!(ok.ids.len() <= 64 - n);
    let err = chat
        .reply(&messages, &greedy, 65 - n)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    for needle in [
        format!("{n} tokens"),
        format!("{}", 65 - n),
        "64".to_owned(),
    ] {
        ensure!(err.contains(&needle), "{needle:?} not in {err:?}");
    }
    // a prompt alone past the context, and no new tokens asked
    let long = user(&"hello ".repeat(40));
    let err = chat.reply(&long, &greedy, 1).err().map(|e| e.to_string());
    ensure!(
        err.as_deref().is_some_and(|e| e.contains("context of 64")),
        "{err:?}"
    );
    assert!(chat.reply(&messages, &greedy, 0).is_err());
    assert!(chat.reply(&messages, &greedy, usize::MAX).is_err());
    Ok(())
}

#[test]
fn a_quantized_tiny_model_chats_and_a_file_without_template_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = tiny(dir.path(), 64, true)?;
    assert!(m.model.is_quantized());
    let reply = m.chat().reply(&user("hi"), &SamplingConfig::greedy(), 6)?;
    assert!(reply.stopped || reply.ids.len() == 6);

    let cfg = tiny_chat::config(64);
    let mut opts = GgufWriteOptions::f32();
    opts.metadata = tiny_chat::tokenizer_metadata();
    opts.metadata
        .retain(|(k, _)| k != "tokenizer.chat_template");
    let path = dir.path().join("no-template.gguf");
    write_llama_gguf(&path, &cfg, &tiny_chat::weights(&cfg, 1)?, &opts)?;
    let err = ChatModel::from_gguf(&path, F32, &Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("chat_template") && err.contains("no-template.gguf"),
        "{err}"
    );
    Ok(())
}

/// Characters split across byte tokens come out whole: no piece holds half of one.
#[test]
fn text_stream_pieces_are_whole_characters() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = tiny(dir.path(), 64, false)?;
    let text = "hello é ☃ 🙂 world";
    let ids = m.tok.encode(text)?;
    assert!(ids.len() > text.chars().count() - 3);
    let mut stream = TextStream::new(&m.tok);
    let mut joined = String::new();
    for id in ids.iter().copied().chain([2]) {
        let piece = stream.push(id)?;
        assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "{piece:?}");
        joined.push_str(&piece);
    }
    joined.push_str(&stream.finish()?);
    assert_eq!(joined, text);
    // a character never completed comes out at the end, as the decoder writes it
    let emoji = m.tok.encode("🙂")?;
    let mut stream = TextStream::new(&m.tok);
    assert_eq!(stream.push(emoji[0])?, "");
    assert_eq!(stream.finish()?, m.tok.decode(&emoji[..1])?);
    Ok(())
}

/// The dequantized f32 model answers as transformers does (the fixture's greedy reply).
#[test]
fn smollm2_knows_the_capital_of_france() -> Result<()> {
    let m = ChatModel::from_gguf(smollm2_path()?, F32, &Device::Cpu)?;
    let mut streamed = String::new();
    let reply = m.chat().reply_streaming(
        &user("What is the capital of France?"),
        &SamplingConfig::greedy(),
        32,
        |p| streamed.push_str(p),
    )?;
    assert_eq!(reply.text, "The capital of France is Paris.");
    assert!(reply.stopped);
    assert_eq!(streamed, reply.text);
    assert_eq!(reply.prompt_tokens, 37);
    Ok(())
}
