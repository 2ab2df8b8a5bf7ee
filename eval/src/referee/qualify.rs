//! `train-referee`: a referee trained on real easy-VQA training images, saved, and qualified
//! (or not) by its accuracy on real test images, which is recorded beside its weights.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;
use vqrae_data::easy_vqa::{load_split, ColorShapeImages, Split};

use super::config::{RefereeConfig, RefereeFile, RefereeTrainConfig};
use super::qualification::{write_qualification, Qualification};
use super::report::RefereeReport;
use super::training::train;
use crate::error::{EvalError, Result};

/// Which real images a referee trains and is qualified on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainRefereeOptions {
    /// Train on a seeded random subset of this many real training images (0: all of them).
    pub limit: usize,
    /// Test on a seeded random subset of this many real test images (0: all of them). A subset
    /// never qualifies a referee: only the whole test split does.
    pub test_limit: usize,
}

/// What [`train_and_qualify`] did, as `train-referee` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct TrainRefereeReport {
    pub out: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of the referee saved to `out` (its
    /// `qualification.json` left out): what identifies it once `out` is trained over.
    pub out_sha256: String,
    pub config: PathBuf,
    pub model: RefereeConfig,
    pub train: RefereeTrainConfig,
    pub parameters: usize,
    pub train_images: usize,
    pub train_seconds: f64,
    /// Real test images (never trained on).
    pub test: RefereeReport,
    /// At least 99% both-right on the whole real test split: may judge generated images.
    pub qualified: bool,
}

/// Trains the referee of the TOML file `config` on real easy-VQA training images under
/// `data_root`, saves it to `out` and records its accuracy on real test images there
/// (`qualification.json`, read by [`read_qualification`](super::read_qualification)). A referee below the required accuracy is saved all the same:
/// whether that is a failure is the caller's call.
pub fn train_and_qualify(
    config: &Path,
    out: &Path,
    data_root: &Path,
    options: &TrainRefereeOptions,
    device: &Device,
) -> Result<TrainRefereeReport> {
    let file = RefereeFile::from_toml_file(config)?;
    let ColorShapeImages { images, labels, .. } =
        real_images(data_root, Split::Train, options.limit, file.train.seed)?;
    let test = real_images(data_root, Split::Test, options.test_limit, 0)?;
    tracing::info!(
        train = images.len(),
        test = test.images.len(),
        "training the referee on real easy-VQA images"
    );
    let t0 = Instant::now();
    let (referee, vars) = train(&images, &labels, &file.model, &file.train, device)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    referee.save(out, &vars)?;
    let n_test = test.images.len();
    let report = referee.evaluate(&test.images, &test.labels)?;
    let q = Qualification {
        // a subset of the test split does not qualify a referee
        split: if options.test_limit == 0 {
            Split::Test.to_string()
        } else {
            format!("test (subset of {n_test})")
        },
        report: report.clone(),
    };
    write_qualification(out, &q)?;
    let parameters = vars.varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    Ok(TrainRefereeReport {
        out: out.to_path_buf(),
        out_sha256: vqrae_data::fs::sha256_model(out)?,
        config: config.to_path_buf(),
        model: file.model,
        train: file.train,
        parameters,
        train_images: images.len(),
        train_seconds,
        test: report,
        qualified: q.qualified(),
    })
}

/// The real easy-VQA images of `split` whose colour and shape are known (a seeded random
/// subset of `limit` when `limit > 0`); an error when there are none.
pub(super) fn real_images(
    data_root: &Path,
    split: Split,
    limit: usize,
    seed: u64,
) -> Result<ColorShapeImages> {
    let real = load_split(data_root, split)?.color_shape_images(limit, seed)?;
    if real.images.is_empty() {
        return Err(EvalError::NoLabelledImages(format!("easy-VQA {split}")));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_data_set_says_how_to_install_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let err = real_images(tmp.path(), Split::Test, 0, 0)
            .expect_err("no data")
            .to_string();
        assert!(err.contains("vqrae data setup"), "{err}");
    }
}
