//! The training data of a joint run on easy-VQA ([`JointData::from_easy_vqa`]): the images
//! with their captions and questions, and the extra codes the config's phases draw on.

use std::collections::HashMap;
use std::time::Instant;

use image::RgbImage;
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::scenes::{self, Scene, SceneDataset};
use vqrae_tokenizer::Vqrae;

use super::config::JointConfig;
use super::data::JointData;
use crate::error::Result;

impl JointData {
    /// Encodes the first `limit` images of `ds` (0: all) with their captions and questions,
    /// plus what `cfg`'s phases draw on: mirrors (`mirror_t2i`), shifted copies
    /// (`shifted_copies`, seeded by the config's seed) and the first `scenes` procedural
    /// training scenes with their mirrors. Questions about images past `limit` are left out.
    pub fn from_easy_vqa(
        cfg: &JointConfig,
        ds: &EasyVqa,
        limit: usize,
        tokenizer: &Vqrae,
    ) -> Result<Self> {
        let n = if limit == 0 {
            ds.images.len()
        } else {
            limit.min(ds.images.len())
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
        let mut data = JointData::encode(tokenizer, &images, captions, questions)?;
        if cfg.uses_mirrors() {
            data = data.with_mirrors(tokenizer, &images)?;
        }
        let copies = cfg.shifted_copies_needed();
        if copies > 0 {
            data = data.with_shifted_copies(tokenizer, &images, copies, cfg.seed)?;
        }
        if cfg.scenes > 0 {
            let (renders, captions) = training_scenes(cfg.scenes);
            data = data.with_scenes(tokenizer, &renders, captions)?;
        }
        tracing::info!(
            images = n,
            mirrored = data.mirror_codes.len(),
            shifted = data.shifted_codes.len(),
            scenes = data.scene_codes.len(),
            seconds = started.elapsed().as_secs_f64(),
            "encoded the training images"
        );
        Ok(data)
    }
}

/// The first `n` procedural training scenes, each followed by its mirror: their renders and
/// their captions (each drawn and captioned from the scene itself).
fn training_scenes(n: usize) -> (Vec<RgbImage>, Vec<String>) {
    let ds = SceneDataset::split(Split::Train, n);
    let all: Vec<Scene> = ds
        .scenes
        .iter()
        .flat_map(|s| [s.clone(), s.mirrored()])
        .collect();
    let renders = all.iter().map(|s| scenes::render(&ds.cfg, s)).collect();
    (renders, all.iter().map(scenes::caption).collect())
}
