//! Every config the repository ships parses and validates: a typo in a key (the configs deny
//! unknown fields) or an out-of-range value fails here, not an hour into a training run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vqrae_data::fs::read_toml;
use vqrae_tokenizer::encoder::EncoderConfig;
use vqrae_tokenizer::pretrain::PretrainConfig;
use vqrae_tokenizer::train::TrainConfig;
use vqrae_tokenizer::VqraeConfig;

fn tomls(dir: &str) -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn every_shipped_config_parses_and_validates() -> Result<()> {
    // the referee's and the server's configs belong to their crates, which test them
    let models: Vec<PathBuf> = tomls("configs")?
        .into_iter()
        .filter(|p| !p.ends_with("referee.toml") && !p.ends_with("serve.toml"))
        .collect();
    assert!(models.len() >= 5, "{models:?}");
    for p in &models {
        VqraeConfig::from_toml_file(p).with_context(|| p.display().to_string())?;
    }
    for p in &tomls("configs/encoder")? {
        let cfg: EncoderConfig = read_toml(p)?;
        cfg.spec()
            .map_err(anyhow::Error::msg)
            .with_context(|| p.display().to_string())?;
    }
    let train = tomls("configs/train")?;
    assert!(train.len() >= 8, "{train:?}");
    for p in &train {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("pretrain-") {
            let cfg: PretrainConfig = read_toml(p)?;
            cfg.lr.validate().with_context(|| p.display().to_string())?;
        } else {
            let cfg = TrainConfig::from_toml_file(p).with_context(|| p.display().to_string())?;
            // every schedule ends where its run does
            assert_eq!(cfg.decoder_lr.total_steps, cfg.steps, "{name}");
            if cfg.stage == 2 {
                assert_eq!(cfg.encoder_lr.total_steps, cfg.steps, "{name}");
            }
        }
    }
    Ok(())
}
