//! Semantic pretraining of the project's own ViT encoder, so that a default tokenizer can start
//! from a *semantic* encoder that trains on two CPU cores (DINOv2-small is real but costs ~3
//! GFLOP per 112 px image). The objective is supervised attribute classification on training
//! images only: linear heads on the mean-pooled patch tokens, one per label column (easy-VQA:
//! shape and colour; Fashion-MNIST: class), cross-entropy summed.
//!
//! The result is an encoder directory (`config.json` with our `EncoderConfig`, `model.safetensors`)
//! that `vqrae init --encoder`, `vqrae probe` and `vqrae features` load like a Hugging Face one.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear, loss, Linear, Module};
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
pub const OWN_NORMALIZE: Normalize = Normalize::HALF;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub seed: u64,
    pub lr: LrSchedule,
    pub adamw: AdamWConfig,
    pub grad_clip: f64,
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
        }
    }
}

/// One classification target: a name, its number of classes, a label per image.
pub struct LabelColumn {
    pub name: String,
    pub classes: usize,
    pub labels: Vec<u32>,
}

/// What pretraining reached on its own training images (held-out figures come from `probe`).
#[derive(Clone, Debug, Serialize)]
pub struct PretrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub seconds: f64,
}

/// Pretrains an encoder of `cfg` on `images` (resized to its resolution) and saves it to `out`.
pub fn pretrain_encoder(
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
        let pooled = encoder.patch_tokens(&x, true)?.mean(1)?;
        let mut total = Tensor::zeros((), DType::F32, device)?;
        for (head, col) in heads.iter().zip(columns) {
            let y = Tensor::new(
                ids.iter().map(|&i| col.labels[i]).collect::<Vec<_>>(),
                device,
            )?;
            total = (total + loss::cross_entropy(&head.forward(&pooled)?, &y)?)?;
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
