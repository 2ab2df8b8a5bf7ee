//! `vqrae probe`: are an encoder's weights real and semantic? Linear probes on its frozen
//! features against a random encoder of the same shape (the procedure is
//! [`vqrae_tokenizer::encoder_probe::run_probes`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use vqrae_tokenizer::encoder_probe::{
    run_probes, FeatureSource, ProbeDatasets, ProbeRequest, TABLE_HEADER,
};

#[derive(Args)]
pub struct ProbeArgs {
    /// Encoder directory (Hugging Face, e.g. .data/models/dinov2-small from
    /// scripts/convert-dinov2.sh, or `pretrain-encoder` output), or a tokenizer checkpoint, whose
    /// encoder (after stage 2: the trained one) is probed.
    #[arg(long)]
    encoder: PathBuf,
    #[arg(long, value_enum, default_value = "all")]
    dataset: ProbeDatasets,
    /// Square input resolution (images are resized to it; position embeddings interpolated).
    #[arg(long, default_value_t = 112)]
    resolution: u32,
    /// Training images used for Fashion-MNIST (a seeded random subset of the 60,000; 0 = all).
    #[arg(long, default_value_t = 10000)]
    train_limit: usize,
    /// Test images used (0 = the whole test split).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of the subset choice and of the random encoder.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which features to probe: the pretrained encoder, the same architecture randomly
    /// initialised, and raw pixels (flattened at the data's own size, for context).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "pretrained,random"
    )]
    features: Vec<FeatureSource>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: ProbeArgs, root: &Path, dev: &Device) -> Result<()> {
    let req = ProbeRequest {
        encoder: a.encoder,
        datasets: a.dataset.datasets(),
        features: a.features,
        resolution: a.resolution,
        train_limit: a.train_limit,
        test_limit: a.test_limit,
        batch: a.batch,
        seed: a.seed,
    };
    println!("{TABLE_HEADER}");
    let rows = run_probes(&req, root, dev, |row| println!("{}", row.table_row()))?;
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
