//! The training rows: one optimizer step (forward, backward, gradient clipping, AdamW) of the
//! tokenizer's stage 1, of the LM, and of LoRA adapters on a frozen SmolLM2-size LM, in f32 as
//! the trainers run.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor, Var};
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_tokenizer::train::{frozen_encoder, step_losses, TrainConfig};
use vqrae_tokenizer::Vqrae;
use vqrae_train::checkpoint::var_map_vars;
use vqrae_train::init::SeededVarMap;
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

use super::lora::LoraTrainer;
use super::timing::time;
use super::{Bench, Measured};

/// Tokenizer stage 1 on `batch` random images: the decoder (and whatever else stage 1
/// trains) against the frozen encoder's features.
pub(crate) fn train_tok(bench: &mut Bench) -> Result<Measured> {
    let (b, device) = (bench.batch, bench.device);
    let (model, vars) = Vqrae::init_from_checkpoint(&bench.tok_dir(), 0, device)?;
    let teacher = frozen_encoder(&model, &vars, device)?;
    let s = model.config().image_size;
    let x = Tensor::randn(0f32, 1.0, (b, 3, s, s), device)?;
    // stage 1 caches the frozen encoder's features once, before training
    let target = teacher.patch_tokens(&x, false)?.detach();
    let frozen = model.frozen_names();
    let mut trainable: Vec<(String, Var)> = var_map_vars(&vars.varmap)?
        .into_iter()
        .filter(|(k, _)| !k.starts_with("encoder.") && !frozen.contains(k))
        .collect();
    trainable.sort_by(|x, y| x.0.cmp(&y.0));
    let mut opt = AdamW::new(
        vec![ParamGroup::new(
            "decoder",
            trainable,
            LrSchedule::constant(1e-4),
        )],
        AdamWConfig::default(),
    )?;
    let cfg = TrainConfig::default();
    let t = time(device, bench.timing, || {
        let (total, _, _) = step_losses(&model, &teacher, &x, &target, &cfg)?;
        opt.clip_and_step(&total.backward()?, cfg.grad_clip)?;
        Ok(())
    })?;
    Ok(Measured::new("samples/s", b, t))
}

/// The LM (fresh weights at the bench LM's config) on `batch` random prompt + image
/// sequences, with the joint trainer's optimizer settings.
pub(crate) fn train_lm(bench: &mut Bench) -> Result<Measured> {
    let (b, seq, device) = (bench.batch, bench.seq(), bench.device);
    let lm_dir = bench.lm_dir();
    let cfg: LlamaConfig = serde_json::from_str(
        &std::fs::read_to_string(lm_dir.join("config.json"))
            .with_context(|| format!("reading {}", lm_dir.display()))?,
    )?;
    let map = SeededVarMap::new(2);
    let lm = Llama::new(&cfg, map.var_builder(DType::F32, device))?;
    let mut vars: Vec<(String, Var)> = var_map_vars(&map.varmap)?.into_iter().collect();
    vars.sort_by(|x, y| x.0.cmp(&y.0));
    // the joint trainer's settings (configs/lm/joint-easyvqa.toml)
    let mut opt = AdamW::new(
        vec![ParamGroup::new("lm", vars, LrSchedule::constant(1e-4))],
        AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
    )?;
    let code_end = bench.info.code_end;
    let examples: Vec<Example> = (0..b)
        .map(|_| Example {
            ids: bench.random_ids(seq, 0..code_end),
            loss_from: 1,
        })
        .collect();
    let batch = TrainBatch::new(&examples, 0, device)?;
    let t = time(device, bench.timing, || {
        let h = lm.forward_hidden(&lm.embed(&batch.ids)?, None, true)?;
        opt.clip_and_step(&batch.loss(&lm, &h)?.backward()?, 1.0)?;
        Ok(())
    })?;
    Ok(Measured::new("samples/s", b, t))
}

/// Rank-16 adapters on every projection of the bench directory's frozen SmolLM2-size base
/// (`lora-base/`), on `batch` random sequences of the train_lm row's length: the LLaVA
/// trainer's step (base frozen, AdamW on the adapters alone, clipping to norm 1).
pub(crate) fn train_lora(bench: &mut Bench) -> Result<Measured> {
    let (b, seq, device) = (bench.batch, bench.seq(), bench.device);
    let mut trainer = LoraTrainer::new(&bench.dir, device)?;
    let batch = trainer.batch(b, seq, |n, range| bench.random_ids(n, range), device)?;
    let t = time(device, bench.timing, || {
        trainer.step(&batch)?;
        Ok(())
    })?;
    Ok(Measured::new("samples/s", b, t))
}
