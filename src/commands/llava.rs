//! `train-llava`, `eval-llava`: the LLaVA recipe on a pretrained LM (the procedures are
//! [`vqrae_unified::llava::run::run`] and [`vqrae_unified::llava::report::evaluate`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use vqrae_unified::llava::config::LlavaConfig;
use vqrae_unified::llava::report::{evaluate, LlavaEvalOptions, HELDOUT_TEXT};
use vqrae_unified::llava::run::{run, LlavaInputs, DEFAULT_BASE, DEFAULT_ENCODER};

use super::args::{JsonArgs, WeightFormArgs};

#[derive(Args)]
pub struct TrainLlavaArgs {
    /// Training config (configs/llava/*.toml): data mix, LoRA, phases.
    #[arg(long)]
    config: PathBuf,
    /// Run directory (features, the base's text replies, checkpoints, metrics.jsonl, the
    /// adapters and `model/`); an existing run resumes.
    #[arg(long)]
    run: PathBuf,
    /// The base GGUF, under `<data>/models` (scripts/setup-smollm2.sh).
    #[arg(long, default_value = DEFAULT_BASE)]
    base: String,
    /// The encoder directory, under `<data>/models` (scripts/convert-dinov2.sh).
    #[arg(long, default_value = DEFAULT_ENCODER)]
    encoder: String,
}

pub fn train(a: TrainLlavaArgs, root: &Path, device: &Device) -> Result<()> {
    let cfg = LlavaConfig::from_toml_file(&a.config)?;
    let inputs = LlavaInputs::under(root, &a.base, &a.encoder);
    let summary = run(&cfg, &inputs, &a.run, device)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[derive(Args)]
pub struct EvalLlavaArgs {
    /// LLaVA model directory (a run's `model/`: llava.json, adapters.safetensors).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    form: WeightFormArgs,
    /// easy-VQA test questions asked, the split's first (0: all).
    #[arg(long, default_value_t = 0)]
    easy_vqa: usize,
    /// Held-out procedural scenes (the test split's first), every question of each.
    #[arg(long, default_value_t = 300)]
    scenes: usize,
    /// Questions per batched forward.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// A unified model directory that answers the same scene questions, for comparison.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Held-out text whose perplexity the adapted model and its base are scored on.
    #[arg(long, default_value = HELDOUT_TEXT)]
    heldout_text: PathBuf,
    /// Answer from this VQRAE tokenizer's encoder features (a stage-2 one: Table 6).
    #[arg(long)]
    features_from: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArgs,
}

pub fn eval(a: EvalLlavaArgs, root: &Path, device: &Device) -> Result<()> {
    let opts = LlavaEvalOptions {
        data: root.to_path_buf(),
        quantized: a.form.choice(),
        easy_vqa: a.easy_vqa,
        scenes: a.scenes,
        batch: a.batch,
        baseline: a.baseline,
        heldout_text: a.heldout_text,
        features_from: a.features_from,
    };
    a.json.write(&evaluate(&a.model, &opts, device)?)
}
