//! `pretrain-encoder`, `train-tokenizer`, `eval-tokenizer` (the procedures are in
//! [`vqrae_tokenizer::runs`] and [`vqrae_tokenizer::checkpoint_eval`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use vqrae_data::labelled::Dataset;
use vqrae_tokenizer::checkpoint_eval::{evaluate_checkpoint, CheckpointEval};
use vqrae_tokenizer::quantizer::QuantizerKind;
use vqrae_tokenizer::runs::{
    pretrain_encoder_run, train_tokenizer_run, EncoderPretraining, QuantizerOverrides,
    TokenizerStart, TokenizerTraining,
};

use super::args::JsonArgs;

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
    let p = EncoderPretraining {
        encoder_config: a.encoder,
        train_config: a.train,
        dataset: a.dataset,
        limit: a.limit,
        out: a.out,
    };
    let summary = pretrain_encoder_run(&p, root, device)?;
    println!(
        "{}",
        serde_json::json!({ "out": p.out, "summary": summary })
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
    let overrides = QuantizerOverrides {
        dim: a.codebook_dim,
        codebook_size: a.codebook_size,
        kind: a.quantizer.as_deref().map(|q| match q {
            "vq" => QuantizerKind::Vq,
            _ => QuantizerKind::SimVq,
        }),
        l2_normalize: a.l2_normalize,
    };
    let start = match (a.init, a.config) {
        (Some(_), None) if !overrides.is_empty() => bail!(
            "--codebook-dim, --codebook-size, --quantizer and --l2-normalize change a fresh \
             model's config; a checkpoint keeps its own"
        ),
        (Some(dir), None) => TokenizerStart::Checkpoint(dir),
        (None, Some(config)) => TokenizerStart::Fresh {
            config,
            encoder: a.encoder,
            overrides,
        },
        _ => bail!("give exactly one of --config (a fresh model) or --init (a checkpoint)"),
    };
    let t = TokenizerTraining {
        start,
        train_config: a.train,
        dataset: a.dataset,
        limit: a.limit,
        run: a.run,
        teacher: a.teacher,
    };
    let summary = train_tokenizer_run(&t, root, device)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    eval: CheckpointEval,
    #[command(flatten)]
    json: JsonArgs,
}

pub fn eval_tokenizer(a: EvalArgs, root: &Path, device: &Device) -> Result<()> {
    a.json
        .write(&evaluate_checkpoint(&a.eval, root, device)?.json()?)
}
