//! Are an encoder's weights real and semantic? (`vqrae probe`) Linear probes ([`crate::probe`])
//! on its frozen, mean-pooled features for each label column of a data set, beside the same
//! probes on a randomly initialised encoder of the same shape and on raw pixels.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Serialize;
use vqrae_data::easy_vqa::Split;
use vqrae_data::labelled::Dataset;
use vqrae_data::tensor::Normalize;
use vqrae_train::progress;

use crate::encoder::{load_hf_encoder, EncoderConfig, VitEncoder};
use crate::error::{Result, TokenizerError};
use crate::init::SeededVarMap;
use crate::model::Vqrae;
use crate::preprocess::{Preprocess, Resize};
use crate::probe::{pooled_features, LinearProbe, ProbeConfig};

/// The data sets one probe run covers (`vqrae probe --dataset`): one of the two, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ProbeDatasets {
    FashionMnist,
    EasyVqa,
    All,
}

impl ProbeDatasets {
    /// The data sets, in the order their rows are printed.
    pub fn datasets(self) -> Vec<Dataset> {
        match self {
            Self::FashionMnist => vec![Dataset::FashionMnist],
            Self::EasyVqa => vec![Dataset::EasyVqa],
            Self::All => vec![Dataset::FashionMnist, Dataset::EasyVqa],
        }
    }
}

/// Whose features a probe reads: the encoder as loaded, the same architecture with seeded
/// random weights, or the images' pixels flattened at the data's own size (for context).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FeatureSource {
    Pretrained,
    Random,
    Pixels,
}

impl FeatureSource {
    /// The name in the table's encoder column.
    pub fn label(self) -> &'static str {
        match self {
            FeatureSource::Pretrained => "pretrained",
            FeatureSource::Random => "random init",
            FeatureSource::Pixels => "raw pixels",
        }
    }
}

/// The probes to fit.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    /// An encoder directory (Hugging Face, or `pretrain-encoder` output) or a tokenizer
    /// checkpoint, whose encoder is probed.
    pub encoder: PathBuf,
    pub datasets: Vec<Dataset>,
    pub features: Vec<FeatureSource>,
    /// Square input resolution (position embeddings interpolated).
    pub resolution: u32,
    /// Fashion-MNIST training images used (a seeded random subset of the 60,000; 0: all);
    /// the other sets train on their whole training split.
    pub train_limit: usize,
    /// Test images used (0: the whole test split).
    pub test_limit: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Seed of the subsets and of the random encoder.
    pub seed: u64,
}

/// One probe's result. The fields are in alphabetical order: the order of the command's JSON
/// rows, which were `serde_json::json!` objects (sorted keys) before this type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeRow {
    /// Test accuracy, in [0, 1].
    pub accuracy: f64,
    pub data: &'static str,
    pub encoder: &'static str,
    /// Wall time of extracting the train and test features.
    pub feature_seconds: f64,
    /// The label column.
    pub probe: String,
    pub resolution: u32,
    pub test: usize,
    pub train: usize,
}

/// The markdown table's header, above [`ProbeRow::table_row`]s.
pub const TABLE_HEADER: &str = "| data | probe | encoder | train | test | test accuracy | feature \
                                time |\n|---|---|---|---|---|---|---|";

impl ProbeRow {
    pub fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {:.2}% | {:.0} s |",
            self.data,
            self.probe,
            self.encoder,
            self.train,
            self.test,
            100.0 * self.accuracy,
            self.feature_seconds
        )
    }
}

/// Fits every probe of `req`, handing each row to `on_row` as soon as it is known (the
/// feature extraction takes minutes), and returns them all.
pub fn run_probes(
    req: &ProbeRequest,
    root: &Path,
    dev: &Device,
    mut on_row: impl FnMut(&ProbeRow),
) -> Result<Vec<ProbeRow>> {
    let (encoder, enc_cfg, normalize) = load_encoder(&req.encoder, dev)?;
    let pre = Preprocess {
        resize: Resize::Exact {
            height: req.resolution,
            width: req.resolution,
        },
        normalize,
    };
    let mut encoders: Vec<(FeatureSource, Option<VitEncoder>)> = Vec::new();
    for &source in &req.features {
        let enc = match source {
            FeatureSource::Pretrained => Some(encoder.clone()),
            FeatureSource::Random => {
                let vars = SeededVarMap::new(req.seed);
                Some(VitEncoder::new(
                    &enc_cfg,
                    vars.var_builder(DType::F32, dev),
                )?)
            }
            FeatureSource::Pixels => None,
        };
        encoders.push((source, enc));
    }
    let mut rows = Vec::new();
    for &task in &req.datasets {
        let train_limit = if task == Dataset::FashionMnist {
            req.train_limit
        } else {
            0
        };
        let train = task.load(root, Split::Train, train_limit, req.seed)?;
        let test = task.load(root, Split::Test, req.test_limit, req.seed)?;
        for (source, enc) in &encoders {
            let t0 = Instant::now();
            let what = |split: &str| format!("{} {split} ({})", task.name(), source.label());
            let (xtr, xte) = match enc {
                Some(enc) => (
                    extract(enc, &pre, &train.images, req.batch, dev, &what("train"))?,
                    extract(enc, &pre, &test.images, req.batch, dev, &what("test"))?,
                ),
                None => (pixels(&train.images)?, pixels(&test.images)?),
            };
            let secs = t0.elapsed().as_secs_f64();
            for (col_tr, col_te) in train.columns.iter().zip(&test.columns) {
                let probe = LinearProbe::fit(
                    &xtr,
                    &col_tr.labels,
                    col_tr.classes,
                    &ProbeConfig::default(),
                )?;
                let row = ProbeRow {
                    accuracy: probe.accuracy(&xte, &col_te.labels)?,
                    data: task.name(),
                    encoder: source.label(),
                    feature_seconds: secs,
                    probe: col_tr.name.clone(),
                    resolution: req.resolution,
                    test: test.images.len(),
                    train: train.images.len(),
                };
                on_row(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// Pooled features of `images` in batches, on the CPU in f32, with a progress bar.
fn extract(
    enc: &VitEncoder,
    pre: &Preprocess,
    images: &[RgbImage],
    batch: usize,
    dev: &Device,
    what: &str,
) -> Result<Tensor> {
    let bar = progress::bar(images.len() as u64, 0, what);
    let mut parts = Vec::new();
    for chunk in images.chunks(batch.max(1)) {
        parts.push(
            pooled_features(enc, pre, chunk, dev)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?,
        );
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Tensor::cat(&parts, 0)?)
}

/// Images flattened to `(n, h * w * 3)` values in [0, 1].
fn pixels(images: &[RgbImage]) -> Result<Tensor> {
    let rows: Vec<Tensor> = images
        .iter()
        .map(|im| {
            let v: Vec<f32> = im.as_raw().iter().map(|&p| p as f32 / 255.0).collect();
            Tensor::from_vec(v, (1, im.as_raw().len()), &Device::Cpu)
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// The encoder of an encoder directory or of a tokenizer checkpoint (told apart by the
/// `quantizer` section of its config), its config and its pixel normalisation.
fn load_encoder(dir: &Path, dev: &Device) -> Result<(VitEncoder, EncoderConfig, Normalize)> {
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|source| TokenizerError::Io {
        path: config.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| TokenizerError::Config {
            path: config.clone(),
            source,
        })?;
    if json.get("quantizer").is_some() {
        let model = Vqrae::load(dir, dev, DType::F32)?;
        let cfg = model.config().clone();
        return Ok((model.encoder().clone(), cfg.encoder, cfg.normalize));
    }
    let hf = load_hf_encoder(dir, dev, DType::F32)?;
    Ok((hf.encoder, hf.config, hf.preprocess.normalize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_of_a_checkpoints_encoder_and_of_a_random_one_on_the_scenes() -> Result<()> {
        let (_dir, model) = crate::runs::testing::tiny_checkpoint()?;
        let req = ProbeRequest {
            encoder: model,
            datasets: vec![Dataset::Scenes],
            features: vec![FeatureSource::Pretrained, FeatureSource::Random],
            resolution: 32,
            train_limit: 10,
            test_limit: 20,
            batch: 8,
            seed: 1,
        };
        let mut streamed = Vec::new();
        let rows = run_probes(&req, Path::new("/nonexistent"), &Device::Cpu, |r| {
            streamed.push(r.clone())
        })?;
        assert_eq!(rows, streamed);
        let encoders: Vec<&str> = rows.iter().map(|r| r.encoder).collect();
        assert_eq!(encoders, ["pretrained", "random init"]);
        // the scenes' 4,000 training images are all used; the test split is cut to 20
        assert!(rows
            .iter()
            .all(|r| r.train == 4000 && r.test == 20 && r.probe == "count"));
        assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r.accuracy)));
        let row = rows[1].table_row();
        assert!(row.starts_with("| procedural scenes | count | random init | 4000 | 20 | "));
        let json = serde_json::to_string(&rows[0]).unwrap_or_default();
        assert!(
            json.starts_with("{\"accuracy\":") && json.ends_with(",\"train\":4000}"),
            "{json}"
        );
        Ok(())
    }

    #[test]
    fn pixels_are_flattened_to_the_unit_range() -> Result<()> {
        let im = RgbImage::from_fn(2, 1, |x, _| image::Rgb([255, 0, 51 * x as u8]));
        let x = pixels(&[im.clone(), im])?;
        assert_eq!(x.dims(), [2, 6]);
        assert_eq!(x.to_vec2::<f32>()?[1], [1.0, 0.0, 0.0, 1.0, 0.0, 0.2]);
        Ok(())
    }
}
