//! How faithfully the model's own tokenizer reconstructs an image: the image check of the
//! model card. The model knows easy-VQA-like images (64x64, one coloured shape on a plain
//! background) and answers confidently about anything; an image far from what its tokenizer
//! was trained on comes back from encode -> codes -> decode far from itself, so its
//! reconstruction PSNR (against the image resized to the tokenizer's input size) measures how
//! well the model can see it. The card's [`crate::card::ImageCheck`] holds the threshold and
//! the measurement that chose it (`eval/examples/image_ood.rs`).
//!
//! The server answers a question from the same encoding: [`UnifiedModel::features_and_psnr`]
//! encodes once and adds only the decode (a few milliseconds at 64x64).

use candle_core::Tensor;
use image::RgbImage;
use serde::Serialize;
use vqrae_data::image_io::resize;
use vqrae_tokenizer::metrics::psnr;
use vqrae_tokenizer::Vqrae;

use crate::error::Result;
use crate::model::UnifiedModel;

/// Images encoded and decoded per batch.
const BATCH: usize = 64;

/// Highest PSNR reported, dB: identical images give infinity, which JSON cannot hold.
pub const MAX_PSNR: f64 = 100.0;

/// The tokenizer's input size of `images` (what it reads), and its decode of their codes.
fn sized_and_decoded(tokenizer: &Vqrae, images: &[RgbImage]) -> Result<Vec<(RgbImage, RgbImage)>> {
    let s = tokenizer.config().image_size as u32;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(BATCH) {
        let sized: Vec<RgbImage> = chunk.iter().map(|i| resize(i, s, s)).collect();
        let recon = tokenizer.reconstruct_images(&sized)?;
        out.extend(sized.into_iter().zip(recon));
    }
    Ok(out)
}

/// PSNR of `sized` against `recon`, capped at [`MAX_PSNR`].
fn capped_psnr(sized: &RgbImage, recon: &RgbImage) -> f64 {
    psnr(sized, recon).min(MAX_PSNR)
}

/// Reconstruction PSNR (dB) of each image through `tokenizer`: the image resized to the
/// tokenizer's input size, encoded to codes, decoded, compared with the resized image.
pub fn reconstruction_psnr(tokenizer: &Vqrae, images: &[RgbImage]) -> Result<Vec<f64>> {
    Ok(sized_and_decoded(tokenizer, images)?
        .iter()
        .map(|(s, r)| capped_psnr(s, r))
        .collect())
}

/// The distribution of one group's PSNRs, dB.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PsnrSummary {
    pub n: usize,
    pub min: f64,
    /// 0.5th percentile.
    pub p0_5: f64,
    pub p1: f64,
    pub p5: f64,
    pub median: f64,
    pub mean: f64,
    pub max: f64,
}

/// The `q`-th quantile (0..=1) of sorted values, linear between ranks (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The summary of `values`; `None` when there are none (or a NaN among them).
pub fn summarize(values: &[f64]) -> Option<PsnrSummary> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(PsnrSummary {
        n: sorted.len(),
        min: sorted[0],
        p0_5: quantile(&sorted, 0.005),
        p1: quantile(&sorted, 0.01),
        p5: quantile(&sorted, 0.05),
        median: quantile(&sorted, 0.5),
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        max: sorted[sorted.len() - 1],
    })
}

impl UnifiedModel {
    /// Continuous features `(B, N, d)` of images, as [`UnifiedModel::features`], and each
    /// image's reconstruction PSNR from the same encoding (its codes decoded).
    pub fn features_and_psnr(&self, images: &[RgbImage]) -> Result<(Tensor, Vec<f64>)> {
        let s = self.tokenizer.config().image_size as u32;
        let sized: Vec<RgbImage> = images.iter().map(|i| resize(i, s, s)).collect();
        let input = self.tokenizer.images_to_input(&sized)?;
        let enc = self.tokenizer.encode(&input)?;
        let decoded = self.tokenizer.decode(&enc.codes, enc.grid)?;
        let recon = self.tokenizer.output_to_images(&decoded)?;
        let psnrs = sized
            .iter()
            .zip(&recon)
            .map(|(s, r)| capped_psnr(s, r))
            .collect();
        Ok((enc.features, psnrs))
    }

    /// Each image's reconstruction PSNR against the card's image check: `Ok` for an image the
    /// model can see, or when the model has no card or its card no image check.
    pub fn check_images(
        &self,
        images: &[RgbImage],
    ) -> Result<Vec<std::result::Result<(), crate::card::OutOfDistribution>>> {
        let Some(card) = &self.card else {
            return Ok(images.iter().map(|_| Ok(())).collect());
        };
        if card.images.is_none() {
            return Ok(images.iter().map(|_| Ok(())).collect());
        }
        Ok(reconstruction_psnr(&self.tokenizer, images)?
            .into_iter()
            .map(|p| card.check_image_psnr(p))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quantiles_follow_numpy() {
        let v: Vec<f64> = (0..=200).rev().map(f64::from).collect();
        let s = summarize(&v).expect("values");
        assert_eq!(s.n, 201);
        assert_eq!((s.min, s.max), (0.0, 200.0));
        assert_eq!(s.p0_5, 1.0);
        assert_eq!(s.p1, 2.0);
        assert_eq!(s.p5, 10.0);
        assert_eq!(s.median, 100.0);
        assert_eq!(s.mean, 100.0);
        // between ranks: numpy.percentile([0, 10], 25) = 2.5
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[1.0, f64::NAN]).is_none());
    }
}
