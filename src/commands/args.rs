//! Argument groups several subcommands share (`#[command(flatten)]`), so a flag is spelled,
//! documented and defaulted once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use vqrae_lm::SamplingConfig;

/// The shipped unified model, which `ask`, `generate` and the evaluations use unless told.
pub const DEFAULT_MODEL: &str = "models/vqrae-easyvqa";

/// The model directory a command loads.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Unified model directory (tokenizer + LM + projector).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
}

/// How image codes are drawn at each step (the seed is each command's own).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Softmax temperature of the code distribution.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep only the k most likely codes at each step.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep only the most likely codes whose probability reaches p at each step.
    #[arg(long)]
    pub top_p: Option<f64>,
}

impl SamplingArgs {
    pub fn config(&self, seed: u64) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
        }
    }
}

/// Where a command's JSON report goes besides stdout.
#[derive(Args, Clone, Debug)]
pub struct JsonArgs {
    /// Also write the report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl JsonArgs {
    /// Prints `value` as pretty JSON and writes it to `--json` if given.
    pub fn write(&self, value: &impl serde::Serialize) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        println!("{text}");
        if let Some(p) = &self.json {
            write_text(p, &(text + "\n"))?;
        }
        Ok(())
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
