//! ViT building blocks shared by every encoder and the decoder: patch embedding, pre-LN
//! attention/MLP blocks with optional LayerScale, and a stack of blocks.
//!
//! The blocks are parameterised by a [`BlockNames`] table so that one implementation loads the
//! tensor names of DINOv2, SigLIP and the project's own ViT.

use candle_core::{Result, Tensor};
use candle_nn::{layer_norm, linear_b, Init, LayerNorm, LayerNormConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use vqrae_train::ops;

/// The MLP non-linearity, named as Hugging Face configs name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    /// Exact GELU (erf), `"gelu"` in HF configs (DINOv2, own ViT).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh approximation, `"gelu_pytorch_tanh"` (SigLIP).
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new")]
    GeluTanh,
}

impl Activation {
    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => ops::gelu(x, false),
            Activation::GeluTanh => ops::gelu(x, true),
        }
    }
}

/// Shape of one transformer block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockConfig {
    pub dim: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    pub eps: f64,
    pub act: Activation,
    /// Initial LayerScale value, or `None` for an architecture without LayerScale.
    pub layer_scale: Option<f64>,
    pub qkv_bias: bool,
}

impl BlockConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dim == 0 || self.heads == 0 || self.mlp_hidden == 0 {
            return Err(format!("block sizes must be positive: {self:?}"));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(format!(
                "width {} does not divide into {} heads",
                self.dim, self.heads
            ));
        }
        Ok(())
    }
}

/// Tensor names inside one block, relative to the block's prefix.
#[derive(Clone, Copy, Debug)]
pub struct BlockNames {
    pub norm1: &'static str,
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub out: &'static str,
    pub ls1: &'static str,
    pub norm2: &'static str,
    pub fc1: &'static str,
    pub fc2: &'static str,
    pub ls2: &'static str,
}

impl BlockNames {
    /// The project's own naming (own ViT encoder and the decoder).
    pub(crate) const OWN: BlockNames = BlockNames {
        norm1: "norm1",
        q: "attn.q",
        k: "attn.k",
        v: "attn.v",
        out: "attn.proj",
        ls1: "ls1.gamma",
        norm2: "norm2",
        fc1: "mlp.fc1",
        fc2: "mlp.fc2",
        ls2: "ls2.gamma",
    };
}

/// Multi-head self-attention with separate q/k/v projections (as both HF architectures store them).
#[derive(Clone, Debug)]
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &BlockConfig, names: &BlockNames, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        Ok(Self {
            q: linear_b(d, d, cfg.qkv_bias, vb.pp(names.q))?,
            k: linear_b(d, d, cfg.qkv_bias, vb.pp(names.k))?,
            v: linear_b(d, d, cfg.qkv_bias, vb.pp(names.v))?,
            out: linear_b(d, d, true, vb.pp(names.out))?,
            heads: cfg.heads,
            scale: 1.0 / ((d / cfg.heads) as f64).sqrt(),
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(ops::linear(&self.q, x)?)?;
        let k = split(ops::linear(&self.k, x)?)?;
        let v = split(ops::linear(&self.v, x)?)?;
        let y = ops::attention(&q, &k, &v, None, self.scale, train)?
            .transpose(1, 2)?
            .reshape((b, n, d))?;
        ops::linear(&self.out, &y)
    }
}

/// Two-layer MLP.
#[derive(Clone, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    fn new(cfg: &BlockConfig, names: &BlockNames, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear_b(cfg.dim, cfg.mlp_hidden, true, vb.pp(names.fc1))?,
            fc2: linear_b(cfg.mlp_hidden, cfg.dim, true, vb.pp(names.fc2))?,
            act: cfg.act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(&self.fc2, &self.act.apply(&ops::linear(&self.fc1, x)?)?)
    }
}

/// Pre-LN transformer block: `x + ls1 * attn(norm1(x))`, then `x + ls2 * mlp(norm2(x))`.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: Option<Tensor>,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Option<Tensor>,
}

fn norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    layer_norm(
        dim,
        LayerNormConfig {
            eps,
            ..Default::default()
        },
        vb,
    )
}

impl Block {
    pub fn new(cfg: &BlockConfig, names: &BlockNames, vb: &VarBuilder) -> Result<Self> {
        let scale = |name: &str| -> Result<Option<Tensor>> {
            cfg.layer_scale
                .map(|init| vb.get_with_hints(cfg.dim, name, Init::Const(init)))
                .transpose()
        };
        Ok(Self {
            norm1: norm(cfg.dim, cfg.eps, vb.pp(names.norm1))?,
            attn: Attention::new(cfg, names, vb)?,
            ls1: scale(names.ls1)?,
            norm2: norm(cfg.dim, cfg.eps, vb.pp(names.norm2))?,
            mlp: Mlp::new(cfg, names, vb)?,
            ls2: scale(names.ls2)?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let scaled = |y: Tensor, ls: &Option<Tensor>| match ls {
            Some(g) => y.broadcast_mul(g),
            None => Ok(y),
        };
        let h = self
            .attn
            .forward(&ops::layer_norm(x, &self.norm1, train)?, train)?;
        let x = (x + scaled(h, &self.ls1)?)?;
        let h = self
            .mlp
            .forward(&ops::layer_norm(&x, &self.norm2, train)?)?;
        x + scaled(h, &self.ls2)?
    }
}

/// A stack of blocks under `prefix.{i}`.
#[derive(Clone, Debug)]
pub(crate) struct Blocks(Vec<Block>);

impl Blocks {
    pub fn new(
        depth: usize,
        cfg: &BlockConfig,
        names: &BlockNames,
        vb: VarBuilder,
    ) -> Result<Self> {
        (0..depth)
            .map(|i| Block::new(cfg, names, &vb.pp(i)))
            .collect::<Result<Vec<_>>>()
            .map(Blocks)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0
            .iter()
            .try_fold(x.clone(), |x, b| b.forward(&x, train))
    }
}

/// Final layer norm that follows the stack in every architecture here.
pub(crate) fn final_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    norm(dim, eps, vb)
}

/// Patch embedding: a `p x p` stride-`p` convolution (HF stores it as a conv weight), computed as
/// one matmul over unfolded patches, which is exact, differentiable and fast on every device.
#[derive(Clone, Debug)]
pub(crate) struct PatchEmbed {
    /// `(d, c * p * p)`: the conv kernel flattened in (c, y, x) order.
    weight: Tensor,
    bias: Tensor,
    patch: usize,
    channels: usize,
}

impl PatchEmbed {
    pub fn new(channels: usize, dim: usize, patch: usize, vb: VarBuilder) -> Result<Self> {
        let fan_in = (channels * patch * patch) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((dim, channels, patch, patch), "weight", init)?;
        let bias = vb.get_with_hints(dim, "bias", init)?;
        Ok(Self {
            weight: weight.reshape((dim, channels * patch * patch))?,
            bias,
            patch,
            channels,
        })
    }

    /// The token grid `(rows, cols)` an image of `h x w` pixels gives (a partial patch at the
    /// border is dropped, as a stride-`p` convolution does).
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        (h / self.patch, w / self.patch)
    }

    /// `(B, C, H, W)` pixels to `(B, rows * cols, d)` tokens.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.channels {
            candle_core::bail!("expected {} image channels, got {c}", self.channels);
        }
        let p = self.patch;
        let (gh, gw) = self.grid(h, w);
        if gh == 0 || gw == 0 {
            candle_core::bail!("image {h}x{w} is smaller than one {p}x{p} patch");
        }
        let x = x.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?;
        let patches = x
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        patches
            .broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;
    use candle_core::{DType, Device};

    #[test]
    fn patch_embed_matches_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        let w = seeded_randn((6, 3, 4, 4), 0.0, 1.0, 1, &dev)?;
        let b = seeded_randn(6, 0.0, 1.0, 2, &dev)?;
        let vb = VarBuilder::from_tensors(
            [
                ("weight".to_string(), w.clone()),
                ("bias".to_string(), b.clone()),
            ]
            .into(),
            DType::F32,
            &dev,
        );
        let pe = PatchEmbed::new(3, 6, 4, vb)?;
        let x = seeded_randn((2, 3, 8, 13), 0.0, 1.0, 3, &dev)?;
        let ours = pe.forward(&x)?;
        // conv2d -> (B, d, 2, 3) -> (B, 6 tokens, d)
        let conv = x
            .conv2d(&w, 0, 4, 1, 1)?
            .broadcast_add(&b.reshape((1, 6, 1, 1))?)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let diff = (ours - conv)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "patch embedding differs from conv2d by {diff}");
        Ok(())
    }

    #[test]
    fn block_config_rejects_bad_heads() {
        let cfg = BlockConfig {
            dim: 30,
            heads: 4,
            mlp_hidden: 8,
            eps: 1e-6,
            act: Activation::Gelu,
            layer_scale: None,
            qkv_bias: true,
        };
        assert!(cfg.validate().is_err());
    }
}
