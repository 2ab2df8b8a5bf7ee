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

/// How a LLaVA model's GGUF base runs, when not as its `llava.json` says.
#[derive(Args, Clone, Debug)]
pub struct WeightFormArgs {
    /// Run a LLaVA model's GGUF base quantized [default: as its llava.json says].
    #[arg(long, conflicts_with = "f32")]
    pub quantized: bool,
    /// Run a LLaVA model's GGUF base dequantized to f32 (adapters merged).
    #[arg(long)]
    pub f32: bool,
}

impl WeightFormArgs {
    /// `Some(true)`: quantized, `Some(false)`: f32, `None`: as the model directory says.
    pub fn choice(&self) -> Option<bool> {
        (self.quantized || self.f32).then_some(self.quantized)
    }
}

/// How tokens (image codes, or a chat reply's words) are drawn at each step (the seed is each
/// command's own).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Softmax temperature, 0 for greedy [default: 1; `chat`: 0].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Keep only the k most likely tokens at each step.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep only the most likely tokens whose probability reaches p at each step.
    #[arg(long)]
    pub top_p: Option<f64>,
}

impl SamplingArgs {
    /// The settings, temperature 1 unless given (images are drawn, not argmaxed).
    pub fn config(&self, seed: u64) -> SamplingConfig {
        self.config_or(seed, 1.0)
    }

    /// The settings with `temperature` unless one is given.
    pub fn config_or(&self, seed: u64, temperature: f64) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature.unwrap_or(temperature),
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
