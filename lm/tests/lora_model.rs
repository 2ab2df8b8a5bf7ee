//! Adapters on a model: attached as side paths they change the output exactly as merged into
//! the dense weights do; gradients reach only the adapters; a quantized base takes them as side
//! paths and refuses a merge; a stacked (fused) model refuses both.

mod common;

use std::collections::BTreeSet;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use common::max_diff;
use vqrae_lm::gguf::{write_llama_gguf, GgufFile, GgufWriteOptions};
use vqrae_lm::lora::{Adapters, LoraConfig, LoraTarget};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_train::init::SeededVarMap;

fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 80,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        initializer_range: 0.2,
    }
}

/// A frozen base: plain tensors, not variables.
fn base(cfg: &LlamaConfig) -> Result<Llama> {
    let vars = SeededVarMap::new(3);
    let m = Llama::new(cfg, vars.var_builder(DType::F32, &Device::Cpu))?;
    let frozen = m
        .tensors()
        .into_iter()
        .map(|(k, v)| Ok((k, v.detach().copy()?)))
        .collect::<Result<_>>()?;
    Ok(Llama::from_tensors(cfg, frozen, &Device::Cpu, DType::F32)?)
}

/// Adapters on every projection with B set away from zero, so the side paths matter.
fn adapters(cfg: &LlamaConfig) -> Result<Adapters> {
    let targets: BTreeSet<LoraTarget> = LoraTarget::ALL.into_iter().collect();
    let a = Adapters::new(cfg, LoraConfig::new(4, 8.0, targets), &Device::Cpu)?;
    for (name, var) in a.named_vars()? {
        if name.contains("lora_B") {
            var.set(&(Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu)?))?;
        }
    }
    Ok(a)
}

fn logits(model: &Llama) -> Result<Tensor> {
    let ids = Tensor::new(&[[3u32, 14, 15, 9, 26, 53, 5, 8]], &Device::Cpu)?;
    Ok(model.forward(&model.embed(&ids)?, None, false)?)
}

#[test]
fn attached_side_paths_equal_the_merged_weights_and_change_the_output() -> Result<()> {
    let cfg = tiny();
    let ad = adapters(&cfg)?;
    let plain = logits(&base(&cfg)?)?;
    let mut attached = base(&cfg)?;
    attached.attach_adapters(&ad)?;
    let mut merged = base(&cfg)?;
    merged.merge_adapters(&ad)?;
    let (la, lm) = (logits(&attached)?, logits(&merged)?);
    assert!(max_diff(&la, &lm)? < 1e-4, "{}", max_diff(&la, &lm)?);
    assert!(
        max_diff(&la, &plain)? > 1e-2,
        "the adapters changed nothing"
    );
    // merged then fused (the dense serving path) keeps the output
    merged.fuse_for_inference()?;
    assert!(max_diff(&logits(&merged)?, &lm)? < 1e-4);
    Ok(())
}

#[test]
fn only_the_adapters_get_gradients_and_a_step_moves_the_output() -> Result<()> {
    let cfg = tiny();
    let ad = adapters(&cfg)?;
    let mut m = base(&cfg)?;
    m.attach_adapters(&ad)?;
    let ids = Tensor::new(&[[3u32, 14, 15, 9]], &Device::Cpu)?;
    let loss = m.forward(&m.embed(&ids)?, None, true)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    for (name, var) in ad.named_vars()? {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "{name} has no gradient"
        );
    }
    for (name, t) in m.tensors() {
        assert!(grads.get(&t).is_none(), "frozen {name} got a gradient");
    }
    let before = logits(&m)?;
    for (_, var) in ad.named_vars()? {
        let g = grads.get(var.as_tensor()).expect("checked above");
        var.set(&(var.as_tensor() - (g * 10.0)?)?)?;
    }
    assert!(
        max_diff(&logits(&m)?, &before)? > 1e-4,
        "a step on the variables was not seen"
    );
    Ok(())
}

#[test]
fn a_quantized_base_takes_side_paths_and_refuses_a_merge() -> Result<()> {
    let cfg = tiny();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny.gguf");
    write_llama_gguf(
        &path,
        &cfg,
        &base(&cfg)?.tensors(),
        &GgufWriteOptions::like_smollm2(),
    )?;
    let file = GgufFile::open(&path)?;
    let ad = adapters(&cfg)?;
    let mut q = file.load_quantized(&Device::Cpu)?;
    assert!(q.merge_adapters(&ad).is_err());
    let plain = logits(&q)?;
    q.attach_adapters(&ad)?;
    let mut d = file.load_dequantized(&Device::Cpu, DType::F32)?;
    d.merge_adapters(&ad)?;
    let (lq, ld) = (logits(&q)?, logits(&d)?);
    assert!(max_diff(&lq, &plain)? > 1e-2);
    // quantized vs dequantized of the same blocks: the activations' 8-bit rounding only
    let top = ld.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(max_diff(&lq, &ld)? < 0.05 * top, "{}", max_diff(&lq, &ld)?);
    Ok(())
}

#[test]
fn adapters_for_another_shape_or_after_fusing_are_refused() -> Result<()> {
    let cfg = tiny();
    let mut other = tiny();
    other.intermediate_size = 128;
    let ad = adapters(&other)?;
    assert!(base(&cfg)?.attach_adapters(&ad).is_err());
    let mut fused = base(&cfg)?;
    fused.fuse_for_inference()?;
    let err = fused.attach_adapters(&adapters(&cfg)?).unwrap_err();
    assert!(
        err.to_string().contains("before fuse_for_inference"),
        "{err}"
    );
    Ok(())
}
