//! The model's weights outside a `VarBuilder`: assembling a [`Llama`] from given parts (the
//! quantized GGUF form, whose projections are not tensors), and reading every weight back by
//! its HF name ([`Llama::tensors`]), dequantizing quantized projections.

use std::collections::HashMap;

use candle_core::Tensor;

use super::{rope_tables, Attention, Layer, Llama, Mlp, RmsNorm};
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};
use crate::fuse::Proj;

/// One decoder layer's weights given directly rather than through a `VarBuilder`: the
/// quantized GGUF form ([`crate::gguf`]), whose projections are not tensors.
pub(crate) struct LayerParts {
    pub(crate) input_layernorm: Tensor,
    pub(crate) post_attention_layernorm: Tensor,
    pub(crate) q_proj: Proj,
    pub(crate) k_proj: Proj,
    pub(crate) v_proj: Proj,
    pub(crate) o_proj: Proj,
    pub(crate) gate_proj: Proj,
    pub(crate) up_proj: Proj,
    pub(crate) down_proj: Proj,
}

impl Layer {
    fn from_parts(cfg: &LlamaConfig, p: LayerParts) -> Self {
        let eps = cfg.rms_norm_eps;
        Self {
            input_layernorm: RmsNorm {
                weight: p.input_layernorm,
                eps,
            },
            self_attn: Attention {
                q_proj: p.q_proj,
                k_proj: p.k_proj,
                v_proj: p.v_proj,
                o_proj: p.o_proj,
                qkv: None,
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim(),
            },
            post_attention_layernorm: RmsNorm {
                weight: p.post_attention_layernorm,
                eps,
            },
            mlp: Mlp {
                gate_proj: p.gate_proj,
                up_proj: p.up_proj,
                down_proj: p.down_proj,
            },
        }
    }

    fn projections(&self) -> impl Iterator<Item = (&'static str, &Proj)> {
        self.self_attn
            .projections()
            .into_iter()
            .chain(self.mlp.projections())
    }
}

/// A stored weight as [`Llama::tensors`] reads it: a tensor, or a projection that may have to
/// be dequantized first.
enum Stored<'a> {
    Tensor(&'a Tensor),
    Proj(&'a Proj),
}

impl Stored<'_> {
    fn get(&self) -> candle_core::Result<Tensor> {
        match self {
            Self::Tensor(t) => Ok((*t).clone()),
            Self::Proj(p) => p.dense_weight(),
        }
    }
}

impl Llama {
    /// A model from weights given directly (the quantized GGUF form): the embedding table
    /// `(vocab, hidden)` (dense: looked up by id), the layers, the final norm and the output
    /// head. Shapes are the caller's to check ([`crate::gguf`] checks them against the file).
    pub(crate) fn from_parts(
        cfg: &LlamaConfig,
        embed_tokens: Tensor,
        layers: Vec<LayerParts>,
        norm: Tensor,
        lm_head: Proj,
    ) -> Result<Self> {
        cfg.validate()?;
        let (cos, sin) = rope_tables(cfg, embed_tokens.dtype(), embed_tokens.device())
            .map_err(|e| LmError::candle("building the RoPE tables", e))?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers: layers
                .into_iter()
                .map(|p| Layer::from_parts(cfg, p))
                .collect(),
            norm: RmsNorm {
                weight: norm,
                eps: cfg.rms_norm_eps,
            },
            lm_head,
            cos,
            sin,
            fused: false,
        })
    }

    /// Whether any projection (or the output head) multiplies by quantized blocks (a GGUF
    /// loaded with [`crate::gguf::GgufFile::load_quantized`]). Such a model is for inference:
    /// training mode is refused, and [`Self::tensors`] dequantizes.
    pub fn is_quantized(&self) -> bool {
        self.lm_head.is_quantized()
            || self
                .layers
                .iter()
                .any(|l| l.projections().any(|(_, p)| p.is_quantized()))
    }

    /// Every stored weight by its HF name, in the order of HF's state dict.
    fn stored(&self) -> Vec<(String, Stored<'_>)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            Stored::Tensor(&self.embed_tokens),
        )];
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                Stored::Tensor(&layer.input_layernorm.weight),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                Stored::Tensor(&layer.post_attention_layernorm.weight),
            ));
            for (name, proj) in layer.projections() {
                out.push((format!("{p}.{name}.weight"), Stored::Proj(proj)));
            }
        }
        out.push((
            "model.norm.weight".to_string(),
            Stored::Tensor(&self.norm.weight),
        ));
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), Stored::Proj(&self.lm_head)));
        }
        out
    }

    /// Every stored tensor by its HF name (no `lm_head.weight` when tied). When the model was
    /// built from a `VarMap`, these share storage with its variables.
    ///
    /// On a quantized model ([`Self::is_quantized`]) each quantized projection is dequantized
    /// to f32 (a copy, rows in HF order: what [`crate::gguf::GgufFile::load_dequantized`]
    /// gives), never the raw blocks. Dequantizing a loaded tensor fails only when its device
    /// runs out of memory; such a tensor is then left out (and the failure logged), so that a
    /// checkpoint built from the map is refused as incomplete. [`Self::try_tensors`] returns
    /// the error instead.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, stored) in self.stored() {
            match stored.get() {
                Ok(t) => {
                    out.insert(name, t);
                }
                Err(e) => tracing::error!("tensors(): dequantizing {name} failed, left out: {e}"),
            }
        }
        out
    }

    /// [`Self::tensors`], with a failure to dequantize a quantized projection as an error
    /// naming the tensor.
    pub fn try_tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.stored()
            .into_iter()
            .map(|(name, stored)| {
                let t = stored
                    .get()
                    .map_err(|e| LmError::candle(format!("dequantizing {name}"), e))?;
                Ok((name, t))
            })
            .collect()
    }
}
