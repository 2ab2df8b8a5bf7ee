//! `features`, `init`, `tokenize`, `reconstruct`: the tokenizer on the command line.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use vqrae_data::image_io::{load_rgb, save_png};
use vqrae_tokenizer::encoder::load_hf_encoder;
use vqrae_tokenizer::{Vqrae, VqraeConfig};

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
    let hf = load_hf_encoder(&a.encoder, device, default_dtype(device))?;
    let pre = match a.resolution {
        Some(r) => hf.preprocess.at_resolution(r),
        None => hf.preprocess,
    };
    let images = a
        .images
        .iter()
        .map(|p| load_rgb(p))
        .collect::<Result<Vec<_>, _>>()?;
    let x = pre
        .to_tensor(&images, device)?
        .to_dtype(default_dtype(device))?;
    let hidden = hf.encoder.forward(&x, false)?;
    let prefix = hf.encoder.prefix_tokens();
    let n = hidden.dim(1)? - prefix;
    let features = hidden.narrow(1, prefix, n)?;
    let (h, w) = pre.output_size();
    let grid = hf.encoder.grid(h as usize, w as usize);
    let tensors: HashMap<String, Tensor> = [
        (
            "features".to_string(),
            features.to_dtype(DType::F32)?.contiguous()?,
        ),
        (
            "last_hidden_state".to_string(),
            hidden.to_dtype(DType::F32)?.contiguous()?,
        ),
    ]
    .into();
    write_safetensors(&a.out, &tensors)?;
    println!(
        "{}",
        serde_json::json!({
            "out": a.out, "images": a.images.len(), "features": features.dims(),
            "grid": [grid.0, grid.1], "input_size": [h, w], "arch": hf.config.arch(),
        })
    );
    Ok(())
}

/// Writes tensors atomically (temp file + rename).
fn write_safetensors(path: &std::path::Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
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
    let cfg = VqraeConfig::from_toml_file(&a.config)?;
    let (model, vars) = Vqrae::init(&cfg, a.encoder.as_deref(), a.seed, device)?;
    model.save(&a.out, &vars)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// Tokenizer checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn tokenize(a: TokenizeArgs, device: &Device) -> Result<()> {
    let model = Vqrae::load(&a.model, device, default_dtype(device))?;
    for path in &a.images {
        let img = load_rgb(path)?;
        let enc = model.encode(&model.images_to_input(&[img])?)?;
        let (rows, cols) = enc.grid;
        let codes = enc
            .codes
            .squeeze(0)?
            .reshape((rows, cols))?
            .to_vec2::<u32>()?;
        let (_, n, d) = enc.features.dims3()?;
        println!(
            "{}",
            serde_json::json!({"image": path, "grid": [rows, cols], "codes": codes, "feature_shape": [n, d]})
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ReconstructArgs {
    /// Tokenizer checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    image: PathBuf,
    /// Output PNG.
    #[arg(short, long)]
    out: PathBuf,
}

pub fn reconstruct(a: ReconstructArgs, device: &Device) -> Result<()> {
    let model = Vqrae::load(&a.model, device, default_dtype(device))?;
    let img = load_rgb(&a.image)?;
    let out = model.reconstruct(&model.images_to_input(&[img])?)?;
    let Some(rec) = model.output_to_images(&out)?.into_iter().next() else {
        bail!("the model returned no image");
    };
    save_png(&rec, &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
