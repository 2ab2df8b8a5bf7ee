//! Semantic pretraining of the project's own ViT encoder, so that a default tokenizer can start
//! from a *semantic* encoder that trains on two CPU cores (DINOv2-small is real but costs ~3
//! GFLOP per 112 px image). The objective, on training images only, has two parts:
//! - image level: supervised attribute classification, linear heads on the mean-pooled patch
//!   tokens, one per label column (easy-VQA: shape and colour; Fashion-MNIST: class);
//! - patch level (`dense_weight`): figure-ground segmentation, a linear head on every patch token
//!   predicting the soft object mask of its `p x p` pixels ([`figure_ground`]);
//! - patch level (`colour_weight`): the mean colour of every patch, regressed from its token.
//!   Class labels and masks are blind to the background's tint (easy-VQA draws every background
//!   in a random light colour), so without this term the tokens do not carry it and every
//!   tokenizer built on them reconstructs the background grey: 45% of the first default
//!   tokenizer's squared error (`scripts/tokenizer_error_split.py`).
//!
//! Classification alone makes every patch token carry the same image-level answer (measured:
//! 5% of the token variance within an image, participation ratio 6), which leaves a tokenizer
//! nothing spatial to quantize. VFMs keep patch-level structure (DINOv2's iBOT term does that);
//! the segmentation head is this project's small stand-in for it.
//!
//! The result is an encoder directory (`config.json` with our `EncoderConfig`, `model.safetensors`)
//! that `vqrae init --encoder`, `vqrae probe` and `vqrae features` load like a Hugging Face one.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear, Linear, Module};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::batch::EpochSampler;
use vqrae_data::tensor::{images_to_tensor, Normalize};
use vqrae_train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroup};
use vqrae_train::progress;
use vqrae_train::schedule::LrSchedule;

use crate::checkpoint::{save_checkpoint, varmap_tensors};
use crate::encoder::{EncoderConfig, VitEncoder};
use crate::error::{Result, TokenizerError};
use crate::init::SeededVarMap;

/// Own encoders take pixels normalised to [-1, 1].
pub(crate) const OWN_NORMALIZE: Normalize = Normalize::HALF;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub seed: u64,
    pub lr: LrSchedule,
    pub adamw: AdamWConfig,
    pub grad_clip: f64,
    /// Weight of the patch-level figure-ground segmentation loss (0: classification only).
    pub dense_weight: f64,
    /// Weight of the patch-level mean-colour regression (0: off).
    pub colour_weight: f64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch_size: 64,
            seed: 0,
            lr: LrSchedule {
                peak_lr: 1e-3,
                min_lr: 1e-5,
                warmup_steps: 100,
                total_steps: 1500,
            },
            adamw: AdamWConfig {
                weight_decay: 0.05,
                ..AdamWConfig::default()
            },
            grad_clip: 1.0,
            dense_weight: 1.0,
            colour_weight: 0.0,
        }
    }
}

/// Soft figure-ground mask of an image, row-major, in `[0, 1]`: the background is the image's
/// most frequent colour, and a pixel's value is its colour distance to the background relative
/// to the farthest pixel's (anti-aliased edges get fractions). Uniform images are all ground.
pub(crate) fn figure_ground(img: &RgbImage) -> Vec<f32> {
    let mut counts = std::collections::HashMap::new();
    for p in img.pixels() {
        *counts.entry(p.0).or_insert(0u32) += 1;
    }
    let bg = counts
        .into_iter()
        .max_by_key(|&(c, n)| (n, c))
        .map(|(c, _)| c)
        .unwrap_or([0, 0, 0]);
    let dist = |p: &[u8; 3]| -> f32 {
        p.iter()
            .zip(&bg)
            .map(|(&a, &b)| (a as f32 - b as f32).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let d: Vec<f32> = img.pixels().map(|p| dist(&p.0)).collect();
    let max = d.iter().cloned().fold(0.0f32, f32::max);
    if max == 0.0 {
        return vec![0.0; d.len()];
    }
    d.into_iter().map(|v| v / max).collect()
}

/// Masks of a batch `(B, S*S)` rearranged to the patch tokens' order, `(B, N, p*p)`.
fn mask_targets(images: &[RgbImage], patch: usize, device: &Device) -> Result<Tensor> {
    let b = images.len();
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((0, 0));
    let (w, h) = (w as usize, h as usize);
    let flat: Vec<f32> = images.iter().flat_map(figure_ground).collect();
    let (gh, gw) = (h / patch, w / patch);
    Ok(Tensor::from_vec(flat, (b, h, w), device)?
        .narrow(1, 0, gh * patch)?
        .narrow(2, 0, gw * patch)?
        .reshape((b, gh, patch, gw, patch))?
        .permute((0, 1, 3, 2, 4))?
        .reshape((b, gh * gw, patch * patch))?)
}

/// Mean colour of every patch of normalised images `(B, 3, H, W)`, as `(B, N, 3)` in the patch
/// tokens' order.
fn patch_colours(x: &Tensor, patch: usize) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    Ok(x.avg_pool2d(patch)?
        .reshape((b, c, ()))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Mean binary cross-entropy with logits against soft targets, in the stable form
/// `max(x, 0) - x t + ln(1 + e^-|x|)`.
fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let softplus = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((x.relu()? - (x * t)?)? + softplus)?.mean_all()?)
}

/// One classification target; it lives with the data sets that carry labels.
pub use vqrae_data::labelled::LabelColumn;

/// What pretraining reached on its own training images (held-out figures come from `probe`).
#[derive(Clone, Debug, Serialize)]
pub struct PretrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub seconds: f64,
}

/// What `vqrae pretrain-encoder` prints: the encoder folder written, its
/// [`vqrae_data::fs::sha256_model`] (what identifies it once the path is trained over) and
/// the summary.
#[derive(Clone, Debug, Serialize)]
pub struct PretrainReport {
    pub out: PathBuf,
    pub out_sha256: String,
    pub summary: PretrainSummary,
}

impl PretrainReport {
    /// Hashes the encoder folder `out` that pretraining wrote.
    pub fn new(out: &Path, summary: PretrainSummary) -> Result<Self> {
        Ok(Self {
            out: out.to_path_buf(),
            out_sha256: vqrae_data::fs::sha256_model(out)?,
            summary,
        })
    }
}

/// Pretrains an encoder of `cfg` on `images` (resized to its resolution) and saves it to `out`.
pub(crate) fn pretrain_encoder(
    enc_cfg: &EncoderConfig,
    images: &[RgbImage],
    columns: &[LabelColumn],
    cfg: &PretrainConfig,
    out: &Path,
    device: &Device,
) -> Result<PretrainSummary> {
    cfg.lr.validate()?;
    if images.is_empty()
        || columns
            .iter()
            .any(|c| c.labels.len() != images.len() || c.classes == 0)
    {
        return Err(TokenizerError::Invalid(
            "every label column needs one label per image".into(),
        ));
    }
    let vars = SeededVarMap::new(cfg.seed);
    let vb = vars.var_builder(DType::F32, device);
    let encoder = VitEncoder::new(enc_cfg, vb.pp("encoder"))?;
    let heads: Vec<Linear> = columns
        .iter()
        .map(|c| {
            linear(
                enc_cfg.width(),
                c.classes,
                vb.pp(format!("head_{}", c.name)),
            )
        })
        .collect::<candle_core::Result<_>>()?;
    let patch = enc_cfg.patch_size();
    let dense = if cfg.dense_weight > 0.0 {
        Some(linear(enc_cfg.width(), patch * patch, vb.pp("head_dense"))?)
    } else {
        None
    };
    let colour = if cfg.colour_weight > 0.0 {
        Some(linear(enc_cfg.width(), 3, vb.pp("head_patch_colour"))?)
    } else {
        None
    };
    let all = vqrae_train::checkpoint::var_map_vars(&vars.varmap)?;
    let group = ParamGroup::with_prefix("all", &all, "", cfg.lr.clone());
    let mut opt = AdamW::new(vec![group], cfg.adamw.clone())?;
    let size = enc_cfg_image_size(enc_cfg);
    let sampler = EpochSampler::new(images.len(), cfg.batch_size, cfg.seed, true);
    let bar = progress::bar(cfg.steps, 0, "pretrain encoder");
    let t0 = std::time::Instant::now();
    let mut last = f64::NAN;
    for step in 0..cfg.steps {
        let ids = sampler.batch_at(step);
        let batch: Vec<RgbImage> = ids
            .iter()
            .map(|&i| vqrae_data::image_io::resize(&images[i], size, size))
            .collect();
        let x = images_to_tensor(&batch, &OWN_NORMALIZE, device)?;
        let tokens = encoder.patch_tokens(&x, true)?;
        let pooled = tokens.mean(1)?;
        let mut total = Tensor::zeros((), DType::F32, device)?;
        if let Some(head) = &dense {
            let target = mask_targets(&batch, patch, device)?;
            let l = bce_with_logits(&head.forward(&tokens)?, &target)?;
            total = (total + (l * cfg.dense_weight)?)?;
        }
        if let Some(head) = &colour {
            let l = head
                .forward(&tokens)?
                .sub(&patch_colours(&x, patch)?)?
                .sqr()?
                .mean_all()?;
            total = (total + (l * cfg.colour_weight)?)?;
        }
        for (head, col) in heads.iter().zip(columns) {
            let y = Tensor::new(
                ids.iter().map(|&i| col.labels[i]).collect::<Vec<_>>(),
                device,
            )?;
            total = (total + vqrae_train::ops::cross_entropy(&head.forward(&pooled)?, &y)?)?;
        }
        let mut grads = total.backward()?;
        clip_grad_norm(&mut grads, all.values(), cfg.grad_clip)?;
        opt.step(&grads)?;
        last = total.to_scalar::<f32>()? as f64;
        bar.set_message(format!("loss {last:.4}"));
        bar.inc(1);
        if (step + 1).is_multiple_of(100) {
            // the bar is hidden when stderr is not a terminal (background runs)
            tracing::info!(step = step + 1, loss = last, "pretrain encoder");
        }
    }
    bar.finish_and_clear();
    let tensors: std::collections::HashMap<String, Tensor> = varmap_tensors(&vars.varmap)?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("encoder.").map(|s| (s.to_string(), v)))
        .collect();
    save_checkpoint(out, enc_cfg, &tensors)?;
    Ok(PretrainSummary {
        steps: cfg.steps,
        final_loss: last,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn enc_cfg_image_size(cfg: &EncoderConfig) -> u32 {
    match cfg {
        EncoderConfig::Vit(c) => c.image_size as u32,
        EncoderConfig::Dinov2(_) => 224,
        EncoderConfig::Siglip(c) => c.image_size as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn figure_ground_marks_the_object_against_the_mode_colour() {
        let mut img = RgbImage::from_pixel(4, 4, Rgb([240, 230, 230]));
        img.put_pixel(1, 1, Rgb([0, 0, 255]));
        img.put_pixel(2, 1, Rgb([120, 115, 242])); // anti-aliased edge, about half way
        let m = figure_ground(&img);
        assert_eq!(m[4 + 1], 1.0);
        assert!(m[4 + 2] > 0.3 && m[4 + 2] < 0.7, "{}", m[4 + 2]);
        assert_eq!(m.iter().filter(|&&v| v == 0.0).count(), 14);
        assert!(figure_ground(&RgbImage::new(3, 3))
            .iter()
            .all(|&v| v == 0.0));
    }

    /// Whether every token's row but `token`'s is all zeros.
    fn zero_but(rows: &[Vec<f32>], token: usize) -> bool {
        rows.iter()
            .enumerate()
            .all(|(i, r)| i == token || r.iter().all(|&v| v == 0.0))
    }

    #[test]
    fn mask_targets_follow_the_patch_order() -> Result<()> {
        // 4x4 image, patch 2: pixel (x=3, y=0) is in token 1 at offset (0, 1)
        let mut img = RgbImage::from_pixel(4, 4, Rgb([255, 255, 255]));
        img.put_pixel(3, 0, Rgb([0, 0, 0]));
        let t = mask_targets(&[img], 2, &Device::Cpu)?.to_vec3::<f32>()?;
        assert_eq!(t[0][1], vec![0.0, 1.0, 0.0, 0.0]);
        assert!(zero_but(&t[0], 1));
        Ok(())
    }

    #[test]
    fn patch_colours_follow_the_patch_order() -> Result<()> {
        // one channel-distinct 4x4 image, patch 2: token 1 is the top-right block
        let mut v = vec![0f32; 3 * 16];
        for (c, plane) in v.chunks_mut(16).enumerate() {
            plane[2] = 4.0 * (c + 1) as f32; // (x=2, y=0)
        }
        let x = Tensor::from_vec(v, (1, 3, 4, 4), &Device::Cpu)?;
        let t = patch_colours(&x, 2)?.to_vec3::<f32>()?;
        assert_eq!(t[0][1], vec![1.0, 2.0, 3.0]);
        assert!(zero_but(&t[0], 1));
        Ok(())
    }

    #[test]
    fn the_report_hashes_the_encoder_folder_beside_its_path() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TokenizerError::Invalid(e.to_string()))?;
        let out = dir.path().join("enc");
        let cfg: EncoderConfig = vqrae_data::fs::read_toml(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/encoder/tiny.toml"),
        )?;
        let images = vec![RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10])); 4];
        let column = LabelColumn {
            name: "colour".into(),
            classes: 2,
            labels: vec![0, 1, 0, 1],
        };
        let train = PretrainConfig {
            steps: 1,
            batch_size: 2,
            ..PretrainConfig::default()
        };
        let summary = pretrain_encoder(&cfg, &images, &[column], &train, &out, &Device::Cpu)?;
        let json = serde_json::to_value(PretrainReport::new(&out, summary)?)
            .map_err(|e| TokenizerError::Invalid(e.to_string()))?;
        let want = vqrae_data::fs::sha256_model(&out)?;
        assert_eq!(json["out_sha256"], serde_json::json!(want));
        assert_eq!(json["out"], serde_json::json!(out));
        assert_eq!(json["summary"]["steps"], 1);
        assert!(PretrainReport::new(&dir.path().join("missing"), json_summary()).is_err());
        Ok(())
    }

    fn json_summary() -> PretrainSummary {
        PretrainSummary {
            steps: 0,
            final_loss: 0.0,
            seconds: 0.0,
        }
    }

    #[test]
    fn stable_bce_matches_the_direct_formula() -> Result<()> {
        let x = Tensor::new(&[-3.0f32, 0.0, 2.0], &Device::Cpu)?;
        let t = Tensor::new(&[0.0f32, 0.5, 1.0], &Device::Cpu)?;
        let want: f32 = [(-3.0f32, 0.0f32), (0.0, 0.5), (2.0, 1.0)]
            .iter()
            .map(|&(x, t)| {
                let s = 1.0 / (1.0 + (-x).exp());
                -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
            })
            .sum::<f32>()
            / 3.0;
        let got = bce_with_logits(&x, &t)?.to_scalar::<f32>()?;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
    }
}
