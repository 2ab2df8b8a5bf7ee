//! `pretrain-encoder`, `train-tokenizer`, `eval-tokenizer`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use vqrae_data::easy_vqa::Split;
use vqrae_data::image_io::{grid, resize, save_png};
use vqrae_tokenizer::checkpoint::read_toml;
use vqrae_tokenizer::encoder::{hf_encoder_config, hf_tensors, load_hf_encoder};
use vqrae_tokenizer::eval::evaluate;
use vqrae_tokenizer::pretrain::{pretrain_encoder, PretrainConfig};
use vqrae_tokenizer::quantizer::QuantizerKind;
use vqrae_tokenizer::train::{train, write_teacher, TrainConfig};
use vqrae_tokenizer::{Vqrae, VqraeConfig};

use super::datasets::{self, Dataset};

#[derive(Args)]
pub struct PretrainArgs {
    /// Encoder config (TOML with `arch = "vit"` and the own ViT's fields).
    #[arg(long)]
    encoder: PathBuf,
    /// Training hyper-parameters (TOML, `PretrainConfig`); defaults when absent.
    #[arg(long)]
    train: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "easy-vqa")]
    dataset: Dataset,
    /// Use a seeded random subset of the training split (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Output encoder directory.
    #[arg(short, long)]
    out: PathBuf,
}

pub fn pretrain(a: PretrainArgs, root: &Path, device: &Device) -> Result<()> {
    let enc_cfg: vqrae_tokenizer::encoder::EncoderConfig = read_toml(&a.encoder)?;
    enc_cfg.spec().map_err(anyhow::Error::msg)?;
    let cfg: PretrainConfig = match &a.train {
        Some(p) => read_toml(p)?,
        None => PretrainConfig::default(),
    };
    let data = datasets::load(root, a.dataset, Split::Train, a.limit, cfg.seed)?;
    let summary = pretrain_encoder(&enc_cfg, &data.images, &data.columns, &cfg, &a.out, device)?;
    println!(
        "{}",
        serde_json::json!({ "out": a.out, "summary": summary })
    );
    Ok(())
}

#[derive(Args)]
pub struct TrainArgs {
    /// Tokenizer config (TOML) for a fresh model; not needed with --init.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start from this tokenizer checkpoint (stage 2 starts from stage 1's `RUN/model`).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Encoder directory (Hugging Face or `pretrain-encoder` output) for a fresh model.
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Training config (TOML, `TrainConfig`: stage, steps, learning rates, loss weights).
    #[arg(long)]
    train: PathBuf,
    #[arg(long, value_enum, default_value = "easy-vqa")]
    dataset: Dataset,
    /// Use a seeded random subset of the training split (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Run directory: training checkpoints (resumed automatically), metrics.jsonl, `model/`.
    #[arg(long)]
    run: PathBuf,
    /// Stage 2: distil to this encoder (Hugging Face or `pretrain-encoder` output) instead of a
    /// copy of the starting one; e.g. the original pretrained encoder when `--init` is a model
    /// whose encoder has already moved. Read when the run starts; a resumed run keeps its own.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Override the config's codebook width `e` (fresh models only; the codebook sweeps).
    #[arg(long)]
    codebook_dim: Option<usize>,
    /// Override the config's codebook size `k` (fresh models only).
    #[arg(long)]
    codebook_size: Option<usize>,
    /// Override the config's quantizer kind (fresh models only).
    #[arg(long, value_parser = ["simvq", "vq"])]
    quantizer: Option<String>,
    /// Look codes up by cosine (fresh models only; see `QuantizerConfig::l2_normalize`).
    #[arg(long)]
    l2_normalize: bool,
}

pub fn train_tokenizer(a: TrainArgs, root: &Path, device: &Device) -> Result<()> {
    let cfg = TrainConfig::from_toml_file(&a.train)?;
    let ((model, vars), fresh) = match (&a.init, &a.config) {
        (Some(dir), None) => (Vqrae::init_from_checkpoint(dir, cfg.seed, device)?, false),
        (None, Some(path)) => {
            let mut mcfg = VqraeConfig::from_toml_file(path)?;
            let q = &mut mcfg.quantizer;
            q.dim = a.codebook_dim.unwrap_or(q.dim);
            q.codebook_size = a.codebook_size.unwrap_or(q.codebook_size);
            q.kind = match a.quantizer.as_deref() {
                Some("vq") => QuantizerKind::Vq,
                Some(_) => QuantizerKind::SimVq,
                None => q.kind,
            };
            q.l2_normalize |= a.l2_normalize;
            mcfg.validate()?;
            (
                Vqrae::init(&mcfg, a.encoder.as_deref(), cfg.seed, device)?,
                true,
            )
        }
        _ => bail!("give exactly one of --config (a fresh model) or --init (a checkpoint)"),
    };
    if a.init.is_some()
        && (a.codebook_dim.is_some()
            || a.codebook_size.is_some()
            || a.quantizer.is_some()
            || a.l2_normalize)
    {
        bail!("--codebook-dim, --codebook-size, --quantizer and --l2-normalize change a fresh model's config; a checkpoint keeps its own");
    }
    if let Some(dir) = &a.teacher {
        if cfg.stage != 2 {
            bail!("--teacher is for stage 2 (stage 1 has the encoder frozen: it is the teacher)");
        }
        let hf = hf_encoder_config(&dir.join("config.json"))?;
        if hf != model.config().encoder {
            bail!(
                "teacher encoder {} has another architecture than the model's",
                dir.display()
            );
        }
        let tensors = hf_tensors(dir, &hf)?;
        if !write_teacher(&a.run, &tensors)? {
            tracing::info!(run = %a.run.display(), "the run already has its teacher; --teacher is ignored");
        }
    }
    let data = datasets::load(root, a.dataset, Split::Train, a.limit, cfg.seed)?;
    let s = model.config().image_size as u32;
    let images: Vec<_> = data.images.iter().map(|i| resize(i, s, s)).collect();
    let summary = train(&model, &vars, &images, &cfg, &a.run, fresh, device)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// Tokenizer checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum, default_value = "easy-vqa")]
    dataset: Dataset,
    /// Split to evaluate (held-out `test` unless you ask otherwise).
    #[arg(long, default_value = "test")]
    split: Split,
    /// Encoder the features are compared with (the original, before stage 2), for the mean cosine.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Write a grid of originals (odd rows) and reconstructions (even rows) here.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Use a seeded random subset (0 = the whole split).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn eval_tokenizer(a: EvalArgs, root: &Path, device: &Device) -> Result<()> {
    let model = Vqrae::load(&a.model, device, DType::F32)?;
    let reference = match &a.reference {
        Some(dir) => {
            let cfg = hf_encoder_config(&dir.join("config.json"))?;
            if cfg != model.config().encoder {
                bail!(
                    "reference encoder {} has another architecture than the model's",
                    dir.display()
                );
            }
            Some(load_hf_encoder(dir, device, DType::F32)?.encoder)
        }
        None => None,
    };
    let data = datasets::load(root, a.dataset, a.split, a.limit, 0)?;
    let (report, recs) = evaluate(&model, &data.images, reference.as_ref(), a.batch, 16)?;
    let out = serde_json::json!({ "model": a.model, "dataset": a.dataset.name(), "split": a.split.to_string(), "report": report });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.grid {
        let s = model.config().image_size as u32;
        let mut cells = Vec::new();
        for row in recs.chunks(8) {
            let start = cells.len() / 2;
            cells.extend((start..start + row.len()).map(|i| resize(&data.images[i], s, s)));
            cells.extend(row.iter().cloned());
        }
        save_png(&grid(&cells, 8, 2), path)?;
    }
    Ok(())
}
