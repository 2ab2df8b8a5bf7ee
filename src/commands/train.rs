//! `pretrain-encoder`, `train-tokenizer`, `eval-tokenizer` (the procedures are in
//! [`vqrae_tokenizer::runs`] and [`vqrae_tokenizer::checkpoint_eval`]).

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use vqrae_tokenizer::checkpoint_eval::{evaluate_checkpoint, CheckpointEval};
use vqrae_tokenizer::pretrain::PretrainReport;
use vqrae_tokenizer::runs::{
    pretrain_encoder_run, train_tokenizer_run, EncoderPretraining, TokenizerTrainingFlags,
};

use super::args::JsonArgs;

pub fn pretrain(p: EncoderPretraining, root: &Path, device: &Device) -> Result<()> {
    let report = PretrainReport::new(&p.out, pretrain_encoder_run(&p, root, device)?)?;
    println!("{}", serde_json::to_value(report)?);
    Ok(())
}

pub fn train_tokenizer(a: TokenizerTrainingFlags, root: &Path, device: &Device) -> Result<()> {
    let summary = train_tokenizer_run(&a.training()?, root, device)?;
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
