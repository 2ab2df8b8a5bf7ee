//! Parity with Hugging Face `transformers.LlamaForCausalLM` on the committed random fixtures
//! (written by `scripts/lm_fixtures.py`): the full forward, the cached prefill + decode path, and
//! left-padded batches must all reproduce the reference logits.

mod common;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use common::max_diff;
use vqrae_lm::checkpoint::tensor_shapes;
use vqrae_lm::{Llama, LlamaConfig};

const FIXTURES: [&str; 2] = ["llama-mha", "llama-gqa"];
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's input ids `(B, T)` as u32 and reference logits `(B, T, V)`.
fn load_io(name: &str) -> Result<(Tensor, Tensor)> {
    let path = fixture(name).join("io.safetensors");
    let io = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let ids = io.get("input_ids").context("input_ids")?;
    let logits = io.get("logits").context("logits")?;
    Ok((ids.to_dtype(DType::U32)?, logits.clone()))
}

#[test]
fn full_forward_matches_transformers() -> Result<()> {
    for name in FIXTURES {
        let model = Llama::load(&fixture(name), &Device::Cpu, DType::F32)?;
        let (ids, reference) = load_io(name)?;
        let embeds = model.embed(&ids)?;
        for train in [false, true] {
            let logits = model.forward(&embeds, None, train)?;
            let diff = max_diff(&logits, &reference)?;
            ensure!(diff < TOL, "{name} (train={train}): max diff {diff}");
        }
    }
    Ok(())
}

#[test]
fn fixture_configs_and_parameter_counts() -> Result<()> {
    for name in FIXTURES {
        let model = Llama::load(&fixture(name), &Device::Cpu, DType::F32)?;
        let cfg = model.config();
        let path = fixture(name).join("model.safetensors");
        let stored = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let counted: usize = stored.values().map(|t| t.elem_count()).sum();
        ensure!(
            counted == cfg.params(),
            "{name}: {counted} vs {}",
            cfg.params()
        );
        let mut names: Vec<_> = stored.keys().cloned().collect();
        let mut want: Vec<_> = tensor_shapes(cfg).into_iter().map(|(n, _)| n).collect();
        names.sort();
        want.sort();
        ensure!(
            names == want,
            "{name}: stored names differ from tensor_shapes"
        );
    }
    let gqa = Llama::load(&fixture("llama-gqa"), &Device::Cpu, DType::F32)?;
    let cfg: &LlamaConfig = gqa.config();
    // transformers 5 nests rope_theta in rope_parameters; the explicit head_dim is kept
    ensure!(cfg.rope_theta == 500_000.0 && cfg.head_dim() == 16 && cfg.kv_groups() == 2);
    ensure!(cfg.tie_word_embeddings);
    Ok(())
}

#[test]
fn prefill_then_decode_matches_full_forward() -> Result<()> {
    for name in FIXTURES {
        let model = Llama::load(&fixture(name), &Device::Cpu, DType::F32)?;
        let (ids, reference) = load_io(name)?;
        let (b, t) = ids.dims2()?;
        let embeds = model.embed(&ids)?;
        let mut cache = model.new_cache(b, t, vec![0; b])?;
        // prefill 5, then a chunk of 3 onto a non-empty cache, then one token at a time
        let mut start = 0;
        for len in [5, 3, 1, 1, 1, 1] {
            let chunk = embeds.narrow(1, start, len)?;
            let logits = model.forward(&chunk, Some(&mut cache), false)?;
            let want = reference.narrow(1, start, len)?;
            let diff = max_diff(&logits, &want)?;
            ensure!(
                diff < TOL,
                "{name}: columns {start}..{}: {diff}",
                start + len
            );
            start += len;
            ensure!(cache.len() == start);
        }
        ensure!(start == t);
        // the cache is full now: one more column is a clear error, not a panic
        let err = model
            .forward(&embeds.narrow(1, 0, 1)?, Some(&mut cache), false)
            .unwrap_err()
            .to_string();
        ensure!(err.contains("KV cache full"), "{err}");
    }
    Ok(())
}

#[test]
fn left_padded_rows_match_unpadded_runs() -> Result<()> {
    for name in FIXTURES {
        let model = Llama::load(&fixture(name), &Device::Cpu, DType::F32)?;
        let (ids, reference) = load_io(name)?;
        // row 0: a 9-token prompt; row 1: a 6-token prompt left-padded by 3 (pad id 0).
        let (p0, p1) = (9, 6);
        let pad = p0 - p1;
        let row0 = ids.i((0..1, 0..p0))?;
        let row1 = Tensor::cat(
            &[
                &Tensor::zeros((1, pad), DType::U32, &Device::Cpu)?,
                &ids.i((1..2, 0..p1))?,
            ],
            1,
        )?;
        let prompt = model.embed(&Tensor::cat(&[&row0, &row1], 0)?)?;
        let steps = 3;
        let mut cache = model.new_cache(2, p0 + steps, vec![0, pad])?;
        let logits = model.forward(&prompt, Some(&mut cache), false)?;
        let d0 = max_diff(&logits.i((0, ..))?, &reference.i((0, 0..p0))?)?;
        let d1 = max_diff(&logits.i((1, pad..))?, &reference.i((1, 0..p1))?)?;
        ensure!(d0 < TOL && d1 < TOL, "{name} prefill: {d0} {d1}");

        // the same rows alone, unpadded, through their own caches
        let alone = |row: usize, len: usize| -> Result<Vec<Tensor>> {
            let mut c = model.new_cache(1, len + steps, vec![0])?;
            let e = model.embed(&ids.i((row..row + 1, 0..len + steps))?)?;
            let mut out = vec![model.forward(&e.narrow(1, 0, len)?, Some(&mut c), false)?];
            for s in 0..steps {
                out.push(model.forward(&e.narrow(1, len + s, 1)?, Some(&mut c), false)?);
            }
            Ok(out)
        };
        let (alone0, alone1) = (alone(0, p0)?, alone(1, p1)?);
        ensure!(max_diff(&logits.i((0..1, ..))?, &alone0[0])? < TOL);
        ensure!(max_diff(&logits.i((1..2, pad..))?, &alone1[0])? < TOL);

        // decode: each row continues with its own next fixture tokens
        for s in 0..steps {
            let next = Tensor::cat(&[&ids.i((0..1, p0 + s))?, &ids.i((1..2, p1 + s))?], 0)?
                .reshape((2, 1))?;
            let step = model.forward(&model.embed(&next)?, Some(&mut cache), false)?;
            let r0 = max_diff(&step.i((0, 0))?, &reference.i((0, p0 + s))?)?;
            let r1 = max_diff(&step.i((1, 0))?, &reference.i((1, p1 + s))?)?;
            let a0 = max_diff(&step.i(0..1)?, &alone0[s + 1])?;
            let a1 = max_diff(&step.i(1..2)?, &alone1[s + 1])?;
            ensure!(
                r0 < TOL && r1 < TOL && a0 < TOL && a1 < TOL,
                "{name} step {s}: vs HF {r0} {r1}, vs alone {a0} {a1}"
            );
        }
    }
    Ok(())
}

#[test]
fn saved_checkpoint_reloads_identically() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for name in FIXTURES {
        let model = Llama::load(&fixture(name), &Device::Cpu, DType::F32)?;
        let dir = tmp.path().join(name);
        model.save(&dir)?;
        let back = Llama::load(&dir, &Device::Cpu, DType::F32)?;
        ensure!(back.config() == model.config());
        let (ids, _) = load_io(name)?;
        let a = model.forward(&model.embed(&ids)?, None, false)?;
        let b = back.forward(&back.embed(&ids)?, None, false)?;
        ensure!(max_diff(&a, &b)? == 0.0);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
        ensure!(json["model_type"] == "llama" && json["torch_dtype"] == "float32");
        ensure!(json["architectures"][0] == "LlamaForCausalLM");
        let stored = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
        ensure!(stored.contains_key("lm_head.weight") != model.config().tie_word_embeddings);
    }
    Ok(())
}

#[test]
fn bf16_inference_stays_close() -> Result<()> {
    for name in FIXTURES {
        let model = Llama::load(&fixture(name), &Device::Cpu, DType::BF16)?;
        let (ids, reference) = load_io(name)?;
        let logits = model.forward(&model.embed(&ids)?, None, false)?;
        let diff = max_diff(&logits, &reference)?;
        // bf16 keeps 8 bits of mantissa; logits here have std ~1 and land within ~0.06
        ensure!(diff < 0.15, "{name}: bf16 max diff {diff}");
        let (b, t) = ids.dims2()?;
        let mut cache = model.new_cache(b, t, vec![0; b])?;
        let embeds = model.embed(&ids)?;
        model.forward(&embeds.narrow(1, 0, t - 1)?, Some(&mut cache), false)?;
        let last = model.forward(&embeds.narrow(1, t - 1, 1)?, Some(&mut cache), false)?;
        let diff = max_diff(&last, &reference.narrow(1, t - 1, 1)?)?;
        ensure!(diff < 0.15, "{name}: bf16 cached max diff {diff}");
    }
    Ok(())
}
