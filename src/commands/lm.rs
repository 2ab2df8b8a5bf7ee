//! `train-lm`, `ask`, `generate`, `eval-vqa`, `eval-t2i`: the one LM on both paths.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use serde_json::json;
use vqrae_data::easy_vqa::{EasyVqa, Split, COLORS, SHAPES};
use vqrae_data::image_io::{grid, load_rgb, save_png};
use vqrae_data::scenes::{self, Scene, SceneDataset};
use vqrae_eval::referee::{Referee, Verdict};
use vqrae_eval::scenes::ScenePrompts;
use vqrae_eval::vqa::VqaScore;
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_tokenizer::Vqrae;
use vqrae_unified::joint::{self, JointConfig, JointData};
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
    let ds = load_easy_vqa(root, Split::Train)?;
    let n = if a.limit == 0 {
        ds.images.len()
    } else {
        a.limit.min(ds.images.len())
    };
    let index: HashMap<usize, usize> = ds.images[..n]
        .iter()
        .enumerate()
        .map(|(i, im)| (im.id, i))
        .collect();
    let images = ds.load_images(&(0..n).collect::<Vec<_>>())?;
    let captions = ds.images[..n].iter().map(|im| im.caption()).collect();
    let questions = ds
        .questions
        .iter()
        .filter_map(|q| {
            index
                .get(&q.image_id)
                .map(|&i| (i, q.question.clone(), q.answer.clone()))
        })
        .collect();
    let started = Instant::now();
    let tokenizer = Vqrae::load(&a.tokenizer, device, DType::F32)?;
    let mut data = JointData::encode(&tokenizer, &images, captions, questions)?;
    if cfg.uses_mirrors() {
        data = data.with_mirrors(&tokenizer, &images)?;
    }
    let copies = cfg.shifted_copies_needed();
    if copies > 0 {
        data = data.with_shifted_copies(&tokenizer, &images, copies, cfg.seed)?;
    }
    if cfg.scenes > 0 {
        // each training scene and its mirror, drawn and captioned from the scene itself
        let ds = SceneDataset::split(Split::Train, cfg.scenes);
        let all: Vec<Scene> = ds
            .scenes
            .iter()
            .flat_map(|s| [s.clone(), s.mirrored()])
            .collect();
        let renders: Vec<_> = all.iter().map(|s| scenes::render(&ds.cfg, s)).collect();
        data = data.with_scenes(
            &tokenizer,
            &renders,
            all.iter().map(scenes::caption).collect(),
        )?;
    }
    tracing::info!(
        images = n,
        mirrored = data.mirror_codes.len(),
        shifted = data.shifted_codes.len(),
        scenes = data.scene_codes.len(),
        seconds = started.elapsed().as_secs_f64(),
        "encoded the training images"
    );
    let summary = joint::train(&cfg, &data, &a.tokenizer, &a.run, device)?;
    if let Some(out) = &a.out {
        copy_dir(&summary.model_dir, out)?;
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Copies a model directory (two levels: files and sub-folders of files) via a temp sibling.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("tmp-copy");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    fn copy(from: &Path, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        for entry in
            std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            let dest = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy(&entry.path(), &dest)?;
            } else {
                std::fs::copy(entry.path(), &dest)
                    .with_context(|| format!("copying {}", entry.path().display()))?;
            }
        }
        Ok(())
    }
    copy(from, &tmp)?;
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::rename(&tmp, to)?;
    Ok(())
}

#[derive(Args)]
pub struct AskArgs {
    /// Model directory (tokenizer + LM), e.g. models/vqrae-easyvqa.
    #[arg(long)]
    model: PathBuf,
    /// The image.
    image: PathBuf,
    /// The question.
    question: String,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
}

pub fn ask(a: AskArgs, device: &Device) -> Result<()> {
    let model = UnifiedModel::load(&a.model, device, default_dtype(device))?;
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
    /// Model directory (tokenizer + LM), e.g. models/vqrae-easyvqa.
    #[arg(long)]
    model: PathBuf,
    /// The caption to draw, e.g. "a blue rectangle".
    prompt: String,
    /// Number of images.
    #[arg(short, default_value_t = 4)]
    n: usize,
    /// Classifier-free guidance scale (1: no guidance).
    #[arg(long = "cfg", default_value_t = 3.0)]
    guidance: f64,
    /// Seed of the first image; image i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
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
    let model = UnifiedModel::load(&a.model, device, default_dtype(device))?;
    let cfg = GenerationConfig {
        guidance: a.guidance,
        sampling: SamplingConfig {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
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
