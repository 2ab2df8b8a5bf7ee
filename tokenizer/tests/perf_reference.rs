//! The Rust side of the benchmark's agreement check, without torch: a tiny tokenizer of the
//! project's own architecture, random weights, and what the PyTorch reference of the benchmark
//! (`scripts/perf/reference.py fixtures`) computed from them: continuous features, codes, and
//! the decoder's pixels of given codes. The same weights in Rust must give the same outputs,
//! or the benchmark would be timing two different computations.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use vqrae_tokenizer::Vqrae;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perf_reference")
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn rust_computes_what_the_pytorch_reference_computes() -> Result<()> {
    let dev = Device::Cpu;
    let model = Vqrae::load(&fixture().join("tokenizer"), &dev, DType::F32)?;
    let io = candle_core::safetensors::load(fixture().join("io.safetensors"), &dev)?;
    let enc = model.encode(&io["pixels"])?;
    let err = max_abs(&enc.features, &io["features"])?;
    assert!(err < 1e-4, "features: max abs error {err}");
    let want = io["codes"].to_dtype(DType::U32)?.to_vec2::<u32>()?;
    assert_eq!(enc.codes.to_vec2::<u32>()?, want, "codes");
    let grid = model.config().grid();
    let decoded = model.decode(&io["codes"].to_dtype(DType::U32)?, grid)?;
    let err = max_abs(&decoded, &io["decoded"])?;
    assert!(err < 1e-4, "decoded pixels: max abs error {err}");
    Ok(())
}
