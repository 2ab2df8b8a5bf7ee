//! Adapters on a [`Llama`]: as side paths beside the frozen projections
//! ([`Llama::attach_adapters`]: training, and a quantized base), or folded into dense weights
//! ([`Llama::merge_adapters`]: inference on a dequantized base, at no cost per token).

use super::{Adapters, LoraTarget};
use crate::error::{LmError, Result};
use crate::fuse::Proj;
use crate::model::{Layer, Llama};

/// The projection of `layer` an adapter `target` sits on.
fn proj_mut(layer: &mut Layer, target: LoraTarget) -> &mut Proj {
    match target {
        LoraTarget::QProj => &mut layer.self_attn.q_proj,
        LoraTarget::KProj => &mut layer.self_attn.k_proj,
        LoraTarget::VProj => &mut layer.self_attn.v_proj,
        LoraTarget::OProj => &mut layer.self_attn.o_proj,
        LoraTarget::GateProj => &mut layer.mlp.gate_proj,
        LoraTarget::UpProj => &mut layer.mlp.up_proj,
        LoraTarget::DownProj => &mut layer.mlp.down_proj,
    }
}

impl Llama {
    /// Refuses adapters made for another shape, and a model whose q/k/v are already stacked
    /// (the stacked matrix would bypass the side paths).
    fn check_adapters(&self, adapters: &Adapters) -> Result<()> {
        let (a, m) = (adapters.base_config(), &self.cfg);
        let shape = |c: &crate::LlamaConfig| {
            (
                c.num_hidden_layers,
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim(),
            )
        };
        if shape(a) != shape(m) {
            return Err(LmError::Config(format!(
                "adapters for a base of (layers, hidden, ffn, heads, kv heads, head dim) {:?}, \
                 this model is {:?}",
                shape(a),
                shape(m)
            )));
        }
        if self.layers.iter().any(|l| l.self_attn.qkv.is_some()) {
            return Err(LmError::Config(
                "adapters must be attached or merged before fuse_for_inference".into(),
            ));
        }
        Ok(())
    }

    /// Adds every adapter as a side path `y = x W^T + scale (x A^T) B^T` beside its frozen
    /// projection. The side paths hold the adapters' variables, so an optimizer step on
    /// [`Adapters::varmap`] changes this model's output at once. Works on a quantized base
    /// (QLoRA); a dense one may instead [`Self::merge_adapters`] for inference.
    pub fn attach_adapters(&mut self, adapters: &Adapters) -> Result<()> {
        self.check_adapters(adapters)?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for target in LoraTarget::ALL {
                proj_mut(layer, target).set_lora(adapters.get(l, target).cloned());
            }
        }
        Ok(())
    }

    /// Folds every adapter into its dense projection (`W + scale B A`): the adapted model at the
    /// base's cost per token. A quantized base cannot take a merge (its blocks would have to be
    /// requantized): attach the adapters instead.
    pub fn merge_adapters(&mut self, adapters: &Adapters) -> Result<()> {
        self.check_adapters(adapters)?;
        if self.is_quantized() {
            return Err(LmError::Config(
                "a quantized base keeps its adapters as side paths (attach_adapters); \
                 merging needs the dequantized base"
                    .into(),
            ));
        }
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for target in LoraTarget::ALL {
                if adapters.get(l, target).is_none() {
                    continue;
                }
                let proj = proj_mut(layer, target);
                let w = proj.dense_weight()?;
                let merged = adapters.merged_weight(&w, l, target)?;
                *proj = Proj::new(candle_nn::Linear::new(merged, None));
            }
        }
        Ok(())
    }
}
