//! [`train`]: a joint run from start (or its newest checkpoint) to the saved unified model, in
//! named steps: the run's text side, the examples, the trainable parts, where to start, the
//! phase and checkpoint loop, the model directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Var};
use serde::{Deserialize, Serialize};
use vqrae_lm::{LlamaConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;
use vqrae_train::checkpoint;
use vqrae_train::lock::RunLock;
use vqrae_train::metrics::MetricsLog;
use vqrae_train::optim::AdamW;
use vqrae_train::progress;

use super::config::{parse_dtype, JointConfig};
use super::data::JointData;
use super::examples::{Examples, Prompts};
use super::parts::Parts;
use super::step::{step_loss, StepLoss};
use crate::error::{Result, UnifiedError};
use crate::model::{UnifiedConfig, UnifiedModel, TEXT_TOKENIZER_FILE};

/// What a finished run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JointSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub seconds: f64,
    pub params: usize,
    pub non_embedding_params: usize,
    pub vocab: UnifiedVocab,
    pub final_losses: serde_json::Value,
    pub model_dir: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of the model saved to `model_dir` (empty in summaries
    /// written before it was kept): what identifies it once a later run writes over the path.
    #[serde(default)]
    pub model_dir_sha256: String,
}

/// Trains (or resumes) a joint run in `run_dir` on `data` encoded by the tokenizer at
/// `tokenizer_dir`, and writes the unified model to `run_dir/model`. Holds the run directory's
/// lock ([`RunLock`]) throughout: a second trainer on `run_dir` fails at once.
pub fn train(
    cfg: &JointConfig,
    data: &JointData,
    tokenizer_dir: &Path,
    run_dir: &Path,
    device: &Device,
) -> Result<JointSummary> {
    let lock = RunLock::acquire(run_dir)?;
    train_locked(cfg, data, tokenizer_dir, &lock, device)
}

/// [`train`] in the run directory of `lock`, taken by the caller before the slow work that
/// precedes training (encoding the data), so that a second trainer fails before it starts.
pub fn train_locked(
    cfg: &JointConfig,
    data: &JointData,
    tokenizer_dir: &Path,
    lock: &RunLock,
    device: &Device,
) -> Result<JointSummary> {
    let run_dir = lock.dir();
    cfg.validate()?;
    let started = Instant::now();
    let tokenizer = Vqrae::load(tokenizer_dir, device, DType::F32)?;
    let codebook = tokenizer.config().quantizer.codebook_size;
    let grid = tokenizer.config().grid();
    let image_tokens = grid.0 * grid.1;
    let (_, n_feat, d_feat) = data.features.dims3()?;
    if n_feat != image_tokens || data.codes.iter().any(|c| c.len() != image_tokens) {
        return Err(UnifiedError::Config(format!(
            "the data was encoded with {n_feat} tokens per image, the tokenizer has {image_tokens}"
        )));
    }
    let text = text_tokenizer(run_dir, data, cfg.text_vocab_size)?;
    let vocab = UnifiedVocab::new(text.vocab_size(), codebook)?;
    let llama_cfg = cfg.lm.llama_config(vocab.size())?;
    let prompts = Prompts {
        text,
        vocab,
        image_tokens,
    };

    let examples = Examples::build(cfg, data, prompts)?;
    check_positions(&examples, image_tokens, &llama_cfg)?;
    examples.check_coverage()?;
    let parts = Parts::init(&llama_cfg, d_feat, cfg.seed, device)?;
    let all_vars = parts.all_vars();
    let resume = resume(cfg, run_dir, &parts, &all_vars)?;
    let resumed_from = resume.resumed_from;
    let run = Run {
        cfg,
        data,
        examples: &examples,
        parts: &parts,
        all_vars: &all_vars,
        run_dir,
        device,
    };
    let final_losses = run.steps(resume)?;

    let model_dir = run_dir.join("model");
    let unified = UnifiedConfig {
        vocab,
        image_tokens,
        grid,
        projector: parts.projector_cfg.clone(),
    };
    UnifiedModel::save_parts(
        &model_dir,
        &unified,
        tokenizer_dir,
        &parts.lm,
        &parts.projector_tensors(),
        &examples.prompts.text,
        parse_dtype(&cfg.save_dtype)?,
    )?;
    Ok(JointSummary {
        steps: cfg.total_steps(),
        resumed_from,
        seconds: started.elapsed().as_secs_f64(),
        params: llama_cfg.params(),
        non_embedding_params: llama_cfg.non_embedding_params(),
        vocab,
        final_losses,
        model_dir_sha256: vqrae_data::fs::sha256_model(&model_dir)?,
        model_dir,
    })
}

/// The run's text tokenizer: a BPE trained on the data's texts when the run starts, and saved
/// in the run, so that a resumed run reloads the very same one.
fn text_tokenizer(run_dir: &Path, data: &JointData, vocab_size: usize) -> Result<TextTokenizer> {
    let path = run_dir.join(TEXT_TOKENIZER_FILE);
    if path.exists() {
        return Ok(TextTokenizer::from_file(&path)?);
    }
    let t = TextTokenizer::train_bpe(data.corpus(), vocab_size)?;
    t.save(&path)?;
    Ok(t)
}

/// Refuses an LM whose context cannot hold the longest VQA example or a text-to-image sequence
/// (a caption of up to 32 tokens, its markers, the codes).
fn check_positions(
    examples: &Examples,
    image_tokens: usize,
    llama_cfg: &LlamaConfig,
) -> Result<()> {
    let needed = examples.longest_vqa().max(2 + 32 + image_tokens + 1);
    if needed > llama_cfg.max_position_embeddings {
        return Err(UnifiedError::Config(format!(
            "sequences need up to {needed} positions, max_position_embeddings is {}",
            llama_cfg.max_position_embeddings
        )));
    }
    Ok(())
}

/// Where a run starts: the step after its newest checkpoint and, when that checkpoint is
/// mid-phase, the phase's loaded optimizer.
struct Resume {
    start: u64,
    resumed_from: Option<u64>,
    current: Option<(usize, AdamW)>,
}

/// Loads the newest checkpoint of `run_dir` into `all_vars`, if there is one (one with NaN or
/// infinite weights is skipped for the one before it, with a warning). Its step decides the
/// phase; a checkpoint at a phase's end is loaded with that phase's optimizer, then the next
/// phase starts with a fresh one.
fn resume(
    cfg: &JointConfig,
    run_dir: &Path,
    parts: &Parts,
    all_vars: &HashMap<String, Var>,
) -> Result<Resume> {
    let mut saved_phase = 0;
    let resumed = checkpoint::load_latest_with(run_dir, all_vars, |dir, trainer| {
        let (i, phase) = trainer.extra["phase"]
            .as_u64()
            .and_then(|i| cfg.phases.get(i as usize).map(|ph| (i as usize, ph)))
            .ok_or_else(|| {
                UnifiedError::Config(format!(
                    "{}: its phase is missing or not in this config",
                    dir.join(checkpoint::TRAINER_FILE).display()
                ))
            })?;
        saved_phase = i;
        parts.optimizer(phase, &cfg.adamw)
    })?;
    let Some(checkpoint::Resumed { step, opt, .. }) = resumed else {
        return Ok(Resume {
            start: 0,
            resumed_from: None,
            current: None,
        });
    };
    // mid-phase: go on with the loaded optimizer; at a phase's end the next starts afresh
    let mid_phase = cfg.phase_at(step).map(|(i, _)| i) == Some(saved_phase);
    Ok(Resume {
        start: step,
        resumed_from: Some(step),
        current: mid_phase.then_some((saved_phase, opt)),
    })
}

/// What the loop of a run reads.
struct Run<'a> {
    cfg: &'a JointConfig,
    data: &'a JointData,
    examples: &'a Examples<'a>,
    parts: &'a Parts,
    all_vars: &'a HashMap<String, Var>,
    run_dir: &'a Path,
    device: &'a Device,
}

impl Run<'_> {
    /// The phase and checkpoint loop, from `resume` to the last step: each phase starts with a
    /// fresh optimizer; metrics are logged every `log_every` steps and checkpoints saved every
    /// `checkpoint_every` steps, both also at each phase's end. Returns the last logged record.
    fn steps(&self, resume: Resume) -> Result<serde_json::Value> {
        let cfg = self.cfg;
        let total = cfg.total_steps();
        let Resume {
            start,
            resumed_from,
            mut current,
        } = resume;
        let mut log = MetricsLog::open(&self.run_dir.join("metrics.jsonl"), resumed_from)?;
        let bar = progress::bar(total, start, "joint");
        let mut throughput = progress::Throughput::new();
        let mut last = serde_json::json!({});

        for step in start..total {
            let (pi, phase_start) = cfg
                .phase_at(step)
                .ok_or_else(|| UnifiedError::Config(format!("step {step} is past the phases")))?;
            let phase = &cfg.phases[pi];
            if current.as_ref().map(|(i, _)| *i) != Some(pi) {
                tracing::info!(phase = phase.name.as_str(), step, "phase starts");
                current = Some((pi, self.parts.optimizer(phase, &cfg.adamw)?));
            }
            let Some((_, opt)) = current.as_mut() else {
                return Err(UnifiedError::Config(format!("step {step}: no optimizer")));
            };

            let StepLoss {
                loss,
                mut record,
                samples,
            } = step_loss(
                self.examples,
                self.parts,
                &self.data.features,
                phase,
                step,
                self.device,
            )?;
            let grads = loss.backward()?;
            let (norm, _) = opt.clip_and_step(&grads, cfg.grad_clip)?;
            throughput.add(samples as u64);
            let done = step + 1;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            bar.set_position(done);
            bar.set_message(progress::message(loss_value, throughput.per_sec()));
            let phase_end = phase_start + phase.steps;
            if done % cfg.log_every == 0 || done == phase_end {
                record.insert("loss".into(), loss_value.into());
                record.insert("grad_norm".into(), norm.into());
                record.insert("phase".into(), pi.into());
                for (g, lr) in opt.lrs() {
                    record.insert(format!("lr_{g}"), lr.into());
                }
                record.insert("samples_per_sec".into(), throughput.per_sec().into());
                last = serde_json::Value::Object(record);
                log.log(done, &last)?;
                throughput.reset();
            }
            if done % cfg.checkpoint_every == 0 || done == phase_end {
                checkpoint::save(
                    self.run_dir,
                    done,
                    self.all_vars,
                    opt,
                    &serde_json::json!({ "phase": pi }),
                    checkpoint::DEFAULT_KEEP,
                )?;
            }
        }
        bar.finish_and_clear();
        Ok(last)
    }
}
