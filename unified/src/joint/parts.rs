//! The trainable state of a run ([`Parts`]): the LM and the projector, their variables, and
//! the optimizer a phase trains them with.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_train::checkpoint;
use vqrae_train::init::SeededVarMap;
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_understand::{Projector, ProjectorConfig};

use super::config::Phase;
use crate::error::Result;

/// Trainable state: the LM and projector variables and the built modules.
pub(crate) struct Parts {
    pub(crate) lm: Llama,
    pub(crate) projector: Projector,
    pub(crate) projector_cfg: ProjectorConfig,
    lm_vars: HashMap<String, Var>,
    projector_vars: HashMap<String, Var>,
}

impl Parts {
    /// A fresh LM (seeded by `seed`) and projector (by `seed + 1`) in f32; the projector maps
    /// features of width `feature_dim` to the LM's hidden size.
    pub(crate) fn init(
        llama_cfg: &LlamaConfig,
        feature_dim: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let lm_map = SeededVarMap::new(seed);
        let lm = Llama::new(llama_cfg, lm_map.var_builder(DType::F32, device))?;
        let proj_map = SeededVarMap::new(seed.wrapping_add(1));
        let projector_cfg = ProjectorConfig {
            input_dim: feature_dim,
            output_dim: llama_cfg.hidden_size,
        };
        let projector = Projector::new(&projector_cfg, proj_map.var_builder(DType::F32, device))?;
        Ok(Self {
            lm,
            projector,
            projector_cfg,
            lm_vars: checkpoint::var_map_vars(&lm_map.varmap)?,
            projector_vars: checkpoint::var_map_vars(&proj_map.varmap)?,
        })
    }

    /// The projector's weights under the names its saved file uses.
    pub(crate) fn projector_tensors(&self) -> HashMap<String, Tensor> {
        self.projector_vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// All variables under the names checkpoints use (`projector.` prefix for the projector).
    pub(crate) fn all_vars(&self) -> HashMap<String, Var> {
        let mut all = self.lm_vars.clone();
        for (k, v) in &self.projector_vars {
            all.insert(format!("projector.{k}"), v.clone());
        }
        all
    }

    /// A fresh optimizer over the parts `phase` trains, each with its schedule.
    pub(crate) fn optimizer(&self, phase: &Phase, adamw: &AdamWConfig) -> Result<AdamW> {
        let mut groups = Vec::new();
        if let Some(s) = &phase.lm_lr {
            groups.push(ParamGroup::new("lm", sorted(&self.lm_vars), s.clone()));
        }
        if let Some(s) = &phase.projector_lr {
            groups.push(ParamGroup::new(
                "projector",
                sorted(&self.projector_vars)
                    .into_iter()
                    .map(|(k, v)| (format!("projector.{k}"), v))
                    .collect(),
                s.clone(),
            ));
        }
        Ok(AdamW::new(groups, adamw.clone())?)
    }
}

/// Variables sorted by name: the optimizer's groups (and so its state) in a fixed order.
fn sorted(vars: &HashMap<String, Var>) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
