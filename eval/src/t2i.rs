//! The `eval-t2i` procedure: a unified model draws every distinct colour-shape caption of an
//! easy-VQA split with a range of seeds, at each guidance scale, and the referee reads colour
//! and shape off each image; optionally it also draws the captions of held-out procedural
//! scenes, which the exact scene judge scores per skill beside the ceiling of the model's own
//! tokenizer.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::easy_vqa::{ColorShape, EasyVqa, Split};
use vqrae_data::fs::sha256_model;
use vqrae_data::image_io::{grid, save_png};
use vqrae_data::scenes::{self, SceneDataset};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_unified::draws::ImageModel;

use crate::captioned_t2i::{CaptionedT2iReport, EmojiEval};
use crate::error::{EvalError, Result};
use crate::referee::{Referee, RefereeReport, Verdict};
use crate::scene_judge::SkillRates;
use crate::scenes::ScenePrompts;

/// What [`evaluate`] draws and how.
#[derive(Clone, Debug, PartialEq)]
pub struct T2iOptions {
    /// Guidance scales to measure, in this order.
    pub guidance: Vec<f64>,
    /// Images per caption, with seeds `first_seed .. first_seed + images_per_caption`.
    pub images_per_caption: usize,
    /// The first seed: settings chosen on one range of seeds are confirmed on another.
    pub first_seed: u64,
    /// How codes are drawn at each step (its seed is unused: each image has its own).
    pub sampling: SamplingConfig,
    /// Also draw the captions of this many held-out procedural scenes (the split's first).
    pub scenes: usize,
    /// Write `grid-cfg<S>.png` (and `scenes-grid-cfg<S>.png`), one row per caption, here.
    pub grids: Option<PathBuf>,
    /// Also draw emoji names at the first guidance scale and score them
    /// ([`crate::captioned_t2i`]).
    pub emoji: Option<EmojiEval>,
}

/// What `eval-t2i` reports. Printed through a `serde_json::Value`, whose keys come out sorted,
/// as this report always has been.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct T2iReport {
    /// The model directory that drew, the referee's directory, and each one's
    /// [`vqrae_data::fs::sha256_model`]: what identifies them once the paths hold others
    /// (empty in reports written before they were kept).
    #[serde(default)]
    pub model: PathBuf,
    #[serde(default)]
    pub model_sha256: String,
    #[serde(default)]
    pub referee: PathBuf,
    #[serde(default)]
    pub referee_sha256: String,
    pub split: Split,
    /// Distinct colour-shape captions drawn.
    pub captions: usize,
    pub images_per_caption: usize,
    pub first_seed: u64,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// The referee's report per guidance scale, keyed by the scale as written ("1", "2.5").
    pub by_guidance: BTreeMap<String, RefereeReport>,
    /// The procedural scenes, when asked for.
    pub scenes: Option<ScenesReport>,
    /// The emoji names, when asked for (at the first guidance scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<CaptionedT2iReport>,
    /// Wall-clock time of the evaluation (the model and referee already loaded).
    pub seconds: f64,
}

/// The procedural scenes' part of a [`T2iReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenesReport {
    pub prompts: usize,
    pub images_per_prompt: usize,
    /// The scene judge on the model tokenizer's reconstructions of the scenes' own renders:
    /// the best the model can do.
    pub ceiling: SkillRates,
    /// The scene judge's rates per guidance scale, keyed as [`T2iReport::by_guidance`].
    pub by_guidance: BTreeMap<String, SkillRates>,
}

/// Draws the distinct colour-shape captions of `dataset` (and, with `options.scenes`, held-out
/// procedural scenes' captions) with `model` at each guidance scale, and judges the images:
/// easy-VQA ones with the `referee` (which should be qualified:
/// [`Referee::load_qualified`]), scenes with the exact scene judge. `model_dir` and
/// `referee_dir` are the directories they were loaded from, recorded with their hashes.
pub fn evaluate(
    (model, model_dir): (&dyn ImageModel, &Path),
    (referee, referee_dir): (&Referee, &Path),
    dataset: &EasyVqa,
    options: &T2iOptions,
) -> Result<T2iReport> {
    let n = options.images_per_caption;
    if n == 0 || options.guidance.is_empty() {
        return Err(EvalError::Config(
            "need at least one image per caption and one guidance scale".into(),
        ));
    }
    let seeds = options.first_seed..options.first_seed.checked_add(n as u64).ok_or_else(|| {
        EvalError::Config("the first seed + images per caption is past the largest seed".into())
    })?;
    let started = Instant::now();
    let combos = color_shapes(dataset);
    let captions: Vec<String> = combos.iter().map(ColorShape::caption).collect();
    let labels = expected_verdicts(&combos, n);
    let scene_set = SceneDataset::split(dataset.split, options.scenes);
    let scene_prompts = ScenePrompts {
        cfg: &scene_set.cfg,
        scenes: &scene_set.scenes,
    };
    let scene_captions: Vec<String> = scene_set.scenes.iter().map(scenes::caption).collect();
    let mut by_guidance = BTreeMap::new();
    let mut scenes_by_guidance = BTreeMap::new();
    for &scale in &options.guidance {
        let gen = GenerationConfig {
            guidance: scale,
            sampling: options.sampling.clone(),
        };
        let images = draw(model, &captions, seeds.clone(), &gen)?;
        let report = referee.evaluate(&images, &labels)?;
        if let Some(dir) = &options.grids {
            std::fs::create_dir_all(dir).map_err(EvalError::io(dir))?;
            save_grid(&images, n, &dir.join(format!("grid-cfg{scale}.png")))?;
        }
        tracing::info!(scale, both = report.both, "text-to-image");
        by_guidance.insert(format!("{scale}"), report);
        if options.scenes > 0 {
            let images = draw(model, &scene_captions, seeds.clone(), &gen)?;
            let skills = scene_prompts.judge(&images, n);
            if let Some(dir) = &options.grids {
                save_grid(&images, n, &dir.join(format!("scenes-grid-cfg{scale}.png")))?;
            }
            tracing::info!(scale, all = skills.all, "procedural scenes");
            scenes_by_guidance.insert(format!("{scale}"), skills);
        }
    }
    let emoji = match &options.emoji {
        Some(e) => {
            let gen = GenerationConfig {
                guidance: options.guidance[0],
                sampling: options.sampling.clone(),
            };
            let size = model.image_tokenizer()?.config().image_size as u32;
            let mut draw = |r: &[ImageRequest]| model.generate(r, &gen).map_err(EvalError::from);
            Some(e.run(size, &mut draw)?)
        }
        None => None,
    };
    let scenes = if options.scenes > 0 {
        Some(ScenesReport {
            prompts: options.scenes,
            images_per_prompt: n,
            ceiling: scene_prompts.ceiling(model.image_tokenizer()?)?,
            by_guidance: scenes_by_guidance,
        })
    } else {
        None
    };
    Ok(T2iReport {
        model: model_dir.to_path_buf(),
        model_sha256: sha256_model(model_dir)?,
        referee: referee_dir.to_path_buf(),
        referee_sha256: sha256_model(referee_dir)?,
        split: dataset.split,
        captions: combos.len(),
        images_per_caption: n,
        first_seed: options.first_seed,
        temperature: options.sampling.temperature,
        top_k: options.sampling.top_k,
        top_p: options.sampling.top_p,
        by_guidance,
        scenes,
        emoji,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The distinct colour-shape pairs of the images of `dataset` whose colour and shape are
/// known, by colour then shape: the prompts, whose captions are drawn.
pub(crate) fn color_shapes(dataset: &EasyVqa) -> Vec<ColorShape> {
    let mut combos: Vec<ColorShape> = dataset
        .images
        .iter()
        .filter_map(|im| im.color_shape())
        .collect();
    combos.sort();
    combos.dedup();
    combos
}

/// What the referee should read in each drawn image: every prompt's pair `per_prompt` times,
/// in the order [`draw`] returns the images.
pub(crate) fn expected_verdicts(prompts: &[ColorShape], per_prompt: usize) -> Vec<Verdict> {
    prompts
        .iter()
        .flat_map(|&p| std::iter::repeat_n(p, per_prompt))
        .collect()
}

/// The images `model` draws for every caption with every seed, in caption order.
fn draw(
    model: &dyn ImageModel,
    captions: &[String],
    seeds: Range<u64>,
    gen: &GenerationConfig,
) -> Result<Vec<RgbImage>> {
    let requests = ImageRequest::grid(captions, seeds);
    let mut images = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(64) {
        images.extend(model.generate(chunk, gen)?);
    }
    Ok(images)
}

/// Saves `images` as a grid of `per_row` columns: one row per caption.
fn save_grid(images: &[RgbImage], per_row: usize, path: &Path) -> Result<()> {
    Ok(save_png(&grid(images, per_row, 2), path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vqrae_data::easy_vqa::EasyVqaImage;

    fn image(id: usize, color: Option<usize>, shape: Option<usize>) -> EasyVqaImage {
        EasyVqaImage {
            id,
            path: PathBuf::from(format!("{id}.png")),
            color,
            shape,
        }
    }

    #[test]
    fn prompts_are_the_distinct_known_pairs_and_labels_repeat_per_image() {
        let dataset = EasyVqa {
            split: Split::Test,
            images: vec![
                image(0, Some(2), Some(1)),
                image(1, Some(0), Some(2)),
                image(2, Some(2), Some(1)),
                image(3, None, Some(0)),
                image(4, Some(0), Some(0)),
            ],
            questions: Vec::new(),
            answers: Vec::new(),
        };
        let combos = color_shapes(&dataset);
        let captions: Vec<String> = combos.iter().map(ColorShape::caption).collect();
        assert_eq!(
            captions,
            ["a red circle", "a red triangle", "a blue rectangle"]
        );
        let labels = expected_verdicts(&combos, 2);
        assert_eq!(labels.len(), 6);
        assert_eq!(labels[0], labels[1]);
        assert_eq!(labels[4], Verdict { color: 2, shape: 1 });
        // the grid's row r holds caption r's images, as ImageRequest::grid orders them
        let requests = ImageRequest::grid(&captions, 5..7);
        for (r, l) in requests.iter().zip(&labels) {
            assert_eq!(r.caption, l.caption());
        }
        assert_eq!(requests[3].seed, 6);
    }
}
