//! `vqrae probe`: are an encoder's weights real and semantic? Fit linear probes on its frozen
//! features for Fashion-MNIST classes and easy-VQA shape / colour, and the same on a randomly
//! initialised encoder of the same shape.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use vqrae_data::easy_vqa::Split;
use vqrae_data::tensor::Normalize;
use vqrae_tokenizer::encoder::{load_hf_encoder, EncoderConfig, VitEncoder};
use vqrae_tokenizer::init::SeededVarMap;
use vqrae_tokenizer::preprocess::{Preprocess, Resize};
use vqrae_tokenizer::probe::{pooled_features, LinearProbe, ProbeConfig};
use vqrae_tokenizer::Vqrae;

use super::datasets::{self, Dataset};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Source {
    Pretrained,
    Random,
    Pixels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    FashionMnist,
    EasyVqa,
    All,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Encoder directory (Hugging Face, e.g. .data/models/dinov2-small from
    /// scripts/convert-dinov2.sh, or `pretrain-encoder` output), or a tokenizer checkpoint, whose
    /// encoder (after stage 2: the trained one) is probed.
    #[arg(long)]
    encoder: PathBuf,
    #[arg(long, value_enum, default_value = "all")]
    dataset: Which,
    /// Square input resolution (images are resized to it; position embeddings interpolated).
    #[arg(long, default_value_t = 112)]
    resolution: u32,
    /// Training images used for Fashion-MNIST (a seeded random subset of the 60,000; 0 = all).
    #[arg(long, default_value_t = 10000)]
    train_limit: usize,
    /// Test images used (0 = the whole test split).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of the subset choice and of the random encoder.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which features to probe: the pretrained encoder, the same architecture randomly
    /// initialised, and raw pixels (flattened at the data's own size, for context).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "pretrained,random"
    )]
    features: Vec<Source>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn extract(
    enc: &VitEncoder,
    pre: &Preprocess,
    images: &[RgbImage],
    batch: usize,
    dev: &Device,
    what: &str,
) -> Result<Tensor> {
    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    let mut parts = Vec::new();
    for chunk in images.chunks(batch.max(1)) {
        parts.push(
            pooled_features(enc, pre, chunk, dev)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?,
        );
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Tensor::cat(&parts, 0)?)
}

/// Images flattened to `(n, h * w * 3)` values in [0, 1].
fn pixels(images: &[RgbImage]) -> Result<Tensor> {
    let rows: Vec<Tensor> = images
        .iter()
        .map(|im| {
            let v: Vec<f32> = im.as_raw().iter().map(|&p| p as f32 / 255.0).collect();
            Tensor::from_vec(v, (1, im.as_raw().len()), &Device::Cpu)
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// The encoder of an encoder directory or of a tokenizer checkpoint, its config and its pixel
/// normalisation.
fn load_encoder(dir: &Path, dev: &Device) -> Result<(VitEncoder, EncoderConfig, Normalize)> {
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    if json.get("quantizer").is_some() {
        let model = Vqrae::load(dir, dev, DType::F32)?;
        let cfg = model.config().clone();
        return Ok((model.encoder().clone(), cfg.encoder, cfg.normalize));
    }
    let hf = load_hf_encoder(dir, dev, DType::F32)?;
    Ok((hf.encoder, hf.config, hf.preprocess.normalize))
}

pub fn run(a: ProbeArgs, root: &Path, dev: &Device) -> Result<()> {
    let (encoder, enc_cfg, normalize) = load_encoder(&a.encoder, dev)?;
    let pre = Preprocess {
        resize: Resize::Exact {
            height: a.resolution,
            width: a.resolution,
        },
        normalize,
    };
    let mut encoders: Vec<(&str, Option<VitEncoder>)> = Vec::new();
    for source in &a.features {
        match source {
            Source::Pretrained => encoders.push(("pretrained", Some(encoder.clone()))),
            Source::Random => {
                let vars = SeededVarMap::new(a.seed);
                let random = VitEncoder::new(&enc_cfg, vars.var_builder(DType::F32, dev))?;
                encoders.push(("random init", Some(random)));
            }
            Source::Pixels => encoders.push(("raw pixels", None)),
        }
    }
    let mut tasks = Vec::new();
    if matches!(a.dataset, Which::FashionMnist | Which::All) {
        tasks.push(Dataset::FashionMnist);
    }
    if matches!(a.dataset, Which::EasyVqa | Which::All) {
        tasks.push(Dataset::EasyVqa);
    }
    let mut rows = Vec::new();
    println!("| data | probe | encoder | train | test | test accuracy | feature time |");
    println!("|---|---|---|---|---|---|---|");
    for &task in &tasks {
        // Fashion-MNIST's 60,000 training images are subsampled; easy-VQA's 4,000 are all used
        let train_limit = if task == Dataset::FashionMnist {
            a.train_limit
        } else {
            0
        };
        let train = datasets::load(root, task, Split::Train, train_limit, a.seed)?;
        let test = datasets::load(root, task, Split::Test, a.test_limit, a.seed)?;
        for (enc_name, enc) in &encoders {
            let t0 = Instant::now();
            let what = |split: &str| format!("{} {split} ({enc_name})", task.name());
            let (xtr, xte) = match enc {
                Some(enc) => (
                    extract(enc, &pre, &train.images, a.batch, dev, &what("train"))?,
                    extract(enc, &pre, &test.images, a.batch, dev, &what("test"))?,
                ),
                None => (pixels(&train.images)?, pixels(&test.images)?),
            };
            let secs = t0.elapsed().as_secs_f64();
            for (col_tr, col_te) in train.columns.iter().zip(&test.columns) {
                let probe = LinearProbe::fit(
                    &xtr,
                    &col_tr.labels,
                    col_tr.classes,
                    &ProbeConfig::default(),
                )?;
                let acc = probe.accuracy(&xte, &col_te.labels)?;
                println!(
                    "| {} | {} | {enc_name} | {} | {} | {:.2}% | {secs:.0} s |",
                    task.name(),
                    col_tr.name,
                    train.images.len(),
                    test.images.len(),
                    100.0 * acc
                );
                rows.push(serde_json::json!({
                    "data": task.name(), "probe": col_tr.name, "encoder": enc_name,
                    "train": train.images.len(), "test": test.images.len(), "accuracy": acc,
                    "feature_seconds": secs, "resolution": a.resolution,
                }));
            }
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
