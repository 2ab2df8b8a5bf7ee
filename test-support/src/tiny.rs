//! The tiny configs and models: small enough that a test trains one in seconds on a CPU.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use candle_core::Device;
use vqrae_tokenizer::{Vqrae, VqraeConfig};
use vqrae_unified::joint::{self, JointConfig, JointData};

use crate::repo;
use crate::toy::toy_data;

/// The tiny tokenizer's config (`configs/tiny.toml`: 32 px images, a 4 x 4 grid, 64 codes).
pub(crate) fn tiny_tokenizer_config() -> Result<VqraeConfig> {
    Ok(VqraeConfig::from_toml_file(
        &repo().join("configs/tiny.toml"),
    )?)
}

/// The tiny joint LM config (`configs/lm/tiny.toml`: three short phases).
pub fn tiny_joint_config() -> Result<JointConfig> {
    Ok(JointConfig::from_toml_file(
        &repo().join("configs/lm/tiny.toml"),
    )?)
}

/// A tiny tokenizer, initialised with seed 0 (untrained), saved in `dir`.
pub fn save_tiny_tokenizer(dir: &Path) -> Result<Vqrae> {
    let (tok, vars) = Vqrae::init(&tiny_tokenizer_config()?, None, 0, &Device::Cpu)?;
    tok.save(dir, &vars)?;
    Ok(tok)
}

/// A tiny unified model under `root`: a tiny tokenizer (`root/tok`) and the tiny joint
/// config's first phase, shortened to `steps`, on `images` toy images (`root/run`). Returns
/// the model directory.
pub(crate) fn train_tiny_model(root: &Path, images: usize, steps: u64) -> Result<PathBuf> {
    let tok_dir = root.join("tok");
    let tok = save_tiny_tokenizer(&tok_dir)?;
    let toy = toy_data(images);
    let data = JointData::encode(&tok, &toy.images, toy.captions, toy.questions)?;
    let mut cfg = tiny_joint_config()?;
    cfg.phases.truncate(1);
    cfg.phases[0].steps = steps;
    let run = root.join("run");
    joint::train(&cfg, &data, &tok_dir, &run, &Device::Cpu)?;
    Ok(run.join("model"))
}

/// A tiny unified model (12 toy images, two steps) built once per test binary in a folder
/// `<prefix><pid>` of `scratch` (a test's `CARGO_TARGET_TMPDIR`); folders of earlier runs
/// older than an hour are removed. The first call's arguments decide; later calls get the
/// same folder. Panics if the model cannot be built: no test of the binary can run without it.
pub fn shared_tiny_model(scratch: &Path, prefix: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale(scratch, prefix);
        let root = scratch.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        match train_tiny_model(&root, 12, 2) {
            Ok(dir) => dir,
            Err(e) => panic!("building the tiny test model failed: {e:#}"),
        }
    })
}

/// Removes the folders `<prefix>*` of `scratch` older than an hour.
pub(crate) fn remove_stale(scratch: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(prefix)
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
