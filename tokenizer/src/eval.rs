//! Tokenizer evaluation on held-out images: reconstruction (PSNR, SSIM with scikit-image's
//! conventions), codebook use (utilisation over the whole set, perplexity), and how close the
//! encoder's features stay to a reference encoder (mean per-token cosine similarity).

use std::time::Instant;

use candle_core::{DType, D};
use image::RgbImage;
use serde::Serialize;
use vqrae_data::image_io::resize;

use crate::encoder::VitEncoder;
use crate::error::Result;
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
    pub seconds: f64,
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

/// Evaluates `model` on `images` (compared at the model's resolution). Returns the report and
/// the first `keep` reconstructions (for grids).
pub fn evaluate(
    model: &Vqrae,
    images: &[RgbImage],
    reference: Option<&VitEncoder>,
    batch: usize,
    keep: usize,
) -> Result<(EvalReport, Vec<RgbImage>)> {
    let t0 = Instant::now();
    let s = model.config().image_size as u32;
    let mut stats = CodebookStats::new(model.config().quantizer.codebook_size);
    let (mut psnr_sum, mut ssim_sum, mut cos_sum, mut cos_n) = (0.0, 0.0, 0.0, 0usize);
    let mut kept = Vec::new();
    let mut spread = FeatureSpread::default();
    for chunk in images.chunks(batch.max(1)) {
        let x = model.images_to_input(chunk)?;
        let enc = model.encode(&x)?;
        spread.update(&enc.features)?;
        stats.update(&enc.codes)?;
        let rec = model.output_to_images(&model.decode(&enc.codes, enc.grid)?)?;
        for (orig, r) in chunk.iter().zip(&rec) {
            let orig = resize(orig, s, s);
            psnr_sum += psnr(&orig, r).min(100.0);
            ssim_sum += ssim(&orig, r);
        }
        if let Some(reference) = reference {
            let f_ref = reference.patch_tokens(&x, false)?.to_dtype(DType::F32)?;
            let f = enc.features.to_dtype(DType::F32)?;
            let dot = (&f * &f_ref)?.sum(D::Minus1)?;
            let norms =
                (f.sqr()?.sum(D::Minus1)?.sqrt()? * f_ref.sqr()?.sum(D::Minus1)?.sqrt()?)?;
            let cos = (dot / (norms + 1e-12)?)?;
            cos_sum += cos.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            cos_n += cos.elem_count();
        }
        kept.extend(rec.into_iter().take(keep.saturating_sub(kept.len())));
    }
    let n = images.len().max(1) as f64;
    Ok((
        EvalReport {
            images: images.len(),
            psnr: psnr_sum / n,
            ssim: ssim_sum / n,
            utilisation: stats.utilisation(),
            perplexity: stats.perplexity(),
            codebook_size: model.config().quantizer.codebook_size,
            feature_cosine: reference.map(|_| cos_sum / cos_n.max(1) as f64),
            feature_within_image_share: spread.within_share(),
            seconds: t0.elapsed().as_secs_f64(),
        },
        kept,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

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
