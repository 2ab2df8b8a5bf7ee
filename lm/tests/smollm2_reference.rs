//! Our dequantized f32 reading of SmolLM2-135M-Instruct against transformers' reading of the
//! same GGUF (the committed fixture `lm/tests/fixtures/smollm2/`, written by
//! `scripts/smollm2_reference.py`; its header documents every key): the tokenizer's ids, the
//! last-position logits, the greedy continuations, every prompt token's log-probability and
//! the held-out perplexity in the reference's chunking.
//!
//! The real file comes from `scripts/setup-smollm2.sh` (or `$VQRAE_SMOLLM2_GGUF`); every test
//! here fails, saying so, when it is absent.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use common::{max_diff, smollm2_path};
use serde::Deserialize;
use vqrae_lm::chat::{ChatMessage, ChatTemplate};
use vqrae_lm::generate_text::{generate, GenerateOptions};
use vqrae_lm::gguf::tokenizer::text_tokenizer;
use vqrae_lm::gguf::GgufFile;
use vqrae_lm::score::{chunked_perplexity, next_token_logprobs};
use vqrae_lm::{Llama, TextTokenizer};

/// Largest |logit difference| accepted at the last position of a prompt. Measured: at most
/// 8.7e-5 over the five prompts (logits up to ~30), at the level of the reference's own noise
/// (6.4e-5 between its eager and sdpa attention, 1 and 2 threads).
const LOGIT_TOL: f32 = 1e-3;
/// Largest |log-prob difference| accepted for one token (prompts and held-out text).
/// Measured: at most 3.8e-5 on the prompts, 5.3e-5 on the held-out text.
const LOGPROB_TOL: f32 = 1e-3;
/// Largest relative perplexity difference accepted. Measured: 4.0e-6 (79.73288 ours,
/// 79.73256 the reference).
const PPL_REL_TOL: f64 = 1e-4;
/// Greedy steps whose reference top-1/top-2 margin is below this may flip on noise of the
/// tolerance's size: continuations are compared up to the first of them.
const MARGIN: f32 = 0.01;

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Prompt>,
    heldout: Heldout,
    generation: Generation,
}

#[derive(Deserialize)]
struct Generation {
    max_new_tokens: usize,
    eos_token_id: u32,
}

#[derive(Deserialize)]
struct Prompt {
    name: String,
    kind: String,
    messages: Option<Vec<ChatMessage>>,
    text: String,
    input_ids: Vec<u32>,
    last_logits_key: String,
    next_token_logprobs: Vec<f32>,
    greedy: Greedy,
}

#[derive(Deserialize)]
struct Greedy {
    new_ids: Vec<u32>,
    margins: Vec<f32>,
}

#[derive(Deserialize)]
struct Heldout {
    file: String,
    input_ids: Vec<u32>,
    chunk_tokens: usize,
    n_chunks: usize,
    n_predicted: usize,
    perplexity: f64,
    logprobs_key: String,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

fn reference() -> Result<(Reference, HashMap<String, Tensor>)> {
    let json = fixture_dir().join("reference.json");
    let text = std::fs::read_to_string(&json).with_context(|| json.display().to_string())?;
    let r: Reference = serde_json::from_str(&text).with_context(|| json.display().to_string())?;
    let st = fixture_dir().join("reference.safetensors");
    let tensors = candle_core::safetensors::load(&st, &Device::Cpu)
        .with_context(|| st.display().to_string())?;
    Ok((r, tensors))
}

/// The dequantized f32 model, loaded once for the tests of this file (unfused: the plain
/// computation the reference does).
fn model() -> Result<&'static Llama> {
    static MODEL: OnceLock<std::result::Result<Llama, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let load = || -> Result<Llama> {
                Ok(GgufFile::open(smollm2_path()?)?.load_dequantized(&Device::Cpu, DType::F32)?)
            };
            load().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn tensor<'a>(tensors: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    tensors
        .get(key)
        .with_context(|| format!("{key} missing from reference.safetensors"))
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn our_tokenizer_gives_the_reference_ids() -> Result<()> {
    let gguf = GgufFile::open(smollm2_path()?)?;
    let tok: TextTokenizer = text_tokenizer(gguf.content())?;
    let template = ChatTemplate::from_gguf(gguf.content())?.context("no chat template")?;
    let (r, _) = reference()?;
    for p in &r.prompts {
        let ours = tok.encode_with_special_tokens(&p.text)?;
        if p.name == "unicode" {
            // " ½": llama.cpp's "smollm" pre-tokenizer (which this crate follows) splits a
            // numeric character after a space, transformers' GGUF conversion does not
            // (tests/gguf_tokenizer.rs); everything else is identical
            let at = ours
                .iter()
                .zip(&p.input_ids)
                .position(|(a, b)| a != b)
                .context("no difference")?;
            assert_eq!(ours.len(), p.input_ids.len());
            assert_eq!(ours[at..at + 2], [216, 16738]);
            assert_eq!(p.input_ids[at..at + 2], [3351, 138]);
            assert_eq!(ours[at + 2..], p.input_ids[at + 2..]);
            assert_eq!(tok.decode(&ours)?, tok.decode(&p.input_ids)?);
        } else {
            assert_eq!(ours, p.input_ids, "{}", p.name);
        }
        if let Some(messages) = &p.messages {
            assert_eq!(p.kind, "chat");
            assert_eq!(
                template.encode(&tok, messages, true)?,
                p.input_ids,
                "{}",
                p.name
            );
        }
    }
    let heldout = std::fs::read_to_string(fixture_dir().join(&r.heldout.file))?;
    assert_eq!(tok.encode(&heldout)?, r.heldout.input_ids);
    Ok(())
}

/// Last-position logits and each prompt token's log-probability, prompt by prompt.
#[test]
fn logits_and_logprobs_match_the_reference() -> Result<()> {
    let model = model()?;
    let (r, tensors) = reference()?;
    let (mut worst_logit, mut worst_logprob) = (0f32, 0f32);
    for p in &r.prompts {
        let ids = Tensor::new(p.input_ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let hidden = model.forward_hidden(&model.embed(&ids)?, None, false)?;
        let last = model.logits(&hidden.i((0, p.input_ids.len() - 1))?)?;
        let d = max_diff(&last, tensor(&tensors, &p.last_logits_key)?)?;
        let lp = next_token_logprobs(model, &p.input_ids)?;
        ensure!(lp.len() == p.next_token_logprobs.len(), "{}", p.name);
        let dl = max_abs(&lp, &p.next_token_logprobs);
        println!(
            "{:>9}: last-position logits max |diff| {d:.2e}, prompt log-probs {dl:.2e}",
            p.name
        );
        ensure!(d <= LOGIT_TOL, "{}: logits differ by {d}", p.name);
        ensure!(dl <= LOGPROB_TOL, "{}: log-probs differ by {dl}", p.name);
        worst_logit = worst_logit.max(d);
        worst_logprob = worst_logprob.max(dl);
    }
    println!("worst: logits {worst_logit:.2e}, log-probs {worst_logprob:.2e}");
    Ok(())
}

/// The five greedy continuations, as one left-padded batch through the KV cache, equal the
/// reference's up to its first near-tie (margin below [`MARGIN`]). Measured: all five are
/// identical in every step (24, or up to the eos), near-ties included.
#[test]
fn greedy_continuations_match_the_reference() -> Result<()> {
    let model = model()?;
    let (r, _) = reference()?;
    let prompts: Vec<Vec<u32>> = r.prompts.iter().map(|p| p.input_ids.clone()).collect();
    let opts =
        GenerateOptions::greedy(r.generation.max_new_tokens, vec![r.generation.eos_token_id]);
    let rows = generate(model, &prompts, &opts, |_, _| {})?;
    for (p, row) in r.prompts.iter().zip(rows) {
        let mut ours = row.ids.clone();
        if row.stopped {
            ours.push(r.generation.eos_token_id);
        }
        let expected = &p.greedy.new_ids;
        let sure = p
            .greedy
            .margins
            .iter()
            .position(|&m| m < MARGIN)
            .unwrap_or(expected.len());
        println!(
            "{:>9}: compared {sure} of {} steps; identical in all {}: {}",
            p.name,
            expected.len(),
            expected.len(),
            &ours == expected
        );
        ensure!(
            ours.len() >= sure && ours[..sure] == expected[..sure],
            "{}: ours {ours:?}\n reference {expected:?}",
            p.name
        );
    }
    Ok(())
}

/// heldout.txt in 512-token chunks, each from position 0: every token's log-probability and
/// the perplexity.
#[test]
fn heldout_perplexity_matches_the_reference() -> Result<()> {
    let model = model()?;
    let (r, tensors) = reference()?;
    let h = &r.heldout;
    let ppl = chunked_perplexity(model, &h.input_ids, h.chunk_tokens)?;
    assert_eq!((ppl.n_chunks, ppl.n_predicted), (h.n_chunks, h.n_predicted));
    let expected = tensor(&tensors, &h.logprobs_key)?.to_vec1::<f32>()?;
    let d = max_abs(&ppl.logprobs, &expected);
    let rel = (ppl.perplexity - h.perplexity).abs() / h.perplexity;
    println!(
        "heldout: perplexity ours {:.5} vs reference {:.5} (relative {rel:.1e}); per-token \
         log-probs max |diff| {d:.2e}",
        ppl.perplexity, h.perplexity
    );
    ensure!(d <= LOGPROB_TOL, "log-probs differ by {d}");
    ensure!(rel <= PPL_REL_TOL, "perplexity differs by {rel} relative");
    Ok(())
}
