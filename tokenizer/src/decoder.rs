//! The pixel decoder: a ViT on the token grid (RAE-style: linear in, fixed 2-D sin-cos
//! positions, pre-LN blocks) and a linear head giving `p x p x 3` pixels per token, unpatchified.

use candle_core::{Result, Tensor};
use candle_nn::{linear_b, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::pos_embed::sincos_2d;
use crate::vit::{final_norm, Activation, BlockConfig, BlockNames, Blocks};
use vqrae_train::ops;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    /// Pixels per token side in the output; `None` takes the encoder's patch size, so the
    /// output has the input's resolution.
    pub patch_size: Option<usize>,
    pub layer_norm_eps: f64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 192,
            num_layers: 6,
            num_heads: 3,
            mlp_ratio: 4.0,
            patch_size: None,
            layer_norm_eps: 1e-6,
        }
    }
}

impl DecoderConfig {
    pub(crate) fn block(&self) -> BlockConfig {
        BlockConfig {
            dim: self.hidden_size,
            heads: self.num_heads,
            mlp_hidden: (self.hidden_size as f64 * self.mlp_ratio) as usize,
            eps: self.layer_norm_eps,
            act: Activation::Gelu,
            layer_scale: None,
            qkv_bias: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Decoder {
    embed: Linear,
    blocks: Blocks,
    norm: LayerNorm,
    head: Linear,
    dim: usize,
    patch: usize,
}

impl Decoder {
    /// `input_dim` is the codeword width `e`; `patch` the output pixels per token side.
    pub fn new(
        cfg: &DecoderConfig,
        input_dim: usize,
        patch: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let block = cfg.block();
        block.validate().map_err(candle_core::Error::Msg)?;
        if !cfg.hidden_size.is_multiple_of(4) {
            candle_core::bail!("decoder width must be divisible by 4 (sin-cos positions)");
        }
        Ok(Self {
            embed: linear_b(input_dim, cfg.hidden_size, true, vb.pp("embed"))?,
            blocks: Blocks::new(cfg.num_layers, &block, &BlockNames::OWN, vb.pp("blocks"))?,
            norm: final_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("norm"))?,
            head: linear_b(cfg.hidden_size, 3 * patch * patch, true, vb.pp("head"))?,
            dim: cfg.hidden_size,
            patch,
        })
    }

    /// Quantized tokens `(B, rows * cols, e)` on a `grid` to pixels `(B, 3, rows * p, cols * p)`.
    pub fn forward(&self, z_q: &Tensor, grid: (usize, usize), train: bool) -> Result<Tensor> {
        let (b, n, _) = z_q.dims3()?;
        let (gh, gw) = grid;
        if n != gh * gw {
            candle_core::bail!("{n} tokens do not fill a {gh}x{gw} grid");
        }
        let pos = sincos_2d(self.dim, gh, gw, z_q.device())?.to_dtype(z_q.dtype())?;
        let x = ops::linear(&self.embed, z_q)?.broadcast_add(&pos)?;
        let x = self.blocks.forward(&x, train)?;
        let x = ops::linear(&self.head, &ops::layer_norm(&x, &self.norm, train)?)?;
        let p = self.patch;
        // per token (3, p, p), the same order the patch embedding unfolds
        x.reshape((b, gh, gw, 3, p, p))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, 3, gh * p, gw * p))
    }
}
