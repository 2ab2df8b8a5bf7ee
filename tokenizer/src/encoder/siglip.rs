//! SigLIP vision tower (Hugging Face `SiglipVisionModel`; SigLIP 2 fixed-resolution checkpoints
//! use the same layout): no class token, learned `(N, d)` position table, tanh GELU,
//! post-layernorm. The attention-pooling head is not used: downstream takes patch tokens.

use serde::{Deserialize, Serialize};

use super::{PosKind, VitNames, VitSpec};
use crate::vit::{Activation, BlockConfig, BlockNames};

/// The fields of HF's `SiglipVisionConfig` this implementation uses, with HF's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiglipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: Activation::GeluTanh,
            layer_norm_eps: 1e-6,
        }
    }
}

pub(crate) const HF_KEYS: &[&str] = &[
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
];

impl SiglipVisionConfig {
    pub(crate) fn spec(&self) -> VitSpec {
        let grid = self.image_size / self.patch_size.max(1);
        VitSpec {
            block: BlockConfig {
                dim: self.hidden_size,
                heads: self.num_attention_heads,
                mlp_hidden: self.intermediate_size,
                eps: self.layer_norm_eps,
                act: self.hidden_act,
                layer_scale: None,
                qkv_bias: true,
            },
            depth: self.num_hidden_layers,
            patch: self.patch_size,
            channels: self.num_channels,
            native_grid: (grid, grid),
            pos: PosKind::Learned,
            cls_token: false,
        }
    }
}

pub(crate) const NAMES: VitNames = VitNames {
    patch: "embeddings.patch_embedding",
    cls: "",
    pos: "embeddings.position_embedding.weight",
    blocks: "encoder.layers",
    block: BlockNames {
        norm1: "layer_norm1",
        q: "self_attn.q_proj",
        k: "self_attn.k_proj",
        v: "self_attn.v_proj",
        out: "self_attn.out_proj",
        ls1: "",
        norm2: "layer_norm2",
        fc1: "mlp.fc1",
        fc2: "mlp.fc2",
        ls2: "",
    },
    norm: "post_layernorm",
};
