//! The project's own ViT: a plain pre-LN ViT without class token, small enough to pretrain on
//! two CPU cores, with learned or sin-cos position embeddings and optional LayerScale.

use serde::{Deserialize, Serialize};

use super::{PosKind, VitNames, VitSpec};
use crate::vit::{Activation, BlockConfig, BlockNames};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbedKind {
    #[default]
    Learned,
    SinCos,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnVitConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub patch_size: usize,
    /// Resolution the position table is laid out for; other sizes interpolate it.
    pub image_size: usize,
    pub layer_norm_eps: f64,
    pub pos_embed: PosEmbedKind,
    /// Initial LayerScale value; `None` for no LayerScale.
    pub layer_scale: Option<f64>,
}

impl Default for OwnVitConfig {
    fn default() -> Self {
        Self {
            hidden_size: 192,
            num_layers: 6,
            num_heads: 3,
            mlp_ratio: 4.0,
            patch_size: 8,
            image_size: 64,
            layer_norm_eps: 1e-6,
            pos_embed: PosEmbedKind::Learned,
            layer_scale: None,
        }
    }
}

impl OwnVitConfig {
    pub(crate) fn spec(&self) -> VitSpec {
        let grid = self.image_size / self.patch_size.max(1);
        VitSpec {
            block: BlockConfig {
                dim: self.hidden_size,
                heads: self.num_heads,
                mlp_hidden: (self.hidden_size as f64 * self.mlp_ratio) as usize,
                eps: self.layer_norm_eps,
                act: Activation::Gelu,
                layer_scale: self.layer_scale,
                qkv_bias: true,
            },
            depth: self.num_layers,
            patch: self.patch_size,
            channels: 3,
            native_grid: (grid, grid),
            pos: match self.pos_embed {
                PosEmbedKind::Learned => PosKind::Learned,
                PosEmbedKind::SinCos => PosKind::SinCos,
            },
            cls_token: false,
        }
    }
}

pub(crate) const NAMES: VitNames = VitNames {
    patch: "patch_embed",
    cls: "",
    pos: "pos_embed",
    blocks: "blocks",
    block: BlockNames::OWN,
    norm: "norm",
};
