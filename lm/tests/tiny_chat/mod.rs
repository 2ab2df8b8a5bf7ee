//! A tiny chat model written as a GGUF file: a seeded random LLaMA (widths whole Q4_1 blocks)
//! with a byte-level BPE vocabulary (3 control tokens, the 256 byte symbols, a few merges) and a
//! ChatML template without a default system prompt, all in the file's metadata, as llama.cpp
//! writes SmolLM2's. Shared by the LM's chat tests and the CLI's (`tests/cli_chat.rs` includes
//! this file by path), so both exercise the same file format the real model comes in.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use vqrae_lm::gguf::{write_llama_gguf, GgufWriteOptions};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_train::init::SeededVarMap;

/// ChatML, as SmolLM2's template renders it, without the default system turn.
pub const TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + \
     '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt \
     %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const MERGES: [&str; 4] = ["h e", "l l", "he ll", "Ġ w"];

/// The model's shape: the vocabulary is exactly the tokenizer's.
pub fn config(max_position_embeddings: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 3 + 256 + MERGES.len(),
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings,
        tie_word_embeddings: true,
        initializer_range: 0.2,
    }
}

/// Seeded random weights by HF name.
pub fn weights(cfg: &LlamaConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let vars = SeededVarMap::new(seed);
    Ok(Llama::new(cfg, vars.var_builder(DType::F32, &Device::Cpu))?.tensors())
}

/// GPT-2's byte-to-char table in byte order: printable bytes map to themselves, the rest to
/// U+0100 onwards.
fn byte_symbols() -> Vec<String> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut symbols: Vec<(u32, u32)> = printable.iter().map(|&b| (b, b)).collect();
    let mut next = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            symbols.push((b, 256 + next));
            next += 1;
        }
    }
    symbols.sort_unstable();
    symbols
        .into_iter()
        .filter_map(|(_, c)| char::from_u32(c).map(String::from))
        .collect()
}

/// The `tokenizer.*` metadata: ids 0 `<|endoftext|>`, 1 `<|im_start|>` (bos), 2 `<|im_end|>`
/// (eos), control tokens; then the bytes; then one token per merge.
pub fn tokenizer_metadata() -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(byte_symbols());
    tokens.extend(MERGES.iter().map(|m| m.replace(' ', "")));
    let mut types = vec![Value::I32(1); tokens.len()];
    for t in types.iter_mut().take(3) {
        *t = Value::I32(3);
    }
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let merges = MERGES.iter().map(|m| m.to_string()).collect();
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(2)),
        (
            "tokenizer.chat_template".into(),
            Value::String(TEMPLATE.into()),
        ),
    ]
}

/// Writes the tiny chat model (`tensors` of `cfg`) to `path`: F32 tensors, or SmolLM2's types
/// (Q4_1 projections, Q8_0 embedding) when `quantized`.
pub fn write(
    path: &Path,
    cfg: &LlamaConfig,
    tensors: &HashMap<String, Tensor>,
    quantized: bool,
) -> Result<()> {
    let mut opts = if quantized {
        GgufWriteOptions::like_smollm2()
    } else {
        GgufWriteOptions::f32()
    };
    opts.metadata = tokenizer_metadata();
    write_llama_gguf(path, cfg, tensors, &opts)?;
    Ok(())
}

/// The same weights with the final norm zeroed: every logit is 0, so greedy decoding picks
/// the lowest id, 0 (`<|endoftext|>`, an end-of-turn token) at once.
pub fn silent(tensors: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = tensors.clone();
    let norm = "model.norm.weight";
    if let Some(w) = tensors.get(norm) {
        out.insert(norm.to_owned(), w.zeros_like()?);
    }
    Ok(out)
}
