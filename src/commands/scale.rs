//! `scale`: the scaling sweep of `configs/scaling/*.toml` on easy-VQA and the procedural scenes.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use vqrae_scaling::{report, sweep, ScalingConfig};

#[derive(Args)]
pub struct ScaleArgs {
    /// The sweep (configs/scaling/*.toml): recipe, sizes, held-out size, codebook sweep.
    #[arg(long)]
    config: PathBuf,
    /// Output folder: cached codes, one folder per run, the report; an existing one resumes.
    #[arg(short, long)]
    out: PathBuf,
    /// The same pipeline shrunk to a few minutes (the config's [smoke] section).
    #[arg(long)]
    smoke: bool,
}

pub fn run(a: ScaleArgs, root: &Path, device: &Device) -> Result<()> {
    let mut cfg = ScalingConfig::from_toml_file(&a.config)?;
    if a.smoke {
        cfg = cfg.smoke()?;
    }
    let result = sweep::run_and_report(&cfg, root, &a.out, device)?;
    println!("{}", report::markdown(&result));
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}
