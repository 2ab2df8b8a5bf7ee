//! What a LLaVA run trains ([`LlavaParts`]): the frozen base (dequantized, so gradients can pass
//! through it to the projector), the low-rank adapters on it, and the projector, whose weights
//! are registered as the adapters' extra trainables so that one `VarMap` (and one adapter file)
//! holds everything a run changes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use vqrae_lm::lora::{Adapters, LoraConfig, LORA_PREFIX};
use vqrae_lm::{Llama, UnifiedVocab};
use vqrae_train::init::SeededVarMap;
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_understand::{Projector, ProjectorConfig};

use super::config::LlavaPhase;
use super::image_rows;
use crate::error::{Result, UnifiedError};

/// The prefix of the projector's tensors among the adapters' extras.
pub const PROJECTOR_PREFIX: &str = "projector.";

/// The base with adapters attached, the projector, and the variables of both; with
/// generation, the image rows too.
pub struct LlavaParts {
    pub lm: Llama,
    pub adapters: Adapters,
    pub projector: Projector,
    pub projector_cfg: ProjectorConfig,
    /// The image ids' vocabulary and rows (an adapter extra), when the run generates.
    pub image: Option<(UnifiedVocab, Tensor)>,
}

fn lm_err(e: vqrae_lm::LmError) -> UnifiedError {
    UnifiedError::Lm(Box::new(e))
}

/// The projector over the adapters' extras named `projector.*`.
pub fn projector_from(adapters: &Adapters, cfg: &ProjectorConfig) -> Result<Projector> {
    let tensors: HashMap<String, Tensor> = adapters
        .extra_names()
        .into_iter()
        .filter_map(|n| {
            let t = adapters.extra(n)?.clone();
            n.strip_prefix(PROJECTOR_PREFIX).map(|k| (k.to_string(), t))
        })
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, adapters.device());
    Ok(Projector::new(cfg, vb)?)
}

impl LlavaParts {
    /// Fresh adapters (B at zero: the model starts as the base) and a fresh projector (seeded by
    /// `seed`) on the frozen `base`, whose projections become side-path carriers.
    pub fn init(
        mut base: Llama,
        lora: LoraConfig,
        feature_dim: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut adapters = Adapters::new(base.config(), lora, device).map_err(lm_err)?;
        let projector_cfg = ProjectorConfig {
            input_dim: feature_dim,
            output_dim: base.config().hidden_size,
        };
        // the projector initialised as everywhere else (candle_nn's linear init), then handed
        // to the adapters as extras
        let fresh = SeededVarMap::new(seed);
        Projector::new(&projector_cfg, fresh.var_builder(DType::F32, device))?;
        let mut inits: Vec<(String, Tensor)> = vqrae_train::checkpoint::var_map_vars(&fresh.varmap)
            .map_err(|e| UnifiedError::Train(Box::new(e)))?
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        inits.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, init) in inits {
            adapters
                .register_extra(&format!("{PROJECTOR_PREFIX}{name}"), &init)
                .map_err(lm_err)?;
        }
        let projector = projector_from(&adapters, &projector_cfg)?;
        base.attach_adapters(&adapters).map_err(lm_err)?;
        Ok(Self {
            lm: base,
            adapters,
            projector,
            projector_cfg,
            image: None,
        })
    }

    /// Adapters and projector loaded from a trained model's file (`lora` must be their config)
    /// on the frozen `base`, to train further.
    pub fn from_adapters(
        mut base: Llama,
        adapters: Adapters,
        lora: &LoraConfig,
        projector_cfg: ProjectorConfig,
    ) -> Result<Self> {
        if adapters.config() != lora {
            return Err(UnifiedError::Config(format!(
                "the adapters to start from have the LoRA config {:?}, the run's is {lora:?}",
                adapters.config()
            )));
        }
        let projector = projector_from(&adapters, &projector_cfg)?;
        base.attach_adapters(&adapters).map_err(lm_err)?;
        Ok(Self {
            lm: base,
            adapters,
            projector,
            projector_cfg,
            image: None,
        })
    }

    /// Registers image rows for `codes` image codes (initialised by
    /// [`super::image_rows::init_rows`], seeded), trained as one more adapter extra.
    pub fn add_image_rows(&mut self, codes: usize, seed: u64) -> Result<()> {
        let vocab = image_rows::vocab_of(&self.lm, codes)?;
        let init = image_rows::init_rows(&self.lm, &vocab, seed)?;
        let rows = self
            .adapters
            .register_extra(image_rows::IMAGE_ROWS, &init)
            .map_err(lm_err)?;
        self.image = Some((vocab, rows));
        Ok(())
    }

    /// Every variable by the name checkpoints use.
    pub fn vars(&self) -> Result<HashMap<String, Var>> {
        Ok(self
            .adapters
            .named_vars()
            .map_err(lm_err)?
            .into_iter()
            .collect())
    }

    /// A fresh optimizer over what `phase` trains: the projector, the adapters, or both.
    pub fn optimizer(&self, phase: &LlavaPhase, adamw: &AdamWConfig) -> Result<AdamW> {
        let vars = self.adapters.named_vars().map_err(lm_err)?;
        let pick = |prefix: &str| -> Vec<(String, Var)> {
            vars.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .cloned()
                .collect()
        };
        let mut groups = Vec::new();
        if let Some(s) = &phase.projector_lr {
            groups.push(ParamGroup::new(
                "projector",
                pick(PROJECTOR_PREFIX),
                s.clone(),
            ));
        }
        if let Some(s) = &phase.adapters_lr {
            groups.push(ParamGroup::new("adapters", pick(LORA_PREFIX), s.clone()));
        }
        if let Some(s) = &phase.image_rows_lr {
            groups.push(ParamGroup::new(
                "image_rows",
                pick(image_rows::IMAGE_ROWS),
                s.clone(),
            ));
        }
        AdamW::new(groups, adamw.clone()).map_err(|e| UnifiedError::Train(Box::new(e)))
    }
}
