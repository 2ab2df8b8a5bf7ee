//! Held-out procedural scenes as text-to-image prompts: their captions are drawn, the exact
//! scene judge scores the images per skill, and the same judge on a tokenizer's reconstructions
//! of the scenes' own renders is the ceiling no LM drawing through that tokenizer can pass.

use image::RgbImage;
use vqrae_data::scenes::{render, Scene, SceneConfig};
use vqrae_tokenizer::Vqrae;

use crate::error::Result;
use crate::scene_judge::{judge, rates, JudgeConfig, SkillRates, SkillVerdicts};

/// Held-out scenes whose captions an LM draws, and the configuration they were made with.
pub struct ScenePrompts<'a> {
    pub cfg: &'a SceneConfig,
    pub scenes: &'a [Scene],
}

impl ScenePrompts<'_> {
    /// The scene judge's rates on `images`, where image `i` was drawn for scene
    /// `i / per_scene`.
    pub fn judge(&self, images: &[RgbImage], per_scene: usize) -> SkillRates {
        let jc = JudgeConfig::default();
        let verdicts: Vec<SkillVerdicts> = images
            .iter()
            .enumerate()
            .map(|(i, img)| judge(img, &self.scenes[i / per_scene], self.cfg, &jc))
            .collect();
        rates(&verdicts)
    }

    /// The scene judge on `tokenizer`'s reconstructions of the scenes' own renders: what an LM
    /// drawing through this tokenizer can reach at best.
    pub fn ceiling(&self, tokenizer: &Vqrae) -> Result<SkillRates> {
        let renders: Vec<RgbImage> = self.scenes.iter().map(|s| render(self.cfg, s)).collect();
        Ok(self.judge(&tokenizer.reconstruct_images(&renders)?, 1))
    }
}
