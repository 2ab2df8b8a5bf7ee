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

#[test]
fn sizes_that_do_not_divide_into_patches_or_are_too_large_are_refused() -> Result<()> {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny.toml");
    let text = std::fs::read_to_string(&tiny)?;
    let dir = tempfile::tempdir()?;
    let with_size = |size: &str| -> Result<String> {
        let p = dir.path().join("c.toml");
        // the tokenizer's input size (the first image_size line; the encoder's comes later)
        std::fs::write(&p, text.replacen("image_size = 32", size, 1))?;
        Ok(VqraeConfig::from_toml_file(&p)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string()))
    };
    // 30 px with patch 8 was silently 24 px (a 3 x 3 grid)
    let msg = with_size("image_size = 30")?;
    assert!(
        msg.contains("image_size 30") && msg.contains("multiple of 8"),
        "{msg}"
    );
    let msg = with_size("image_size = 4")?;
    assert!(msg.contains("multiple of 8"), "{msg}");
    let msg = with_size("image_size = 2048")?;
    assert!(msg.contains("1024"), "{msg}");
    assert_eq!(with_size("image_size = 1024")?, "");
    assert_eq!(with_size("image_size = 40")?, "");
    // the own ViT encoder's size too
    let enc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/encoder/tiny.toml"),
    )?;
    let cfg: EncoderConfig = toml::from_str(&enc.replace("image_size = 32", "image_size = 30"))?;
    let msg = cfg.spec().map(|_| ()).unwrap_err();
    assert!(msg.contains("encoder image_size 30"), "{msg}");
    Ok(())
}
