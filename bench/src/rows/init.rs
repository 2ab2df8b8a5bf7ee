//! `bench init`: a bench directory with the weights both implementations load (copied from a
//! trained model, or random at the paper-like size), fixed inputs, and what this
//! implementation makes of them (which the PyTorch reference compares against).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vqrae_data::fs::{copy_dir, write_atomic};
use vqrae_lm::{Llama, LlamaConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::{Vqrae, VqraeConfig};
use vqrae_train::init::SeededVarMap;

use super::lora::{self, CheckTensors, LoraBase};
use super::{BenchInfo, PROMPT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Preset {
    /// The default model's weights (models/vqrae-easyvqa).
    Default,
    /// configs/paper.toml's tokenizer (SigLIP-B/16 at 256 px, codebook 16384 x 1536, ViT-B
    /// decoder) and a ~110M-parameter LM, random weights.
    Paper,
}

#[derive(Args)]
pub struct InitArgs {
    #[arg(long, value_enum)]
    preset: Preset,
    /// The bench directory to write.
    #[arg(short, long)]
    out: PathBuf,
    /// The unified model the default preset copies.
    #[arg(long, default_value = "models/vqrae-easyvqa")]
    model: PathBuf,
    /// The tokenizer config of the paper preset.
    #[arg(long, default_value = "configs/paper.toml")]
    paper_config: PathBuf,
    /// The frozen base of the train-lora row, written as `lora-base/` for the default preset
    /// (random weights, seeded): SmolLM2-135M's shape, a tiny one, or none.
    #[arg(long, value_enum, default_value_t = LoraBase::Smollm2)]
    lora_base: LoraBase,
    /// The gguf-decode row's GGUF, linked as `OUT/smollm2.gguf` (default: SmolLM2 under the
    /// data root when scripts/setup-smollm2.sh installed it; no link without it).
    #[arg(long)]
    gguf: Option<PathBuf>,
}

fn paper_lm(vocab_size: usize, context: usize) -> Result<LlamaConfig> {
    let cfg: LlamaConfig = serde_json::from_value(json!({
        "vocab_size": vocab_size, "hidden_size": 768, "intermediate_size": 2048,
        "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
        "max_position_embeddings": context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false,
    }))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Random weights at the paper-like size: the tokenizer of `paper_config` and [`paper_lm`]
/// with a small BPE text vocabulary.
fn write_paper_weights(
    paper_config: &Path,
    tok_dir: &Path,
    lm_dir: &Path,
    device: &Device,
) -> Result<()> {
    let cfg = VqraeConfig::from_toml_file(paper_config)?;
    let (model, vars) = Vqrae::init(&cfg, None, 0, device)?;
    model.save(tok_dir, &vars)?;
    // a text vocabulary of caption-like words; its size hardly matters next to 16,384 codes
    let words = [
        "a red circle",
        "a blue square on the left",
        "two green triangles above",
        "a yellow shape",
        "three gray rectangles right of a black circle",
    ];
    let text = TextTokenizer::train_bpe(words, 300)?;
    let vocab = UnifiedVocab::new(text.vocab_size(), cfg.quantizer.codebook_size)?;
    let (gh, gw) = cfg.grid();
    let context = (PROMPT + gh * gw + 1).div_ceil(64) * 64;
    let lm_cfg = paper_lm(vocab.size(), context)?;
    let map = SeededVarMap::new(1);
    let lm = Llama::new(&lm_cfg, map.var_builder(DType::F32, device))?;
    lm.save(lm_dir)?;
    text.save(lm_dir.join("tokenizer.json"))?;
    Ok(())
}

/// A tensor of `shape` whose elements are drawn from `draw`, in order.
fn random<T: candle_core::WithDType>(
    shape: impl Into<candle_core::Shape>,
    mut draw: impl FnMut() -> T,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let values: Vec<T> = (0..shape.elem_count()).map(|_| draw()).collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Fixed inputs (2 images' pixels, 2 code grids, one prompt + image sequence) and this
/// implementation's outputs for them, as `inputs.safetensors` and `expected.safetensors`, with
/// the LoRA check's (`lora`) when there is one.
fn write_inputs_and_outputs(
    out: &Path,
    info: &BenchInfo,
    model: &Vqrae,
    lm: &Llama,
    lora: Option<CheckTensors>,
    device: &Device,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let size = model.config().image_size;
    let codebook = model.config().quantizer.codebook_size;
    let pixels = random((2, 3, size, size), || rng.gen_range(-1.0f32..1.0), device)?;
    let codes = random(
        (2, info.image_tokens),
        || rng.gen_range(0..codebook as u32),
        device,
    )?;
    let t = info.seq();
    let ids = random((1, t), || rng.gen_range(0..info.vocab_size as u32), device)?;
    let enc = model.encode(&pixels)?;
    let decoded = model.decode(&codes, model.config().grid())?;
    let logits = lm.logits(&lm.forward_hidden(&lm.embed(&ids)?, None, false)?)?;
    let save = |name: &str, map: HashMap<String, Tensor>| -> Result<()> {
        let p = out.join(name);
        candle_core::safetensors::save(&map, &p).with_context(|| format!("writing {}", p.display()))
    };
    let (lora_inputs, lora_expected) = lora.unwrap_or_default();
    let mut inputs = HashMap::from([
        ("pixels".into(), pixels),
        ("codes".into(), codes),
        ("ids".into(), ids),
    ]);
    inputs.extend(lora_inputs);
    let mut expected = HashMap::from([
        ("features".into(), enc.features),
        ("codes".into(), enc.codes),
        ("decoded".into(), decoded),
        ("logits".into(), logits),
    ]);
    expected.extend(lora_expected);
    save("inputs.safetensors", inputs)?;
    save("expected.safetensors", expected)
}

/// Writes the bench directory `a.out`: weights, `bench.json`, inputs and expected outputs.
pub fn init(a: InitArgs, device: &Device) -> Result<()> {
    let tok_dir = a.out.join("tokenizer");
    let lm_dir = a.out.join("lm");
    match a.preset {
        Preset::Default => {
            copy_dir(&a.model.join("tokenizer"), &tok_dir)?;
            copy_dir(&a.model.join("lm"), &lm_dir)?;
        }
        Preset::Paper => write_paper_weights(&a.paper_config, &tok_dir, &lm_dir, device)?,
    }
    let model = Vqrae::load(&tok_dir, device, DType::F32)?;
    let text = TextTokenizer::from_file(lm_dir.join("tokenizer.json"))?;
    let lm = Llama::load(&lm_dir, device, DType::F32)?;
    let vocab = UnifiedVocab::new(text.vocab_size(), model.config().quantizer.codebook_size)?;
    let (gh, gw) = model.config().grid();
    let info = BenchInfo {
        preset: a.preset,
        image_tokens: gh * gw,
        code_start: vocab.code_range().start,
        code_end: vocab.code_range().end,
        text_vocab: text.vocab_size(),
        vocab_size: vocab.size(),
        prompt_len: PROMPT,
        lm_params: lm.config().params(),
        lm_non_embedding_params: lm.config().non_embedding_params(),
        tokenizer_params: candle_core::safetensors::load(
            tok_dir.join("model.safetensors"),
            device,
        )?
        .values()
        .map(|t| t.elem_count())
        .sum(),
    };
    if lm.config().vocab_size != info.vocab_size {
        bail!(
            "the LM's vocabulary ({}) is not text + codes + 3 ({})",
            lm.config().vocab_size,
            info.vocab_size
        );
    }
    let lora = match a.preset {
        Preset::Default => lora::write_base_and_check(&a.out, a.lora_base, info.seq(), device)?,
        Preset::Paper => None,
    };
    write_inputs_and_outputs(&a.out, &info, &model, &lm, lora, device)?;
    let json = serde_json::to_string_pretty(&info)? + "\n";
    write_atomic(&a.out.join("bench.json"), json.as_bytes())?;
    let data_root = vqrae_data::default_root();
    if let Some(gguf) = super::gguf::link_gguf(&a.out, a.gguf.as_deref(), &data_root)? {
        println!(
            "gguf-decode: {} -> {}",
            super::gguf::GGUF_LINK,
            gguf.display()
        );
    }
    println!("bench directory {} ({:?})", a.out.display(), a.preset);
    Ok(())
}
