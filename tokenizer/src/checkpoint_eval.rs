//! A tokenizer checkpoint measured on a data set's split (`vqrae eval-tokenizer`): the figures
//! of [`crate::eval`], the feature cosine against a reference encoder, FD-DINOv2 of the
//! reconstructions, and a grid of originals and reconstructions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use image::RgbImage;
use serde::Serialize;
use vqrae_data::easy_vqa::Split;
use vqrae_data::image_io::{grid, resize, save_png};
use vqrae_data::labelled::Dataset;

use crate::encoder::{hf_encoder_config, load_hf_encoder, VitEncoder};
use crate::error::{Result, TokenizerError};
use crate::eval::{evaluate_parts, EvalReport, Probes};
use crate::fd_dinov2::{FdOptions, FdProbe};
use crate::mixed::{evaluate_mixed, MIXED_NAME};
use crate::model::Vqrae;

/// What to evaluate, on what; with the `clap` feature, the flags of `vqrae eval-tokenizer`
/// (the field docs are their help).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct CheckpointEval {
    /// Tokenizer checkpoint directory.
    #[cfg_attr(feature = "clap", arg(long))]
    pub model: PathBuf,
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "easy-vqa"))]
    pub dataset: Dataset,
    /// Split to evaluate (held-out `test` unless you ask otherwise).
    #[cfg_attr(feature = "clap", arg(long, default_value = "test"))]
    pub split: Split,
    /// Encoder the features are compared with (the original, before stage 2), for the mean cosine.
    #[cfg_attr(feature = "clap", arg(long))]
    pub reference: Option<PathBuf>,
    /// Write a grid of originals (odd rows) and reconstructions (even rows) here.
    #[cfg_attr(feature = "clap", arg(long))]
    pub grid: Option<PathBuf>,
    /// Use a seeded random subset (0 = the whole split).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub limit: usize,
    /// Images per forward pass.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub batch: usize,
    /// Measure a mix of sources instead of --dataset, per source too: a training config whose
    /// `[data]` table names them and caps each (`held_out_per_source`), e.g.
    /// configs/train/stage1-dinov2s.toml.
    #[cfg_attr(feature = "clap", arg(long))]
    pub mix: Option<PathBuf>,
    /// Also measure FD-DINOv2 of the reconstructions against the originals (resized to the
    /// model's resolution), per source with --mix, with this DINOv2 directory (e.g.
    /// .data/models/dinov2-small).
    #[cfg_attr(feature = "clap", arg(long))]
    pub fd_encoder: Option<PathBuf>,
    /// The FD-DINOv2 input size (224 px in its literature).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = crate::fd_dinov2::RESOLUTION))]
    pub fd_resolution: u32,
    /// With --mix and --fd-encoder: also each source's FD floor, FD-DINOv2 between its held-out
    /// images and as many of its training images (real against real).
    #[cfg_attr(feature = "clap", arg(long))]
    pub fd_floor: bool,
}

/// The report of [`evaluate_checkpoint`]. Print it through [`CheckpointReport::json`].
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointReport {
    pub dataset: &'static str,
    pub model: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `model`: what identifies it once the path holds
    /// another checkpoint.
    pub model_sha256: String,
    pub report: EvalReport,
    /// With `--mix`: the figures of each source of the mix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_source: Option<BTreeMap<String, EvalReport>>,
    pub split: String,
    /// With `--fd-encoder`: the DINOv2 directory of the FD figures, its content hash, and the
    /// resolution its features were taken at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_encoder: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_encoder_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_resolution: Option<u32>,
}

impl CheckpointReport {
    /// As JSON with every object's keys sorted (`serde_json`'s map): the order the report has
    /// always been printed and written in, the nested figures included.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|source| TokenizerError::Config {
            path: self.model.clone(),
            source,
        })
    }
}

/// Images per grid row (originals, then their reconstructions).
const GRID_COLUMNS: usize = 8;
/// Reconstructions kept for the grid.
const GRID_IMAGES: usize = 16;

/// Loads the checkpoint and its data, evaluates, and writes the grid if asked.
pub fn evaluate_checkpoint(
    e: &CheckpointEval,
    root: &Path,
    device: &Device,
) -> Result<CheckpointReport> {
    let model = Vqrae::load(&e.model, device, DType::F32)?;
    let reference = match &e.reference {
        Some(dir) => Some(reference_encoder(&model, dir, device)?),
        None => None,
    };
    let fd = match &e.fd_encoder {
        Some(dir) => {
            let options = FdOptions {
                resolution: e.fd_resolution,
                ..FdOptions::default()
            };
            Some(FdProbe::load(dir, options, device)?)
        }
        None => None,
    };
    let probes = Probes {
        reference: reference.as_ref(),
        fd: fd.as_ref(),
    };
    let (dataset, images, report, recs, per_source) = match &e.mix {
        Some(config) => {
            let m = evaluate_mixed(&model, config, root, e, probes, GRID_COLUMNS / 2)?;
            (
                MIXED_NAME,
                m.originals,
                m.report,
                m.reconstructions,
                Some(m.per_source),
            )
        }
        None => {
            let data = e.dataset.load(root, e.split, e.limit, 0)?;
            let whole = 0..data.images.len();
            let (report, _, recs) = evaluate_parts(
                &model,
                &data.images,
                std::slice::from_ref(&whole),
                probes,
                e.batch,
                GRID_IMAGES,
            )?;
            (e.dataset.name(), data.images, report, recs, None)
        }
    };
    if let Some(path) = &e.grid {
        let s = model.config().image_size as u32;
        save_png(&originals_over_reconstructions(&images, &recs, s), path)?;
    }
    Ok(CheckpointReport {
        dataset,
        per_source,
        model: e.model.clone(),
        model_sha256: vqrae_data::fs::sha256_model(&e.model)?,
        report,
        split: e.split.to_string(),
        fd_encoder: fd.as_ref().map(|p| p.dir.clone()),
        fd_encoder_sha256: fd.as_ref().map(|p| p.sha256.clone()),
        fd_resolution: fd.as_ref().map(|p| p.options.resolution),
    })
}

/// The encoder in `dir`, which must have the model's encoder architecture.
fn reference_encoder(model: &Vqrae, dir: &Path, device: &Device) -> Result<VitEncoder> {
    let cfg = hf_encoder_config(&dir.join("config.json"))?;
    if cfg != model.config().encoder {
        return Err(TokenizerError::Invalid(format!(
            "reference encoder {} has another architecture than the model's",
            dir.display()
        )));
    }
    Ok(load_hf_encoder(dir, device, DType::F32)?.encoder)
}

/// Rows of up to [`GRID_COLUMNS`] originals (resized to `size`), each followed by a row of
/// their reconstructions.
fn originals_over_reconstructions(images: &[RgbImage], recs: &[RgbImage], size: u32) -> RgbImage {
    let mut cells = Vec::new();
    for row in recs.chunks(GRID_COLUMNS) {
        let start = cells.len() / 2;
        cells.extend((start..start + row.len()).map(|i| resize(&images[i], size, size)));
        cells.extend(row.iter().cloned());
    }
    grid(&cells, GRID_COLUMNS, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_measured_on_its_split_with_a_grid() -> Result<()> {
        let (dir, model) = crate::runs::testing::tiny_checkpoint()?;
        let e = CheckpointEval {
            model: model.clone(),
            dataset: Dataset::Scenes,
            split: Split::Test,
            reference: None,
            grid: Some(dir.path().join("grid.png")),
            limit: 10,
            batch: 4,
            mix: None,
            fd_encoder: None,
            fd_resolution: 224,
            fd_floor: false,
        };
        let r = evaluate_checkpoint(&e, Path::new("/nonexistent"), &Device::Cpu)?;
        assert_eq!(
            (r.report.images, r.dataset, r.split.as_str()),
            (10, "procedural scenes", "test")
        );
        assert!(r.report.feature_cosine.is_none());
        // 10 reconstructions: 8 originals over theirs, then 2 and 2 in one last row of 8 cells
        let g = vqrae_data::image_io::load_rgb(&dir.path().join("grid.png"))?;
        let s = 32 + 2;
        assert_eq!(g.dimensions(), (8 * s + 2, 3 * s + 2));
        let text = serde_json::to_string(&r.json()?).unwrap_or_default();
        let at = |k: &str| text.find(&format!("\"{k}\"")).unwrap_or(usize::MAX);
        let keys = [
            "dataset",
            "model",
            "model_sha256",
            "codebook_size",
            "images",
            "psnr",
            "split",
        ];
        assert!(keys.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
        assert_eq!(r.model_sha256, vqrae_data::fs::sha256_model(&model)?);
        assert_eq!(r.model_sha256.len(), 64);
        // a reference encoder of another architecture is refused
        let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip_tiny");
        let bad = CheckpointEval {
            reference: Some(other),
            ..e
        };
        let err = evaluate_checkpoint(&bad, Path::new("/nonexistent"), &Device::Cpu).map(|_| ());
        assert!(err.is_err_and(|e| e.to_string().contains("another architecture")));
        Ok(())
    }

    #[test]
    fn fd_of_the_reconstructions_is_fd_dinov2_of_the_originals_at_model_size() -> Result<()> {
        let (_dir, model_dir) = crate::runs::testing::tiny_checkpoint()?;
        let enc = crate::runs::testing::fixture("dinov2_tiny");
        let e = CheckpointEval {
            model: model_dir.clone(),
            dataset: Dataset::Scenes,
            split: Split::Test,
            reference: None,
            grid: None,
            limit: 6,
            batch: 4,
            mix: None,
            fd_encoder: Some(enc.clone()),
            fd_resolution: 16,
            fd_floor: false,
        };
        let r = evaluate_checkpoint(&e, Path::new("/nonexistent"), &Device::Cpu)?;
        let fd = r.report.fd_dinov2.unwrap_or(f64::NAN);
        // the same number computed directly on the same images
        let model = Vqrae::load(&model_dir, &Device::Cpu, DType::F32)?;
        let data = Dataset::Scenes.load(Path::new("/nonexistent"), Split::Test, 6, 0)?;
        let (_, recs) = crate::eval::evaluate(&model, &data.images, None, 6, 6)?;
        let s = model.config().image_size as u32;
        let originals: Vec<RgbImage> = data.images.iter().map(|i| resize(i, s, s)).collect();
        let hf = load_hf_encoder(&enc, &Device::Cpu, DType::F32)?;
        let options = FdOptions {
            resolution: 16,
            batch: 5,
        };
        let direct = crate::fd_dinov2::fd_dinov2(&hf, &originals, &recs, &options, &Device::Cpu)?;
        assert!(
            fd > 0.0 && (fd - direct).abs() < 1e-6 * direct,
            "{fd} vs {direct}"
        );
        assert_eq!(r.fd_resolution, Some(16));
        assert_eq!(r.fd_encoder.as_deref(), Some(enc.as_path()));
        // an encoder without DINOv2's class token cannot give FD-DINOv2
        let siglip = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip_tiny");
        let bad = CheckpointEval {
            fd_encoder: Some(siglip),
            ..e
        };
        let err = evaluate_checkpoint(&bad, Path::new("/nonexistent"), &Device::Cpu).map(|_| ());
        assert!(err.is_err_and(|e| e.to_string().contains("FD-DINOv2 needs a DINOv2")));
        Ok(())
    }
}
