//! Checkpoint directories (`config.json` + `model.safetensors`, written atomically) and the
//! TOML config files they start from.
//!
//! A checkpoint is written into a fresh sibling directory and renamed into place, so a reader
//! (or a crash) never sees a config from one save and weights from another.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;
use serde::Serialize;

use crate::error::{Result, TokenizerError};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenizerError + '_ {
    move |source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The tensors of a `VarMap`, by name.
pub fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TokenizerError::Invalid("variable map lock poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Writes `config` and `tensors` as a checkpoint directory at `dir`, replacing any old one
/// atomically ([`vqrae_data::fs::write_dir_atomic`]).
pub fn save_checkpoint(
    dir: &Path,
    config: &impl Serialize,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    vqrae_data::fs::write_dir_atomic(dir, |tmp| {
        let json =
            serde_json::to_string_pretty(config).map_err(|source| TokenizerError::Config {
                path: tmp.join(CONFIG_FILE),
                source,
            })?;
        std::fs::write(tmp.join(CONFIG_FILE), json + "\n").map_err(io(tmp))?;
        let weights = tmp.join(WEIGHTS_FILE);
        candle_core::safetensors::save(tensors, &weights).map_err(|e| TokenizerError::Checkpoint {
            path: weights.clone(),
            msg: e.to_string(),
        })
    })
}

/// Reads a TOML config file (those in `configs/`) strictly: an unknown field is an error
/// naming the file. Kept here for the callers in `eval`, `scaling` and `src/`; new code uses
/// [`vqrae_data::fs::read_toml`] directly.
pub use vqrae_data::fs::read_toml;

/// Reads a checkpoint's config strictly: an unknown field is an error naming the file.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Config { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn save_replaces_atomically_and_round_trips() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("ckpt");
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
        save_checkpoint(
            &dir,
            &serde_json::json!({"a": 1}),
            &[("x".to_string(), t)].into(),
        )?;
        let t2 = Tensor::new(&[3f32], &Device::Cpu)?;
        save_checkpoint(
            &dir,
            &serde_json::json!({"a": 2}),
            &[("y".to_string(), t2)].into(),
        )?;
        let cfg: serde_json::Value = read_config(&dir)?;
        assert_eq!(cfg["a"], 2);
        let loaded = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &Device::Cpu)?;
        assert!(loaded.contains_key("y") && !loaded.contains_key("x"));
        // nothing left behind but the checkpoint
        let entries: Vec<_> = std::fs::read_dir(tmp.path())
            .map_err(io(tmp.path()))?
            .collect();
        assert_eq!(entries.len(), 1);
        Ok(())
    }
}
