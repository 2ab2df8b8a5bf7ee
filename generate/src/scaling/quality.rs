//! Generation quality of a sweep's LM: images sampled at one fixed guidance scale for every
//! colour-shape caption, decoded by the sweep's tokenizer and read by the referee. The same
//! referee on the tokenizer's reconstructions of real test images is the ceiling: no LM on
//! these codes can do better than its tokenizer draws.

use image::RgbImage;
use vqrae_lm::{Llama, SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;

use crate::error::Result;
use crate::referee::{Referee, RefereeReport, Verdict};
use crate::sample::{GenerationConfig, ImageRequest, T2i};
use crate::unified::decode_codes;

/// A caption to draw and what the referee should read in its images.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub caption: String,
    pub label: Verdict,
}

/// The referee, what it judges and how the images are drawn: the same for every run of a sweep
/// (on one tokenizer).
pub struct QualityCheck<'a> {
    pub tokenizer: &'a Vqrae,
    pub referee: &'a Referee,
    pub prompts: &'a [Prompt],
    /// Images per prompt, seeds `0..per_caption`.
    pub per_caption: usize,
    pub guidance: f64,
}

impl QualityCheck<'_> {
    /// The referee's scores on images the LM draws for every prompt.
    pub fn generated(
        &self,
        lm: &Llama,
        text: &TextTokenizer,
        vocab: &UnifiedVocab,
    ) -> Result<RefereeReport> {
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
        let mut requests = Vec::new();
        let mut labels = Vec::new();
        for p in self.prompts {
            for seed in 0..self.per_caption as u64 {
                requests.push(ImageRequest {
                    caption: p.caption.clone(),
                    negative: None,
                    seed,
                });
                labels.push(p.label);
            }
        }
        let mut images = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(64) {
            let codes = t2i.sample_codes(chunk, &gen)?;
            images.extend(decode_codes(self.tokenizer, &codes, lm.device())?);
        }
        self.referee.evaluate(&images, &labels)
    }

    /// The referee's scores on the tokenizer's reconstructions of real images.
    pub fn ceiling(&self, images: &[RgbImage], labels: &[Verdict]) -> Result<RefereeReport> {
        let mut recon = Vec::with_capacity(images.len());
        for chunk in images.chunks(64) {
            let out = self
                .tokenizer
                .reconstruct(&self.tokenizer.images_to_input(chunk)?)?;
            recon.extend(self.tokenizer.output_to_images(&out)?);
        }
        self.referee.evaluate(&recon, labels)
    }
}
