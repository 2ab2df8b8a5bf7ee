//! Vision encoders: the project's own ViT, DINOv2 and SigLIP vision, all run by one ViT
//! implementation ([`VitEncoder`]) that differs between them only in a spec and a naming table.
//!
//! The output used downstream is the last layer's (normed) patch tokens, `(B, N, d)`.

mod dinov2;
mod hf;
mod own;
mod siglip;

pub use dinov2::Dinov2Config;
pub(crate) use hf::hf_tensors;
pub(crate) use hf::mmap;
pub use hf::{hf_encoder_config, load_hf_encoder, HfEncoder};
pub use own::{OwnVitConfig, PosEmbedKind};
pub use siglip::SiglipVisionConfig;

use candle_core::{Result, Tensor};
use candle_nn::{Init, LayerNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::pos_embed::{resize_grid, sincos_2d, ResizeScale};
use crate::vit::{final_norm, BlockConfig, BlockNames, Blocks, PatchEmbed};
use vqrae_train::ops;

/// Which encoder a tokenizer uses, with its architecture's hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum EncoderConfig {
    /// The project's own ViT.
    Vit(OwnVitConfig),
    /// Hugging Face `Dinov2Model`.
    Dinov2(Dinov2Config),
    /// Hugging Face `SiglipVisionModel` (also the vision tower of SigLIP 2 fixed-resolution models).
    Siglip(SiglipVisionConfig),
}

impl EncoderConfig {
    pub fn spec(&self) -> std::result::Result<VitSpec, String> {
        let spec = match self {
            EncoderConfig::Vit(c) => c.spec(),
            EncoderConfig::Dinov2(c) => c.spec()?,
            EncoderConfig::Siglip(c) => c.spec(),
        };
        spec.block.validate()?;
        if spec.patch == 0 || spec.depth == 0 {
            return Err("encoder patch size and depth must be positive".into());
        }
        // the own ViT's position grid is image_size / patch: a remainder would be dropped
        // (Hugging Face configs keep their upstream sizes; their preprocessing crops)
        if let EncoderConfig::Vit(c) = self {
            crate::model::check_resolution("encoder image_size", c.image_size, c.patch_size)?;
        }
        Ok(spec)
    }

    pub fn names(&self) -> VitNames {
        match self {
            EncoderConfig::Vit(_) => own::NAMES,
            EncoderConfig::Dinov2(_) => dinov2::NAMES,
            EncoderConfig::Siglip(_) => siglip::NAMES,
        }
    }

    /// Feature width `d` of the patch tokens.
    pub fn width(&self) -> usize {
        match self {
            EncoderConfig::Vit(c) => c.hidden_size,
            EncoderConfig::Dinov2(c) => c.hidden_size,
            EncoderConfig::Siglip(c) => c.hidden_size,
        }
    }

    pub(crate) fn patch_size(&self) -> usize {
        match self {
            EncoderConfig::Vit(c) => c.patch_size,
            EncoderConfig::Dinov2(c) => c.patch_size,
            EncoderConfig::Siglip(c) => c.patch_size,
        }
    }

    pub fn arch(&self) -> &'static str {
        match self {
            EncoderConfig::Vit(_) => "vit",
            EncoderConfig::Dinov2(_) => "dinov2",
            EncoderConfig::Siglip(_) => "siglip",
        }
    }
}

/// How the stored position table is laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PosKind {
    /// `(1, 1 + N, d)` parameter whose first row belongs to the class token (DINOv2).
    LearnedWithCls,
    /// `(N, d)` table (SigLIP's `nn.Embedding`, own ViT).
    Learned,
    /// Fixed 2-D sin-cos, no parameter.
    SinCos,
}

/// Everything that shapes a ViT encoder, whatever the architecture's config calls it.
#[derive(Clone, Debug, PartialEq)]
pub struct VitSpec {
    pub block: BlockConfig,
    pub depth: usize,
    pub patch: usize,
    pub channels: usize,
    /// Grid of the stored position table; other input sizes interpolate it bicubically.
    pub native_grid: (usize, usize),
    pub pos: PosKind,
    pub cls_token: bool,
}

/// Tensor names of an architecture, relative to the encoder's prefix.
#[derive(Clone, Copy, Debug)]
pub struct VitNames {
    pub patch: &'static str,
    pub cls: &'static str,
    pub pos: &'static str,
    pub blocks: &'static str,
    pub block: BlockNames,
    pub norm: &'static str,
}

/// A ViT encoder: patch embedding, position embedding, optional class token, pre-LN blocks and
/// a final layer norm.
#[derive(Clone, Debug)]
pub struct VitEncoder {
    spec: VitSpec,
    patch: PatchEmbed,
    cls: Option<Tensor>,
    pos: Option<Tensor>,
    blocks: Blocks,
    norm: LayerNorm,
}

impl VitEncoder {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let spec = cfg.spec().map_err(candle_core::Error::Msg)?;
        let names = cfg.names();
        let d = spec.block.dim;
        let n = spec.native_grid.0 * spec.native_grid.1;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let cls = spec
            .cls_token
            .then(|| vb.get_with_hints((1, 1, d), names.cls, init))
            .transpose()?;
        let pos = match spec.pos {
            PosKind::LearnedWithCls => Some(vb.get_with_hints((1, 1 + n, d), names.pos, init)?),
            PosKind::Learned => Some(vb.get_with_hints((n, d), names.pos, init)?),
            PosKind::SinCos => None,
        };
        Ok(Self {
            patch: PatchEmbed::new(spec.channels, d, spec.patch, vb.pp(names.patch))?,
            cls,
            pos,
            blocks: Blocks::new(spec.depth, &spec.block, &names.block, vb.pp(names.blocks))?,
            norm: final_norm(d, spec.block.eps, vb.pp(names.norm))?,
            spec,
        })
    }

    pub fn spec(&self) -> &VitSpec {
        &self.spec
    }

    /// Tokens before the patch tokens in the output (the class token).
    pub fn prefix_tokens(&self) -> usize {
        usize::from(self.cls.is_some())
    }

    /// The token grid an input of `h x w` pixels gives.
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        self.patch.grid(h, w)
    }

    /// Position embeddings for a `grid`, `(rows * cols, d)`, plus the class token's slot.
    fn position_table(&self, grid: (usize, usize)) -> Result<(Tensor, Option<Tensor>)> {
        let d = self.spec.block.dim;
        let native = self.spec.native_grid;
        let sizes = (ResizeScale::Size, ResizeScale::Size);
        match (&self.pos, self.spec.pos) {
            (Some(p), PosKind::LearnedWithCls) => {
                let p = p.squeeze(0)?;
                let cls = p.narrow(0, 0, 1)?;
                let n = native.0 * native.1;
                let table = resize_grid(&p.narrow(0, 1, n)?, native, grid, sizes)?;
                Ok((table, Some(cls)))
            }
            (Some(p), _) => Ok((resize_grid(p, native, grid, sizes)?, None)),
            (None, _) => Ok((sincos_2d(d, grid.0, grid.1, self.patch_device())?, None)),
        }
    }

    fn patch_device(&self) -> &candle_core::Device {
        self.norm.weight().device()
    }

    /// `(B, C, H, W)` normalised pixels to the last hidden state `(B, prefix + N, d)`, as
    /// Hugging Face's `last_hidden_state`.
    pub fn forward(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = pixels.dims4()?;
        let x = self.patch.forward(pixels)?;
        let (b, _, d) = x.dims3()?;
        let (table, cls_pos) = self.position_table(self.grid(h, w))?;
        let mut x = x.broadcast_add(&table.to_dtype(x.dtype())?)?;
        if let Some(cls) = &self.cls {
            let cls = match cls_pos {
                Some(p) => cls.broadcast_add(&p)?,
                None => cls.clone(),
            };
            x = Tensor::cat(&[&cls.broadcast_as((b, 1, d))?.contiguous()?, &x], 1)?;
        }
        let x = self.blocks.forward(&x, train)?;
        ops::layer_norm(&x, &self.norm, train)
    }

    /// The patch tokens `(B, N, d)` of the last layer: what the tokenizer quantizes and the LM sees.
    pub fn patch_tokens(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.forward(pixels, train)?;
        let n = h.dim(1)? - self.prefix_tokens();
        h.narrow(1, self.prefix_tokens(), n)
    }
}

/// Keeps the keys of a Hugging Face config object that one of our config structs knows, so that
/// our structs can stay strict (`deny_unknown_fields`) while HF files carry many more fields.
pub(crate) fn known_fields(
    value: &serde_json::Value,
    keys: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_encoder_field_is_an_error() {
        let err = serde_json::from_str::<EncoderConfig>(
            r#"{"arch": "vit", "hidden_size": 32, "hiden_layers": 2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("hiden_layers"), "{err}");
        let ok = serde_json::from_str::<EncoderConfig>(r#"{"arch": "dinov2", "hidden_size": 32}"#);
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn hf_field_lists_cover_the_structs() {
        // Every field our structs serialise must be in the list of keys kept from HF files,
        // otherwise an HF value would silently fall back to a default.
        let check = |v: serde_json::Value, keys: &[&str]| {
            for k in v.as_object().unwrap().keys() {
                assert!(
                    keys.contains(&k.as_str()),
                    "{k} missing from the HF key list"
                );
            }
        };
        check(
            serde_json::to_value(Dinov2Config::default()).unwrap(),
            dinov2::HF_KEYS,
        );
        check(
            serde_json::to_value(SiglipVisionConfig::default()).unwrap(),
            siglip::HF_KEYS,
        );
    }
}
