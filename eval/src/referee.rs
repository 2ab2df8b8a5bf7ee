//! The independent referee of generated images: a small CNN that reads colour and shape off
//! an easy-VQA-style image.
//!
//! It is trained on *real* easy-VQA training images only (never on generated ones, so it cannot
//! learn the generator's habits) and must reach 99% on real test images before its verdicts on
//! generated images count ([`Referee::load_qualified`] checks the record kept beside the
//! weights). Training shows each image under a random flip / quarter turn and small shift
//! (none changes a label; without them it overfits the 4,000 images) with light pixel noise
//! (so it does not key on the PNGs' exact flat colours, which a decoder only approximates).
//! Figures and ablations: docs/results/referee/README.md.

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

use crate::error::{EvalError, Result};

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
    /// Show each training image under a random one of the 8 flips / quarter turns of the
    /// square: none changes a colour or which of circle, rectangle, triangle a shape is.
    pub flips: bool,
    /// Shift each training image by up to this many pixels each way (the uncovered border
    /// takes the background colour).
    pub max_shift: u32,
}

impl Default for RefereeTrainConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            batch_size: 64,
            lr: 2e-3,
            seed: 0,
            noise_std: 0.15,
            flips: true,
            max_shift: 4,
        }
    }
}

impl RefereeTrainConfig {
    pub fn validate(&self) -> Result<()> {
        let ok = self.steps > 0
            && self.batch_size > 0
            && self.lr.is_finite()
            && self.lr > 0.0
            && self.noise_std.is_finite()
            && self.noise_std >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(EvalError::Config(format!(
                "referee training: steps, batch_size and lr must be > 0 and noise_std >= 0 ({self:?})"
            )))
        }
    }
}

/// A referee config file (`configs/referee.toml`): `[model]` and `[train]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefereeFile {
    pub model: RefereeConfig,
    pub train: RefereeTrainConfig,
}

impl RefereeFile {
    /// Reads and checks a referee TOML file; an unknown key is an error naming the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let file: Self = vqrae_tokenizer::checkpoint::read_toml(path)?;
        if file.model.image_size == 0 || file.model.channels.contains(&0) {
            return Err(EvalError::Config(format!(
                "{}: image_size and channels must be > 0",
                path.display()
            )));
        }
        file.train
            .validate()
            .map_err(|e| EvalError::Config(format!("{}: {e}", path.display())))?;
        Ok(file)
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
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, x.device().is_cpu())
    }

    /// `im2col`: on the CPU, each convolution is [`im2col_3x3`] + one matmul, in channels-last
    /// layout; candle's own CPU conv2d (the other path, and the one on GPUs) spends most of a
    /// training step in its kernel gradient. Both give the same numbers (tested).
    fn forward_with(&self, x: &Tensor, im2col: bool) -> Result<Tensor> {
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
            return Err(EvalError::Config(format!(
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
            .map_err(|e| EvalError::candle(format!("loading {}", weights.display()), e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(&cfg, vb)
    }

    /// Loads a referee that may judge: its directory's [`QUALIFICATION_FILE`] (written by
    /// [`write_qualification`] after training) must show at least [`REQUIRED_ACCURACY`]
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
    let json = serde_json::to_string_pretty(q).map_err(|source| EvalError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&tmp, json + "\n").map_err(|source| EvalError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| EvalError::Io {
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
    let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| EvalError::Json { path, source })
}

/// Accuracy of verdicts against labels.
pub fn score(verdicts: &[Verdict], labels: &[Verdict]) -> Result<RefereeReport> {
    if verdicts.len() != labels.len() || labels.is_empty() {
        return Err(EvalError::Config(format!(
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

/// The patches of a 3x3 convolution with padding 1: channels-last f32 `(B, H, W, C)` to
/// `(B, Ho, Wo, C * 9)`, column `c * 9 + ky * 3 + kx` (the order of a `(C_out, C, 3, 3)`
/// kernel flattened), so the convolution is one matmul. Its gradient is [`Col2Im3x3`].
struct Im2Col3x3 {
    stride: usize,
}

/// Output size of a 3x3 convolution with padding 1.
fn conv_out(size: usize, stride: usize) -> usize {
    (size + 2 - 3) / stride + 1
}

/// For output position `o` and tap `k`, the input position, if inside the image.
fn tap(o: usize, k: usize, stride: usize, size: usize) -> Option<usize> {
    (o * stride + k).checked_sub(1).filter(|&i| i < size)
}

fn f32_contiguous<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous input only");
    };
    Ok(&data[start..end])
}

impl candle_core::CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "referee-im2col-3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let src = f32_contiguous(storage, layout, self.name())?;
        let (b, h, w, c) = layout.shape().dims4()?;
        let (ho, wo, s) = (
            conv_out(h, self.stride),
            conv_out(w, self.stride),
            self.stride,
        );
        let k = 9 * c;
        let mut dst = vec![0f32; b * ho * wo * k];
        for (n, out) in dst.chunks_mut(ho * wo * k).enumerate() {
            let img = &src[n * h * w * c..(n + 1) * h * w * c];
            for oy in 0..ho {
                for ox in 0..wo {
                    let row = &mut out[(oy * wo + ox) * k..(oy * wo + ox + 1) * k];
                    for ky in 0..3 {
                        let Some(iy) = tap(oy, ky, s, h) else {
                            continue;
                        };
                        for kx in 0..3 {
                            let Some(ix) = tap(ox, kx, s, w) else {
                                continue;
                            };
                            let pixel = &img[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                            for (ch, &v) in pixel.iter().enumerate() {
                                row[ch * 9 + ky * 3 + kx] = v;
                            }
                        }
                    }
                }
            }
        }
        Ok((candle_core::CpuStorage::F32(dst), (b, ho, wo, k).into()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, h, w, _) = arg.dims4()?;
        let op = Col2Im3x3 {
            stride: self.stride,
            h,
            w,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// The adjoint of [`Im2Col3x3`]: sums each patch column back onto the pixel it came from.
struct Col2Im3x3 {
    stride: usize,
    h: usize,
    w: usize,
}

impl candle_core::CustomOp1 for Col2Im3x3 {
    fn name(&self) -> &'static str {
        "referee-col2im-3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let src = f32_contiguous(storage, layout, self.name())?;
        let (b, ho, wo, k) = layout.shape().dims4()?;
        let (h, w, s, c) = (self.h, self.w, self.stride, k / 9);
        if k % 9 != 0 || ho != conv_out(h, s) || wo != conv_out(w, s) {
            candle_core::bail!(
                "{}: shape {:?} does not fit {h}x{w}",
                self.name(),
                layout.shape()
            );
        }
        let mut dst = vec![0f32; b * h * w * c];
        for (n, img) in dst.chunks_mut(h * w * c).enumerate() {
            let cols = &src[n * ho * wo * k..(n + 1) * ho * wo * k];
            for oy in 0..ho {
                for ox in 0..wo {
                    let row = &cols[(oy * wo + ox) * k..(oy * wo + ox + 1) * k];
                    for ky in 0..3 {
                        let Some(iy) = tap(oy, ky, s, h) else {
                            continue;
                        };
                        for kx in 0..3 {
                            let Some(ix) = tap(ox, kx, s, w) else {
                                continue;
                            };
                            let pixel = &mut img[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                            for (ch, v) in pixel.iter_mut().enumerate() {
                                *v += row[ch * 9 + ky * 3 + kx];
                            }
                        }
                    }
                }
            }
        }
        Ok((candle_core::CpuStorage::F32(dst), (b, h, w, c).into()))
    }
}

/// A training view of a square image: a random flip / quarter turn (with `flips`), then a
/// random shift of up to `max_shift` pixels each way onto the background colour.
fn augment(img: &RgbImage, flips: bool, max_shift: u32, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let t: u8 = if flips && w == h {
        rng.gen_range(0..8)
    } else {
        0
    };
    let s = i64::from(max_shift);
    let (dx, dy) = if s > 0 {
        (rng.gen_range(-s..=s), rng.gen_range(-s..=s))
    } else {
        (0, 0)
    };
    if t == 0 && dx == 0 && dy == 0 {
        return img.clone();
    }
    let bg = background(img);
    let (wi, hi) = (i64::from(w), i64::from(h));
    RgbImage::from_fn(w, h, |x, y| {
        let (mut u, mut v) = (i64::from(x) - dx, i64::from(y) - dy);
        if u < 0 || v < 0 || u >= wi || v >= hi {
            return bg;
        }
        if t & 4 != 0 {
            std::mem::swap(&mut u, &mut v);
        }
        if t & 1 != 0 {
            u = wi - 1 - u;
        }
        if t & 2 != 0 {
            v = hi - 1 - v;
        }
        *img.get_pixel(u as u32, v as u32)
    })
}

/// The background colour: the commonest of the four corner pixels.
fn background(img: &RgbImage) -> image::Rgb<u8> {
    let (w, h) = img.dimensions();
    let corners =
        [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)].map(|(x, y)| *img.get_pixel(x, y));
    *corners
        .iter()
        .max_by_key(|c| corners.iter().filter(|d| d == c).count())
        .unwrap_or(&corners[0])
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
        return Err(EvalError::Config(format!(
            "referee training needs at least one batch of labelled images ({} images, {} labels, batch {})",
            images.len(),
            labels.len(),
            train_cfg.batch_size
        )));
    }
    train_cfg.validate()?;
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
    let size = cfg.image_size as u32;
    let sized: Vec<RgbImage> = images.iter().map(|i| resize(i, size, size)).collect();
    let color_all: Vec<u32> = labels.iter().map(|l| l.color as u32).collect();
    let shape_all: Vec<u32> = labels.iter().map(|l| l.shape as u32).collect();
    let sampler = EpochSampler::new(images.len(), train_cfg.batch_size, train_cfg.seed, true);
    let mut rng = ChaCha8Rng::seed_from_u64(train_cfg.seed ^ 0x5eed);
    let mut loss_sum = 0.0;
    for step in 0..train_cfg.steps {
        let idx = sampler.batch_at(step);
        let batch: Vec<RgbImage> = idx
            .iter()
            .map(|&i| augment(&sized[i], train_cfg.flips, train_cfg.max_shift, &mut rng))
            .collect();
        let x = images_to_tensor(&batch, &NORMALIZE, device)?;
        let b = x.dim(0)?;
        // per-image noise level, then per-pixel Gaussian noise (seeded: CPU randn is not)
        let levels: Vec<f32> = (0..b)
            .map(|_| rng.gen_range(0.0..=train_cfg.noise_std) as f32)
            .collect();
        let noise = vqrae_train::init::seeded_randn(x.shape(), 0.0, 1.0, rng.gen(), device)?
            .broadcast_mul(&Tensor::new(levels, device)?.reshape((b, 1, 1, 1))?)?;
        let logits = referee.forward(&(x + noise)?)?;
        let pick =
            |all: &[u32]| Tensor::new(idx.iter().map(|&i| all[i]).collect::<Vec<_>>(), device);
        let loss_c = candle_nn::loss::cross_entropy(
            &logits.narrow(1, 0, COLORS.len())?,
            &pick(&color_all)?,
        )?;
        let loss_s = candle_nn::loss::cross_entropy(
            &logits.narrow(1, COLORS.len(), SHAPES.len())?,
            &pick(&shape_all)?,
        )?;
        let loss = (loss_c + loss_s)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        if (step + 1) % 100 == 0 || step + 1 == train_cfg.steps {
            let n = (step % 100 + 1) as f64;
            tracing::info!(
                step = step + 1,
                loss = loss_sum / n,
                "referee (mean loss since the last line)"
            );
            loss_sum = 0.0;
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
            ..Default::default()
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
    fn augmentation_only_moves_pixels() {
        // an asymmetric image: every flip / quarter turn of it differs
        let img = RgbImage::from_fn(16, 16, |x, y| {
            if (2..6).contains(&x) && (3..12).contains(&y) || (x, y) == (9, 3) {
                Rgb([200, 10, 10])
            } else {
                Rgb([240, 240, 250])
            }
        });
        let sorted = |i: &RgbImage| {
            let mut p: Vec<[u8; 3]> = i.pixels().map(|p| p.0).collect();
            p.sort_unstable();
            p
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let a = augment(&img, true, 0, &mut rng);
            assert_eq!(
                sorted(&a),
                sorted(&img),
                "a flip or turn only permutes pixels"
            );
            seen.insert(a.into_raw());
        }
        assert_eq!(seen.len(), 8, "all 8 symmetries of the square are drawn");
        // a shift brings in background, never new colours, and keeps the shape whole here
        for _ in 0..16 {
            let a = augment(&img, false, 2, &mut rng);
            assert!(a
                .pixels()
                .all(|p| p.0 == [200, 10, 10] || p.0 == [240, 240, 250]));
            assert_eq!(
                a.pixels().filter(|p| p.0 == [200, 10, 10]).count(),
                img.pixels().filter(|p| p.0 == [200, 10, 10]).count()
            );
        }
        assert_eq!(augment(&img, false, 0, &mut rng), img);
    }

    #[test]
    fn only_a_referee_with_99_percent_on_real_test_images_may_judge() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let vars = SeededVarMap::new(0);
        let cfg = RefereeConfig {
            image_size: 16,
            channels: [2, 2, 2, 2],
            ..Default::default()
        };
        let referee = Referee::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("ref");
        referee.save(&dir, &vars)?;
        let err = Referee::load_qualified(&dir, &dev)
            .err()
            .expect("no record");
        assert!(err.to_string().contains(QUALIFICATION_FILE), "{err}");
        let report = |both| RefereeReport {
            images: 1000,
            color: 1.0,
            shape: both,
            both,
        };
        for (split, both, ok) in [
            ("test", 0.985, false),
            ("train", 1.0, false),
            ("test", 0.99, true),
        ] {
            let q = Qualification {
                split: split.into(),
                report: report(both),
            };
            write_qualification(&dir, &q)?;
            assert_eq!(read_qualification(&dir)?, Some(q));
            assert_eq!(
                Referee::load_qualified(&dir, &dev).is_ok(),
                ok,
                "{split} {both}"
            );
        }
        // saving again (a retrained referee) drops the old record
        referee.save(&dir, &vars)?;
        assert_eq!(read_qualification(&dir)?, None);
        Ok(())
    }

    #[test]
    fn the_shipped_config_parses_and_a_typo_is_an_error() -> anyhow::Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/referee.toml");
        let file = RefereeFile::from_toml_file(&path)?;
        assert_eq!(file.model.image_size, 64);
        let tmp = tempfile::tempdir()?;
        let bad = tmp.path().join("bad.toml");
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&bad, text.replace("max_shift = ", "max_shfit = "))?;
        let err = RefereeFile::from_toml_file(&bad).expect_err("unknown key");
        assert!(err.to_string().contains("max_shfit"), "{err}");
        std::fs::write(&bad, text.replace("batch_size = 64", "batch_size = 0"))?;
        assert!(RefereeFile::from_toml_file(&bad).is_err());
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
