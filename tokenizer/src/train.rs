//! VQRAE's two-stage tokenizer training.
//!
//! - Stage 1: the encoder is frozen; the projection, SimVQ map and decoder learn
//!   `l2 * ||x - x'||^2 + perceptual * ||T(x') - T(x)||^2 + quant * L_quant`.
//! - Stage 2: the encoder is trained too, with self-distillation to a frozen copy `T` of the
//!   encoder it started from: `+ distill * ||Z_I - T(x)||^2`, and its own learning rate.
//!
//! The paper's perceptual loss (LPIPS + ConvNeXt) needs weights that do not exist offline; the
//! `perceptual` term here is **feature matching on the frozen teacher encoder** and is named so.
//! `T(x)` of every training image is computed once and cached: the teacher never changes, and in
//! stage 1 it is also the encoder, so stage 1 never runs the encoder on real images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::batch::EpochSampler;
use vqrae_data::fs::read_toml;
use vqrae_train::checkpoint::{self, var_map_vars};
use vqrae_train::lock::RunLock;
use vqrae_train::metrics::MetricsLog;
use vqrae_train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroup, StepStats};
use vqrae_train::progress;
use vqrae_train::schedule::LrSchedule;

use crate::discriminator::{Discriminator, GanConfig};
use crate::encoder::VitEncoder;
use crate::error::{Result, TokenizerError};
use crate::feature_cache::{training_features, CacheUse};
use crate::init::SeededVarMap;
use crate::mixed::MixedData;
use crate::model::{Forward, Vqrae};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// Pixel MSE.
    pub l2: f64,
    /// Feature matching of the reconstruction on the frozen teacher encoder (the stand-in for
    /// the paper's LPIPS + ConvNeXt perceptual loss, weight 1.1 there). 0 skips its cost.
    pub perceptual: f64,
    /// VQ codebook + beta * commitment.
    pub quant: f64,
    /// Self-distillation of the encoder's features to the teacher's (stage 2 only).
    pub distill: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            l2: 1.0,
            perceptual: 1.1,
            quant: 1.0,
            distill: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// 1: encoder frozen; 2: encoder trained with self-distillation.
    pub stage: u8,
    pub steps: u64,
    pub batch_size: usize,
    pub seed: u64,
    /// Projection, quantizer map and decoder.
    pub decoder_lr: LrSchedule,
    /// Encoder (stage 2).
    pub encoder_lr: LrSchedule,
    pub adamw: AdamWConfig,
    pub grad_clip: f64,
    pub loss: LossWeights,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// Start a fresh model's codebook from the data ([`crate::quantizer::Quantizer::data_init`]
    /// on the projected features of `data_init_samples` training tokens). Never applied to a
    /// model that starts from a checkpoint, nor on resume.
    pub data_init: bool,
    pub data_init_samples: usize,
    /// Every this many steps, codebook entries that no training token chose since the last
    /// restart are split off live ones ([`crate::quantizer::Quantizer::split_dead_codes`]; not
    /// after the final step); 0 turns restarts off.
    pub restart_dead_codes: u64,
    /// Optional adversarial term (off unless `gan.weight > 0`).
    pub gan: GanConfig,
    /// Train on the four sources mixed ([`MixedData`]) instead of the command's `--dataset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<MixedData>,
    /// Stage 1: read the frozen encoder's features from this directory's cache, or compute and
    /// write them there ([`crate::feature_cache`]); without it they are computed in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_cache: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            stage: 1,
            steps: 1000,
            batch_size: 32,
            seed: 0,
            decoder_lr: LrSchedule {
                peak_lr: 4e-4,
                min_lr: 1e-4,
                warmup_steps: 100,
                total_steps: 1000,
            },
            encoder_lr: LrSchedule {
                peak_lr: 1e-5,
                min_lr: 1e-5,
                warmup_steps: 100,
                total_steps: 1000,
            },
            adamw: AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-4,
            },
            grad_clip: 1.0,
            loss: LossWeights::default(),
            checkpoint_every: 200,
            log_every: 10,
            data_init: true,
            data_init_samples: 16384,
            restart_dead_codes: 0,
            gan: GanConfig::default(),
            data: None,
            feature_cache: None,
        }
    }
}

impl TrainConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let cfg: Self = read_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TokenizerError::Invalid(m));
        if !matches!(self.stage, 1 | 2) {
            return bad(format!("stage must be 1 or 2, got {}", self.stage));
        }
        if self.steps == 0 || self.batch_size == 0 {
            return bad("steps and batch_size must be positive".into());
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("checkpoint_every and log_every must be positive".into());
        }
        if !self.grad_clip.is_finite() || self.grad_clip <= 0.0 {
            return bad(format!(
                "grad_clip must be positive, got {}",
                self.grad_clip
            ));
        }
        for s in [&self.decoder_lr, &self.encoder_lr] {
            s.validate()?;
        }
        self.adamw.validate()?;
        if self.gan.enabled() {
            self.gan.lr.validate()?;
        }
        if !self.gan.weight.is_finite() || self.gan.weight < 0.0 {
            return bad(format!("gan.weight must be >= 0, got {}", self.gan.weight));
        }
        if let Some(d) = &self.data {
            d.validate()?;
        }
        Ok(())
    }
}

/// Fresh copies of the encoder's tensors, named without the `encoder.` prefix: `copy` gives new
/// storage, so the teacher does not follow the student's updates.
fn encoder_copies(vars: &SeededVarMap) -> Result<HashMap<String, Tensor>> {
    let data = vars
        .varmap
        .data()
        .lock()
        .map_err(|_| TokenizerError::Invalid("variable map lock poisoned".into()))?;
    let mut copies = HashMap::new();
    for (name, var) in data.iter() {
        if let Some(short) = name.strip_prefix("encoder.") {
            copies.insert(short.to_string(), var.as_tensor().copy()?.detach());
        }
    }
    Ok(copies)
}

/// The run's teacher encoder weights (encoder tensor names without the `encoder.` prefix).
const TEACHER_FILE: &str = "teacher.safetensors";

/// Makes `encoder` (tensors named as the tokenizer's encoder, without the `encoder.` prefix)
/// the teacher of the run in `run_dir`, atomically, unless the run already has one: returns
/// whether it did. [`train`] writes a copy of the starting encoder here on a run's first step
/// and reads it back on resume; calling this first distils to another encoder instead, e.g. the
/// original pretrained one when a run continues from a model whose encoder has already moved.
pub fn write_teacher(run_dir: &Path, encoder: &HashMap<String, Tensor>) -> Result<bool> {
    let path = run_dir.join(TEACHER_FILE);
    if path.exists() {
        return Ok(false);
    }
    vqrae_data::fs::write_atomic_with(&path, |tmp| {
        candle_core::safetensors::save(encoder, tmp).map_err(TokenizerError::from)
    })?;
    Ok(true)
}

/// A frozen deep copy of `model`'s encoder: the teacher of distillation and feature matching.
pub fn frozen_encoder(model: &Vqrae, vars: &SeededVarMap, device: &Device) -> Result<VitEncoder> {
    let vb = VarBuilder::from_tensors(encoder_copies(vars)?, DType::F32, device);
    Ok(VitEncoder::new(&model.config().encoder, vb)?)
}

/// Patch tokens of `teacher` for all `images`, `(n, N, d)`, computed in batches.
pub(crate) fn teacher_features(
    teacher: &VitEncoder,
    model: &Vqrae,
    images: &[RgbImage],
    batch: usize,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in images.chunks(batch.max(1)) {
        let x = model.images_to_input(chunk)?;
        parts.push(teacher.patch_tokens(&x, false)?.detach());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Losses of one step, as numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepLosses {
    pub total: f64,
    pub l2: f64,
    pub perceptual: f64,
    pub quant: f64,
    pub distill: f64,
    /// The generator's adversarial loss (0 while the GAN is off).
    pub gan: f64,
    /// The discriminator's hinge loss (0 while the GAN is off).
    pub disc: f64,
}

/// Number of distinct codes in a batch: a cheap live view of codebook collapse.
fn distinct(codes: &Tensor) -> Result<usize> {
    let mut v = codes.flatten_all()?.to_vec1::<u32>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v.len())
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The reconstruction, perceptual, quantisation and (stage 2) distillation terms of one step
/// on inputs `x` whose frozen-teacher features are `target`: the weighted total, its parts as
/// numbers, and the forward pass (the GAN term, when on, is added by the caller). Stage 1
/// feeds the cached teacher features to the quantizer (the encoder is frozen there); stage 2
/// runs the trainable encoder.
pub fn step_losses(
    model: &Vqrae,
    teacher: &VitEncoder,
    x: &Tensor,
    target: &Tensor,
    cfg: &TrainConfig,
) -> Result<(Tensor, StepLosses, Forward)> {
    let features = if cfg.stage == 1 {
        target.clone()
    } else {
        model.encoder().patch_tokens(x, true)?
    };
    let out = model.forward_features(features, model.config().grid(), true)?;
    let l2 = (&out.reconstruction - x)?.sqr()?.mean_all()?;
    let mut total = (&l2 * cfg.loss.l2)?;
    let mut losses = StepLosses {
        l2: scalar(&l2)?,
        quant: scalar(&out.quantized.loss)?,
        ..Default::default()
    };
    total = (total + (&out.quantized.loss * cfg.loss.quant)?)?;
    if cfg.loss.perceptual > 0.0 {
        let p = (teacher.patch_tokens(&out.reconstruction, true)? - target)?
            .sqr()?
            .mean_all()?;
        losses.perceptual = scalar(&p)?;
        total = (total + (p * cfg.loss.perceptual)?)?;
    }
    if cfg.stage == 2 && cfg.loss.distill > 0.0 {
        let d = (&out.features - target)?.sqr()?.mean_all()?;
        losses.distill = scalar(&d)?;
        total = (total + (d * cfg.loss.distill)?)?;
    }
    Ok((total, losses, out))
}

/// The summary of a finished (or resumed-and-finished) run.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub final_losses: StepLosses,
    pub seconds: f64,
    pub model_dir: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of the model saved to `model_dir`: what identifies it
    /// once a later run writes over the path.
    pub model_dir_sha256: String,
    /// Stage 1 with a feature cache: where the features came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_cache: Option<CacheUse>,
}

/// Sets the quantizer's learned codebook tensors from the projected features of a seeded sample
/// of training tokens.
fn init_codebook_from_data(
    model: &Vqrae,
    vars: &SeededVarMap,
    features: &Tensor,
    cfg: &TrainConfig,
) -> Result<()> {
    let (n, t, d) = features.dims3()?;
    let flat = features.reshape((n * t, d))?;
    let take = cfg.data_init_samples.clamp(1, n * t);
    let ids = vqrae_data::batch::shuffled(n * t, cfg.seed);
    let idx = Tensor::new(
        ids[..take].iter().map(|&i| i as u32).collect::<Vec<_>>(),
        features.device(),
    )?;
    let z = model.project(&flat.index_select(&idx, 0)?)?;
    set_quantizer_vars(vars, model.quantizer().data_init(&z, cfg.seed)?)
}

/// Overwrites quantizer variables in place (names relative to the quantizer): the model's
/// tensors share their storage, so it sees the new values.
fn set_quantizer_vars(vars: &SeededVarMap, values: Vec<(String, Tensor)>) -> Result<()> {
    let data = vars
        .varmap
        .data()
        .lock()
        .map_err(|_| TokenizerError::Invalid("variable map lock poisoned".into()))?;
    for (name, value) in values {
        let full = format!("quantizer.{name}");
        let var = data
            .get(&full)
            .ok_or_else(|| TokenizerError::Invalid(format!("no variable {full}")))?;
        var.set(&value)?;
    }
    Ok(())
}

/// The name under which code use since the last restart is checkpointed.
const USAGE_STATE: &str = "train.code_usage";

/// Splits the codebook entries that `usage` says are dead off live ones, at half the step's
/// quantisation error; returns how many were restarted.
fn restart_dead_codes(
    model: &Vqrae,
    vars: &SeededVarMap,
    out: &Forward,
    usage: &[f32],
    seed: u64,
) -> Result<usize> {
    // the codebook loss is a mean over elements: times the width it is the squared distance
    // from an input to its codeword
    let rms = (scalar(&out.quantized.codebook_loss)? * model.config().quantizer.dim as f64).sqrt();
    let Some((n, codebook)) = model.quantizer().split_dead_codes(usage, rms, seed)? else {
        return Ok(0);
    };
    set_quantizer_vars(vars, vec![("codebook".into(), codebook)])?;
    Ok(n)
}

/// The optimizer of a run and the variables around it.
struct Optimizer {
    opt: AdamW,
    /// The tokenizer's trainable variables (gradient clipping).
    model_vars: Vec<Var>,
    disc: Option<Discriminator>,
    /// The discriminator's variables, by name.
    disc_all: HashMap<String, Var>,
    /// Everything a training checkpoint holds: the model's, the discriminator's, code use.
    state_vars: HashMap<String, Var>,
    usage_var: Var,
}

/// Parameter groups (decoder side; encoder in stage 2; discriminator when the GAN term is on)
/// and the variables the training checkpoints hold.
fn optimizer(
    model: &Vqrae,
    vars: &SeededVarMap,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Optimizer> {
    let all = var_map_vars(&vars.varmap)?;
    let frozen = model.frozen_names();
    let is_encoder = |k: &str| k.starts_with("encoder.");
    let trainable = |k: &str| !frozen.iter().any(|f| f == k) && (cfg.stage == 2 || !is_encoder(k));
    let pick = |enc: bool| -> Vec<(String, Var)> {
        all.iter()
            .filter(|(k, _)| trainable(k) && is_encoder(k) == enc)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut groups = vec![ParamGroup::new(
        "decoder",
        pick(false),
        cfg.decoder_lr.clone(),
    )];
    if cfg.stage == 2 {
        groups.push(ParamGroup::new(
            "encoder",
            pick(true),
            cfg.encoder_lr.clone(),
        ));
    }
    let model_vars: Vec<Var> = groups
        .iter()
        .flat_map(|g| g.vars.iter().map(|(_, v)| v.clone()))
        .collect();
    // The discriminator lives in its own variable map (it is not part of the saved tokenizer)
    // but in the same optimizer and training checkpoints, so that resume stays exact.
    let disc_vars = SeededVarMap::new(cfg.seed ^ 0xd15c);
    let disc = if cfg.gan.enabled() {
        Some(Discriminator::new(
            &cfg.gan,
            disc_vars.var_builder(DType::F32, device).pp("disc"),
        )?)
    } else {
        None
    };
    let disc_all = var_map_vars(&disc_vars.varmap)?;
    if disc.is_some() {
        groups.push(ParamGroup::new(
            "disc",
            disc_all
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cfg.gan.lr.clone(),
        ));
    }
    let mut state_vars = all.clone();
    state_vars.extend(disc_all.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Code use since the last restart is training state: it travels in the checkpoints, so a
    // resumed run restarts the same entries as an uninterrupted one.
    let codebook_size = model.config().quantizer.codebook_size;
    let usage_var = Var::zeros(codebook_size, DType::F32, device)?;
    if cfg.restart_dead_codes > 0 {
        state_vars.insert(USAGE_STATE.to_string(), usage_var.clone());
    }
    let opt = AdamW::new(groups, cfg.adamw.clone())?;

    Ok(Optimizer {
        opt,
        model_vars,
        disc,
        disc_all,
        state_vars,
        usage_var,
    })
}

/// The run's teacher encoder, from the run's own copy on disk, and its weights.
fn run_teacher(
    model: &Vqrae,
    vars: &SeededVarMap,
    run_dir: &Path,
    device: &Device,
) -> Result<(VitEncoder, HashMap<String, Tensor>)> {
    // The teacher is the encoder as it was when training began (or the one `write_teacher` set
    // before it began): after a resume the saved encoder of stage 2 has moved, so the teacher
    // always comes from the run's own copy on disk, written here on a run's first start.
    write_teacher(run_dir, &encoder_copies(vars)?)?;
    let path = run_dir.join(TEACHER_FILE);
    let damaged = |e: candle_core::Error| TokenizerError::Checkpoint {
        path: path.clone(),
        msg: format!(
            "the run's teacher encoder is unreadable ({}); remove it and pass --teacher with the \
             encoder the run started from (or start a fresh run directory)",
            crate::error::plain(e)
        ),
    };
    let t = candle_core::safetensors::load(&path, device).map_err(damaged)?;
    let encoder = VitEncoder::new(
        &model.config().encoder,
        VarBuilder::from_tensors(t.clone(), DType::F32, device),
    )
    .map_err(damaged)?;
    Ok((encoder, t))
}

/// One line of `metrics.jsonl`.
fn metrics_record(
    losses: &StepLosses,
    grad_norm: f64,
    window: &progress::Throughput,
    out: &Forward,
    stats: &StepStats,
    restarted: usize,
    cfg: &TrainConfig,
) -> Result<serde_json::Value> {
    let codes_used = distinct(&out.quantized.codes)?;
    let lrs: serde_json::Map<String, serde_json::Value> = stats
        .lrs
        .iter()
        .map(|(k, v)| (format!("lr_{k}"), serde_json::json!(v)))
        .collect();
    let mut rec = serde_json::json!({
        "loss": losses.total, "l2": losses.l2, "perceptual": losses.perceptual,
        "quant": losses.quant, "distill": losses.distill, "gan": losses.gan,
        "disc": losses.disc, "grad_norm": grad_norm,
        "samples_per_sec": window.per_sec(), "codes_used": codes_used,
    });
    if cfg.restart_dead_codes > 0 {
        rec["codes_restarted"] = serde_json::json!(restarted);
    }
    if let Some(obj) = rec.as_object_mut() {
        obj.extend(lrs);
    }
    Ok(rec)
}

/// Trains `model` (whose variables are `vars`) on `images` in `run_dir`: resumes from the last
/// training checkpoint there, writes `metrics.jsonl`, and saves the final model to `run_dir/model`.
/// `fresh` says the model was just initialised (not loaded from a tokenizer checkpoint): only
/// then may its codebook be initialised from the data. Holds the run directory's lock
/// ([`RunLock`]) throughout: a second trainer on `run_dir` fails at once.
pub fn train(
    model: &Vqrae,
    vars: &SeededVarMap,
    images: &[RgbImage],
    cfg: &TrainConfig,
    run_dir: &Path,
    fresh: bool,
    device: &Device,
) -> Result<TrainSummary> {
    let _lock = RunLock::acquire(run_dir)?;
    train_locked(model, vars, (images, "images"), cfg, run_dir, fresh, device)
}

/// [`train`] for a caller that already holds `run_dir`'s lock; `label` says what `images` are
/// (the feature cache's description of them).
pub(crate) fn train_locked(
    model: &Vqrae,
    vars: &SeededVarMap,
    (images, label): (&[RgbImage], &str),
    cfg: &TrainConfig,
    run_dir: &Path,
    fresh: bool,
    device: &Device,
) -> Result<TrainSummary> {
    cfg.validate()?;
    if images.is_empty() {
        return Err(TokenizerError::Invalid("no training images".into()));
    }
    let Optimizer {
        mut opt,
        model_vars,
        disc,
        disc_all,
        state_vars,
        usage_var,
    } = optimizer(model, vars, cfg, device)?;

    let resumed = checkpoint::load_latest(run_dir, &state_vars, &mut opt)?;
    let start = resumed.as_ref().map(|r| r.0).unwrap_or(0);
    let mut usage = usage_var.as_tensor().to_vec1::<f32>()?;
    let (teacher, weights) = run_teacher(model, vars, run_dir, device)?;
    let (cached, feature_cache) =
        training_features((&teacher, &weights), model, images, label, cfg, device)?;
    if fresh && cfg.data_init && resumed.is_none() {
        init_codebook_from_data(model, vars, &cached, cfg)?;
    }
    let sampler = EpochSampler::new(images.len(), cfg.batch_size, cfg.seed, true);
    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), Some(start))?;
    let bar = progress::bar(cfg.steps, start, &format!("stage {}", cfg.stage));
    let t0 = Instant::now();
    let mut window = progress::Throughput::new();
    let mut last = StepLosses::default();
    for step in start..cfg.steps {
        let ids = sampler.batch_at(step);
        let batch: Vec<RgbImage> = ids.iter().map(|&i| images[i].clone()).collect();
        let x = model.images_to_input(&batch)?;
        let idx = Tensor::new(ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), device)?;
        let target = cached.index_select(&idx, 0)?;
        let (mut total, mut losses, out) = step_losses(model, &teacher, &x, &target, cfg)?;
        let gan = disc.as_ref().filter(|_| step >= cfg.gan.start_step);
        if let Some(d) = gan {
            let g = d.generator_loss(&out.reconstruction)?;
            losses.gan = scalar(&g)?;
            total = (total + (g * cfg.gan.weight)?)?;
        }
        losses.total = scalar(&total)?;
        let mut grads = total.backward()?;
        // the generator's loss reaches the discriminator too; that is not the discriminator's
        // signal, its own hinge loss below is
        for v in disc_all.values() {
            grads.remove(v.as_tensor());
        }
        let grad_norm = clip_grad_norm(&mut grads, model_vars.iter(), cfg.grad_clip)?;
        if let Some(d) = gan {
            let dl = d.loss(&x, &out.reconstruction)?;
            losses.disc = scalar(&dl)?;
            let mut dg = dl.backward()?;
            clip_grad_norm(&mut dg, disc_all.values(), cfg.grad_clip)?;
            for v in disc_all.values() {
                if let Some(g) = dg.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), g);
                }
            }
        }
        let stats = opt.step(&grads)?;
        window.add(ids.len() as u64);
        let done = step + 1;
        let mut restarted = 0;
        if cfg.restart_dead_codes > 0 {
            for c in out.quantized.codes.flatten_all()?.to_vec1::<u32>()? {
                usage[c as usize] += 1.0;
            }
            // not after the last step: a restarted entry needs steps to find its inputs
            if done.is_multiple_of(cfg.restart_dead_codes) && done < cfg.steps {
                restarted = restart_dead_codes(model, vars, &out, &usage, cfg.seed ^ done)?;
                usage.iter_mut().for_each(|u| *u = 0.0);
            }
        }
        if done.is_multiple_of(cfg.log_every) || done == cfg.steps {
            let rec = metrics_record(&losses, grad_norm, &window, &out, &stats, restarted, cfg)?;
            log.log(done, &rec)?;
            tracing::debug!(step = done, loss = losses.total, "train tokenizer");
            bar.set_message(progress::message(losses.total, window.per_sec()));
            window.reset();
        }
        bar.inc(1);
        if done.is_multiple_of(cfg.checkpoint_every) || done == cfg.steps {
            usage_var.set(&Tensor::new(usage.as_slice(), device)?)?;
            let extra = serde_json::json!({ "train_config": cfg, "model_config": model.config() });
            checkpoint::save(
                run_dir,
                done,
                &state_vars,
                &opt,
                &extra,
                checkpoint::DEFAULT_KEEP,
            )?;
        }
        last = losses;
    }
    bar.finish_and_clear();
    let model_dir = run_dir.join("model");
    model.save(&model_dir, vars)?;
    Ok(TrainSummary {
        steps: cfg.steps,
        resumed_from: resumed.map(|r| r.0),
        final_losses: last,
        seconds: t0.elapsed().as_secs_f64(),
        model_dir_sha256: vqrae_data::fs::sha256_model(&model_dir)?,
        model_dir,
        feature_cache,
    })
}
