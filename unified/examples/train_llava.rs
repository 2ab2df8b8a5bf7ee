//! Runs (or resumes) a LLaVA training run: `cargo run --release -p vqrae-unified --example
//! train_llava -- CONFIG RUN_DIR [DATA_DIR]` (the files the setup scripts install under
//! `DATA_DIR`, default `.data`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use vqrae_unified::llava::config::LlavaConfig;
use vqrae_unified::llava::run::{run, LlavaInputs};

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| PathBuf::from(args.get(i).map_or(default, |s| s.as_str()));
    let config = arg(0, "configs/llava/smollm2.toml");
    let run_dir = arg(1, "runs/llava-smollm2");
    let inputs = LlavaInputs::installed(&arg(2, ".data"));
    let cfg: LlavaConfig = vqrae_data::fs::read_toml(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let summary = run(&cfg, &inputs, &run_dir, &Device::Cpu)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
