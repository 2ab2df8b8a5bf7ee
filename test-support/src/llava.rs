//! A tiny LLaVA model directory (`llava.json` + `adapters.safetensors`) with its models root: a
//! seeded random LLaMA written as a GGUF file the way llama.cpp writes SmolLM2's (Q4_1
//! projections, a Q8_0 embedding, a byte-level BPE vocabulary and a ChatML template in the
//! metadata), the tiny DINOv2 fixture as its encoder, fresh adapters and projector. Small
//! enough that a test builds it in well under a second; what `vqrae serve --model` loads for a
//! real SmolLM2 model, in miniature.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use vqrae_lm::gguf::{write_llama_gguf, GgufFile, GgufWriteOptions};
use vqrae_lm::lora::{LoraConfig, LoraTarget};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_train::init::SeededVarMap;
use vqrae_unified::llava::config::LlavaConfig;
use vqrae_unified::llava::model::{
    save_model_dir, LlavaModelConfig, VqaFeatures, WeightsRef, ADAPTERS_FILE, FORMAT,
};
use vqrae_unified::llava::parts::LlavaParts;
use vqrae_unified::llava::run::LlavaInputs;

use crate::repo;

/// ChatML as SmolLM2's template renders it, with its default system turn when the
/// conversation has none.
pub const TINY_CHATML: &str = "{% for message in messages %}{% if loop.first and \
     message['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a tiny assistant.<|im_end|>\\n' \
     }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + \
     '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const MERGES: [&str; 4] = ["h e", "l l", "he ll", "Ġ w"];
/// Ids 0..3: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
const CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Where [`tiny_llava_model`] put things.
#[derive(Clone, Debug)]
pub struct TinyLlava {
    /// The model directory (`llava.json`, `adapters.safetensors`).
    pub dir: PathBuf,
    /// The models root its base and encoder are found under.
    pub models_root: PathBuf,
    /// The LM's context, tokens.
    pub context: usize,
    /// Image feature slots per image.
    pub image_tokens: usize,
}

/// The tiny LM's shape: widths of whole Q4_1 blocks, the vocabulary exactly the tokenizer's.
pub fn tiny_llava_lm_config(context: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: CONTROL.len() + 256 + MERGES.len(),
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: context,
        tie_word_embeddings: true,
        initializer_range: 0.2,
    }
}

/// GPT-2's byte-to-char table in byte order.
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

/// The `tokenizer.*` metadata: the control tokens (bos 1, eos and pad 2), the bytes, one token
/// per merge, and [`TINY_CHATML`].
fn tokenizer_metadata() -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = CONTROL.map(String::from).to_vec();
    tokens.extend(byte_symbols());
    tokens.extend(MERGES.iter().map(|m| m.replace(' ', "")));
    let mut types = vec![Value::I32(1); tokens.len()];
    for t in types.iter_mut().take(CONTROL.len()) {
        *t = Value::I32(3);
    }
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            strings(MERGES.iter().map(|m| m.to_string()).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(2)),
        (
            "tokenizer.chat_template".into(),
            Value::String(TINY_CHATML.into()),
        ),
    ]
}

/// How the tiny LM's greedy replies end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TinyReplies {
    /// Never early: the control tokens' embedding rows are zero, so with the tied head their
    /// logits are 0 while some other id's is positive, and every answer has text up to its
    /// token limit (a test of serving needs words, not quality).
    #[default]
    Endless,
    /// One word, then `<|im_end|>`: a prompt ending with the assistant turn's newline is
    /// answered `o` and stopped, as a chat model stops (what a trainer that keeps only the
    /// base's finished replies needs).
    OneWord,
}

/// Token ids of the tiny vocabulary: the control tokens, then one per byte.
const IM_END: usize = 2;
const NEWLINE: usize = CONTROL.len() + b'\n' as usize;
const WORD: usize = CONTROL.len() + b'o' as usize;

/// Seeded random weights whose control tokens' embedding rows are zero ([`TinyReplies`]). For
/// [`TinyReplies::OneWord`] two directions `u`, `v` of the embedding are added: newline `40u`,
/// the word `80u + 40v`, `<|im_end|>` `400v`. The residual stream is dominated by the last
/// token's row (the layers add about 30 to its norm), and with the tied head the next token is the
/// row with the largest dot product: newline -> the word (3,200 against its own 1,600), the
/// word -> `<|im_end|>` (16,000 against its own 8,000).
fn weights(cfg: &LlamaConfig, seed: u64, replies: TinyReplies) -> Result<HashMap<String, Tensor>> {
    let vars = SeededVarMap::new(seed);
    let mut tensors = Llama::new(cfg, vars.var_builder(DType::F32, &Device::Cpu))?.tensors();
    let name = "model.embed_tokens.weight";
    let table = tensors.get(name).context("no embedding table")?;
    let (rows, width) = table.dims2()?;
    let silent = Tensor::zeros((CONTROL.len(), width), DType::F32, &Device::Cpu)?;
    let rest = table.narrow(0, CONTROL.len(), rows - CONTROL.len())?;
    let mut table = Tensor::cat(&[&silent, &rest], 0)?;
    if replies == TinyReplies::OneWord {
        let mut added = vec![0f32; rows * width];
        for (row, (u, v)) in [
            (NEWLINE, (40.0, 0.0)),
            (WORD, (80.0, 40.0)),
            (IM_END, (0.0, 400.0)),
        ] {
            added[row * width] = u;
            added[row * width + 1] = v;
        }
        table = (table + Tensor::from_vec(added, (rows, width), &Device::Cpu)?)?;
    }
    tensors.insert(name.to_owned(), table);
    Ok(tensors)
}

/// Copies the tiny DINOv2 fixture (hidden 32, patch 4, 16 px: 16 patch tokens) to `dir`.
fn copy_encoder(dir: &Path) -> Result<()> {
    let fixture = repo().join("tokenizer/tests/fixtures/dinov2_tiny");
    std::fs::create_dir_all(dir)?;
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.join(f))
            .with_context(|| format!("copying {}", fixture.join(f).display()))?;
    }
    Ok(())
}

/// Where [`tiny_llava_base`] put the base and the encoder, relative to the models root.
pub const TINY_BASE: &str = "tiny/base.gguf";
pub const TINY_ENCODER: &str = "tiny/dinov2";

/// Writes the tiny base GGUF ([`TINY_BASE`], weights seeded by `seed`) and the tiny encoder
/// ([`TINY_ENCODER`]) under `models_root`: the files a LLaVA training run reads.
pub fn tiny_llava_base(
    models_root: &Path,
    context: usize,
    seed: u64,
    replies: TinyReplies,
) -> Result<()> {
    let base_path = models_root.join(TINY_BASE);
    std::fs::create_dir_all(base_path.parent().context("no parent")?)?;
    let cfg = tiny_llava_lm_config(context);
    let mut opts = GgufWriteOptions::like_smollm2();
    opts.metadata = tokenizer_metadata();
    write_llama_gguf(&base_path, &cfg, &weights(&cfg, seed, replies)?, &opts)?;
    copy_encoder(&models_root.join(TINY_ENCODER))
}

/// Writes a tiny LLaVA model under `root`: the base GGUF and encoder ([`tiny_llava_base`],
/// [`TinyReplies::Endless`]) under the models root `root/models`, and the model directory
/// `root/model` (LoRA rank 4 on every projection, the projector seeded). `context` is the LM's
/// context in tokens; the model serves dequantized unless told otherwise.
pub fn tiny_llava_model(root: &Path, context: usize) -> Result<TinyLlava> {
    let models_root = root.join("models");
    tiny_llava_base(&models_root, context, 7, TinyReplies::Endless)?;
    let base_path = models_root.join(TINY_BASE);
    let encoder_rel = format!("{TINY_ENCODER}/model.safetensors");

    let dev = Device::Cpu;
    let base = GgufFile::open(&base_path)?.load_dequantized(&dev, DType::F32)?;
    let lora = LoraConfig::new(4, 8.0, LoraTarget::ALL);
    let feature_dim = 32;
    let parts = LlavaParts::init(base, lora, feature_dim, 3, &dev)?;
    let base_sha = vqrae_data::fs::sha256_file(&base_path)?;
    let run = root.join("run");
    std::fs::create_dir_all(&run)?;
    let adapters = run.join(ADAPTERS_FILE);
    parts.adapters.save(&adapters, &base_sha)?;
    let image_tokens = 16;
    let model = LlavaModelConfig {
        format: FORMAT.into(),
        base: WeightsRef {
            path: TINY_BASE.into(),
            sha256: base_sha,
            install: "vqrae_test_support::tiny_llava_model".into(),
        },
        encoder: WeightsRef {
            sha256: vqrae_data::fs::sha256_file(&models_root.join(&encoder_rel))?,
            path: encoder_rel,
            install: "vqrae_test_support::tiny_llava_model".into(),
        },
        resolution: 16,
        image_tokens,
        projector: parts.projector_cfg.clone(),
        serve_quantized: false,
        generation: None,
        vqa_features: VqaFeatures::Encoder,
    };
    let dir = root.join("model");
    save_model_dir(&dir, &model, &adapters, None)?;
    Ok(TinyLlava {
        dir,
        models_root,
        context,
        image_tokens,
    })
}

/// The tiny LLaVA training config, `configs/llava/tiny.toml`.
pub fn tiny_llava_config() -> Result<LlavaConfig> {
    Ok(LlavaConfig::from_toml_file(
        &repo().join("configs/llava/tiny.toml"),
    )?)
}

/// A data root a LLaVA training run (and `vqrae train-llava --data`) reads: the tiny base
/// ([`TinyReplies::OneWord`], context 256, seed 7) and encoder under `<data_root>/models`, and a
/// mini easy-VQA of `images` training and `images` test images (3 questions each).
pub fn tiny_llava_data(data_root: &Path, images: usize) -> Result<LlavaInputs> {
    tiny_llava_base(&data_root.join("models"), 256, 7, TinyReplies::OneWord)?;
    crate::mini_easy_vqa(data_root, images, images)?;
    Ok(LlavaInputs::under(data_root, TINY_BASE, TINY_ENCODER))
}

/// [`tiny_llava_model`] built once per test binary in `<scratch>/<prefix><pid>` (context 256
/// tokens). Panics if it cannot be built: no test that needs it can run without it.
pub fn shared_tiny_llava(scratch: &Path, prefix: &str) -> &'static TinyLlava {
    static MODEL: OnceLock<TinyLlava> = OnceLock::new();
    MODEL.get_or_init(|| {
        crate::tiny::remove_stale(scratch, prefix);
        let root = scratch.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        match tiny_llava_model(&root, 256) {
            Ok(m) => m,
            Err(e) => panic!("building the tiny LLaVA test model failed: {e:#}"),
        }
    })
}

/// [`tiny_llava_data`] with `images` easy-VQA images and the tiny VQA run of
/// `configs/llava/tiny.toml` on it in `root/vqa` (its model: `root/vqa/model`).
pub fn tiny_vqa_llava(root: &Path, images: usize) -> Result<LlavaInputs> {
    let inputs = tiny_llava_data(root, images)?;
    vqrae_unified::llava::run::run(
        &tiny_llava_config()?,
        &inputs,
        &root.join("vqa"),
        &Device::Cpu,
    )?;
    Ok(inputs)
}

/// A tiny LLaVA model that also draws, and its data root's models: [`tiny_llava_data`] with
/// `images` easy-VQA images, the tiny VQA run of `configs/llava/tiny.toml` (`root/vqa`), then
/// the generation phase of `configs/llava/tiny-generate.toml` from it with a tiny tokenizer
/// (`root/tok`) in `root/gen`. Returns the inputs (their `models_root` is what loading needs)
/// and the model directory (`root/gen/model`). About two seconds.
pub fn tiny_generating_llava(root: &Path, images: usize) -> Result<(LlavaInputs, PathBuf)> {
    let inputs = tiny_vqa_llava(root, images)?;
    let dev = Device::Cpu;
    let tok = root.join("tok");
    crate::save_tiny_tokenizer(&tok)?;
    let mut cfg = LlavaConfig::from_toml_file(&repo().join("configs/llava/tiny-generate.toml"))?;
    cfg.init_from = Some(root.join("vqa/model"));
    cfg.generation
        .as_mut()
        .context("configs/llava/tiny-generate.toml has a [generation] table")?
        .tokenizer = tok;
    vqrae_unified::llava::run::run(&cfg, &inputs, &root.join("gen"), &dev)?;
    Ok((inputs, root.join("gen/model")))
}
