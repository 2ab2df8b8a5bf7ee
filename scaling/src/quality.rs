//! Generation quality of a sweep's LM: images sampled at one fixed guidance scale for every
//! colour-shape caption, decoded by the sweep's tokenizer and read by the referee. The same
//! referee on the tokenizer's reconstructions of real test images is the ceiling: no LM on
//! these codes can do better than its tokenizer draws. Where the sweep also trains on
//! procedural scenes, the captions of held-out scenes are drawn too and the exact scene judge
//! scores them per skill (count, colour, position), with the same ceiling on reconstructions.

use image::RgbImage;
use vqrae_data::scenes::caption;
use vqrae_lm::{Llama, SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;

use crate::error::Result;
use vqrae_eval::referee::{Referee, RefereeReport, Verdict};
use vqrae_eval::scene_judge::SkillRates;
use vqrae_eval::scenes::ScenePrompts;
use vqrae_generate::sample::{GenerationConfig, ImageRequest, T2i};

/// A caption to draw and what the referee should read in its images.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Prompt {
    pub caption: String,
    pub label: Verdict,
}

/// The referee, what it judges and how the images are drawn: the same for every run of a sweep
/// (on one tokenizer).
pub(crate) struct QualityCheck<'a> {
    pub tokenizer: &'a Vqrae,
    pub referee: &'a Referee,
    pub prompts: &'a [Prompt],
    /// Images per prompt, seeds `0..per_caption`.
    pub per_caption: usize,
    pub guidance: f64,
}

impl QualityCheck<'_> {
    /// Images the LM draws for `captions`, `per_caption` seeds each, in caption order.
    fn draw(
        &self,
        lm: &Llama,
        text: &TextTokenizer,
        vocab: &UnifiedVocab,
        captions: &[String],
    ) -> Result<Vec<RgbImage>> {
        let (gh, gw) = self.tokenizer.config().grid();
        let t2i = T2i {
            lm,
            text,
            vocab,
            image_tokens: gh * gw,
        };
        let gen = GenerationConfig {
            guidance: self.guidance,
            sampling: SamplingConfig::default(),
        };
        let requests = ImageRequest::grid(captions, 0..self.per_caption as u64);
        let mut images = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(64) {
            let codes = t2i.sample_codes(chunk, &gen)?;
            images.extend(self.tokenizer.decode_codes(&codes)?);
        }
        Ok(images)
    }

    /// The referee's scores on images the LM draws for every prompt.
    pub(crate) fn generated(
        &self,
        lm: &Llama,
        text: &TextTokenizer,
        vocab: &UnifiedVocab,
    ) -> Result<RefereeReport> {
        let captions: Vec<String> = self.prompts.iter().map(|p| p.caption.clone()).collect();
        let images = self.draw(lm, text, vocab, &captions)?;
        let labels: Vec<Verdict> = self
            .prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.label, self.per_caption))
            .collect();
        Ok(self.referee.evaluate(&images, &labels)?)
    }

    /// The scene judge's per-skill rates on images the LM draws for each scene's caption.
    pub(crate) fn generated_scenes(
        &self,
        lm: &Llama,
        text: &TextTokenizer,
        vocab: &UnifiedVocab,
        prompts: &ScenePrompts<'_>,
    ) -> Result<SkillRates> {
        let captions: Vec<String> = prompts.scenes.iter().map(caption).collect();
        let images = self.draw(lm, text, vocab, &captions)?;
        Ok(prompts.judge(&images, self.per_caption))
    }

    /// The referee's scores on the tokenizer's reconstructions of real images.
    pub(crate) fn ceiling(&self, images: &[RgbImage], labels: &[Verdict]) -> Result<RefereeReport> {
        Ok(self
            .referee
            .evaluate(&self.tokenizer.reconstruct_images(images)?, labels)?)
    }

    /// The scene judge on the tokenizer's reconstructions of the prompts' own renders.
    pub(crate) fn scene_ceiling(&self, prompts: &ScenePrompts<'_>) -> Result<SkillRates> {
        Ok(prompts.ceiling(self.tokenizer)?)
    }
}
