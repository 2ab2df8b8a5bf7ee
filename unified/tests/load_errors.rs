//! A model directory with a broken file: the load error names that file (the server prints it
//! on its first line), not only the directory.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use vqrae_data::fs::copy_dir;
use vqrae_test_support::shared_tiny_model;
use vqrae_unified::model::UnifiedModel;

const FILES: [&str; 7] = [
    "unified.json",
    "tokenizer/config.json",
    "tokenizer/model.safetensors",
    "lm/config.json",
    "lm/model.safetensors",
    "lm/tokenizer.json",
    "projector.safetensors",
];

fn load_error(dir: &Path) -> String {
    match UnifiedModel::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_truncated_or_missing_file_is_named() -> Result<()> {
    let src = shared_tiny_model(env!("CARGO_TARGET_TMPDIR").as_ref(), "unified-load-errors-");
    let tmp = tempfile::tempdir()?;
    for (i, file) in FILES.iter().enumerate() {
        let dir = tmp.path().join(format!("m{i}"));
        copy_dir(src, &dir)?;
        let path = dir.join(file);
        let bytes = std::fs::read(&path)?;
        // cut inside the header (or the JSON), then inside the data, then remove it
        for keep in [bytes.len().min(40), bytes.len() - bytes.len() / 3] {
            std::fs::write(&path, &bytes[..keep])?;
            let msg = load_error(&dir);
            assert!(
                msg.contains(&path.display().to_string()),
                "{file} cut to {keep}: {msg}"
            );
        }
        std::fs::remove_file(&path)?;
        let msg = load_error(&dir);
        assert!(
            msg.contains(&path.display().to_string()),
            "{file} missing: {msg}"
        );
    }
    Ok(())
}

#[test]
fn parts_that_disagree_name_both_files() -> Result<()> {
    let src = shared_tiny_model(env!("CARGO_TARGET_TMPDIR").as_ref(), "unified-load-errors-");
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("m");
    copy_dir(src, &dir)?;
    let unified = dir.join("unified.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&unified)?)?;
    cfg["image_tokens"] = serde_json::json!(cfg["image_tokens"].as_u64().unwrap_or(0) + 1);
    std::fs::write(&unified, serde_json::to_string(&cfg)?)?;
    let msg = load_error(&dir);
    assert!(msg.contains(&unified.display().to_string()), "{msg}");
    assert!(
        msg.contains(&dir.join("tokenizer/config.json").display().to_string()),
        "{msg}"
    );
    Ok(())
}
