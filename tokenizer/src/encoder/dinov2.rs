//! DINOv2 (Hugging Face `Dinov2Model`): class token, learned position table with a class slot,
//! LayerScale, exact GELU.

use serde::{Deserialize, Serialize};

use super::{PosKind, VitNames, VitSpec};
use crate::vit::{Activation, BlockConfig, BlockNames};

/// The fields of HF's `Dinov2Config` this implementation uses, with HF's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub mlp_ratio: f64,
    pub patch_size: usize,
    pub image_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f64,
    pub layerscale_value: f64,
    pub hidden_act: Activation,
    pub qkv_bias: bool,
    pub use_swiglu_ffn: bool,
}

impl Default for Dinov2Config {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4.0,
            patch_size: 14,
            image_size: 518,
            num_channels: 3,
            layer_norm_eps: 1e-6,
            layerscale_value: 1.0,
            hidden_act: Activation::Gelu,
            qkv_bias: true,
            use_swiglu_ffn: false,
        }
    }
}

/// Keys of an HF `config.json` that map onto [`Dinov2Config`].
pub(crate) const HF_KEYS: &[&str] = &[
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "num_channels",
    "layer_norm_eps",
    "layerscale_value",
    "hidden_act",
    "qkv_bias",
    "use_swiglu_ffn",
];

impl Dinov2Config {
    pub(crate) fn spec(&self) -> Result<VitSpec, String> {
        if self.use_swiglu_ffn {
            return Err("DINOv2 with a SwiGLU MLP (dinov2-giant) is not supported".into());
        }
        let grid = self.image_size / self.patch_size.max(1);
        Ok(VitSpec {
            block: BlockConfig {
                dim: self.hidden_size,
                heads: self.num_attention_heads,
                mlp_hidden: (self.hidden_size as f64 * self.mlp_ratio) as usize,
                eps: self.layer_norm_eps,
                act: self.hidden_act,
                layer_scale: Some(self.layerscale_value),
                qkv_bias: self.qkv_bias,
            },
            depth: self.num_hidden_layers,
            patch: self.patch_size,
            channels: self.num_channels,
            native_grid: (grid, grid),
            pos: PosKind::LearnedWithCls,
            cls_token: true,
        })
    }
}

pub(crate) const NAMES: VitNames = VitNames {
    patch: "embeddings.patch_embeddings.projection",
    cls: "embeddings.cls_token",
    pos: "embeddings.position_embeddings",
    blocks: "encoder.layer",
    block: BlockNames {
        norm1: "norm1",
        q: "attention.attention.query",
        k: "attention.attention.key",
        v: "attention.attention.value",
        out: "attention.output.dense",
        ls1: "layer_scale1.lambda1",
        norm2: "norm2",
        fc1: "mlp.fc1",
        fc2: "mlp.fc2",
        ls2: "layer_scale2.lambda1",
    },
    norm: "layernorm",
};
