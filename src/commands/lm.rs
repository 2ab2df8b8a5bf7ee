//! `train-lm`, `ask`, `generate`: the one LM on both paths.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use vqrae_data::easy_vqa::{load_split, Split};
use vqrae_data::fs::copy_dir;
use vqrae_data::image_io::{grid, load_rgb, save_png};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_tokenizer::Vqrae;
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
    let ds = load_split(root, Split::Train)?;
    let tokenizer = Vqrae::load(&a.tokenizer, device, DType::F32)?;
    let data = JointData::from_easy_vqa(&cfg, &ds, a.limit, &tokenizer)?;
    let summary = joint::train(&cfg, &data, &a.tokenizer, &a.run, device)?;
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
}

pub fn ask(a: AskArgs, device: &Device) -> Result<()> {
    let model = UnifiedModel::load(&a.model.model, device, default_dtype(device))?;
    let image = load_rgb(&a.image)?;
    let answer = model.ask(
        &[image],
        &[a.question.as_str()],
        a.max_tokens,
        &SamplingConfig::greedy(),
    )?;
    println!("{}", answer.first().map(String::as_str).unwrap_or(""));
    Ok(())
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The caption to draw, e.g. "a blue rectangle".
    prompt: String,
    /// Number of images.
    #[arg(short, default_value_t = 4)]
    n: usize,
    /// Classifier-free guidance scale (1: no guidance); `--cfg` is an older spelling.
    #[arg(long, visible_alias = "cfg", default_value_t = 3.0)]
    guidance: f64,
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
    if a.n == 0 {
        bail!("-n must be at least 1");
    }
    let model = UnifiedModel::load(&a.model.model, device, default_dtype(device))?;
    let cfg = GenerationConfig {
        guidance: a.guidance,
        sampling: a.sampling.config(a.seed),
    };
    let requests: Vec<ImageRequest> = (0..a.n as u64)
        .map(|i| ImageRequest {
            caption: a.prompt.clone(),
            negative: a.negative_prompt.clone(),
            seed: a.seed.wrapping_add(i),
        })
        .collect();
    let images = model.generate(&requests, &cfg)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (i, img) in images.iter().enumerate() {
        save_png(img, &a.out.join(format!("{i}.png")))?;
    }
    save_png(
        &grid(&images, images.len().min(8), 2),
        &a.out.join("grid.png"),
    )?;
    println!("{} images in {}", images.len(), a.out.display());
    Ok(())
}
