//! FD-DINOv2: the Fréchet distance ([`crate::frechet`]) between DINOv2 features of real and of
//! reconstructed / generated images, the rFID-like number of the paper with DINOv2 in place of
//! Inception (whose weights are not available here; Stein et al., 2023, show DINOv2-L/14
//! features rank generative models closer to human judgement than Inception's).
//!
//! The features follow that literature (dgm-eval): each image resized (bicubic, Catmull-Rom) so
//! its shorter side is 224 px and centre-cropped to 224 x 224, ImageNet mean / std, and the
//! **class token** of the last layer after the final layer norm, one 384-wide vector per image
//! for DINOv2-S. Features are computed in f32, the statistics in f64. DINOv2 interpolates its
//! position table to the input's grid, so other resolutions (a multiple of the patch) work too;
//! figures are comparable only at one resolution, which the report records.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use image::RgbImage;
use serde::Serialize;
use vqrae_data::image_io::load_rgb;
use vqrae_data::tensor::Normalize;

use crate::encoder::{load_hf_encoder, EncoderConfig, HfEncoder};
use crate::error::{Result, TokenizerError};
use crate::frechet::{frechet_distance, FeatureStats};
use crate::model::check_resolution;
use crate::preprocess::{Preprocess, Resize};

/// The input size of the FD-DINOv2 literature.
pub const RESOLUTION: u32 = 224;
/// Images encoded at once.
pub const BATCH: usize = 32;
/// The most images a folder may contribute: the features are held in memory (1.5 KiB an image
/// for DINOv2-S) and each image costs a forward pass.
pub const MAX_IMAGES: usize = 50_000;

/// How [`fd_dinov2`] and [`fd_dinov2_folders`] compute their features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FdOptions {
    /// Square input size in pixels, a multiple of the patch ([`RESOLUTION`] in the literature).
    pub resolution: u32,
    /// Images a forward pass.
    pub batch: usize,
}

impl Default for FdOptions {
    fn default() -> Self {
        Self {
            resolution: RESOLUTION,
            batch: BATCH,
        }
    }
}

/// The FD-DINOv2 preprocessing at `resolution`: shorter side to `resolution`, centre crop,
/// ImageNet normalisation (whatever the checkpoint's own preprocessing says).
fn preprocess(resolution: u32) -> Preprocess {
    Preprocess {
        resize: Resize::ShortestEdgeCrop {
            shortest_edge: resolution,
            crop_height: resolution,
            crop_width: resolution,
        },
        normalize: Normalize::IMAGENET,
    }
}

/// Refuses an encoder without DINOv2's class token and a resolution it cannot take.
fn check(encoder: &HfEncoder, options: &FdOptions) -> Result<()> {
    if !matches!(encoder.config, EncoderConfig::Dinov2(_)) || encoder.encoder.prefix_tokens() != 1 {
        return Err(TokenizerError::Invalid(format!(
            "FD-DINOv2 needs a DINOv2 encoder (its class token), not {}",
            encoder.config.arch()
        )));
    }
    check_resolution(
        "FD resolution",
        options.resolution as usize,
        encoder.config.patch_size(),
    )
    .map_err(TokenizerError::Invalid)?;
    if options.batch == 0 {
        return Err(TokenizerError::Invalid("FD batch must be positive".into()));
    }
    Ok(())
}

/// The class token of the last layer (after the final norm) of each image, in f32.
pub fn cls_features(
    encoder: &HfEncoder,
    images: &[RgbImage],
    options: &FdOptions,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    check(encoder, options)?;
    let pre = preprocess(options.resolution);
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(options.batch) {
        let x = pre.to_tensor(chunk, device)?;
        let hidden = encoder.encoder.forward(&x, false)?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?.to_dtype(DType::F32)?;
        out.extend(cls.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// FD-DINOv2 between `real` and `fake` images (at least 2 of each).
pub fn fd_dinov2(
    encoder: &HfEncoder,
    real: &[RgbImage],
    fake: &[RgbImage],
    options: &FdOptions,
    device: &Device,
) -> Result<f64> {
    let real = FeatureStats::from_features(&cls_features(encoder, real, options, device)?)?;
    let fake = FeatureStats::from_features(&cls_features(encoder, fake, options, device)?)?;
    frechet_distance(&real, &fake)
}

/// A loaded FD-DINOv2 encoder with its settings and identity: what an evaluation that reports
/// FD-DINOv2 beside its other figures carries through its batches.
pub struct FdProbe {
    encoder: HfEncoder,
    device: Device,
    pub options: FdOptions,
    pub dir: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `dir`.
    pub sha256: String,
}

impl FdProbe {
    /// The DINOv2 encoder in `dir` at `options`; refused like [`fd_dinov2_folders`] refuses.
    pub fn load(dir: &Path, options: FdOptions, device: &Device) -> Result<Self> {
        if !dir.join("config.json").is_file() {
            return Err(TokenizerError::Checkpoint {
                path: dir.to_path_buf(),
                msg: "no encoder here (config.json missing); scripts/convert-dinov2.sh installs \
                      DINOv2-small"
                    .into(),
            });
        }
        let encoder = load_hf_encoder(dir, device, DType::F32)?;
        check(&encoder, &options)?;
        Ok(Self {
            encoder,
            device: device.clone(),
            options,
            dir: dir.to_path_buf(),
            sha256: vqrae_data::fs::sha256_model(dir)?,
        })
    }

    /// [`cls_features`] of `images` on the device the encoder was loaded on.
    pub fn features(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        cls_features(&self.encoder, images, &self.options, &self.device)
    }
}

/// Images used from each folder unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 10_000;

/// What `vqrae fd-dinov2` asks for (with the `clap` feature, its flags; the field docs are their
/// help); [`Self::run`] computes it.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct FdRequest {
    /// Folder of real images (PNG, JPEG; searched recursively).
    #[cfg_attr(feature = "clap", arg(long))]
    pub real: PathBuf,
    /// Folder of reconstructed or generated images.
    #[cfg_attr(feature = "clap", arg(long))]
    pub fake: PathBuf,
    /// DINOv2 directory; default `<data>/models/dinov2-small` (scripts/convert-dinov2.sh).
    #[cfg_attr(feature = "clap", arg(long))]
    pub encoder: Option<PathBuf>,
    /// Images used from each folder: the first in path order (at most 50,000).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_LIMIT))]
    pub limit: usize,
    /// Square input size in pixels, a multiple of the patch (224 in the FD-DINOv2 literature).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = RESOLUTION))]
    pub resolution: u32,
    /// Images a forward pass.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = BATCH))]
    pub batch: usize,
    /// Also write the report (JSON) here.
    #[cfg_attr(feature = "clap", arg(long))]
    pub json: Option<PathBuf>,
}

impl FdRequest {
    /// The report of [`fd_dinov2_folders`], with `default_encoder` unless one was asked for.
    pub fn run(&self, default_encoder: &Path, device: &Device) -> Result<FdReport> {
        let options = FdOptions {
            resolution: self.resolution,
            batch: self.batch,
        };
        let encoder = self.encoder.as_deref().unwrap_or(default_encoder);
        fd_dinov2_folders(
            encoder, &self.real, &self.fake, self.limit, &options, device,
        )
    }
}

/// One side of a [`FdReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FdSet {
    pub dir: PathBuf,
    /// Images in the folder (recursively; PNG, JPEG, BMP, GIF, WebP).
    pub found: usize,
    /// Images used: the first `limit` in path order.
    pub images: usize,
}

/// What `vqrae fd-dinov2` prints and writes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FdReport {
    pub fd_dinov2: f64,
    pub real: FdSet,
    pub fake: FdSet,
    /// The encoder directory and its content hash (`vqrae_data::fs::sha256_model`: the rule
    /// `scripts/check_results.py` checks recorded models by).
    pub encoder: PathBuf,
    pub encoder_sha256: String,
    pub resolution: u32,
    /// Which features, and the covariance convention, in words.
    pub features: &'static str,
    pub covariance: &'static str,
}

/// FD-DINOv2 between the images of two folders, each capped at `limit` images (at most
/// [`MAX_IMAGES`]), decoded within the data crate's file limits, `options.batch` at a time.
pub fn fd_dinov2_folders(
    encoder_dir: &Path,
    real: &Path,
    fake: &Path,
    limit: usize,
    options: &FdOptions,
    device: &Device,
) -> Result<FdReport> {
    if !(2..=MAX_IMAGES).contains(&limit) {
        return Err(TokenizerError::Invalid(format!(
            "the image limit {limit} is outside 2..={MAX_IMAGES}"
        )));
    }
    let probe = FdProbe::load(encoder_dir, *options, device)?;
    let (real_set, real_stats) = folder_stats(&probe, real, limit)?;
    let (fake_set, fake_stats) = folder_stats(&probe, fake, limit)?;
    Ok(FdReport {
        fd_dinov2: frechet_distance(&real_stats, &fake_stats)?,
        real: real_set,
        fake: fake_set,
        encoder: probe.dir,
        encoder_sha256: probe.sha256,
        resolution: options.resolution,
        features: "class token of the last layer after the final layer norm",
        covariance: "unbiased (divisor n - 1), f64",
    })
}

/// The statistics of the first `limit` images of `dir`, decoded one batch at a time.
fn folder_stats(probe: &FdProbe, dir: &Path, limit: usize) -> Result<(FdSet, FeatureStats)> {
    let paths = vqrae_data::folder::list_images(dir)?;
    let used = &paths[..paths.len().min(limit)];
    if used.len() < 2 {
        return Err(TokenizerError::Invalid(format!(
            "{} holds {} image(s); FD-DINOv2 needs at least 2",
            dir.display(),
            used.len()
        )));
    }
    let mut features = Vec::with_capacity(used.len());
    for chunk in used.chunks(probe.options.batch) {
        let images = chunk
            .iter()
            .map(|p| load_rgb(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        features.extend(probe.features(&images)?);
    }
    let set = FdSet {
        dir: dir.to_path_buf(),
        found: paths.len(),
        images: used.len(),
    };
    Ok((set, FeatureStats::from_features(&features)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::testing::fixture;
    use vqrae_data::image_io::save_png;

    /// `n` images of `size` px in `dir`, their colours set by `tint`.
    fn write_images(dir: &Path, n: u32, size: u32, tint: u8) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| TokenizerError::Io {
            path: dir.into(),
            source,
        })?;
        for i in 0..n {
            let img = RgbImage::from_fn(size, size + i % 3, |x, y| {
                image::Rgb([(x * 9 + i * 40) as u8, (y * 7) as u8 ^ tint, tint])
            });
            save_png(&img, &dir.join(format!("{i:02}.png")))?;
        }
        Ok(())
    }

    const TINY: FdOptions = FdOptions {
        resolution: 16,
        batch: 3,
    };

    #[test]
    fn folders_give_a_report_with_counts_limit_and_encoder_hash() -> Result<()> {
        let tmp = crate::runs::testing::tempdir()?;
        let (real, fake, same) = (
            tmp.path().join("real"),
            tmp.path().join("fake"),
            tmp.path().join("same"),
        );
        write_images(&real, 7, 20, 0)?;
        write_images(&fake, 5, 24, 200)?;
        write_images(&same, 7, 20, 0)?;
        let enc = fixture("dinov2_tiny");
        let r = fd_dinov2_folders(&enc, &real, &fake, 6, &TINY, &Device::Cpu)?;
        assert_eq!((r.real.found, r.real.images), (7, 6));
        assert_eq!((r.fake.found, r.fake.images), (5, 5));
        assert_eq!(r.encoder_sha256, vqrae_data::fs::sha256_model(&enc)?);
        assert_eq!(r.resolution, 16);
        assert!(r.fd_dinov2 > 0.0, "{r:?}");
        // the same pictures (in other files): nothing but rounding
        let s = fd_dinov2_folders(&enc, &real, &same, 6, &TINY, &Device::Cpu)?;
        assert!(s.fd_dinov2.abs() < 1e-6 * r.fd_dinov2, "{s:?} vs {r:?}");
        // batching does not change the features
        let one = FdOptions { batch: 1, ..TINY };
        let b = fd_dinov2_folders(&enc, &real, &fake, 6, &one, &Device::Cpu)?;
        assert!((b.fd_dinov2 - r.fd_dinov2).abs() < 1e-6 * r.fd_dinov2);
        Ok(())
    }

    #[test]
    fn bad_folders_encoders_and_settings_are_refused() -> Result<()> {
        let tmp = crate::runs::testing::tempdir()?;
        let (real, one, broken) = (
            tmp.path().join("real"),
            tmp.path().join("one"),
            tmp.path().join("broken"),
        );
        write_images(&real, 3, 20, 0)?;
        write_images(&one, 1, 20, 0)?;
        write_images(&broken, 2, 20, 0)?;
        std::fs::write(broken.join("00.png"), b"not a png").map_err(|source| {
            TokenizerError::Io {
                path: broken.clone(),
                source,
            }
        })?;
        let enc = fixture("dinov2_tiny");
        let err = |enc: &Path, fake: &Path, limit: usize, o: FdOptions| {
            fd_dinov2_folders(enc, &real, fake, limit, &o, &Device::Cpu)
                .map(|r| r.fd_dinov2)
                .unwrap_err()
                .to_string()
        };
        let e = err(&enc, &one, 10, TINY);
        assert!(e.contains("holds 1 image(s)"), "{e}");
        let e = err(&enc, &tmp.path().join("none"), 10, TINY);
        assert!(e.contains("none"), "{e}");
        let e = err(&enc, &broken, 10, TINY);
        assert!(e.contains("00.png"), "{e}");
        let e = err(&enc, &real, 1, TINY);
        assert!(e.contains("limit 1"), "{e}");
        let e = err(&enc, &real, MAX_IMAGES + 1, TINY);
        assert!(e.contains("outside 2..="), "{e}");
        let e = err(tmp.path(), &real, 10, TINY);
        assert!(e.contains("convert-dinov2.sh"), "{e}");
        let e = err(&fixture("siglip_tiny"), &real, 10, TINY);
        assert!(e.contains("not siglip"), "{e}");
        let e = err(
            &enc,
            &real,
            10,
            FdOptions {
                resolution: 18,
                ..TINY
            },
        );
        assert!(e.contains("multiple of 4"), "{e}");
        let e = err(&enc, &real, 10, FdOptions { batch: 0, ..TINY });
        assert!(e.contains("batch"), "{e}");
        Ok(())
    }
}
