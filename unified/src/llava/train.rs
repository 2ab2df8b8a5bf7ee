//! [`train`]: a LLaVA run from its start (or newest checkpoint) to the saved adapters. Each
//! step draws its questions from a generator seeded by `(seed, step)` alone, so a resumed run
//! draws exactly what an uninterrupted one would; the checkpoint holds every trainable variable
//! and the optimizer's moments (vqrae_train::checkpoint), so resuming is exact.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_train::checkpoint;
use vqrae_train::lock::RunLock;
use vqrae_train::metrics::MetricsLog;
use vqrae_train::optim::AdamW;
use vqrae_train::progress;
use vqrae_understand::prompt::splice;

use super::config::LlavaConfig;
use super::image_rows;
use super::parts::LlavaParts;
use crate::error::{Result, UnifiedError};

/// The examples a run draws from: visual questions (each with its image's row in `features`
/// and where its image slots start), text-only conversations, and text-to-image sequences.
pub struct LlavaExamples {
    /// `(images, tokens, width)` f32: the frozen encoder's features, computed once.
    pub features: Tensor,
    pub vqa: Vec<(Example, usize, usize)>,
    pub text: Vec<Example>,
    /// Per captioned image: its sequence with the caption, and without (the null prompt).
    pub t2i: Vec<(Example, Example)>,
    /// How often a drawn image comes without its caption.
    pub caption_dropout: f64,
    pub pad: u32,
}

/// Examples drawn in one step, by kind.
#[derive(Clone, Copy, Debug)]
struct Draws {
    vqa: usize,
    text: usize,
    t2i: usize,
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LlavaSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub seconds: f64,
    pub trainable_params: usize,
    pub final_losses: serde_json::Value,
}

fn train_err(e: vqrae_train::TrainError) -> UnifiedError {
    UnifiedError::Train(Box::new(e))
}

fn lm_err(e: vqrae_lm::LmError) -> UnifiedError {
    UnifiedError::Lm(Box::new(e))
}

/// The generator of step `step`'s draws.
fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One step's loss: the mean cross-entropy over every target token of the drawn visual
/// questions and text conversations, plus (with text-to-image draws) the mean cross-entropy of
/// the drawn images' codes. The two are added, not pooled by tokens: an image has 65 targets
/// against an answer's few, and pooling would leave the questions almost no weight.
fn step_loss(
    parts: &LlavaParts,
    ex: &LlavaExamples,
    draws: Draws,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<(Tensor, HashMap<String, f64>)> {
    let (vqa_batch, text_batch) = (draws.vqa, draws.text);
    let mut record = HashMap::new();
    let mut losses = Vec::new();
    if vqa_batch > 0 && !ex.vqa.is_empty() {
        let drawn: Vec<&(Example, usize, usize)> = (0..vqa_batch)
            .map(|_| &ex.vqa[rng.gen_range(0..ex.vqa.len())])
            .collect();
        let examples: Vec<Example> = drawn.iter().map(|d| d.0.clone()).collect();
        let batch = TrainBatch::new(&examples, ex.pad, device).map_err(lm_err)?;
        let idx: Vec<u32> = drawn.iter().map(|d| d.1 as u32).collect();
        let feats = ex.features.index_select(&Tensor::new(idx, device)?, 0)?;
        let image = parts.projector.forward(&feats)?;
        let starts: Vec<usize> = drawn.iter().map(|d| d.2).collect();
        let embeds = parts.lm.embed(&batch.ids).map_err(lm_err)?;
        let embeds =
            splice(&embeds, &image, &starts).map_err(|e| UnifiedError::Understand(Box::new(e)))?;
        let hidden = parts
            .lm
            .forward_hidden(&embeds, None, true)
            .map_err(lm_err)?;
        let loss = batch.loss(&parts.lm, &hidden).map_err(lm_err)?;
        record.insert("vqa_loss".into(), loss.to_scalar::<f32>()? as f64);
        losses.push((loss, batch.targets.dim(0)?));
    }
    if text_batch > 0 && !ex.text.is_empty() {
        let examples: Vec<Example> = (0..text_batch)
            .map(|_| ex.text[rng.gen_range(0..ex.text.len())].clone())
            .collect();
        let batch = TrainBatch::new(&examples, ex.pad, device).map_err(lm_err)?;
        let embeds = parts.lm.embed(&batch.ids).map_err(lm_err)?;
        let hidden = parts
            .lm
            .forward_hidden(&embeds, None, true)
            .map_err(lm_err)?;
        let loss = batch.loss(&parts.lm, &hidden).map_err(lm_err)?;
        record.insert("text_loss".into(), loss.to_scalar::<f32>()? as f64);
        losses.push((loss, batch.targets.dim(0)?));
    }
    // weighted by target tokens: the mean over every target of the step
    let total: usize = losses.iter().map(|(_, n)| n).sum();
    let mut sum: Option<Tensor> = None;
    for (loss, n) in losses {
        let w = (loss * (n as f64 / total.max(1) as f64))?;
        sum = Some(match sum {
            Some(s) => (s + w)?,
            None => w,
        });
    }
    if draws.t2i > 0 && !ex.t2i.is_empty() {
        let (vocab, rows) = parts.image.as_ref().ok_or_else(|| {
            UnifiedError::Config("text-to-image examples without image rows".into())
        })?;
        let examples: Vec<Example> = (0..draws.t2i)
            .map(|_| {
                let (cond, null) = &ex.t2i[rng.gen_range(0..ex.t2i.len())];
                if rng.gen_bool(ex.caption_dropout) {
                    null.clone()
                } else {
                    cond.clone()
                }
            })
            .collect();
        let batch = TrainBatch::new(&examples, ex.pad, device).map_err(lm_err)?;
        let embeds = image_rows::embed(&parts.lm, rows, vocab, &batch.ids)?;
        let hidden = parts
            .lm
            .forward_hidden(&embeds, None, true)
            .map_err(lm_err)?;
        let loss = image_rows::image_loss(&batch, &hidden, rows, vocab)?;
        record.insert("t2i_loss".into(), loss.to_scalar::<f32>()? as f64);
        sum = Some(match sum {
            Some(s) => (s + loss)?,
            None => loss,
        });
    }
    let loss = sum.ok_or_else(|| UnifiedError::Config("a step drew no examples".into()))?;
    Ok((loss, record))
}

/// Trains `parts` on `ex` by `cfg`'s phases in `run_dir` (locked throughout), resuming from its
/// newest checkpoint.
pub fn train(
    cfg: &LlavaConfig,
    parts: &LlavaParts,
    ex: &LlavaExamples,
    run_dir: &Path,
    device: &Device,
) -> Result<LlavaSummary> {
    cfg.validate()?;
    let _lock = RunLock::acquire(run_dir).map_err(train_err)?;
    let started = Instant::now();
    let vars: HashMap<String, Var> = parts.vars()?;
    let mut saved_phase = 0usize;
    let resumed = checkpoint::load_latest_with(run_dir, &vars, |dir, trainer| {
        let i = trainer.extra["phase"]
            .as_u64()
            .filter(|&i| (i as usize) < cfg.phases.len())
            .ok_or_else(|| {
                UnifiedError::Config(format!(
                    "{}: its phase is not in this config",
                    dir.display()
                ))
            })? as usize;
        saved_phase = i;
        parts.optimizer(&cfg.phases[i], &cfg.adamw)
    })?;
    let (start, resumed_from, mut current): (u64, Option<u64>, Option<(usize, AdamW)>) =
        match resumed {
            Some(r) => {
                let mid = cfg.phase_at(r.step).map(|(i, _)| i) == Some(saved_phase);
                (r.step, Some(r.step), mid.then_some((saved_phase, r.opt)))
            }
            None => (0, None, None),
        };
    let total = cfg.total_steps();
    let mut log =
        MetricsLog::open(&run_dir.join("metrics.jsonl"), resumed_from).map_err(train_err)?;
    let bar = progress::bar(total, start, "llava");
    let mut throughput = progress::Throughput::new();
    let mut last = serde_json::json!({});
    for step in start..total {
        let (pi, phase_start) = cfg
            .phase_at(step)
            .ok_or_else(|| UnifiedError::Config(format!("step {step} is past the phases")))?;
        let phase = &cfg.phases[pi];
        if current.as_ref().map(|(i, _)| *i) != Some(pi) {
            tracing::info!(phase = phase.name.as_str(), step, "phase starts");
            current = Some((pi, parts.optimizer(phase, &cfg.adamw)?));
        }
        let Some((_, opt)) = current.as_mut() else {
            return Err(UnifiedError::Config(format!("step {step}: no optimizer")));
        };
        let mut rng = step_rng(cfg.seed, step);
        let draws = Draws {
            vqa: cfg.batch_size,
            text: phase.text_per_step,
            t2i: phase.t2i_per_step,
        };
        let (loss, record) = step_loss(parts, ex, draws, &mut rng, device)?;
        let grads = loss.backward()?;
        let (norm, _) = opt
            .clip_and_step(&grads, cfg.grad_clip)
            .map_err(train_err)?;
        throughput.add((cfg.batch_size + phase.text_per_step + phase.t2i_per_step) as u64);
        let done = step + 1;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        bar.set_position(done);
        bar.set_message(progress::message(loss_value, throughput.per_sec()));
        let phase_end = phase_start + phase.steps;
        if done % cfg.log_every == 0 || done == phase_end {
            let mut rec = serde_json::Map::new();
            for (k, v) in record {
                rec.insert(k, v.into());
            }
            rec.insert("loss".into(), loss_value.into());
            rec.insert("grad_norm".into(), norm.into());
            rec.insert("phase".into(), pi.into());
            for (g, lr) in opt.lrs() {
                rec.insert(format!("lr_{g}"), lr.into());
            }
            rec.insert("samples_per_sec".into(), throughput.per_sec().into());
            if let Some(peak) = vqrae_data::memory::peak_rss_mib() {
                rec.insert("peak_rss_mib".into(), peak.into());
            }
            last = serde_json::Value::Object(rec);
            log.log(done, &last).map_err(train_err)?;
            throughput.reset();
        }
        if done % cfg.checkpoint_every == 0 || done == phase_end {
            checkpoint::save(
                run_dir,
                done,
                &vars,
                opt,
                &serde_json::json!({ "phase": pi }),
                checkpoint::DEFAULT_KEEP,
            )
            .map_err(train_err)?;
        }
    }
    bar.finish_and_clear();
    Ok(LlavaSummary {
        steps: total,
        resumed_from,
        seconds: started.elapsed().as_secs_f64(),
        trainable_params: parts.adapters.num_trainable_params(),
        final_losses: last,
    })
}
