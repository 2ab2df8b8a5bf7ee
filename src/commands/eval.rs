//! `eval-vqa`, `eval-t2i`: held-out figures of a unified model on both paths (the procedures
//! are [`vqrae_eval::vqa::evaluate`] and [`vqrae_eval::t2i::evaluate`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use serde::Serialize;
use vqrae_data::easy_vqa::{load_split, Split};
use vqrae_eval::referee::Referee;
use vqrae_eval::t2i::{self, T2iOptions};
use vqrae_eval::vqa::{self, VqaOptions};
use vqrae_lm::SamplingConfig;
use vqrae_unified::draws::load_image_model;
use vqrae_unified::model::UnifiedModel;

use super::args::{JsonArgs, ModelArgs, SamplingArgs};
use super::default_dtype;

/// Prints (and writes) a report through a `serde_json::Value`: its keys come out sorted, the
/// order these reports have always been printed in.
fn write_sorted(json: &JsonArgs, report: &impl Serialize) -> Result<()> {
    json.write(&serde_json::to_value(report)?)
}

#[derive(Args)]
pub struct EvalVqaArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "test")]
    split: Split,
    /// Evaluate only the first N questions (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// List up to this many wrong answers in the report.
    #[arg(long, default_value_t = 50)]
    mistakes: usize,
    #[command(flatten)]
    json: JsonArgs,
}

pub fn eval_vqa(a: EvalVqaArgs, root: &Path, device: &Device) -> Result<()> {
    let model = UnifiedModel::load(&a.model.model, device, default_dtype(device))?;
    let dataset = load_split(root, a.split)?;
    let options = VqaOptions {
        limit: a.limit,
        batch: a.batch,
        mistakes: a.mistakes,
    };
    let report = vqa::evaluate((&model, &a.model.model), &dataset, &options)?;
    write_sorted(&a.json, &report)
}

#[derive(Args)]
pub struct EvalT2iArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The referee (trained on real images only; see `train-referee`).
    #[arg(long)]
    referee: PathBuf,
    /// Guidance scales to measure, comma separated; `--cfg` is an older spelling.
    #[arg(
        long,
        visible_alias = "cfg",
        value_delimiter = ',',
        default_value = "1,2,3,5"
    )]
    guidance: Vec<f64>,
    /// Images per caption (seeds first-seed .. first-seed + n).
    #[arg(short, default_value_t = 8)]
    n: usize,
    /// The first seed: settings chosen on one range of seeds are confirmed on another.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// The captions are the distinct colour-shape captions of this split.
    #[arg(long, default_value = "test")]
    split: Split,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Writes grid-cfg<S>.png (one row per caption) here.
    #[arg(long)]
    grids: Option<PathBuf>,
    /// Also draw the captions of this many held-out procedural scenes (the test split's first),
    /// -n images each, and score them per skill (count, colour, position) with the exact scene
    /// judge, beside the judge's verdict on the model tokenizer's reconstructions of the same
    /// scenes (the ceiling).
    #[arg(long, default_value_t = 0)]
    scenes: usize,
    #[command(flatten)]
    emoji: vqrae_eval::captioned_t2i::EmojiFlags,
    #[command(flatten)]
    json: JsonArgs,
}

pub fn eval_t2i(a: EvalT2iArgs, root: &Path, device: &Device) -> Result<()> {
    let models = root.join("models");
    let model = load_image_model(&a.model.model, &models, device, default_dtype(device))?;
    let referee = Referee::load_qualified(&a.referee, device)?;
    let dataset = load_split(root, a.split)?;
    let options = T2iOptions {
        guidance: a.guidance,
        images_per_caption: a.n,
        first_seed: a.first_seed,
        // the seed is unused: each image has its own
        sampling: a.sampling.config(SamplingConfig::default().seed),
        scenes: a.scenes,
        grids: a.grids,
        emoji: a.emoji.eval(root),
    };
    let (model_at, referee_at) = (a.model.model.as_path(), a.referee.as_path());
    let report = t2i::evaluate(
        (model.as_ref(), model_at),
        (&referee, referee_at),
        &dataset,
        &options,
    )?;
    write_sorted(&a.json, &report)
}
