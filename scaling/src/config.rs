//! The sweep's config (`configs/scaling/*.toml`): one training recipe, the family of LM sizes it
//! is applied to, the held-out size the fits must predict, and the codebook sweep.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vqrae_lm::LlamaConfig;
use vqrae_train::optim::AdamWConfig;

use crate::error::{Result, ScalingError};
use vqrae_lm::LmShape;

/// One LM of the family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    pub name: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// MLP width; default `8/3 * hidden_size` rounded up to a multiple of 8 (LLaMA's ratio).
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    /// Peak learning rate: smaller models take larger steps.
    pub lr: f64,
}

impl SizeSpec {
    fn intermediate(&self) -> usize {
        self.intermediate_size
            .unwrap_or_else(|| (self.hidden_size * 8).div_ceil(3).div_ceil(8) * 8)
    }

    /// The LM's config for a vocabulary and context.
    pub(crate) fn llama_config(&self, vocab_size: usize, context: usize) -> Result<LlamaConfig> {
        let shape = LmShape {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate(),
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: None,
            max_position_embeddings: context,
            rope_theta: 10_000.0,
            tie_word_embeddings: false,
        };
        shape
            .llama_config(vocab_size)
            .map_err(|e| ScalingError::Config(format!("size {}: {e}", self.name)))
    }
}

/// How much each run trains: the same tokens for every size (one curve per size, the compute
/// frontier across them) or the same FLOPs (`C = 6 N D`, so smaller models see more tokens).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Budget {
    Tokens(u64),
    Flops(f64),
}

impl Budget {
    /// Tokens a model of `n` non-embedding parameters trains on.
    pub(crate) fn tokens(&self, n: usize) -> f64 {
        match *self {
            Budget::Tokens(t) => t as f64,
            Budget::Flops(c) => c / (6.0 * n as f64),
        }
    }
}

/// Where the training and held-out images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Also train on the mirror image of every training image: easy-VQA's captions name colour
    /// and shape only, which a left-right mirror keeps, and its triangles stay upright (a
    /// rotation would draw shapes the data never has). Twice the distinct sequences.
    #[serde(default)]
    pub mirror: bool,
    /// Use only this many training images (0: all).
    #[serde(default)]
    pub train_limit: usize,
    /// Held-out images (from the test split) the validation loss is measured on.
    pub val_images: usize,
    /// Procedural scenes (the fixed training split) trained on beside easy-VQA; their mirror
    /// images (the scene reflected and drawn again, its caption's left and right swapped) too
    /// with `mirror`. 0: easy-VQA only.
    #[serde(default)]
    pub scenes: usize,
    /// Held-out scenes (the test split) in the validation set, interleaved with easy-VQA's.
    #[serde(default)]
    pub val_scenes: usize,
}

/// Generation quality at the end of each run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    /// The referee of the unified-LM issue (`vqrae train-referee`).
    pub referee: PathBuf,
    /// One fixed guidance scale for every run.
    pub guidance: f64,
    /// Images per colour-shape caption of the test split (and per scene prompt).
    pub images_per_caption: usize,
    /// Held-out scenes whose captions are drawn and judged per skill (count, colour,
    /// position) by the exact scene judge. 0: no scene quality.
    #[serde(default)]
    pub scene_prompts: usize,
}

/// The second sweep: one LM size on the codes of several tokenizers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodebookSweep {
    /// Name of the size (from `sizes`) trained on each tokenizer's codes.
    pub size: String,
    pub tokenizers: Vec<PathBuf>,
}

/// What `--smoke` shrinks: the same pipeline in a few minutes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeSpec {
    pub budget_tokens: u64,
    pub train_limit: usize,
    pub val_images: usize,
    pub images_per_caption: usize,
    /// Sizes kept (by name; empty: all), and the codebook sweep's tokenizers kept.
    #[serde(default)]
    pub sizes: Vec<String>,
    #[serde(default)]
    pub codebook_tokenizers: usize,
    #[serde(default)]
    pub scene_prompts: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    pub name: String,
    pub seed: u64,
    /// The frozen tokenizer whose codes the main family learns.
    pub tokenizer: PathBuf,
    pub data: DataSpec,
    /// BPE size over the training captions.
    pub text_vocab_size: usize,
    /// Share of captions dropped (the null prompt of guidance).
    pub caption_dropout: f64,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    pub budget: Budget,
    /// Linear warm-up steps (at most a tenth of a run), then cosine to `min_lr_ratio * lr`.
    pub warmup_steps: u64,
    pub min_lr_ratio: f64,
    pub grad_clip: f64,
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Validation points per run, spaced evenly in log(steps).
    pub evals: usize,
    /// `L(C)` is fitted on the frontier of the points at or after this share of their run:
    /// the first steps (warm-up, the fall from the uniform guess) are a transient, not the
    /// power law, and would dominate the fit.
    #[serde(default = "default_fit_from")]
    pub fit_from: f64,
    pub checkpoint_every: u64,
    pub quality: QualitySpec,
    /// The family the fits are made on.
    pub sizes: Vec<SizeSpec>,
    /// One size above the family: the fits predict its loss before it is trained.
    pub predict: SizeSpec,
    #[serde(default)]
    pub codebook: Option<CodebookSweep>,
    pub smoke: SmokeSpec,
}

fn default_fit_from() -> f64 {
    0.25
}

impl ScalingConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let cfg: Self = vqrae_data::fs::read_toml(path)?;
        cfg.validate()
            .map_err(|e| ScalingError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// The same sweep shrunk to a CI-sized run (see [`SmokeSpec`]).
    pub fn smoke(&self) -> Result<Self> {
        let s = &self.smoke;
        let mut cfg = self.clone();
        cfg.name = format!("{}-smoke", self.name);
        cfg.budget = Budget::Tokens(s.budget_tokens);
        cfg.data.train_limit = s.train_limit;
        cfg.data.val_images = s.val_images;
        cfg.data.val_scenes = cfg.data.val_scenes.min(s.val_images);
        cfg.quality.images_per_caption = s.images_per_caption;
        cfg.quality.scene_prompts = cfg.quality.scene_prompts.min(s.scene_prompts);
        if !s.sizes.is_empty() {
            cfg.sizes.retain(|z| s.sizes.contains(&z.name));
        }
        if let Some(cb) = cfg.codebook.as_mut() {
            cb.tokenizers.truncate(s.codebook_tokenizers);
            if cb.tokenizers.is_empty() || !cfg.sizes.iter().any(|z| z.name == cb.size) {
                cfg.codebook = None;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ScalingError::Config(m));
        if self.sizes.len() < 3 {
            return bad(format!(
                "{} sizes: a fit of L(N) = a N^-alpha + L_inf needs at least 3",
                self.sizes.len()
            ));
        }
        let mut names = HashSet::new();
        for s in self.sizes.iter().chain([&self.predict]) {
            if !names.insert(s.name.as_str()) {
                return bad(format!("size name {:?} is used twice", s.name));
            }
            if !(s.lr.is_finite() && s.lr > 0.0) {
                return bad(format!("size {}: lr must be > 0, got {}", s.name, s.lr));
            }
            // heads must divide the width, and so on: the LM's own checks, with the size's name
            s.llama_config(16, 16)?;
        }
        if self.batch_size == 0 {
            return bad("batch_size must be > 0".into());
        }
        match self.budget {
            Budget::Tokens(0) => return bad("budget: zero tokens is zero steps".into()),
            Budget::Flops(c) if !(c.is_finite() && c > 0.0) => {
                return bad(format!("budget: {c} FLOPs is zero steps"))
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&self.caption_dropout) {
            return bad(format!(
                "caption_dropout {} is not in [0, 1)",
                self.caption_dropout
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio {} is not in [0, 1]",
                self.min_lr_ratio
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!("grad_clip {} must be > 0", self.grad_clip));
        }
        if !(0.0..1.0).contains(&self.fit_from) {
            return bad(format!("fit_from {} is not in [0, 1)", self.fit_from));
        }
        if self.evals < 2 || self.checkpoint_every == 0 {
            return bad("evals must be >= 2 and checkpoint_every > 0".into());
        }
        if self.data.val_images == 0 {
            return bad("data.val_images must be > 0".into());
        }
        let q = &self.quality;
        if !(q.guidance.is_finite() && q.guidance >= 0.0) || q.images_per_caption == 0 {
            return bad("quality: guidance must be >= 0 and images_per_caption > 0".into());
        }
        if q.scene_prompts > 0 && self.data.scenes == 0 {
            return bad(format!(
                "quality.scene_prompts = {}: the LMs learn no scene captions (data.scenes = 0)",
                q.scene_prompts
            ));
        }
        if let Some(cb) = &self.codebook {
            if !self.sizes.iter().any(|s| s.name == cb.size) {
                return bad(format!("codebook.size {:?} is not one of sizes", cb.size));
            }
            if cb.tokenizers.is_empty() {
                return bad("codebook.tokenizers is empty".into());
            }
        }
        self.adamw.validate()?;
        Ok(())
    }

    /// The family's sizes and then the held-out one.
    pub(crate) fn all_sizes(&self) -> impl Iterator<Item = &SizeSpec> {
        self.sizes.iter().chain([&self.predict])
    }

    pub(crate) fn size(&self, name: &str) -> Option<&SizeSpec> {
        self.all_sizes().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(name: &str, d: usize, layers: usize, heads: usize) -> SizeSpec {
        SizeSpec {
            name: name.into(),
            hidden_size: d,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: None,
            lr: 1e-3,
        }
    }

    fn config() -> ScalingConfig {
        ScalingConfig {
            name: "t".into(),
            seed: 0,
            tokenizer: "models/tokenizer-easyvqa".into(),
            data: DataSpec {
                mirror: false,
                train_limit: 0,
                val_images: 8,
                scenes: 0,
                val_scenes: 0,
            },
            text_vocab_size: 300,
            caption_dropout: 0.1,
            batch_size: 4,
            budget: Budget::Tokens(1000),
            warmup_steps: 2,
            min_lr_ratio: 0.1,
            grad_clip: 1.0,
            adamw: AdamWConfig::default(),
            evals: 3,
            fit_from: 0.25,
            checkpoint_every: 10,
            quality: QualitySpec {
                referee: "models/referee-easyvqa".into(),
                guidance: 2.0,
                images_per_caption: 1,
                scene_prompts: 0,
            },
            sizes: vec![
                size("a", 16, 1, 2),
                size("b", 32, 1, 2),
                size("c", 32, 2, 2),
            ],
            predict: size("d", 64, 2, 4),
            codebook: None,
            smoke: SmokeSpec {
                budget_tokens: 100,
                train_limit: 16,
                val_images: 4,
                images_per_caption: 1,
                sizes: vec![],
                codebook_tokenizers: 0,
                scene_prompts: 0,
            },
        }
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(config().validate().is_ok());
        let err = |f: &dyn Fn(&mut ScalingConfig)| {
            let mut c = config();
            f(&mut c);
            c.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(&|c| c.budget = Budget::Tokens(0)).contains("zero steps"));
        assert!(err(&|c| c.budget = Budget::Flops(0.0)).contains("zero steps"));
        assert!(err(&|c| c.sizes[1].num_attention_heads = 3).contains("size b"));
        assert!(err(&|c| c.sizes.truncate(2)).contains("at least 3"));
        assert!(err(&|c| c.predict.name = "a".into()).contains("twice"));
        assert!(err(&|c| c.sizes[0].lr = 0.0).contains("lr"));
        assert!(err(&|c| c.quality.scene_prompts = 4).contains("data.scenes = 0"));
        assert!(err(&|c| {
            c.codebook = Some(CodebookSweep {
                size: "zz".into(),
                tokenizers: vec!["x".into()],
            })
        })
        .contains("zz"));
    }

    #[test]
    fn default_mlp_width_is_llamas_ratio() {
        assert_eq!(size("a", 96, 1, 2).intermediate(), 256);
        assert_eq!(size("a", 64, 1, 2).intermediate(), 176);
    }

    #[test]
    fn flops_budget_gives_smaller_models_more_tokens() {
        let b = Budget::Flops(6e9);
        assert_eq!(b.tokens(1000), 1e6);
        assert_eq!(b.tokens(10_000), 1e5);
        assert_eq!(Budget::Tokens(5).tokens(123), 5.0);
    }

    #[test]
    fn smoke_keeps_the_pipeline_and_shrinks_the_work() -> Result<()> {
        let mut c = config();
        c.smoke.sizes = vec!["a".into(), "b".into(), "c".into()];
        let s = c.smoke()?;
        assert_eq!(s.budget, Budget::Tokens(100));
        assert_eq!(s.data.train_limit, 16);
        assert_eq!(s.sizes.len(), 3);
        assert!(s.name.ends_with("-smoke"));
        Ok(())
    }
}
