//! `eval-vqa`, `eval-t2i`: held-out figures of a unified model on both paths.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use serde_json::json;
use vqrae_data::easy_vqa::{EasyVqa, Split, COLORS, SHAPES};
use vqrae_data::image_io::{grid, save_png};
use vqrae_data::scenes::{self, SceneDataset};
use vqrae_eval::referee::{Referee, Verdict};
use vqrae_eval::scenes::ScenePrompts;
use vqrae_eval::vqa::VqaScore;
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_unified::model::UnifiedModel;

use super::default_dtype;

fn load_easy_vqa(root: &Path, split: Split) -> Result<EasyVqa> {
    EasyVqa::load(&root.join("easy-vqa"), split)
        .with_context(|| format!("easy-VQA {split} (run `vqrae data setup`)"))
}

fn write_json(path: &Option<PathBuf>, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    if let Some(p) = path {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalVqaArgs {
    #[arg(long)]
    model: PathBuf,
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
    /// Also write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn eval_vqa(a: EvalVqaArgs, root: &Path, device: &Device) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let started = Instant::now();
    let model = UnifiedModel::load(&a.model, device, default_dtype(device))?;
    let ds = load_easy_vqa(root, a.split)?;
    let index: HashMap<usize, usize> = ds
        .images
        .iter()
        .enumerate()
        .map(|(i, im)| (im.id, i))
        .collect();
    let questions: Vec<_> = ds
        .questions
        .iter()
        .take(if a.limit == 0 { usize::MAX } else { a.limit })
        .collect();
    let mut score = VqaScore::default();
    let mut examples = Vec::new();
    let mut mistakes = Vec::new();
    for chunk in questions.chunks(a.batch) {
        let idx = chunk
            .iter()
            .map(|q| {
                index
                    .get(&q.image_id)
                    .copied()
                    .with_context(|| format!("question about unknown image {}", q.image_id))
            })
            .collect::<Result<Vec<_>>>()?;
        let images = ds.load_images(&idx)?;
        let texts: Vec<&str> = chunk.iter().map(|q| q.question.as_str()).collect();
        // room for a reasoned answer ("triangle, so yes"); answers stop at <eos>
        let answers = model.ask(&images, &texts, 16, &SamplingConfig::greedy())?;
        for (q, got) in chunk.iter().zip(&answers) {
            score.add(&q.kind.to_string(), got, &q.answer);
            if vqrae_eval::vqa::normalize(got) != vqrae_eval::vqa::normalize(&q.answer)
                && mistakes.len() < a.mistakes
            {
                mistakes.push(json!({"image": q.image_id, "question": q.question, "answer": got, "expected": q.answer}));
            }
            if examples.len() < 12 {
                examples.push(json!({"image": q.image_id, "question": q.question, "answer": got, "expected": q.answer}));
            }
        }
    }
    write_json(
        &a.json,
        &json!({
            "split": a.split.as_str(),
            "questions": score.total,
            "accuracy": score.accuracy(),
            "by_kind": score.by_kind,
            "seconds": started.elapsed().as_secs_f64(),
            "examples": examples,
            "mistakes": mistakes,
        }),
    )
}

/// The images `model` draws for every caption with every seed, in caption order.
fn draw(
    model: &UnifiedModel,
    captions: &[String],
    seeds: std::ops::Range<u64>,
    gen: &GenerationConfig,
) -> Result<Vec<image::RgbImage>> {
    let requests = ImageRequest::grid(captions, seeds);
    let mut images = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(64) {
        images.extend(model.generate(chunk, gen)?);
    }
    Ok(images)
}

#[derive(Args)]
pub struct EvalT2iArgs {
    #[arg(long)]
    model: PathBuf,
    /// The referee (trained on real images only; see `train-referee`).
    #[arg(long)]
    referee: PathBuf,
    /// Guidance scales to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,5")]
    cfg: Vec<f64>,
    /// Images per caption (seeds first-seed .. first-seed + n).
    #[arg(short, default_value_t = 8)]
    n: usize,
    /// The first seed: settings chosen on one range of seeds are confirmed on another.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// The captions are the distinct colour-shape captions of this split.
    #[arg(long, default_value = "test")]
    split: Split,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Keep only the k most likely codes at each step.
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep only the most likely codes whose probability reaches p at each step.
    #[arg(long)]
    top_p: Option<f64>,
    /// Writes grid-cfg<S>.png (one row per caption) here.
    #[arg(long)]
    grids: Option<PathBuf>,
    /// Also draw the captions of this many held-out procedural scenes (the test split's first),
    /// -n images each, and score them per skill (count, colour, position) with the exact scene
    /// judge, beside the judge's verdict on the model tokenizer's reconstructions of the same
    /// scenes (the ceiling).
    #[arg(long, default_value_t = 0)]
    scenes: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn eval_t2i(a: EvalT2iArgs, root: &Path, device: &Device) -> Result<()> {
    if a.n == 0 || a.cfg.is_empty() {
        bail!("need at least one image per caption and one guidance scale");
    }
    let seeds = a.first_seed
        ..a.first_seed
            .checked_add(a.n as u64)
            .context("--first-seed + -n is past the largest seed")?;
    let started = Instant::now();
    let model = UnifiedModel::load(&a.model, device, default_dtype(device))?;
    let referee = Referee::load_qualified(&a.referee, device)?;
    let ds = load_easy_vqa(root, a.split)?;
    let mut combos: Vec<(usize, usize)> = ds
        .images
        .iter()
        .filter_map(|im| Some((im.color?, im.shape?)))
        .collect();
    combos.sort();
    combos.dedup();
    let captions: Vec<String> = combos
        .iter()
        .map(|&(color, shape)| format!("a {} {}", COLORS[color], SHAPES[shape]))
        .collect();
    let labels: Vec<Verdict> = combos
        .iter()
        .flat_map(|&(color, shape)| std::iter::repeat_n(Verdict { color, shape }, a.n))
        .collect();
    let scene_set = SceneDataset::split(a.split, a.scenes);
    let scene_prompts = ScenePrompts {
        cfg: &scene_set.cfg,
        scenes: &scene_set.scenes,
    };
    let scene_captions: Vec<String> = scene_set.scenes.iter().map(scenes::caption).collect();
    let mut by_scale = BTreeMap::new();
    let mut scenes_by_scale = BTreeMap::new();
    for &scale in &a.cfg {
        let gen = GenerationConfig {
            guidance: scale,
            sampling: SamplingConfig {
                temperature: a.temperature,
                top_k: a.top_k,
                top_p: a.top_p,
                ..SamplingConfig::default()
            },
        };
        let images = draw(&model, &captions, seeds.clone(), &gen)?;
        let report = referee.evaluate(&images, &labels)?;
        if let Some(dir) = &a.grids {
            std::fs::create_dir_all(dir)?;
            save_png(
                &grid(&images, a.n, 2),
                &dir.join(format!("grid-cfg{scale}.png")),
            )?;
        }
        tracing::info!(scale, both = report.both, "text-to-image");
        by_scale.insert(format!("{scale}"), report);
        if a.scenes > 0 {
            let images = draw(&model, &scene_captions, seeds.clone(), &gen)?;
            let skills = scene_prompts.judge(&images, a.n);
            if let Some(dir) = &a.grids {
                save_png(
                    &grid(&images, a.n, 2),
                    &dir.join(format!("scenes-grid-cfg{scale}.png")),
                )?;
            }
            tracing::info!(scale, all = skills.all, "procedural scenes");
            scenes_by_scale.insert(format!("{scale}"), skills);
        }
    }
    let scenes_report = if a.scenes > 0 {
        json!({
            "prompts": a.scenes,
            "images_per_prompt": a.n,
            "ceiling": scene_prompts.ceiling(&model.tokenizer)?,
            "by_guidance": scenes_by_scale,
        })
    } else {
        serde_json::Value::Null
    };
    write_json(
        &a.json,
        &json!({
            "split": a.split.as_str(),
            "captions": combos.len(),
            "images_per_caption": a.n,
            "first_seed": a.first_seed,
            "temperature": a.temperature,
            "top_k": a.top_k,
            "top_p": a.top_p,
            "by_guidance": by_scale,
            "scenes": scenes_report,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    )
}
