//! `train-referee`, `eval-referee`: the small CNN that judges generated easy-VQA images (the
//! procedures are [`vqrae_eval::referee::train_and_qualify`] and
//! [`vqrae_eval::referee::evaluate_on_real`]).
//!
//! The referee learns colour and shape from REAL easy-VQA training images only, and qualifies
//! to judge by reaching 99% (both right) on the real test split; the test report is kept in
//! its directory (`qualification.json`). `eval-referee --tokenizer` also judges the
//! tokenizer's reconstructions of the same real images: the most a text-to-image model that
//! draws through that decoder can score with this referee.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use vqrae_data::easy_vqa::Split;
use vqrae_eval::referee::{
    evaluate_on_real, train_and_qualify, EvalRefereeOptions, TrainRefereeOptions, REQUIRED_ACCURACY,
};

use super::args::JsonArgs;

#[derive(Args)]
pub struct TrainRefereeArgs {
    /// Referee config (TOML): `[model]` (architecture) and `[train]` (steps, batch, lr, noise).
    #[arg(long)]
    config: PathBuf,
    /// Output referee directory (`config.json`, `model.safetensors`, `qualification.json`).
    #[arg(short, long)]
    out: PathBuf,
    #[command(flatten)]
    json: JsonArgs,
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

pub fn train_referee(a: TrainRefereeArgs, root: &Path, device: &Device) -> Result<()> {
    let options = TrainRefereeOptions {
        limit: a.limit,
        test_limit: a.test_limit,
    };
    let report = train_and_qualify(&a.config, &a.out, root, &options, device)?;
    a.json.write(&report)?;
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
    #[command(flatten)]
    json: JsonArgs,
    /// Write a grid of the real images the referee misjudges here (PNG; their ids and verdicts
    /// are in the report).
    #[arg(long)]
    errors: Option<PathBuf>,
}

pub fn eval_referee(a: EvalRefereeArgs, root: &Path, device: &Device) -> Result<()> {
    let options = EvalRefereeOptions {
        tokenizer: a.tokenizer,
        split: a.split,
        limit: a.limit,
        batch: a.batch,
        errors: a.errors,
    };
    a.json
        .write(&evaluate_on_real(&a.referee, root, &options, device)?)
}
