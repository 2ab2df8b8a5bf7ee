//! The projector of LLaVA-1.5: `Linear(d -> D) -> GELU -> Linear(D -> D)`, mapping the frozen
//! encoder's patch features `Z_I` into the LM's embedding space. Tensor names follow HF LLaVA
//! (`linear_1`, `linear_2`) under whatever prefix the caller gives.

use candle_core::{Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use vqrae_train::ops;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Encoder feature width `d`.
    pub input_dim: usize,
    /// LM hidden width `D`.
    pub output_dim: usize,
}

#[derive(Clone, Debug)]
pub struct Projector {
    linear_1: Linear,
    linear_2: Linear,
}

impl Projector {
    pub fn new(cfg: &ProjectorConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.input_dim == 0 || cfg.output_dim == 0 {
            candle_core::bail!("projector dims must be > 0, got {cfg:?}");
        }
        Ok(Self {
            linear_1: linear(cfg.input_dim, cfg.output_dim, vb.pp("linear_1"))?,
            linear_2: linear(cfg.output_dim, cfg.output_dim, vb.pp("linear_2"))?,
        })
    }

    /// Features `(..., d)` to LM embeddings `(..., D)` (erf GELU, as LLaVA; differentiable),
    /// through the workspace's one ops switch (its fused kernels on CPU f32).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let hidden = ops::gelu(&ops::linear(&self.linear_1, features)?, false)?;
        ops::linear(&self.linear_2, &hidden)
    }
}
