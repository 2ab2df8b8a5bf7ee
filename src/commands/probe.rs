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
use vqrae_data::batch::shuffled;
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::fashion_mnist::FashionMnist;
use vqrae_tokenizer::encoder::{load_hf_encoder, VitEncoder};
use vqrae_tokenizer::init::SeededVarMap;
use vqrae_tokenizer::preprocess::{Preprocess, Resize};
use vqrae_tokenizer::probe::{pooled_features, LinearProbe, ProbeConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dataset {
    FashionMnist,
    EasyVqa,
    All,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Hugging Face encoder directory (e.g. .data/models/dinov2-small from scripts/convert-dinov2.sh).
    #[arg(long)]
    encoder: PathBuf,
    #[arg(long, value_enum, default_value = "all")]
    dataset: Dataset,
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
    /// Skip the random-encoder baseline.
    #[arg(long)]
    no_random: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Task {
    name: &'static str,
    train: Vec<RgbImage>,
    train_labels: Vec<Vec<u32>>,
    test: Vec<RgbImage>,
    test_labels: Vec<Vec<u32>>,
    /// (probe name, number of classes) per label column.
    probes: Vec<(&'static str, usize)>,
}

fn limit<T: Clone>(items: Vec<T>, n: usize, seed: u64) -> Vec<T> {
    if n == 0 || n >= items.len() {
        return items;
    }
    let order = shuffled(items.len(), seed);
    order[..n].iter().map(|&i| items[i].clone()).collect()
}

fn fashion_task(root: &Path, a: &ProbeArgs) -> Result<Task> {
    let dir = root.join("fashion-mnist");
    let load = |split, n| -> Result<(Vec<RgbImage>, Vec<Vec<u32>>)> {
        let ds =
            FashionMnist::load(&dir, split).with_context(|| format!("Fashion-MNIST {split}"))?;
        let items: Vec<(RgbImage, u32)> = (0..ds.len())
            .map(|i| (ds.rgb(i), ds.labels[i] as u32))
            .collect();
        let items = limit(items, n, a.seed);
        Ok((
            items.iter().map(|x| x.0.clone()).collect(),
            vec![items.iter().map(|x| x.1).collect()],
        ))
    };
    let (train, train_labels) = load(Split::Train, a.train_limit)?;
    let (test, test_labels) = load(Split::Test, a.test_limit)?;
    Ok(Task {
        name: "Fashion-MNIST",
        train,
        train_labels,
        test,
        test_labels,
        probes: vec![("class", 10)],
    })
}

fn easy_vqa_task(root: &Path, a: &ProbeArgs) -> Result<Task> {
    let dir = root.join("easy-vqa");
    let load = |split, n| -> Result<(Vec<RgbImage>, Vec<Vec<u32>>)> {
        let ds = EasyVqa::load(&dir, split).with_context(|| format!("easy-VQA {split}"))?;
        let mut items = Vec::new();
        for (i, im) in ds.images.iter().enumerate() {
            if let (Some(c), Some(s)) = (im.color, im.shape) {
                items.push((i, s as u32, c as u32));
            }
        }
        let items = limit(items, n, a.seed);
        let idx: Vec<usize> = items.iter().map(|x| x.0).collect();
        let images = ds.load_images(&idx)?;
        Ok((
            images,
            vec![
                items.iter().map(|x| x.1).collect(),
                items.iter().map(|x| x.2).collect(),
            ],
        ))
    };
    let (train, train_labels) = load(Split::Train, 0)?;
    let (test, test_labels) = load(Split::Test, a.test_limit)?;
    Ok(Task {
        name: "easy-VQA",
        train,
        train_labels,
        test,
        test_labels,
        probes: vec![("shape", 3), ("colour", 8)],
    })
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

pub fn run(a: ProbeArgs, root: &Path, dev: &Device) -> Result<()> {
    let hf = load_hf_encoder(&a.encoder, dev, DType::F32)?;
    let pre = Preprocess {
        resize: Resize::Exact {
            height: a.resolution,
            width: a.resolution,
        },
        normalize: hf.preprocess.normalize,
    };
    let mut encoders = vec![("pretrained", hf.encoder)];
    if !a.no_random {
        let vars = SeededVarMap::new(a.seed);
        let random = VitEncoder::new(&hf.config, vars.var_builder(DType::F32, dev))?;
        encoders.push(("random init", random));
    }
    let mut tasks = Vec::new();
    if matches!(a.dataset, Dataset::FashionMnist | Dataset::All) {
        tasks.push(fashion_task(root, &a)?);
    }
    if matches!(a.dataset, Dataset::EasyVqa | Dataset::All) {
        tasks.push(easy_vqa_task(root, &a)?);
    }
    let mut rows = Vec::new();
    println!("| data | probe | encoder | train | test | test accuracy | feature time |");
    println!("|---|---|---|---|---|---|---|");
    for task in &tasks {
        for (enc_name, enc) in &encoders {
            let t0 = Instant::now();
            let xtr = extract(
                enc,
                &pre,
                &task.train,
                a.batch,
                dev,
                &format!("{} train ({enc_name})", task.name),
            )?;
            let xte = extract(
                enc,
                &pre,
                &task.test,
                a.batch,
                dev,
                &format!("{} test ({enc_name})", task.name),
            )?;
            let secs = t0.elapsed().as_secs_f64();
            for (col, (probe_name, classes)) in task.probes.iter().enumerate() {
                let probe = LinearProbe::fit(
                    &xtr,
                    &task.train_labels[col],
                    *classes,
                    &ProbeConfig::default(),
                )?;
                let acc = probe.accuracy(&xte, &task.test_labels[col])?;
                println!(
                    "| {} | {probe_name} | {enc_name} | {} | {} | {:.2}% | {secs:.0} s |",
                    task.name,
                    task.train.len(),
                    task.test.len(),
                    100.0 * acc
                );
                rows.push(serde_json::json!({
                    "data": task.name, "probe": probe_name, "encoder": enc_name,
                    "train": task.train.len(), "test": task.test.len(), "accuracy": acc,
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
