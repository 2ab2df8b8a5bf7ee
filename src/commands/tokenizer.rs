//! `features`, `init`, `tokenize`, `reconstruct`: the tokenizer on the command line (the
//! procedures are in [`vqrae_tokenizer::features`], [`vqrae_tokenizer::runs`] and
//! [`vqrae_tokenizer::image_files`]).

use std::path::PathBuf;

use anyhow::{ensure, Result};
use candle_core::Device;
use clap::Args;
use vqrae_tokenizer::features::export_features;
use vqrae_tokenizer::image_files::{image_codes, reconstruct_file, tokenizer_dir};
use vqrae_tokenizer::runs::init_checkpoint;
use vqrae_tokenizer::Vqrae;

use super::args::DEFAULT_MODEL;
use super::default_dtype;

#[derive(Args)]
pub struct FeaturesArgs {
    /// Hugging Face encoder directory (config.json, model.safetensors[, preprocessor_config.json]):
    /// DINOv2 or SigLIP vision.
    #[arg(long)]
    encoder: PathBuf,
    /// Images; each gets the architecture's own preprocessing (an image already at the model's
    /// resolution is not resized).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output safetensors: `features` (B, N, d) patch tokens and `last_hidden_state`.
    #[arg(short, long)]
    out: PathBuf,
    /// Run at this square resolution instead of the preprocessor's (position embeddings are
    /// interpolated).
    #[arg(long)]
    resolution: Option<u32>,
}

pub fn features(a: FeaturesArgs, device: &Device) -> Result<()> {
    // the encoder the docs' examples name is made by a script that data setup does not run
    ensure!(
        a.encoder.exists(),
        "no encoder at {}: scripts/convert-dinov2.sh writes DINOv2-small to .data/models/dinov2-small",
        a.encoder.display()
    );
    let summary = export_features(&a.encoder, &a.images, &a.out, a.resolution, device)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

#[derive(Args)]
pub struct InitArgs {
    /// Tokenizer config (TOML), e.g. configs/tiny.toml.
    #[arg(long)]
    config: PathBuf,
    /// Take the encoder weights from this Hugging Face directory (its config must match).
    #[arg(long)]
    encoder: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint directory.
    #[arg(short, long)]
    out: PathBuf,
}

pub fn init(a: InitArgs, device: &Device) -> Result<()> {
    init_checkpoint(&a.config, a.encoder.as_deref(), a.seed, &a.out, device)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// Tokenizer checkpoint directory, or a unified model directory (its `tokenizer/`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn tokenize(a: TokenizeArgs, device: &Device) -> Result<()> {
    let model = Vqrae::load(&tokenizer_dir(&a.model), device, default_dtype(device))?;
    for path in &a.images {
        println!("{}", serde_json::to_string(&image_codes(&model, path)?)?);
    }
    Ok(())
}

#[derive(Args)]
pub struct ReconstructArgs {
    /// Tokenizer checkpoint directory, or a unified model directory (its `tokenizer/`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    image: PathBuf,
    /// Output PNG.
    #[arg(short, long)]
    out: PathBuf,
}

pub fn reconstruct(a: ReconstructArgs, device: &Device) -> Result<()> {
    let model = Vqrae::load(&tokenizer_dir(&a.model), device, default_dtype(device))?;
    reconstruct_file(&model, &a.image, &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
