//! The referee network: four stride-2 3x3 convolutions, global pooling and one linear layer,
//! with its checkpoint.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, Module, VarBuilder};
use image::RgbImage;
use vqrae_data::easy_vqa::{COLORS, SHAPES};
use vqrae_data::image_io::resize;
use vqrae_data::tensor::{images_to_tensor, Normalize};
use vqrae_tokenizer::checkpoint::{read_config, save_checkpoint, varmap_tensors, WEIGHTS_FILE};
use vqrae_train::init::SeededVarMap;

use super::config::{Pool, RefereeConfig};
use super::im2col::Im2Col3x3;
use super::qualification::{read_qualification, QUALIFICATION_FILE, REQUIRED_ACCURACY};
use super::report::{score, RefereeReport, Verdict};
use crate::error::{EvalError, Result};

/// A referee network with its weights, on one device.
pub struct Referee {
    cfg: RefereeConfig,
    convs: Vec<Conv2d>,
    head: Linear,
    device: Device,
}

/// Pixels to [-1, 1]: the referee's inputs, in training and in judging alike.
pub(super) const NORMALIZE: Normalize = Normalize {
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
};

impl Referee {
    pub fn new(cfg: &RefereeConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size == 0 || cfg.channels.contains(&0) {
            return Err(EvalError::Config(
                "referee: image size and channels must be > 0".into(),
            ));
        }
        let conv_cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let mut convs = Vec::new();
        let mut c_in = 3;
        for (i, &c) in cfg.channels.iter().enumerate() {
            convs.push(conv2d(c_in, c, 3, conv_cfg, vb.pp(format!("conv{i}")))?);
            c_in = c;
        }
        let pooled = match cfg.pool {
            Pool::MeanMax => 2 * c_in,
            Pool::Mean | Pool::Max => c_in,
        };
        let head = linear(pooled, COLORS.len() + SHAPES.len(), vb.pp("head"))?;
        Ok(Self {
            cfg: cfg.clone(),
            convs,
            head,
            device: vb.device().clone(),
        })
    }

    /// Normalised images `(B, 3, S, S)` to logits `(B, colours + shapes)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, x.device().is_cpu())
    }

    /// `im2col`: on the CPU, each convolution is [`im2col_3x3`] + one matmul, in channels-last
    /// layout; candle's own CPU conv2d (the other path, and the one on GPUs) spends most of a
    /// training step in its kernel gradient. Both give the same numbers (tested).
    pub(super) fn forward_with(&self, x: &Tensor, im2col: bool) -> Result<Tensor> {
        // channels last: (B, H, W, C)
        let mut h = x.permute((0, 2, 3, 1))?.contiguous()?;
        for conv in &self.convs {
            h = if im2col {
                let (b, _, _, c_in) = h.dims4()?;
                let cols = h.apply_op1(Im2Col3x3 { stride: 2 })?;
                let (_, ho, wo, k) = cols.dims4()?;
                let w = conv.weight();
                let c_out = w.dim(0)?;
                debug_assert_eq!(k, 9 * c_in);
                let y = cols
                    .reshape((b * ho * wo, k))?
                    .matmul(&w.reshape((c_out, k))?.t()?)?;
                let y = match conv.bias() {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y,
                };
                y.reshape((b, ho, wo, c_out))?
            } else {
                conv.forward(&h.permute((0, 3, 1, 2))?)?
                    .permute((0, 2, 3, 1))?
                    .contiguous()?
            }
            .relu()?;
        }
        let h = h.flatten(1, 2)?; // (B, positions, C)
        let pooled = match self.cfg.pool {
            Pool::Mean => h.mean(1)?,
            Pool::Max => h.max(1)?,
            Pool::MeanMax => Tensor::cat(&[h.mean(1)?, h.max(1)?], 1)?,
        };
        Ok(self.head.forward(&pooled)?)
    }

    /// Images (any size; resized to the referee's) to the normalised input tensor.
    fn to_input(&self, images: &[RgbImage]) -> Result<Tensor> {
        let s = self.cfg.image_size as u32;
        let sized: Vec<RgbImage> = images.iter().map(|i| resize(i, s, s)).collect();
        Ok(images_to_tensor(&sized, &NORMALIZE, &self.device)?)
    }

    /// The colour and shape the referee reads in each image.
    pub(crate) fn judge(&self, images: &[RgbImage]) -> Result<Vec<Verdict>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(256) {
            let logits = self.forward(&self.to_input(chunk)?)?;
            let color = logits.narrow(1, 0, COLORS.len())?.argmax(D::Minus1)?;
            let shape = logits
                .narrow(1, COLORS.len(), SHAPES.len())?
                .argmax(D::Minus1)?;
            let color = color.to_vec1::<u32>()?;
            let shape = shape.to_vec1::<u32>()?;
            out.extend(color.iter().zip(&shape).map(|(&c, &s)| Verdict {
                color: c as usize,
                shape: s as usize,
            }));
        }
        Ok(out)
    }

    /// Accuracy against known labels.
    pub fn evaluate(&self, images: &[RgbImage], labels: &[Verdict]) -> Result<RefereeReport> {
        if images.len() != labels.len() || images.is_empty() {
            return Err(EvalError::Config(format!(
                "referee evaluation: {} images for {} labels",
                images.len(),
                labels.len()
            )));
        }
        score(&self.judge(images)?, labels)
    }

    /// Writes a checkpoint directory (`config.json` + `model.safetensors`).
    pub(crate) fn save(&self, dir: &Path, vars: &SeededVarMap) -> Result<()> {
        save_checkpoint(dir, &self.cfg, &varmap_tensors(&vars.varmap)?)?;
        Ok(())
    }

    /// Loads a checkpoint directory, qualified or not (see [`Referee::load_qualified`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg: RefereeConfig = read_config(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights, device)
            .map_err(|e| EvalError::candle(format!("loading {}", weights.display()), e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(&cfg, vb)
    }

    /// Loads a referee that may judge: its directory's `qualification.json` (written by
    /// [`train_and_qualify`](super::train_and_qualify)) must show at least [`REQUIRED_ACCURACY`]
    /// (colour and shape both right) on real test images.
    pub fn load_qualified(dir: &Path, device: &Device) -> Result<Self> {
        let Some(q) = read_qualification(dir)? else {
            return Err(EvalError::Config(format!(
                "{} has no {QUALIFICATION_FILE}: evaluate the referee on real test images first",
                dir.display()
            )));
        };
        if !q.qualified() {
            return Err(EvalError::Config(format!(
                "referee {} is not qualified to judge: {:.2}% both-right on real {} images, {:.0}% needed",
                dir.display(),
                100.0 * q.report.both,
                q.split,
                100.0 * REQUIRED_ACCURACY
            )));
        }
        Self::load(dir, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::referee::toy;

    #[test]
    fn im2col_path_matches_candle_conv2d_in_values_and_gradients() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let vars = SeededVarMap::new(5);
        // an odd size exercises the padding at the right and bottom edges
        let cfg = RefereeConfig {
            image_size: 19,
            channels: [4, 5, 6, 7],
            pool: Pool::MeanMax,
        };
        let referee = Referee::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        let x = vqrae_train::init::seeded_randn((3, 3, 19, 19), 0.0, 1.0, 1, &dev)?;
        let fast = referee.forward_with(&x, true)?;
        let reference = referee.forward_with(&x, false)?;
        let diff = (&fast - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "logits differ by {diff}");
        let g_fast = fast.sqr()?.sum_all()?.backward()?;
        let g_ref = reference.sqr()?.sum_all()?.backward()?;
        let all = vqrae_train::checkpoint::var_map_vars(&vars.varmap)?;
        assert_eq!(
            all.len(),
            10,
            "4 convolutions and the head, weight and bias each"
        );
        for (name, var) in all {
            let a = g_fast.get(&var).expect("gradient on the im2col path");
            let b = g_ref.get(&var).expect("gradient on the conv2d path");
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff / scale < 1e-4, "{name}: gradients differ by {diff}");
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_labels() {
        let dev = Device::Cpu;
        let vars = SeededVarMap::new(0);
        let referee = Referee::new(
            &RefereeConfig::default(),
            vars.var_builder(DType::F32, &dev),
        )
        .expect("referee");
        assert!(referee.evaluate(&[toy(0, 0, 0)], &[]).is_err());
    }
}
