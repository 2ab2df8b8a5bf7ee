//! `eval-referee`: a referee's accuracy on real easy-VQA images, per true colour and shape,
//! with the images it misjudges; and on a tokenizer's reconstructions of the same images, the
//! most a text-to-image model drawing through that decoder can score with this referee.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use image::RgbImage;
use serde::Serialize;
use vqrae_data::easy_vqa::{ColorShapeImages, Split, COLORS, SHAPES};
use vqrae_data::fs::sha256_model;
use vqrae_data::image_io::{grid, save_png};
use vqrae_tokenizer::Vqrae;

use super::model::Referee;
use super::qualification::read_qualification;
use super::qualify::real_images;
use super::report::{score, RefereeReport, Verdict};
use crate::error::Result;

/// The most misjudged real images a report lists.
const MAX_LISTED_ERRORS: usize = 50;

/// What [`evaluate_on_real`] measures, and on which images.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRefereeOptions {
    /// Also judge this tokenizer's reconstructions `decode(encode(x))` of the same images.
    pub tokenizer: Option<PathBuf>,
    pub split: Split,
    /// A seeded random subset of this many images of the split (0: all of it).
    pub limit: usize,
    /// Images per tokenizer forward pass.
    pub batch: usize,
    /// Write a grid of the real images the referee misjudges here (PNG), when there are any.
    pub errors: Option<PathBuf>,
}

/// What `eval-referee` prints.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRefereeReport {
    pub referee: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `referee` (and `tokenizer_sha256` of `tokenizer`):
    /// what identifies the models measured once their paths hold others.
    pub referee_sha256: String,
    pub split: String,
    pub images: usize,
    /// Whether the referee's own record shows it may judge (99% on the whole real test split).
    pub qualified: bool,
    pub real: DetailedReport,
    /// The real images the referee gets wrong (at most 50): id, truth, verdict.
    pub real_errors: Vec<Misjudged>,
    pub tokenizer: Option<PathBuf>,
    pub tokenizer_sha256: Option<String>,
    /// The tokenizer's reconstructions of the same images: the ceiling of any generator that
    /// draws through this decoder, as this referee sees it.
    pub reconstructed: Option<DetailedReport>,
    pub reconstruct_seconds: Option<f64>,
}

/// Accuracy, plus both-right accuracy per true colour and per true shape (which ones a
/// decoder loses), in easy-VQA's order.
#[derive(Clone, Debug, Serialize)]
pub struct DetailedReport {
    #[serde(flatten)]
    pub report: RefereeReport,
    pub by_color: Vec<ClassAccuracy>,
    pub by_shape: Vec<ClassAccuracy>,
}

/// Both-right accuracy on the images of one true colour or shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: &'static str,
    pub images: usize,
    /// Colour and shape both right.
    pub both: f64,
}

/// A real image the referee reads wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Misjudged {
    pub id: usize,
    pub truth: String,
    pub verdict: String,
}

/// Judges the real easy-VQA images of `options.split` under `data_root` with the referee in
/// `referee_dir` (qualified or not: this is how one finds out), and, with
/// `options.tokenizer`, that tokenizer's reconstructions of them.
pub fn evaluate_on_real(
    referee_dir: &Path,
    data_root: &Path,
    options: &EvalRefereeOptions,
    device: &Device,
) -> Result<EvalRefereeReport> {
    let referee = Referee::load(referee_dir, device)?;
    let qualified = read_qualification(referee_dir)?.is_some_and(|q| q.qualified());
    let ColorShapeImages {
        ids,
        images,
        labels,
        ..
    } = real_images(data_root, options.split, options.limit, 0)?;
    let verdicts = referee.judge(&images)?;
    let real = detailed(&verdicts, &labels)?;
    let wrong: Vec<usize> = (0..labels.len())
        .filter(|&i| verdicts[i] != labels[i])
        .collect();
    let real_errors = wrong
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|&i| Misjudged {
            id: ids[i],
            truth: labels[i].caption(),
            verdict: verdicts[i].caption(),
        })
        .collect();
    if let Some(path) = &options.errors {
        let cells: Vec<RgbImage> = wrong.iter().map(|&i| images[i].clone()).collect();
        if cells.is_empty() {
            tracing::info!("no misjudged images: {} not written", path.display());
        } else {
            save_png(&grid(&cells, 8, 2), path)?;
        }
    }
    let (reconstructed, reconstruct_seconds) = match &options.tokenizer {
        Some(dir) => {
            let model = Vqrae::load(dir, device, vqrae_train::device::default_dtype(device))?;
            let t0 = Instant::now();
            let mut recs = Vec::with_capacity(images.len());
            for chunk in images.chunks(options.batch.max(1)) {
                let out = model.reconstruct(&model.images_to_input(chunk)?)?;
                recs.extend(model.output_to_images(&out)?);
            }
            let secs = t0.elapsed().as_secs_f64();
            (Some(detailed(&referee.judge(&recs)?, &labels)?), Some(secs))
        }
        None => (None, None),
    };
    let tokenizer_sha256 = options.tokenizer.as_deref().map(sha256_model).transpose()?;
    Ok(EvalRefereeReport {
        referee: referee_dir.to_path_buf(),
        referee_sha256: sha256_model(referee_dir)?,
        split: options.split.to_string(),
        images: images.len(),
        qualified,
        real,
        real_errors,
        tokenizer: options.tokenizer.clone(),
        tokenizer_sha256,
        reconstructed,
        reconstruct_seconds,
    })
}

/// [`score`], and both-right accuracy per true colour and shape (classes with no image left
/// out).
fn detailed(verdicts: &[Verdict], labels: &[Verdict]) -> Result<DetailedReport> {
    let per = |names: &[&'static str], of: fn(&Verdict) -> usize| -> Vec<ClassAccuracy> {
        names
            .iter()
            .enumerate()
            .filter_map(|(k, &class)| {
                let pairs: Vec<_> = verdicts
                    .iter()
                    .zip(labels)
                    .filter(|(_, l)| of(l) == k)
                    .collect();
                let right = pairs.iter().filter(|(v, l)| v == l).count();
                (!pairs.is_empty()).then(|| ClassAccuracy {
                    class,
                    images: pairs.len(),
                    both: right as f64 / pairs.len() as f64,
                })
            })
            .collect()
    };
    Ok(DetailedReport {
        report: score(verdicts, labels)?,
        by_color: per(&COLORS, |v| v.color),
        by_shape: per(&SHAPES, |v| v.shape),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(color: usize, shape: usize) -> Verdict {
        Verdict { color, shape }
    }

    #[test]
    fn per_class_accuracy_is_by_the_true_label_and_skips_absent_classes() -> Result<()> {
        let labels = [v(0, 0), v(0, 1), v(2, 1), v(2, 1)];
        let verdicts = [v(0, 0), v(1, 1), v(2, 1), v(2, 0)];
        let d = detailed(&verdicts, &labels)?;
        assert_eq!(d.report.both, 0.5);
        let classes = |c: &[ClassAccuracy]| -> Vec<(&str, usize, f64)> {
            c.iter().map(|a| (a.class, a.images, a.both)).collect()
        };
        assert_eq!(classes(&d.by_color), [("red", 2, 0.5), ("blue", 2, 0.5)]);
        assert_eq!(
            classes(&d.by_shape),
            [("circle", 1, 1.0), ("rectangle", 3, 1.0 / 3.0)]
        );
        // the report's fields sit beside the per-class lists
        let json = serde_json::to_value(&d).expect("serialisable");
        assert_eq!(json["images"], 4);
        assert_eq!(json["by_color"][1]["class"], "blue");
        Ok(())
    }
}
