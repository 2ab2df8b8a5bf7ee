//! What the LM's integration tests share.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use candle_core::Tensor;

/// The largest absolute difference between two tensors of the same shape.
#[allow(dead_code)] // not every test binary that includes this module compares tensors
pub fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    ensure!(
        a.dims() == b.dims(),
        "shapes {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The real SmolLM2 GGUF that `scripts/setup-smollm2.sh` installs (`VQRAE_SMOLLM2_GGUF`
/// overrides), or an error saying how to install it.
#[allow(dead_code)] // not every test binary that includes this module reads the real file
pub fn smollm2_path() -> Result<PathBuf> {
    let path = match std::env::var_os("VQRAE_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    ensure!(
        path.is_file(),
        "{} is missing: run scripts/setup-smollm2.sh (or set VQRAE_SMOLLM2_GGUF)",
        path.display()
    );
    Ok(path)
}
