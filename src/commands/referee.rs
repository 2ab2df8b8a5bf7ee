//! `train-referee`, `eval-referee`: the small CNN that judges generated easy-VQA images.
//!
//! The referee learns colour and shape from REAL easy-VQA training images only, and qualifies
//! to judge by reaching 99% (both right) on the real test split; the test report is kept in
//! its directory (`qualification.json`). `eval-referee --tokenizer` also judges the
//! tokenizer's reconstructions of the same real images: the most a text-to-image model that
//! draws through that decoder can score with this referee.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use image::RgbImage;
use serde::Serialize;
use vqrae_data::batch::shuffled;
use vqrae_data::easy_vqa::{EasyVqa, Split, COLORS, SHAPES};
use vqrae_data::image_io::{grid, save_png};
use vqrae_eval::referee::{
    score, train, write_qualification, Qualification, Referee, RefereeConfig, RefereeFile,
    RefereeReport, RefereeTrainConfig, Verdict, REQUIRED_ACCURACY,
};
use vqrae_tokenizer::Vqrae;

/// Labelled easy-VQA images: their ids, pixels and colour + shape.
struct Labelled {
    ids: Vec<usize>,
    images: Vec<RgbImage>,
    labels: Vec<Verdict>,
}

/// The labelled easy-VQA images of a split (a seeded random subset when `limit > 0`).
fn labelled(root: &Path, split: Split, limit: usize, seed: u64) -> Result<Labelled> {
    let ds = EasyVqa::load(&root.join("easy-vqa"), split)
        .with_context(|| format!("easy-VQA {split} (run `vqrae data setup`)"))?;
    // only images whose colour and shape are both known
    let known: Vec<usize> = (0..ds.images.len())
        .filter(|&i| ds.images[i].color.is_some() && ds.images[i].shape.is_some())
        .collect();
    let keep: Vec<usize> = if limit == 0 || limit >= known.len() {
        known
    } else {
        shuffled(known.len(), seed)[..limit]
            .iter()
            .map(|&k| known[k])
            .collect()
    };
    if keep.is_empty() {
        bail!("easy-VQA {split} has no labelled images");
    }
    let labels = keep
        .iter()
        .filter_map(|&i| {
            let im = &ds.images[i];
            Some(Verdict {
                color: im.color?,
                shape: im.shape?,
            })
        })
        .collect();
    Ok(Labelled {
        ids: keep.iter().map(|&i| ds.images[i].id).collect(),
        images: ds.load_images(&keep)?,
        labels,
    })
}

#[derive(Args)]
pub struct TrainRefereeArgs {
    /// Referee config (TOML): `[model]` (architecture) and `[train]` (steps, batch, lr, noise).
    #[arg(long)]
    config: PathBuf,
    /// Output referee directory (`config.json`, `model.safetensors`, `qualification.json`).
    #[arg(short, long)]
    out: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Train on a seeded random subset of the real training images (0 = all; for tests).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Evaluate on a seeded random subset of the real test images (0 = all; for tests).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Fail (after saving) when the test both-accuracy is below this; the referee only judges
    /// generated images once it reaches 99% either way.
    #[arg(long, default_value_t = REQUIRED_ACCURACY)]
    min_accuracy: f64,
}

#[derive(Serialize)]
struct TrainReport {
    out: PathBuf,
    config: PathBuf,
    model: RefereeConfig,
    train: RefereeTrainConfig,
    parameters: usize,
    train_images: usize,
    train_seconds: f64,
    /// Real test images (never trained on).
    test: RefereeReport,
    /// At least 99% both-right on the whole real test split: may judge generated images.
    qualified: bool,
}

pub fn train_referee(a: TrainRefereeArgs, root: &Path, device: &Device) -> Result<()> {
    let file = RefereeFile::from_toml_file(&a.config)?;
    let Labelled { images, labels, .. } = labelled(root, Split::Train, a.limit, file.train.seed)?;
    let test = labelled(root, Split::Test, a.test_limit, 0)?;
    tracing::info!(
        train = images.len(),
        test = test.images.len(),
        "training the referee on real easy-VQA images"
    );
    let t0 = Instant::now();
    let (referee, vars) = train(&images, &labels, &file.model, &file.train, device)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    referee.save(&a.out, &vars)?;
    let n_test = test.images.len();
    let test = referee.evaluate(&test.images, &test.labels)?;
    let q = Qualification {
        // a subset of the test split does not qualify a referee
        split: if a.test_limit == 0 {
            Split::Test.to_string()
        } else {
            format!("test (subset of {n_test})")
        },
        report: test.clone(),
    };
    write_qualification(&a.out, &q)?;
    let parameters = vars.varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let report = TrainReport {
        out: a.out.clone(),
        config: a.config.clone(),
        model: file.model,
        train: file.train,
        parameters,
        train_images: images.len(),
        train_seconds,
        test,
        qualified: q.qualified(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &a.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if report.test.both < a.min_accuracy {
        bail!(
            "referee reached {:.2}% (colour and shape both right) on real test images, below the required {:.2}%; saved to {} but it may not judge",
            100.0 * report.test.both,
            100.0 * a.min_accuracy,
            a.out.display()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalRefereeArgs {
    /// Referee directory (`train-referee` output).
    #[arg(long)]
    referee: PathBuf,
    /// Also judge this tokenizer's reconstructions decode(encode(x)) of the same images.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: Split,
    /// Use a seeded random subset of the split (0 = all of it).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Images per tokenizer forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a grid of the real images the referee misjudges here (PNG; their ids and verdicts
    /// are in the report).
    #[arg(long)]
    errors: Option<PathBuf>,
}

/// Accuracy, plus both-right accuracy per true colour and per true shape (which ones a
/// decoder loses), in easy-VQA's order.
#[derive(Serialize)]
struct Judged {
    #[serde(flatten)]
    report: RefereeReport,
    by_color: Vec<PerClass>,
    by_shape: Vec<PerClass>,
}

#[derive(Serialize)]
struct PerClass {
    class: &'static str,
    images: usize,
    /// Colour and shape both right.
    both: f64,
}

fn judged(verdicts: &[Verdict], labels: &[Verdict]) -> Result<Judged> {
    let per = |names: &[&'static str], of: fn(&Verdict) -> usize| -> Vec<PerClass> {
        names
            .iter()
            .enumerate()
            .filter_map(|(k, &class)| {
                let pairs: Vec<_> = verdicts
                    .iter()
                    .zip(labels)
                    .filter(|(_, l)| of(l) == k)
                    .collect();
                let right = pairs.iter().filter(|(v, l)| v == l).count();
                (!pairs.is_empty()).then(|| PerClass {
                    class,
                    images: pairs.len(),
                    both: right as f64 / pairs.len() as f64,
                })
            })
            .collect()
    };
    Ok(Judged {
        report: score(verdicts, labels)?,
        by_color: per(&COLORS, |v| v.color),
        by_shape: per(&SHAPES, |v| v.shape),
    })
}

#[derive(Serialize)]
struct Misjudged {
    id: usize,
    truth: String,
    verdict: String,
}

#[derive(Serialize)]
struct EvalReport {
    referee: PathBuf,
    split: String,
    images: usize,
    /// Whether the referee's own record shows it may judge (99% on the whole real test split).
    qualified: bool,
    real: Judged,
    /// The real images the referee gets wrong (at most 50): id, truth, verdict.
    real_errors: Vec<Misjudged>,
    tokenizer: Option<PathBuf>,
    /// The tokenizer's reconstructions of the same images: the ceiling of any generator that
    /// draws through this decoder, as this referee sees it.
    reconstructed: Option<Judged>,
    reconstruct_seconds: Option<f64>,
}

pub fn eval_referee(a: EvalRefereeArgs, root: &Path, device: &Device) -> Result<()> {
    let referee = Referee::load(&a.referee, device)
        .with_context(|| format!("loading referee {}", a.referee.display()))?;
    let qualified =
        vqrae_eval::referee::read_qualification(&a.referee)?.is_some_and(|q| q.qualified());
    let Labelled {
        ids,
        images,
        labels,
    } = labelled(root, a.split, a.limit, 0)?;
    let verdicts = referee.judge(&images)?;
    let real = judged(&verdicts, &labels)?;
    let wrong: Vec<usize> = (0..labels.len())
        .filter(|&i| verdicts[i] != labels[i])
        .collect();
    let real_errors = wrong
        .iter()
        .take(50)
        .map(|&i| Misjudged {
            id: ids[i],
            truth: labels[i].caption(),
            verdict: verdicts[i].caption(),
        })
        .collect();
    if let Some(path) = &a.errors {
        let cells: Vec<RgbImage> = wrong.iter().map(|&i| images[i].clone()).collect();
        if cells.is_empty() {
            tracing::info!("no misjudged images: {} not written", path.display());
        } else {
            save_png(&grid(&cells, 8, 2), path)?;
        }
    }
    let (reconstructed, reconstruct_seconds) = match &a.tokenizer {
        Some(dir) => {
            let model = Vqrae::load(dir, device, super::default_dtype(device))
                .with_context(|| format!("loading tokenizer {}", dir.display()))?;
            let t0 = Instant::now();
            let mut recs = Vec::with_capacity(images.len());
            for chunk in images.chunks(a.batch.max(1)) {
                let out = model.reconstruct(&model.images_to_input(chunk)?)?;
                recs.extend(model.output_to_images(&out)?);
            }
            let secs = t0.elapsed().as_secs_f64();
            (Some(judged(&referee.judge(&recs)?, &labels)?), Some(secs))
        }
        None => (None, None),
    };
    let report = EvalReport {
        referee: a.referee.clone(),
        split: a.split.to_string(),
        images: images.len(),
        qualified,
        real,
        real_errors,
        tokenizer: a.tokenizer.clone(),
        reconstructed,
        reconstruct_seconds,
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &a.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
