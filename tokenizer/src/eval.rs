//! Tokenizer evaluation on held-out images: reconstruction (PSNR, SSIM with scikit-image's
//! conventions), codebook use (utilisation over the whole set, perplexity), and how close the
//! encoder's features stay to a reference encoder (mean per-token cosine similarity), and
//! optionally FD-DINOv2 between the originals (at the model's resolution) and the reconstructions.

use std::ops::Range;
use std::time::Instant;

use candle_core::{DType, Tensor, D};
use image::RgbImage;
use serde::Serialize;
use vqrae_data::image_io::resize;

use crate::encoder::VitEncoder;
use crate::error::{Result, TokenizerError};
use crate::fd_dinov2::FdProbe;
use crate::frechet::{frechet_distance, FeatureStats};
use crate::metrics::{psnr, ssim};
use crate::model::Vqrae;
use crate::quantizer::CodebookStats;

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub images: usize,
    /// Mean over images, dB (images identical to their reconstruction are capped at 100 dB).
    pub psnr: f64,
    pub ssim: f64,
    /// Share of the codebook used at least once over the whole set.
    pub utilisation: f64,
    pub perplexity: f64,
    pub codebook_size: usize,
    /// Mean cosine similarity of the encoder's patch tokens to the reference encoder's.
    pub feature_cosine: Option<f64>,
    /// Share of the encoder features' variance (over all test tokens) that lies within images,
    /// i.e. that tells one patch from another; the rest only tells images apart. A tokenizer
    /// can only reconstruct spatial detail the features carry.
    pub feature_within_image_share: f64,
    /// FD-DINOv2 ([`crate::fd_dinov2`]) of the reconstructions against the originals resized to
    /// the model's resolution: what tokenizing loses, not what the lower resolution loses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_dinov2: Option<f64>,
    /// FD-DINOv2 between these originals and as many other real images of the same source
    /// (`eval-tokenizer --fd-floor`): the value two real samples of this size reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_dinov2_floor: Option<f64>,
    pub seconds: f64,
}

/// The optional measurements of an evaluation, each with the encoder it needs.
#[derive(Clone, Copy, Default)]
pub struct Probes<'a> {
    /// The encoder the features are compared with (the original, before stage 2).
    pub reference: Option<&'a VitEncoder>,
    /// FD-DINOv2 of the reconstructions.
    pub fd: Option<&'a FdProbe>,
}

/// Running sums for the within-image share of the feature variance.
#[derive(Default)]
struct FeatureSpread {
    /// Sum over tokens of each feature (`d` values) and of squared norms.
    sum: Vec<f64>,
    sum_sq: f64,
    tokens: usize,
    /// Sum over images of `sum_tokens |f - image mean|^2`.
    within: f64,
}

impl FeatureSpread {
    /// Adds a batch of features `(B, N, d)`.
    fn update(&mut self, features: &candle_core::Tensor) -> Result<()> {
        let f = features.to_dtype(DType::F32)?;
        let (_, n, d) = f.dims3()?;
        let image_mean = f.mean_keepdim(1)?;
        let within = f.broadcast_sub(&image_mean)?.sqr()?.sum_all()?;
        self.within += within.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        self.sum_sq += f
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        let token_sum = f.sum(1)?.sum(0)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        self.sum.resize(d, 0.0);
        for (a, b) in self.sum.iter_mut().zip(token_sum) {
            *a += b;
        }
        self.tokens += f.dim(0)? * n;
        Ok(())
    }

    /// Within-image variance over total variance (0 when there is no variance).
    fn within_share(&self) -> f64 {
        let t = self.tokens.max(1) as f64;
        let mean_sq: f64 = self.sum.iter().map(|s| (s / t).powi(2)).sum();
        let total = self.sum_sq / t - mean_sq;
        if total > 0.0 {
            (self.within / t) / total
        } else {
            0.0
        }
    }
}

/// Running sums of one set of images (the whole set, or one source of it).
struct Tally {
    stats: CodebookStats,
    psnr_sum: f64,
    ssim_sum: f64,
    cos_sum: f64,
    cos_n: usize,
    images: usize,
    spread: FeatureSpread,
    /// FD-DINOv2 features of the originals and of the reconstructions (one vector an image).
    fd_real: Vec<Vec<f32>>,
    fd_fake: Vec<Vec<f32>>,
    t0: Instant,
}

/// What one batch adds to a [`Tally`].
struct Batch<'a> {
    features: &'a Tensor,
    codes: &'a Tensor,
    /// Per image, in order (summed one by one, as a single pass over the set would).
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    cos: Option<(f64, usize)>,
    fd: Option<FdFeatures>,
}

/// FD-DINOv2 features of a batch's originals and of its reconstructions.
type FdFeatures = (Vec<Vec<f32>>, Vec<Vec<f32>>);

impl Tally {
    fn new(codebook_size: usize) -> Self {
        Self {
            stats: CodebookStats::new(codebook_size),
            psnr_sum: 0.0,
            ssim_sum: 0.0,
            cos_sum: 0.0,
            cos_n: 0,
            images: 0,
            spread: FeatureSpread::default(),
            fd_real: Vec::new(),
            fd_fake: Vec::new(),
            t0: Instant::now(),
        }
    }

    fn add(&mut self, b: &Batch) -> Result<()> {
        self.spread.update(b.features)?;
        self.stats.update(b.codes)?;
        for (p, q) in b.psnr.iter().zip(&b.ssim) {
            self.psnr_sum += p;
            self.ssim_sum += q;
        }
        self.images += b.psnr.len();
        if let Some((sum, n)) = b.cos {
            self.cos_sum += sum;
            self.cos_n += n;
        }
        if let Some((real, fake)) = &b.fd {
            self.fd_real.extend(real.iter().cloned());
            self.fd_fake.extend(fake.iter().cloned());
        }
        Ok(())
    }

    /// The figures so far; FD-DINOv2 when features were collected (it needs 2 images or more).
    fn report(&self, codebook_size: usize, with_reference: bool) -> Result<EvalReport> {
        let n = self.images.max(1) as f64;
        let fd_dinov2 = if self.fd_real.is_empty() {
            None
        } else {
            let real = FeatureStats::from_features(&self.fd_real)?;
            let fake = FeatureStats::from_features(&self.fd_fake)?;
            Some(frechet_distance(&real, &fake)?)
        };
        Ok(EvalReport {
            images: self.images,
            psnr: self.psnr_sum / n,
            ssim: self.ssim_sum / n,
            utilisation: self.stats.utilisation(),
            perplexity: self.stats.perplexity(),
            codebook_size,
            feature_cosine: with_reference.then(|| self.cos_sum / self.cos_n.max(1) as f64),
            feature_within_image_share: self.spread.within_share(),
            fd_dinov2,
            fd_dinov2_floor: None,
            seconds: self.t0.elapsed().as_secs_f64(),
        })
    }
}

/// Sum and count of the per-token cosine of `features` to `reference`'s features of `x`.
fn cosine_sums(features: &Tensor, reference: &VitEncoder, x: &Tensor) -> Result<(f64, usize)> {
    let f_ref = reference.patch_tokens(x, false)?.to_dtype(DType::F32)?;
    let f = features.to_dtype(DType::F32)?;
    let dot = (&f * &f_ref)?.sum(D::Minus1)?;
    let norms = (f.sqr()?.sum(D::Minus1)?.sqrt()? * f_ref.sqr()?.sum(D::Minus1)?.sqrt()?)?;
    let cos = (dot / (norms + 1e-12)?)?;
    Ok((
        cos.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        cos.elem_count(),
    ))
}

/// Evaluates `model` on `images` (compared at the model's resolution). Returns the report and
/// the first `keep` reconstructions (for grids).
pub fn evaluate(
    model: &Vqrae,
    images: &[RgbImage],
    reference: Option<&VitEncoder>,
    batch: usize,
    keep: usize,
) -> Result<(EvalReport, Vec<RgbImage>)> {
    let probes = Probes {
        reference,
        fd: None,
    };
    let (all, _, kept) = evaluate_parts(
        model,
        images,
        std::slice::from_ref(&(0..images.len())),
        probes,
        batch,
        keep,
    )?;
    Ok((all, kept))
}

/// [`evaluate`] on the whole of `images` and on each range of `parts` (e.g. the sources of a
/// mixed set) in one pass: the whole set's report, one per part, and the first `keep`
/// reconstructions of each part, part after part.
pub fn evaluate_parts(
    model: &Vqrae,
    images: &[RgbImage],
    parts: &[Range<usize>],
    probes: Probes,
    batch: usize,
    keep: usize,
) -> Result<(EvalReport, Vec<EvalReport>, Vec<RgbImage>)> {
    let reference = probes.reference;
    let s = model.config().image_size as u32;
    let k = model.config().quantizer.codebook_size;
    let mut all = Tally::new(k);
    let mut reports = Vec::with_capacity(parts.len());
    let mut kept = Vec::new();
    for part in parts {
        let part_images = images.get(part.clone()).ok_or_else(|| {
            TokenizerError::Invalid(format!("{part:?} is outside {} images", images.len()))
        })?;
        let mut tally = Tally::new(k);
        let mut part_kept = 0;
        for chunk in part_images.chunks(batch.max(1)) {
            let x = model.images_to_input(chunk)?;
            let enc = model.encode(&x)?;
            let rec = model.output_to_images(&model.decode(&enc.codes, enc.grid)?)?;
            let (mut psnrs, mut ssims) = (Vec::new(), Vec::new());
            let originals: Vec<RgbImage> = chunk.iter().map(|o| resize(o, s, s)).collect();
            for (orig, r) in originals.iter().zip(&rec) {
                psnrs.push(psnr(orig, r).min(100.0));
                ssims.push(ssim(orig, r));
            }
            let b = Batch {
                features: &enc.features,
                codes: &enc.codes,
                psnr: psnrs,
                ssim: ssims,
                cos: match reference {
                    Some(r) => Some(cosine_sums(&enc.features, r, &x)?),
                    None => None,
                },
                fd: match probes.fd {
                    Some(p) => Some((p.features(&originals)?, p.features(&rec)?)),
                    None => None,
                },
            };
            tally.add(&b)?;
            all.add(&b)?;
            let more = keep.saturating_sub(part_kept).min(rec.len());
            kept.extend(rec.into_iter().take(more));
            part_kept += more;
        }
        reports.push(tally.report(k, reference.is_some())?);
    }
    Ok((all.report(k, reference.is_some())?, reports, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn within_share_separates_image_level_from_patch_level_variance() -> Result<()> {
        let dev = Device::Cpu;
        // every token of an image equal: all variance is between images
        let between = Tensor::new(
            &[[[1f32, 0.0], [1.0, 0.0]], [[-1.0, 0.0], [-1.0, 0.0]]],
            &dev,
        )?;
        let mut s = FeatureSpread::default();
        s.update(&between)?;
        assert!(s.within_share().abs() < 1e-9);
        // every image the same set of tokens: all variance is within images
        let within = Tensor::new(
            &[[[1f32, 0.0], [-1.0, 0.0]], [[1.0, 0.0], [-1.0, 0.0]]],
            &dev,
        )?;
        let mut s = FeatureSpread::default();
        s.update(&within.narrow(0, 0, 1)?)?;
        s.update(&within.narrow(0, 1, 1)?)?;
        assert!((s.within_share() - 1.0).abs() < 1e-9);
        Ok(())
    }
}
