//! The joint training config (`configs/lm/*.toml`): the run's settings and its phases, each
//! with its own batch mix and trainable parts. [`JointConfig::validate`] rejects a config that
//! would fail or train nothing before any data is encoded.

use std::path::Path;

use candle_core::DType;
use serde::{Deserialize, Serialize};
use vqrae_lm::LmShape;
use vqrae_train::optim::AdamWConfig;
use vqrae_train::schedule::LrSchedule;

use crate::error::{Result, UnifiedError};

/// One phase of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub steps: u64,
    /// VQA examples per step (0: none).
    #[serde(default)]
    pub vqa_batch: usize,
    /// Text-to-image examples per step (0: none).
    #[serde(default)]
    pub t2i_batch: usize,
    /// Draw VQA examples so that every (question template, answer) pair is equally likely,
    /// instead of in proportion to the data (see `answer_prior_weights` in the examples module).
    #[serde(default)]
    pub balance_vqa: bool,
    /// Add each drawn yes/no question's counterfactual twin (same image, the colour or shape
    /// word swapped so that the answer flips; [`vqrae_understand::counterfactual`]) to the
    /// batch, so that the words alone cannot predict the answer.
    #[serde(default)]
    pub counterfactual_vqa: bool,
    /// Leave out the negated yes/no questions ("is there not a ...?"): a curriculum step, so
    /// that the answer is the match of word and image alone before negation flips it.
    #[serde(default)]
    pub skip_negated: bool,
    /// Train yes/no questions on reasoned answers, "<the image's attribute>, so <yes|no>"
    /// ([`vqrae_understand::reasoning`]), twins included: the model states what it sees, then
    /// compares two words instead of a word with the image.
    #[serde(default)]
    pub reasoned_vqa: bool,
    /// Draw text-to-image examples from the captioned images and their left-right mirrors
    /// ([`JointData::mirror_codes`](super::JointData::mirror_codes)): twice the images.
    /// easy-VQA's captions name colour and shape, which a mirror keeps, and its triangles stay
    /// upright.
    #[serde(default)]
    pub mirror_t2i: bool,
    /// Draw text-to-image examples from this many shifted copies of each captioned image too
    /// (the first of [`JointData::shifted_codes`](super::JointData::shifted_codes), made by
    /// [`vqrae_generate::augment::random_placement`]): the shape moved elsewhere on its
    /// background, mirrored half of the time; the caption stays true. 0: none.
    #[serde(default)]
    pub shifted_copies: usize,
    /// Procedural-scene text-to-image examples per step (0: none), drawn from the config's
    /// `scenes` training scenes and their mirrors
    /// ([`JointData::scene_codes`](super::JointData::scene_codes)).
    #[serde(default)]
    pub scene_t2i_batch: usize,
    /// The LM's schedule; absent: the LM is frozen in this phase.
    #[serde(default)]
    pub lm_lr: Option<LrSchedule>,
    /// The projector's schedule; absent: the projector is frozen in this phase.
    #[serde(default)]
    pub projector_lr: Option<LrSchedule>,
}

/// The joint training config (`configs/lm/*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointConfig {
    pub seed: u64,
    /// Size of the BPE trained on the training captions, questions and answers.
    pub text_vocab_size: usize,
    /// Share of text-to-image examples whose caption is dropped (the null prompt of guidance).
    pub caption_dropout: f64,
    pub grad_clip: f64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// The saved model's LM and projector dtype ("f32", "f16" or "bf16"); loading converts.
    #[serde(default = "default_save_dtype")]
    pub save_dtype: String,
    pub lm: LmShape,
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Procedural training scenes (the fixed training split's first) rendered and encoded, each
    /// with its mirror, for the phases with `scene_t2i_batch`. 0: none.
    #[serde(default)]
    pub scenes: usize,
    pub phases: Vec<Phase>,
}

fn default_save_dtype() -> String {
    "f32".into()
}

/// The dtype a config names (`save_dtype`).
pub(crate) fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(UnifiedError::Config(format!(
            "dtype must be f32, f16 or bf16, got {other:?}"
        ))),
    }
}

impl JointConfig {
    /// Whether a phase draws text-to-image examples from mirrored images too.
    pub fn uses_mirrors(&self) -> bool {
        self.phases.iter().any(|p| p.mirror_t2i && p.t2i_batch > 0)
    }

    /// How many shifted copies of each training image the phases need (0: none).
    pub fn shifted_copies_needed(&self) -> usize {
        self.phases
            .iter()
            .filter(|p| p.t2i_batch > 0)
            .map(|p| p.shifted_copies)
            .max()
            .unwrap_or(0)
    }

    /// Reads and validates a config file; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let cfg: Self = vqrae_data::fs::read_toml(path)?;
        cfg.validate()
            .map_err(|e| UnifiedError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(UnifiedError::Config(m));
        if self.phases.is_empty() {
            return bad("no training phases".into());
        }
        if !(0.0..1.0).contains(&self.caption_dropout) {
            return bad(format!(
                "caption_dropout {} is not in [0, 1)",
                self.caption_dropout
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!("grad_clip {} must be > 0", self.grad_clip));
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("checkpoint_every and log_every must be > 0".into());
        }
        parse_dtype(&self.save_dtype)?;
        self.adamw.validate()?;
        self.lm.llama_config(self.text_vocab_size.max(1) + 1)?;
        for p in &self.phases {
            let name = &p.name;
            if p.steps == 0 {
                return bad(format!("phase {name}: zero steps"));
            }
            if p.vqa_batch + p.t2i_batch + p.scene_t2i_batch == 0 {
                return bad(format!(
                    "phase {name}: no examples (vqa_batch = t2i_batch = scene_t2i_batch = 0)"
                ));
            }
            if p.scene_t2i_batch > 0 && self.scenes == 0 {
                return bad(format!(
                    "phase {name}: scene_t2i_batch needs training scenes (scenes > 0)"
                ));
            }
            if (p.counterfactual_vqa || p.skip_negated || p.reasoned_vqa) && p.vqa_batch == 0 {
                return bad(format!(
                    "phase {name}: counterfactual_vqa, skip_negated and reasoned_vqa need VQA \
                     examples (vqa_batch > 0)"
                ));
            }
            if p.lm_lr.is_none() && p.projector_lr.is_none() {
                return bad(format!(
                    "phase {name}: nothing trains (no lm_lr, no projector_lr)"
                ));
            }
            if p.shifted_copies > 0 && p.t2i_batch == 0 {
                return bad(format!(
                    "phase {name}: shifted_copies without text-to-image examples (t2i_batch = 0)"
                ));
            }
            if p.lm_lr.is_none() && p.t2i_batch + p.scene_t2i_batch > 0 {
                return bad(format!(
                    "phase {name}: text-to-image examples with a frozen LM train nothing"
                ));
            }
            for s in p.lm_lr.iter().chain(p.projector_lr.iter()) {
                s.validate()?;
            }
        }
        Ok(())
    }

    /// Steps of all phases together.
    pub(crate) fn total_steps(&self) -> u64 {
        self.phases.iter().map(|p| p.steps).sum()
    }

    /// The phase that step `s` (0-based, the step about to run) belongs to, and its first step.
    pub(crate) fn phase_at(&self, s: u64) -> Option<(usize, u64)> {
        vqrae_train::schedule::phase_at(self.phases.iter().map(|p| p.steps), s)
    }
}
