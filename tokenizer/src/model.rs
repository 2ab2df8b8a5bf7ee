//! The VQRAE tokenizer: one encoder gives continuous features (understanding) and, through the
//! quantizer, discrete codes (generation); the decoder turns codes back into pixels.
//!
//! ```text
//! image -> encoder -> Z_I (N x d) -+-> features (to the LM projector)
//!                                  +-> proj_in d->e -> quantizer -> codes (N ints)
//! codes -> codewords (e) -> decoder (embed e->d_dec, ViT, pixel head) -> image
//! ```

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::fs::read_toml;
use vqrae_data::image_io::resize;
use vqrae_data::tensor::{images_to_tensor, tensor_to_images, Normalize};

use crate::checkpoint::{read_config, save_checkpoint, varmap_tensors, CONFIG_FILE, WEIGHTS_FILE};
use crate::decoder::{Decoder, DecoderConfig};
use crate::encoder::{load_hf_encoder, EncoderConfig, HfEncoder, VitEncoder};
use crate::error::{Context, Result, TokenizerError};
use crate::init::SeededVarMap;
use crate::preprocess::{Preprocess, Resize};
use crate::quantizer::{Quantized, Quantizer, QuantizerConfig};

/// The whole tokenizer's configuration; `config.json` of a checkpoint, or a TOML file in `configs/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqraeConfig {
    /// Square input resolution; images are resized to it.
    pub image_size: usize,
    /// Pixel normalisation the encoder expects (also the decoder's output space).
    pub normalize: Normalize,
    pub encoder: EncoderConfig,
    pub quantizer: QuantizerConfig,
    pub decoder: DecoderConfig,
}

impl VqraeConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let cfg: Self = read_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Token grid `(rows, cols)` of an input image.
    pub fn grid(&self) -> (usize, usize) {
        let g = self.image_size / self.encoder.patch_size().max(1);
        (g, g)
    }

    /// Output pixels per token side.
    pub(crate) fn decoder_patch(&self) -> usize {
        self.decoder.patch_size.unwrap_or(self.encoder.patch_size())
    }

    pub fn validate(&self) -> Result<()> {
        self.encoder.spec().map_err(TokenizerError::Invalid)?;
        self.decoder
            .block()
            .validate()
            .map_err(TokenizerError::Invalid)?;
        check_resolution("image_size", self.image_size, self.encoder.patch_size())
            .map_err(TokenizerError::Invalid)?;
        if self.quantizer.codebook_size == 0 || self.quantizer.dim == 0 {
            return Err(TokenizerError::Invalid(
                "codebook size and dim must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Largest square resolution (pixels a side) a tokenizer config or `vqrae features
/// --resolution` may ask for: 1024 px is 5,329 tokens at DINOv2's patch 14, whose attention
/// scores already take ~110 MB a head on the CPU; four times that in pixels is sixteen times
/// the memory.
pub const MAX_RESOLUTION: usize = 1024;

/// Refuses a resolution that is not a whole number of `patch`-pixel patches (the encoder would
/// silently drop the remainder) or is over [`MAX_RESOLUTION`]; `what` names the setting.
pub fn check_resolution(what: &str, size: usize, patch: usize) -> std::result::Result<(), String> {
    if patch == 0 || size < patch || !size.is_multiple_of(patch) {
        return Err(format!(
            "{what} {size} is not a whole number of the encoder's {patch}-pixel patches (a \
             positive multiple of {patch}, e.g. {})",
            (size / patch.max(1)).max(1) * patch
        ));
    }
    if size > MAX_RESOLUTION {
        return Err(format!(
            "{what} {size} is over the largest supported resolution, {MAX_RESOLUTION} px"
        ));
    }
    Ok(())
}

/// What `encode` gives: both outputs of the one encoder.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Continuous features `Z_I` `(B, N, d)`: the understanding path.
    pub features: Tensor,
    /// Discrete codes `(B, N)` u32: the generation path.
    pub codes: Tensor,
    /// Token grid `(rows, cols)`, `rows * cols == N`.
    pub grid: (usize, usize),
}

/// A full forward pass for training: features, quantizer output and reconstruction.
#[derive(Debug, Clone)]
pub struct Forward {
    pub features: Tensor,
    pub quantized: Quantized,
    pub reconstruction: Tensor,
}

#[derive(Clone, Debug)]
pub struct Vqrae {
    cfg: VqraeConfig,
    encoder: VitEncoder,
    proj_in: Linear,
    quantizer: Quantizer,
    decoder: Decoder,
}

impl Vqrae {
    /// Builds the model from a `VarBuilder` (weights from a checkpoint, or fresh variables).
    pub fn new(cfg: &VqraeConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.encoder.width();
        let e = cfg.quantizer.dim;
        Ok(Self {
            encoder: VitEncoder::new(&cfg.encoder, vb.pp("encoder"))?,
            proj_in: linear_b(d, e, true, vb.pp("proj_in"))?,
            quantizer: Quantizer::new(&cfg.quantizer, vb.pp("quantizer"))?,
            decoder: Decoder::new(&cfg.decoder, e, cfg.decoder_patch(), vb.pp("decoder"))?,
            cfg: cfg.clone(),
        })
    }

    /// A fresh model with seeded random weights, its encoder optionally taken from an encoder
    /// directory (Hugging Face DINOv2 / SigLIP, or one written by `pretrain-encoder`), ready to
    /// train.
    pub fn init(
        cfg: &VqraeConfig,
        encoder_dir: Option<&Path>,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, SeededVarMap)> {
        cfg.validate()?;
        let vars = SeededVarMap::new(seed);
        let model = Self::new(cfg, vars.var_builder(DType::F32, device))
            .context(|| "building the tokenizer".to_string())?;
        if let Some(dir) = encoder_dir {
            let hf = load_hf_encoder(dir, device, DType::F32)?;
            if hf.config != cfg.encoder {
                return Err(TokenizerError::Invalid(format!(
                    "encoder in {} does not match the config's encoder:\n  {:?}\nvs\n  {:?}",
                    dir.display(),
                    hf.config,
                    cfg.encoder
                )));
            }
            let own = varmap_tensors(&vars.varmap)?;
            let src = crate::encoder::hf_tensors(dir, &hf.config)?;
            let data = vars
                .varmap
                .data()
                .lock()
                .map_err(|_| TokenizerError::Invalid("variable map lock poisoned".into()))?;
            for name in own.keys().filter(|k| k.starts_with("encoder.")) {
                let key = &name["encoder.".len()..];
                let t = src.get(key).ok_or_else(|| TokenizerError::Checkpoint {
                    path: dir.to_path_buf(),
                    msg: format!("missing tensor {key}"),
                })?;
                data[name]
                    .set(&t.to_dtype(DType::F32)?)
                    .context(|| format!("copying {key}"))?;
            }
        }
        Ok((model, vars))
    }

    /// A trainable model (seeded variables) holding the weights of a checkpoint directory:
    /// where stage 2 starts from stage 1, strict about every tensor's name and shape.
    pub fn init_from_checkpoint(
        dir: &Path,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, SeededVarMap)> {
        let cfg: VqraeConfig = read_config(dir)?;
        let (model, vars) = Self::init(&cfg, None, seed, device)?;
        let weights = dir.join(WEIGHTS_FILE);
        let src = candle_core::safetensors::load(&weights, device).map_err(|e| {
            TokenizerError::Checkpoint {
                path: weights.clone(),
                msg: crate::error::plain(e).to_string(),
            }
        })?;
        let data = vars
            .varmap
            .data()
            .lock()
            .map_err(|_| TokenizerError::Invalid("variable map lock poisoned".into()))?;
        for (name, var) in data.iter() {
            let t = src.get(name).ok_or_else(|| TokenizerError::Checkpoint {
                path: weights.clone(),
                msg: format!("tensor `{name}` not found"),
            })?;
            if t.shape() != var.shape() {
                return Err(TokenizerError::Checkpoint {
                    path: weights.clone(),
                    msg: format!(
                        "shape mismatch for {name}: expected {:?}, got {:?}",
                        var.shape(),
                        t.shape()
                    ),
                });
            }
            var.set(&t.to_dtype(DType::F32)?)
                .context(|| format!("setting {name}"))?;
        }
        drop(data);
        Ok((model, vars))
    }

    /// Loads a checkpoint directory written by [`Vqrae::save`] or training.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let cfg: VqraeConfig = read_config(dir)?;
        cfg.validate().map_err(|e| {
            TokenizerError::Invalid(format!("{}: {e}", dir.join(CONFIG_FILE).display()))
        })?;
        let weights = dir.join(WEIGHTS_FILE);
        let st = crate::encoder::mmap(&weights)?;
        let vb = VarBuilder::from_backend(Box::new(st), dtype, device.clone());
        Self::new(&cfg, vb).map_err(|e| TokenizerError::Checkpoint {
            path: weights,
            msg: crate::error::plain(e).to_string(),
        })
    }

    /// Saves `vars` (the variables this model was built from) with this model's config.
    pub fn save(&self, dir: &Path, vars: &SeededVarMap) -> Result<()> {
        save_checkpoint(dir, &self.cfg, &varmap_tensors(&vars.varmap)?)
    }

    pub fn config(&self) -> &VqraeConfig {
        &self.cfg
    }

    /// Full names of the variables training must never update (SimVQ's fixed codebook).
    pub fn frozen_names(&self) -> Vec<String> {
        self.quantizer
            .frozen_names()
            .iter()
            .map(|n| format!("quantizer.{n}"))
            .collect()
    }

    pub fn encoder(&self) -> &VitEncoder {
        &self.encoder
    }

    /// The encoder as the understanding path sees it: its continuous features at this
    /// tokenizer's resolution and normalisation. After stage 2 these are the distilled
    /// encoder's features, which is what the paper's Table 6 asks an LM to answer from.
    pub fn feature_encoder(&self) -> HfEncoder {
        let side = self.cfg.image_size as u32;
        HfEncoder {
            config: self.cfg.encoder.clone(),
            encoder: self.encoder.clone(),
            preprocess: Preprocess {
                resize: Resize::Exact {
                    height: side,
                    width: side,
                },
                normalize: self.cfg.normalize,
            },
        }
    }

    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn device(&self) -> Device {
        self.proj_in.weight().device().clone()
    }

    /// Images to the normalised `(B, 3, S, S)` input this model takes (resized to `image_size`).
    pub fn images_to_input(&self, images: &[RgbImage]) -> Result<Tensor> {
        let s = self.cfg.image_size as u32;
        let sized: Vec<RgbImage> = images.iter().map(|i| resize(i, s, s)).collect();
        let t = images_to_tensor(&sized, &self.cfg.normalize, &self.device())?;
        Ok(t.to_dtype(self.proj_in.weight().dtype())?)
    }

    /// Model output (normalised pixels) back to images.
    pub fn output_to_images(&self, output: &Tensor) -> Result<Vec<RgbImage>> {
        Ok(tensor_to_images(output, &self.cfg.normalize)?)
    }

    /// Encoder features `(..., d)` to the quantizer's input space `(..., e)`.
    pub fn project(&self, features: &Tensor) -> Result<Tensor> {
        Ok(vqrae_train::ops::linear(&self.proj_in, features)?)
    }

    /// Features and codes of a normalised input batch.
    pub fn encode(&self, input: &Tensor) -> Result<Encoded> {
        let (_, _, h, w) = input.dims4()?;
        let features = self.encoder.patch_tokens(input, false)?;
        let q = self.quantizer.forward(&self.project(&features)?)?;
        Ok(Encoded {
            features,
            codes: q.codes,
            grid: self.encoder.grid(h, w),
        })
    }

    /// Pixels (normalised) from codes `(B, rows * cols)` on a `grid`.
    pub fn decode(&self, codes: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let z_q = self.quantizer.lookup(codes)?;
        Ok(self.decoder.forward(&z_q, grid, false)?)
    }

    /// Pixels of code grids (one per image, this tokenizer's grid each, row-major).
    pub fn decode_codes(&self, codes: &[Vec<u32>]) -> Result<Vec<RgbImage>> {
        if codes.is_empty() {
            return Ok(Vec::new());
        }
        let grid = self.config().grid();
        let flat: Vec<u32> = codes.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (codes.len(), grid.0 * grid.1), &self.device())?;
        let pixels = self.decode(&t, grid)?;
        self.output_to_images(&pixels)
    }

    /// Reconstructions of `images` (encode to codes, decode back), in batches of 64.
    pub fn reconstruct_images(&self, images: &[RgbImage]) -> Result<Vec<RgbImage>> {
        let mut recon = Vec::with_capacity(images.len());
        for chunk in images.chunks(64) {
            let out = self.reconstruct(&self.images_to_input(chunk)?)?;
            recon.extend(self.output_to_images(&out)?);
        }
        Ok(recon)
    }

    /// `decode(encode(x))`.
    pub fn reconstruct(&self, input: &Tensor) -> Result<Tensor> {
        let enc = self.encode(input)?;
        self.decode(&enc.codes, enc.grid)
    }

    /// The differentiable forward of training (`train` selects the differentiable kernels).
    pub fn forward(&self, input: &Tensor, train: bool) -> Result<Forward> {
        let (_, _, h, w) = input.dims4()?;
        let features = self.encoder.patch_tokens(input, train)?;
        self.forward_features(features, self.encoder.grid(h, w), train)
    }

    /// Training forward from given encoder features (stage 1 feeds cached features of the
    /// frozen encoder; stage 2 the trainable encoder's).
    pub(crate) fn forward_features(
        &self,
        features: Tensor,
        grid: (usize, usize),
        train: bool,
    ) -> Result<Forward> {
        let quantized = self.quantizer.forward(&self.project(&features)?)?;
        let reconstruction = self.decoder.forward(&quantized.z_q, grid, train)?;
        Ok(Forward {
            features,
            quantized,
            reconstruction,
        })
    }
}
