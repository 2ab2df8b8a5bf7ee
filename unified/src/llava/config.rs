//! The LLaVA training config (`configs/llava/*.toml`): the data mix, the adapters, and the
//! phases (phase 1 the projector alone, phase 2 the projector and the adapters; with a
//! `[generation]` table, a phase may also teach text-to-image through learned image rows).
//! [`LlavaConfig::validate`] rejects a config that would fail or train nothing before the
//! slow work (loading a 135M-parameter LM, encoding images) starts.

use std::path::PathBuf;

use super::model::VqaFeatures;
use serde::{Deserialize, Serialize};
use vqrae_lm::lora::LoraConfig;
use vqrae_tokenizer::mixed::MixedData;
use vqrae_train::optim::AdamWConfig;
use vqrae_train::schedule::LrSchedule;

use crate::error::{Result, UnifiedError};

/// One phase: which parts train, at what rate, for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlavaPhase {
    pub name: String,
    pub steps: u64,
    /// The projector's schedule; absent: frozen in this phase.
    #[serde(default)]
    pub projector_lr: Option<LrSchedule>,
    /// The adapters' schedule; absent: frozen (phase 1 trains the projector alone).
    #[serde(default)]
    pub adapters_lr: Option<LrSchedule>,
    /// Text-only conversations per step (the base's own replies to instructions), so that
    /// training on images does not make it forget how to chat. Phase 1 needs none: with the
    /// adapters frozen at zero the LM is the base exactly.
    #[serde(default)]
    pub text_per_step: usize,
    /// Captioned images drawn as text-to-image examples per step (needs `[generation]`).
    #[serde(default)]
    pub t2i_per_step: usize,
    /// The image rows' schedule; absent: frozen in this phase.
    #[serde(default)]
    pub image_rows_lr: Option<LrSchedule>,
}

/// Text-to-image through the same adapters: the codes of a VQRAE tokenizer as image tokens,
/// learned as rows beside the frozen vocabulary ([`super::image_rows`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationData {
    /// The tokenizer checkpoint directory whose codes are the image tokens (copied into the
    /// model directory as `tokenizer/`).
    pub tokenizer: PathBuf,
    /// The captioned training images: sources, caps and seed (a tokenizer `[data]` table).
    pub data: MixedData,
    /// Share of text-to-image examples drawn with the caption dropped: the null prompt that
    /// classifier-free guidance contrasts with.
    pub caption_dropout: f64,
    /// Where the replayed visual questions' features come from (and, in the saved model, the
    /// VQA path's): `"tokenizer"` for one encoder behind both paths (a stage-2 tokenizer).
    #[serde(default)]
    pub vqa_features: VqaFeatures,
}

/// The LLaVA training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlavaConfig {
    pub seed: u64,
    /// Side of the square the encoder sees (DINOv2-S: 112 px -> 8 x 8 = 64 patch tokens).
    pub resolution: u32,
    /// Visual questions per step.
    pub batch_size: usize,
    /// easy-VQA training images used (0: all 4,000), with their questions.
    #[serde(default)]
    pub easy_vqa_images: usize,
    /// Procedural training scenes (the fixed training split's first), with their questions.
    #[serde(default)]
    pub scenes: usize,
    pub grad_clip: f64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    #[serde(default)]
    pub adamw: AdamWConfig,
    pub lora: LoraConfig,
    pub phases: Vec<LlavaPhase>,
    /// Start from this LLaVA model directory's adapters and projector (its LoRA config must be
    /// `lora`) instead of fresh ones: a generation phase after a trained VQA model.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    #[serde(default)]
    pub generation: Option<GenerationData>,
}

impl LlavaConfig {
    /// Reads and validates a config file (`configs/llava/*.toml`).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self> {
        let cfg: Self = vqrae_data::fs::read_toml(path)?;
        cfg.validate().map_err(|e| match e {
            UnifiedError::Config(m) => UnifiedError::Config(format!("{}: {m}", path.display())),
            e => e,
        })?;
        Ok(cfg)
    }

    pub fn total_steps(&self) -> u64 {
        self.phases.iter().map(|p| p.steps).sum()
    }

    /// The phase of `step` and the step it started at.
    pub fn phase_at(&self, step: u64) -> Option<(usize, u64)> {
        vqrae_train::schedule::phase_at(self.phases.iter().map(|p| p.steps), step)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(UnifiedError::Config(msg));
        if self.resolution == 0 || self.resolution > 518 {
            return bad(format!(
                "resolution must be in 1..=518, got {}",
                self.resolution
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be >= 1".into());
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("checkpoint_every and log_every must be >= 1".into());
        }
        if !(self.grad_clip > 0.0 && self.grad_clip.is_finite()) {
            return bad(format!("grad_clip must be > 0, got {}", self.grad_clip));
        }
        if self.phases.is_empty() {
            return bad("no phases".into());
        }
        for p in &self.phases {
            if p.steps == 0 {
                return bad(format!("phase {:?} has 0 steps", p.name));
            }
            if p.projector_lr.is_none() && p.adapters_lr.is_none() && p.image_rows_lr.is_none() {
                return bad(format!("phase {:?} trains nothing", p.name));
            }
            if (p.t2i_per_step > 0 || p.image_rows_lr.is_some()) && self.generation.is_none() {
                return bad(format!(
                    "phase {:?} draws text-to-image examples or trains image rows without a \
                     [generation] table",
                    p.name
                ));
            }
        }
        if let Some(g) = &self.generation {
            if !(0.0..1.0).contains(&g.caption_dropout) {
                return bad(format!(
                    "generation.caption_dropout must be in [0, 1), got {}",
                    g.caption_dropout
                ));
            }
            g.data
                .validate()
                .map_err(|e| UnifiedError::Config(format!("generation.data: {e}")))?;
        }
        let l = &self.lora;
        if l.rank == 0 || !(l.alpha > 0.0 && l.alpha.is_finite()) {
            return bad(format!(
                "lora: rank must be >= 1 and alpha finite and > 0, got rank {} alpha {}",
                l.rank, l.alpha
            ));
        }
        if l.targets.is_empty() {
            return bad("lora.targets names no projection".into());
        }
        self.adamw
            .validate()
            .map_err(|e| UnifiedError::Config(e.to_string()))?;
        Ok(())
    }
}
