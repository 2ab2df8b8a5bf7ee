//! `train-lm`, `ask`, `generate`: the one LM on both paths.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use vqrae_data::easy_vqa::{load_split, Split};
use vqrae_data::fs::copy_dir;
use vqrae_data::image_io::load_rgb;
use vqrae_generate::sample::GenerationConfig;
use vqrae_lm::SamplingConfig;
use vqrae_tokenizer::Vqrae;
use vqrae_train::lock::RunLock;
use vqrae_understand::reasoning::conclusion;
use vqrae_unified::image_files::{check_count, generate_files, ImageBatchRequest};
use vqrae_unified::joint::{self, JointConfig, JointData};
use vqrae_unified::model::UnifiedModel;

use super::args::{ModelArgs, SamplingArgs};
use super::default_dtype;

#[derive(Args)]
pub struct TrainLmArgs {
    /// Joint training config (configs/lm/*.toml): LM shape, text vocabulary, phases.
    #[arg(long)]
    config: PathBuf,
    /// The trained VQRAE tokenizer (frozen; its features and codes feed the LM).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Run directory (checkpoints, metrics.jsonl, text tokenizer); an existing run resumes.
    #[arg(long)]
    run: PathBuf,
    /// Also copy the finished model directory here (e.g. models/vqrae-easyvqa).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Use only this many training images (0: all), for quick runs.
    #[arg(long, default_value_t = 0)]
    limit: usize,
}

pub fn train_lm(a: TrainLmArgs, root: &Path, device: &Device) -> Result<()> {
    let cfg = JointConfig::from_toml_file(&a.config)?;
    // a second trainer on the run fails here, before encoding the data
    let lock = RunLock::acquire(&a.run)?;
    let ds = load_split(root, Split::Train)?;
    let tokenizer = Vqrae::load(&a.tokenizer, device, DType::F32)?;
    let data = JointData::from_easy_vqa(&cfg, &ds, a.limit, &tokenizer)?;
    let summary = joint::train_locked(&cfg, &data, &a.tokenizer, &lock, device)?;
    if let Some(out) = &a.out {
        copy_dir(&summary.model_dir, out)
            .with_context(|| format!("copying the model to {}", out.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[derive(Args)]
pub struct AskArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image.
    image: PathBuf,
    /// The question.
    question: String,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// Also print the whole answer of a yes/no question, its reasoning ("red, so no"), on a
    /// second line; the first is always the conclusion ("no").
    #[arg(long)]
    reasoning: bool,
}

pub fn ask(a: AskArgs, device: &Device) -> Result<()> {
    let model = UnifiedModel::load(&a.model.model, device, default_dtype(device))?;
    if let Some(Err(ood)) = model.card.as_ref().map(|c| c.check_question(&a.question)) {
        eprintln!("warning: out of distribution: {ood}");
    }
    let image = load_rgb(&a.image)?;
    if let Some(Err(ood)) = model.check_images(std::slice::from_ref(&image))?.pop() {
        eprintln!("warning: out of distribution: {ood}");
    }
    let answers = model.ask(
        &[image],
        &[a.question.as_str()],
        a.max_tokens,
        &SamplingConfig::greedy(),
    )?;
    let answer = answers.first().map(String::as_str).unwrap_or("");
    println!("{}", conclusion(answer));
    if a.reasoning {
        println!("{answer}");
    }
    Ok(())
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The caption to draw, e.g. "a blue rectangle".
    prompt: String,
    /// Number of images, 1 to 10,000; drawn 32 per forward pass, each batch's PNGs written as
    /// it finishes; grid.png shows the first 64.
    #[arg(short, default_value_t = 4)]
    n: usize,
    /// Classifier-free guidance scale (1: no guidance); `--cfg` is an older spelling
    /// [default: the model card's measured best, else 2].
    #[arg(long, visible_alias = "cfg")]
    guidance: Option<f64>,
    /// Seed of the first image; image i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// What to steer away from instead of the empty prompt.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Output folder: 0.png, 1.png, ... and grid.png.
    #[arg(short, long)]
    out: PathBuf,
}

pub fn generate(a: GenerateArgs, device: &Device) -> Result<()> {
    check_count(a.n)?;
    let model = UnifiedModel::load(&a.model.model, device, default_dtype(device))?;
    if let Some(Err(ood)) = model.card.as_ref().map(|c| c.check_caption(&a.prompt)) {
        eprintln!("warning: out of distribution: {ood}");
    }
    let cfg = GenerationConfig {
        guidance: a.guidance.unwrap_or_else(|| model.default_guidance()),
        sampling: a.sampling.config(a.seed),
    };
    let req = ImageBatchRequest {
        caption: a.prompt,
        negative: a.negative_prompt,
        n: a.n,
        seed: a.seed,
    };
    let files = generate_files(&model, &req, &cfg, &a.out)?;
    println!("{} images in {}", files.images, files.dir.display());
    Ok(())
}
