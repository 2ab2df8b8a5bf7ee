//! The independent referee of generated images: a small CNN that reads colour and shape off
//! an easy-VQA-style image.
//!
//! It is trained on *real* easy-VQA training images only (never on generated ones, so it cannot
//! learn the generator's habits) and must reach 99% on real test images before its verdicts on
//! generated images count. Light pixel noise during training keeps it from keying on the exact
//! flat colours of the PNGs, which a decoder only approximates.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, Module, VarBuilder};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vqrae_data::batch::EpochSampler;
use vqrae_data::easy_vqa::{COLORS, SHAPES};
use vqrae_data::image_io::resize;
use vqrae_data::tensor::{images_to_tensor, Normalize};
use vqrae_tokenizer::checkpoint::{read_config, save_checkpoint, varmap_tensors, WEIGHTS_FILE};
use vqrae_train::init::SeededVarMap;
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

use crate::error::{GenerateError, Result};

/// The referee's architecture: four stride-2 3x3 convolutions, global pooling, one linear
/// layer giving colour logits then shape logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefereeConfig {
    pub image_size: usize,
    pub channels: [usize; 4],
    /// How the last feature map becomes one vector.
    pub pool: Pool,
}

impl Default for RefereeConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            channels: [32, 64, 64, 128],
            pool: Pool::MeanMax,
        }
    }
}

/// Global pooling of the last feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The average over positions: a small shape's features are diluted by background.
    Mean,
    /// The maximum over positions: "is this part anywhere", whatever the shape's size.
    Max,
    /// Both, concatenated.
    MeanMax,
}

/// How the referee is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefereeTrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// Standard deviation of the Gaussian pixel noise added to training inputs (in the
    /// normalised [-1, 1] scale); each image draws its own level uniformly in `[0, noise_std]`.
    pub noise_std: f64,
}

impl Default for RefereeTrainConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            batch_size: 64,
            lr: 2e-3,
            seed: 0,
            noise_std: 0.15,
        }
    }
}

/// What the referee sees in one image: indices into easy-VQA's `COLORS` and `SHAPES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub color: usize,
    pub shape: usize,
}

impl Verdict {
    /// "a blue rectangle".
    pub fn caption(&self) -> String {
        format!("a {} {}", COLORS[self.color], SHAPES[self.shape])
    }
}

/// Accuracy of the referee on labelled images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefereeReport {
    pub images: usize,
    pub color: f64,
    pub shape: f64,
    /// Colour and shape both right.
    pub both: f64,
}

pub struct Referee {
    cfg: RefereeConfig,
    convs: Vec<Conv2d>,
    head: Linear,
    device: Device,
}

const NORMALIZE: Normalize = Normalize {
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
};

impl Referee {
    pub fn new(cfg: &RefereeConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size == 0 || cfg.channels.contains(&0) {
            return Err(GenerateError::Config(
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
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.relu()?;
        }
        let h = h.flatten_from(2)?;
        let pooled = match self.cfg.pool {
            Pool::Mean => h.mean(D::Minus1)?,
            Pool::Max => h.max(D::Minus1)?,
            Pool::MeanMax => Tensor::cat(&[h.mean(D::Minus1)?, h.max(D::Minus1)?], 1)?,
        };
        Ok(self.head.forward(&pooled)?)
    }

    /// Images (any size; resized to the referee's) to the normalised input tensor.
    pub fn to_input(&self, images: &[RgbImage]) -> Result<Tensor> {
        let s = self.cfg.image_size as u32;
        let sized: Vec<RgbImage> = images.iter().map(|i| resize(i, s, s)).collect();
        Ok(images_to_tensor(&sized, &NORMALIZE, &self.device)?)
    }

    /// The colour and shape the referee reads in each image.
    pub fn judge(&self, images: &[RgbImage]) -> Result<Vec<Verdict>> {
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
            return Err(GenerateError::Config(format!(
                "referee evaluation: {} images for {} labels",
                images.len(),
                labels.len()
            )));
        }
        score(&self.judge(images)?, labels)
    }

    pub fn config(&self) -> &RefereeConfig {
        &self.cfg
    }

    /// Writes a checkpoint directory (`config.json` + `model.safetensors`).
    pub fn save(&self, dir: &Path, vars: &SeededVarMap) -> Result<()> {
        save_checkpoint(dir, &self.cfg, &varmap_tensors(&vars.varmap)?)?;
        Ok(())
    }

    /// Loads a checkpoint directory, qualified or not (see [`Referee::load_qualified`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg: RefereeConfig = read_config(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights, device)
            .map_err(|e| GenerateError::candle(format!("loading {}", weights.display()), e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(&cfg, vb)
    }

    /// Loads a referee that may judge: its directory's [`QUALIFICATION_FILE`] (written by
    /// [`write_qualification`] after training) must show at least [`REQUIRED_ACCURACY`]
    /// (colour and shape both right) on real test images.
    pub fn load_qualified(dir: &Path, device: &Device) -> Result<Self> {
        let Some(q) = read_qualification(dir)? else {
            return Err(GenerateError::Config(format!(
                "{} has no {QUALIFICATION_FILE}: evaluate the referee on real test images first",
                dir.display()
            )));
        };
        if !q.qualified() {
            return Err(GenerateError::Config(format!(
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

/// Share of real test images (colour and shape both right) a referee must reach before its
/// verdicts on generated images count.
pub const REQUIRED_ACCURACY: f64 = 0.99;

/// The file in a referee checkpoint directory that records its accuracy on real images.
pub const QUALIFICATION_FILE: &str = "qualification.json";

/// A referee's accuracy on a real split, kept beside its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Qualification {
    /// The split it was measured on (`test`: images it never trained on).
    pub split: String,
    pub report: RefereeReport,
}

impl Qualification {
    /// Measured on held-out real images and at least [`REQUIRED_ACCURACY`] both-right.
    pub fn qualified(&self) -> bool {
        self.split == "test" && self.report.both >= REQUIRED_ACCURACY
    }
}

/// Writes `dir/`[`QUALIFICATION_FILE`] atomically (temp file + rename).
pub fn write_qualification(dir: &Path, q: &Qualification) -> Result<()> {
    let path = dir.join(QUALIFICATION_FILE);
    let tmp = dir.join(format!(".{QUALIFICATION_FILE}.tmp-{}", std::process::id()));
    let json = serde_json::to_string_pretty(q).map_err(|source| GenerateError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&tmp, json + "\n").map_err(|source| GenerateError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| GenerateError::Io {
        path: path.clone(),
        source,
    })
}

/// The qualification recorded in a referee directory, if any.
pub fn read_qualification(dir: &Path) -> Result<Option<Qualification>> {
    let path = dir.join(QUALIFICATION_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| GenerateError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| GenerateError::Json { path, source })
}

/// Accuracy of verdicts against labels.
pub fn score(verdicts: &[Verdict], labels: &[Verdict]) -> Result<RefereeReport> {
    if verdicts.len() != labels.len() || labels.is_empty() {
        return Err(GenerateError::Config(format!(
            "referee score: {} verdicts for {} labels",
            verdicts.len(),
            labels.len()
        )));
    }
    let n = labels.len() as f64;
    let count = |f: &dyn Fn(&Verdict, &Verdict) -> bool| {
        verdicts.iter().zip(labels).filter(|(v, l)| f(v, l)).count() as f64 / n
    };
    Ok(RefereeReport {
        images: labels.len(),
        color: count(&|v, l| v.color == l.color),
        shape: count(&|v, l| v.shape == l.shape),
        both: count(&|v, l| v == l),
    })
}

/// Trains a referee on labelled real images. Returns the model and its variables (to save).
pub fn train(
    images: &[RgbImage],
    labels: &[Verdict],
    cfg: &RefereeConfig,
    train_cfg: &RefereeTrainConfig,
    device: &Device,
) -> Result<(Referee, SeededVarMap)> {
    if images.len() != labels.len() || images.len() < train_cfg.batch_size.max(1) {
        return Err(GenerateError::Config(format!(
            "referee training needs at least one batch of labelled images ({} images, {} labels, batch {})",
            images.len(),
            labels.len(),
            train_cfg.batch_size
        )));
    }
    if train_cfg.steps == 0 || !train_cfg.noise_std.is_finite() || train_cfg.noise_std < 0.0 {
        return Err(GenerateError::Config(
            "referee training: steps must be > 0 and noise_std >= 0".into(),
        ));
    }
    let vars = SeededVarMap::new(train_cfg.seed);
    let referee = Referee::new(cfg, vars.var_builder(DType::F32, device))?;
    let all = vqrae_train::checkpoint::var_map_vars(&vars.varmap)?;
    let schedule = LrSchedule {
        peak_lr: train_cfg.lr,
        min_lr: train_cfg.lr * 0.05,
        warmup_steps: train_cfg.steps / 20,
        total_steps: train_cfg.steps,
    };
    let group = ParamGroup::new("referee", all.into_iter().collect(), schedule);
    let mut opt = AdamW::new(vec![group], AdamWConfig::default())?;
    let x_all = referee.to_input(images)?;
    let color_all = Tensor::new(
        labels.iter().map(|l| l.color as u32).collect::<Vec<_>>(),
        device,
    )?;
    let shape_all = Tensor::new(
        labels.iter().map(|l| l.shape as u32).collect::<Vec<_>>(),
        device,
    )?;
    let sampler = EpochSampler::new(images.len(), train_cfg.batch_size, train_cfg.seed, true);
    let mut rng = ChaCha8Rng::seed_from_u64(train_cfg.seed ^ 0x5eed);
    for step in 0..train_cfg.steps {
        let idx: Vec<u32> = sampler.batch_at(step).iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx, device)?;
        let x = x_all.index_select(&idx, 0)?;
        let b = x.dim(0)?;
        // per-image noise level, then per-pixel Gaussian noise (seeded: CPU randn is not)
        let levels: Vec<f32> = (0..b)
            .map(|_| rng.gen_range(0.0..=train_cfg.noise_std) as f32)
            .collect();
        let noise = vqrae_train::init::seeded_randn(x.shape(), 0.0, 1.0, rng.gen(), device)?
            .broadcast_mul(&Tensor::new(levels, device)?.reshape((b, 1, 1, 1))?)?;
        let logits = referee.forward(&(x + noise)?)?;
        let loss_c = candle_nn::loss::cross_entropy(
            &logits.narrow(1, 0, COLORS.len())?,
            &color_all.index_select(&idx, 0)?,
        )?;
        let loss_s = candle_nn::loss::cross_entropy(
            &logits.narrow(1, COLORS.len(), SHAPES.len())?,
            &shape_all.index_select(&idx, 0)?,
        )?;
        let loss = (loss_c + loss_s)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        if (step + 1) % 50 == 0 {
            tracing::info!(step = step + 1, loss = loss.to_scalar::<f32>()?, "referee");
        }
    }
    Ok((referee, vars))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A flat image with a filled square or disc of a palette colour, for a fast test.
    fn toy(color: usize, shape: usize, offset: u32) -> RgbImage {
        let [r, g, b] = vqrae_data::easy_vqa::PALETTE[color];
        RgbImage::from_fn(32, 32, |x, y| {
            let (cx, cy) = (8 + offset as i32, 8 + offset as i32);
            let (dx, dy) = (x as i32 - cx - 6, y as i32 - cy - 6);
            let inside = match shape {
                0 => dx * dx + dy * dy <= 36,
                _ => dx.abs() <= 5 && dy.abs() <= 5,
            };
            if inside {
                Rgb([r, g, b])
            } else {
                Rgb([250, 245, 240])
            }
        })
    }

    #[test]
    fn learns_colours_and_round_trips_through_a_checkpoint() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for i in 0..64u32 {
            let (color, shape) = ((i % 4) as usize, 0);
            images.push(toy(color, shape, i % 8));
            labels.push(Verdict { color, shape });
        }
        let cfg = RefereeConfig {
            image_size: 32,
            channels: [8, 8, 16, 16],
            ..Default::default()
        };
        let tcfg = RefereeTrainConfig {
            steps: 60,
            batch_size: 16,
            lr: 1e-2,
            seed: 3,
            noise_std: 0.05,
        };
        let (referee, vars) = train(&images, &labels, &cfg, &tcfg, &dev)?;
        let report = referee.evaluate(&images, &labels)?;
        assert!(report.color > 0.9, "{report:?}");
        let dir = tempfile::tempdir()?;
        referee.save(&dir.path().join("ref"), &vars)?;
        let loaded = Referee::load(&dir.path().join("ref"), &dev)?;
        assert_eq!(loaded.judge(&images)?, referee.judge(&images)?);
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
