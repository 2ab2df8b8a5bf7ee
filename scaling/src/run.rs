//! One run of the sweep: an LM of one size trained on caption -> codes sequences for its token
//! budget, with the held-out image-token loss measured at points spaced evenly in log(steps),
//! so that every run's curve covers the compute axis and the frontier can be read across runs.
//!
//! Runs resume exactly (checkpoint every `checkpoint_every` steps; the batch of a step depends
//! only on the step) and a finished run leaves `result.json`, which a rerun of the sweep reads
//! instead of training again, as long as the recipe and the size are unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vqrae_data::batch::EpochSampler;
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_lm::{Llama, LlamaConfig, TextTokenizer, UnifiedVocab};
use vqrae_train::checkpoint;
use vqrae_train::init::SeededVarMap;
use vqrae_train::lock::RunLock;
use vqrae_train::metrics::MetricsLog;
use vqrae_train::optim::{AdamW, ParamGroup};
use vqrae_train::progress;
use vqrae_train::schedule::LrSchedule;

use super::codes::{Captioned, CodeSet};
use super::config::{ScalingConfig, SizeSpec};
use crate::error::{Result, ScalingError};
use vqrae_eval::referee::RefereeReport;
use vqrae_eval::scene_judge::SkillRates;
use vqrae_generate::sequence;

/// The LM's weights inside a run directory.
pub const LM_DIR: &str = "lm";
const RESULT_FILE: &str = "result.json";

/// One point of a run's validation curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    /// Tokens trained on so far (`D`): every non-padding token of every sequence.
    pub tokens: f64,
    /// `6 N D`.
    pub flops: f64,
    /// Mean cross-entropy (nats) of the held-out images' codes and `<eoi>`, captions given.
    pub val_loss: f64,
    /// Mean training loss since the previous point.
    pub train_loss: f64,
    /// Wall time of the run so far.
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub tokenizer: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `tokenizer` when the run trained: what identifies
    /// it once the path holds another (absent from results written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
    pub codebook_size: usize,
    pub size: SizeSpec,
    pub params: usize,
    pub non_embedding_params: usize,
    pub steps: u64,
    pub tokens: f64,
    pub flops: f64,
    pub val_loss: f64,
    pub seconds: f64,
    pub curve: Vec<EvalPoint>,
    /// Referee on images generated at the sweep's fixed guidance (filled by the sweep).
    pub quality: Option<RefereeReport>,
    /// Scene judge on held-out scene captions drawn at the same guidance (sweeps with scenes).
    #[serde(default)]
    pub scenes: Option<SkillRates>,
    /// Of the recipe, the size and the data: a rerun reuses this result only when it matches.
    pub fingerprint: String,
}

/// Everything a run of any size shares.
pub struct RunInputs<'a> {
    pub cfg: &'a ScalingConfig,
    pub codes: &'a CodeSet,
    pub tokenizer_dir: &'a Path,
    /// [`vqrae_data::fs::sha256_model`] of `tokenizer_dir`, hashed once for all the runs.
    pub tokenizer_sha256: &'a str,
    pub text: &'a TextTokenizer,
    pub vocab: &'a UnifiedVocab,
    /// Positions the LM needs: the longest prompt, the codes and `<eoi>`.
    pub context: usize,
}

impl RunInputs<'_> {
    pub(crate) fn llama_config(&self, size: &SizeSpec) -> Result<LlamaConfig> {
        size.llama_config(self.vocab.size(), self.context)
    }

    fn example(&self, item: &Captioned, caption: bool) -> Result<Example> {
        let c = caption.then_some(item.caption.as_str());
        Ok(sequence::example(self.text, self.vocab, c, &item.codes)?)
    }

    /// Mean example length in tokens (captions kept), which turns a token budget into steps.
    fn mean_length(&self) -> Result<f64> {
        let mut total = 0usize;
        for item in &self.codes.train {
            total += self.example(item, true)?.ids.len();
        }
        Ok(total as f64 / self.codes.train.len().max(1) as f64)
    }

    /// Steps of a run of `size`: its token budget over tokens per step, at least `evals`.
    pub fn steps(&self, size: &SizeSpec) -> Result<u64> {
        let n = self.llama_config(size)?.non_embedding_params();
        let per_step = self.cfg.batch_size as f64 * self.mean_length()?;
        let steps = (self.cfg.budget.tokens(n) / per_step).ceil() as u64;
        Ok(steps.max(self.cfg.evals as u64))
    }

    fn fingerprint(&self, size: &SizeSpec, steps: u64) -> String {
        let c = self.cfg;
        // the sweep-level settings that change what a run computes (not its name, not quality)
        let key = serde_json::json!({
            "size": size, "steps": steps, "seed": c.seed, "batch": c.batch_size,
            "dropout": c.caption_dropout, "warmup": c.warmup_steps, "min_lr": c.min_lr_ratio,
            "clip": c.grad_clip, "adamw": c.adamw, "evals": c.evals,
            "train": self.codes.train.len(), "val": self.codes.val.len(),
            "codebook": self.codes.codebook_size, "tokenizer": self.tokenizer_dir,
            "vocab": self.vocab.size(), "context": self.context,
        });
        key.to_string()
    }
}

/// Validation steps: `evals` points spaced evenly in log(step) from `steps / 64` to `steps`.
pub fn eval_steps(steps: u64, evals: usize) -> Vec<u64> {
    let first = (steps as f64 / 64.0).max(1.0);
    let ratio = (steps as f64 / first).max(1.0);
    let mut out: Vec<u64> = (0..evals)
        .map(|i| {
            let f = i as f64 / (evals - 1).max(1) as f64;
            (first * ratio.powf(f)).round() as u64
        })
        .collect();
    out.push(steps);
    out.retain(|&s| s >= 1 && s <= steps);
    out.sort_unstable();
    out.dedup();
    out
}

/// Mean held-out loss over every target token of `items` (captions given), in batches of 64.
pub(crate) fn validation_loss(
    lm: &Llama,
    inputs: &RunInputs<'_>,
    items: &[Captioned],
) -> Result<f64> {
    let mut sum = 0.0;
    let mut count = 0usize;
    for chunk in items.chunks(64) {
        let examples = chunk
            .iter()
            .map(|item| inputs.example(item, true))
            .collect::<Result<Vec<_>>>()?;
        let batch = TrainBatch::new(&examples, inputs.text.pad_id(), lm.device())?;
        let hidden = lm.forward_hidden(&lm.embed(&batch.ids)?, None, false)?;
        let n = batch.targets.dim(0)?;
        sum += batch.loss(lm, &hidden)?.to_scalar::<f32>()? as f64 * n as f64;
        count += n;
    }
    if count == 0 {
        return Err(ScalingError::Config("no held-out targets".into()));
    }
    Ok(sum / count as f64)
}

/// The finished result in `run_dir` if its fingerprint matches.
/// The fingerprint names the tokenizer by path only (so that results from before hashes were
/// kept stay reusable); a result that recorded another tokenizer hash than `tokenizer_sha256`
/// was trained on other codes, and is refused rather than reused. One without a hash takes
/// `tokenizer_sha256`: the tokenizer at the path its fingerprint matched.
fn finished(
    run_dir: &Path,
    fingerprint: &str,
    tokenizer_sha256: &str,
) -> Result<Option<RunResult>> {
    let path = run_dir.join(RESULT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(ScalingError::io(&path))?;
    let mut r: RunResult = serde_json::from_str(&text).map_err(|source| ScalingError::Json {
        path: path.clone(),
        source,
    })?;
    if r.fingerprint != fingerprint {
        return Ok(None);
    }
    match &r.tokenizer_sha256 {
        Some(recorded) if recorded != tokenizer_sha256 => Err(ScalingError::Config(format!(
            "{}: trained on the tokenizer {} with sha256 {recorded}, which now hashes to \
             {tokenizer_sha256}: move the run directory aside to train again",
            path.display(),
            r.tokenizer.display()
        ))),
        Some(_) => Ok(Some(r)),
        None => {
            r.tokenizer_sha256 = Some(tokenizer_sha256.to_string());
            Ok(Some(r))
        }
    }
}

/// Writes (or rewrites, once quality is known) a run's result, atomically.
pub(crate) fn write_result(run_dir: &Path, r: &RunResult) -> Result<()> {
    let path = run_dir.join(RESULT_FILE);
    let text = serde_json::to_string_pretty(r).map_err(|source| ScalingError::Json {
        path: path.clone(),
        source,
    })?;
    Ok(vqrae_data::fs::write_atomic(
        &path,
        (text + "\n").as_bytes(),
    )?)
}

/// A trained run: its LM and its result.
pub struct Trained {
    pub lm: Llama,
    pub result: RunResult,
}

/// Trains `size` in `run_dir` (resuming what is there), or returns the finished run. With
/// `stop_at`, stops after checkpointing that step and returns `None` (an interrupted run).
pub fn train(
    inputs: &RunInputs<'_>,
    size: &SizeSpec,
    run_dir: &Path,
    device: &Device,
    stop_at: Option<u64>,
) -> Result<Option<Trained>> {
    let cfg = inputs.cfg;
    let llama_cfg = inputs.llama_config(size)?;
    let steps = inputs.steps(size)?;
    let fingerprint = inputs.fingerprint(size, steps);
    if let Some(result) = finished(run_dir, &fingerprint, inputs.tokenizer_sha256)? {
        let lm = Llama::load(&run_dir.join(LM_DIR), device, DType::F32)?;
        tracing::info!(
            run = size.name.as_str(),
            "finished before: reusing its result"
        );
        return Ok(Some(Trained { lm, result }));
    }
    // one trainer per run directory until this returns (creates the directory)
    let _lock = RunLock::acquire(run_dir)?;
    let n = llama_cfg.non_embedding_params();

    let map = SeededVarMap::new(cfg.seed);
    let lm = Llama::new(&llama_cfg, map.var_builder(DType::F32, device))?;
    let vars: HashMap<String, Var> = checkpoint::var_map_vars(&map.varmap)?;
    let mut opt = optimizer(&vars, cfg, size, steps)?;
    let mut state = RunState::resume(run_dir, &vars, &mut opt)?;
    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), state.resumed_from)?;
    let started = Instant::now();
    let evals = eval_steps(steps, cfg.evals);
    let train = &inputs.codes.train;
    let sampler = EpochSampler::new(train.len(), cfg.batch_size.min(train.len()), cfg.seed, true);
    let bar = progress::bar(steps, state.start, &size.name);
    let mut throughput = progress::Throughput::new();
    for step in state.start..steps {
        let (value, sequences) =
            train_step(inputs, &lm, &mut opt, &sampler, step, &mut state, device)?;
        throughput.add(sequences as u64);
        let done = step + 1;
        bar.set_position(done);
        bar.set_message(progress::message(value, throughput.per_sec()));
        let seconds = state.seconds_before + started.elapsed().as_secs_f64();
        if evals.binary_search(&done).is_ok() {
            let val_loss = validation_loss(&lm, inputs, &inputs.codes.val)?;
            let point = EvalPoint {
                step: done,
                tokens: state.tokens,
                flops: 6.0 * n as f64 * state.tokens,
                val_loss,
                train_loss: state.loss_sum / state.loss_n.max(1) as f64,
                seconds,
            };
            log_point(&mut log, &point, run_dir)?;
            (state.loss_sum, state.loss_n) = (0.0, 0);
        }
        let stopping = stop_at == Some(done);
        if done % cfg.checkpoint_every == 0 || done == steps || stopping {
            let extra = serde_json::json!({
                "tokens": state.tokens, "seconds": seconds, "loss_sum": state.loss_sum,
                "loss_n": state.loss_n,
            });
            checkpoint::save(run_dir, done, &vars, &opt, &extra, checkpoint::DEFAULT_KEEP)?;
        }
        if stopping && done < steps {
            bar.finish_and_clear();
            return Ok(None);
        }
    }
    bar.finish_and_clear();

    let curve = read_curve(&run_dir.join("metrics.jsonl"))?;
    let last = curve.last().cloned().ok_or_else(|| {
        ScalingError::Config(format!("{}: no validation point", run_dir.display()))
    })?;
    lm.save(&run_dir.join(LM_DIR))?;
    let result = RunResult {
        name: size.name.clone(),
        tokenizer: inputs.tokenizer_dir.to_path_buf(),
        tokenizer_sha256: Some(inputs.tokenizer_sha256.to_string()),
        codebook_size: inputs.codes.codebook_size,
        size: size.clone(),
        params: llama_cfg.params(),
        non_embedding_params: n,
        steps,
        tokens: last.tokens,
        flops: last.flops,
        val_loss: last.val_loss,
        seconds: last.seconds,
        curve,
        quality: None,
        scenes: None,
        fingerprint,
    };
    write_result(run_dir, &result)?;
    Ok(Some(Trained { lm, result }))
}

/// AdamW over every weight (in name order), warm-up then cosine to `min_lr_ratio` of the
/// size's rate.
fn optimizer(
    vars: &HashMap<String, Var>,
    cfg: &ScalingConfig,
    size: &SizeSpec,
    steps: u64,
) -> Result<AdamW> {
    let mut sorted: Vec<(String, Var)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let schedule = LrSchedule {
        peak_lr: size.lr,
        min_lr: size.lr * cfg.min_lr_ratio,
        warmup_steps: cfg.warmup_steps.min(steps / 10),
        total_steps: steps,
    };
    Ok(AdamW::new(
        vec![ParamGroup::new("lm", sorted, schedule)],
        cfg.adamw.clone(),
    )?)
}

/// What a run carries across a resume: where it is, tokens so far, wall time, and the open
/// training-loss mean (since the last validation point).
#[derive(Default)]
struct RunState {
    start: u64,
    resumed_from: Option<u64>,
    tokens: f64,
    seconds_before: f64,
    loss_sum: f64,
    loss_n: u64,
}

impl RunState {
    /// The state of the latest checkpoint in `run_dir` (weights and optimizer loaded into
    /// `vars` and `opt`), or a fresh start.
    fn resume(run_dir: &Path, vars: &HashMap<String, Var>, opt: &mut AdamW) -> Result<Self> {
        let Some((step, extra)) = checkpoint::load_latest(run_dir, vars, opt)? else {
            return Ok(Self::default());
        };
        let get = |k: &str| extra[k].as_f64().unwrap_or(0.0);
        Ok(Self {
            start: step,
            resumed_from: Some(step),
            tokens: get("tokens"),
            seconds_before: get("seconds"),
            loss_sum: get("loss_sum"),
            loss_n: get("loss_n") as u64,
        })
    }
}

/// One optimizer step on the batch of `step`: counts its tokens and its loss into `state` and
/// returns the loss and the batch's number of sequences.
fn train_step(
    inputs: &RunInputs<'_>,
    lm: &Llama,
    opt: &mut AdamW,
    sampler: &EpochSampler,
    step: u64,
    state: &mut RunState,
    device: &Device,
) -> Result<(f64, usize)> {
    let cfg = inputs.cfg;
    let train = &inputs.codes.train;
    // caption dropout from a generator seeded by the step: resumes exactly
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ step.wrapping_mul(0x9e37_79b9));
    let examples = sampler
        .batch_at(step)
        .iter()
        .map(|&i| inputs.example(&train[i], rng.gen::<f64>() >= cfg.caption_dropout))
        .collect::<Result<Vec<_>>>()?;
    state.tokens += examples.iter().map(|e| e.ids.len()).sum::<usize>() as f64;
    let batch = TrainBatch::new(&examples, inputs.text.pad_id(), device)?;
    let hidden = lm.forward_hidden(&lm.embed(&batch.ids)?, None, true)?;
    let loss = batch.loss(lm, &hidden)?;
    let grads = loss.backward()?;
    opt.clip_and_step(&grads, cfg.grad_clip)?;
    let value = loss.to_scalar::<f32>()? as f64;
    state.loss_sum += value;
    state.loss_n += 1;
    Ok((value, examples.len()))
}

/// Appends a validation point to the run's metrics log (which adds its own step and time).
fn log_point(log: &mut MetricsLog, point: &EvalPoint, run_dir: &Path) -> Result<()> {
    let mut record = serde_json::to_value(point).map_err(|source| ScalingError::Json {
        path: run_dir.join("metrics.jsonl"),
        source,
    })?;
    if let Some(o) = record.as_object_mut() {
        o.remove("step");
        o.remove("seconds");
        o.insert("run_seconds".into(), point.seconds.into());
    }
    log.log(point.step, &record)?;
    Ok(())
}

/// The validation points of a run's metrics log.
fn read_curve(path: &Path) -> Result<Vec<EvalPoint>> {
    let records = MetricsLog::read(path)?;
    Ok(records
        .iter()
        .filter_map(|r| {
            Some(EvalPoint {
                step: r.get("step")?.as_u64()?,
                tokens: r.get("tokens")?.as_f64()?,
                flops: r.get("flops")?.as_f64()?,
                val_loss: r.get("val_loss")?.as_f64()?,
                train_loss: r.get("train_loss")?.as_f64()?,
                seconds: r.get("run_seconds")?.as_f64()?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_steps_are_log_spaced_and_end_at_the_last_step() {
        let s = eval_steps(6400, 5);
        assert_eq!(s, vec![100, 283, 800, 2263, 6400]);
        assert_eq!(eval_steps(3, 5), vec![1, 2, 3]);
        assert_eq!(*eval_steps(1000, 12).last().unwrap_or(&0), 1000);
    }
}
