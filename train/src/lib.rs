//! Training machinery shared by the tokenizer's two-stage training and the LM's training.
//!
//! - [`schedule`]: learning-rate schedule (linear warm-up, cosine decay), a serde config.
//! - [`optim`]: AdamW with parameter groups (one schedule each) and an optimizer state that can
//!   be saved and loaded exactly (candle's own `AdamW` keeps its moments private), plus
//!   [`optim::clip_grad_norm`].
//! - [`checkpoint`]: training-state checkpoints (`state/step-<N>/` in a run directory: model
//!   variables, optimizer state, trainer JSON), written atomically, the last K kept, resumed
//!   bit-exactly. The model's *inference* checkpoint format belongs to the model crates.
//! - [`lock`]: one trainer per run directory (an OS lock on `RUN/run.lock`, held for the run's
//!   life, released when the process ends however it ends).
//! - [`metrics`]: a JSONL metrics log that drops the records a resumed run will write again.
//! - [`progress`]: an `indicatif` progress bar and a throughput counter.
//! - [`ops`]: the one switch between fused inference kernels and differentiable training ops
//!   (softmax, layer norm, RMS norm, RoPE, GELU, SiLU-times-gate), used by every model's layers.
//! - [`fused_act`]: GELU, `silu(gate) * up` and softmax as differentiable fused CPU kernels.
//! - [`init`]: seeded parameter initialisation ([`init::SeededVarMap`]), shared by the models.
//! - [`plot`]: training curves of one or more runs to PNG (plotters); [`run_curves`]: those of
//!   run directories, by metric (`vqrae plot`).
//!
//! A training loop with exact resume looks like this:
//!
//! ```no_run
//! # use std::collections::HashMap;
//! # use vqrae_train::{checkpoint, metrics::MetricsLog, optim::{self, AdamW, AdamWConfig, ParamGroup}, schedule::LrSchedule};
//! # fn run(vars: HashMap<String, candle_core::Var>, loss_at: impl Fn(u64) -> candle_core::Tensor) -> vqrae_train::Result<()> {
//! let run_dir = std::path::Path::new("runs/demo");
//! let schedule = LrSchedule { peak_lr: 1e-3, min_lr: 1e-5, warmup_steps: 10, total_steps: 100 };
//! let group = ParamGroup::new("all", vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), schedule);
//! let mut opt = AdamW::new(vec![group], AdamWConfig::default())?;
//! let start = match checkpoint::load_latest(run_dir, &vars, &mut opt)? {
//!     Some((step, _extra)) => step,
//!     None => 0,
//! };
//! let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), Some(start))?;
//! for step in start..100 {
//!     let loss = loss_at(step);
//!     let mut grads = loss.backward().map_err(|e| vqrae_train::TrainError::candle("backward", e))?;
//!     let norm = optim::clip_grad_norm(&mut grads, vars.values(), 1.0)?;
//!     opt.step(&grads)?;
//!     log.log(step + 1, &serde_json::json!({ "grad_norm": norm }))?;
//!     if (step + 1).is_multiple_of(10) {
//!         checkpoint::save(run_dir, step + 1, &vars, &opt, &serde_json::json!({}), checkpoint::DEFAULT_KEEP)?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Bit-exact resume holds on one device with one build: the optimizer state, the variables and
//! the step count round-trip exactly, and the global gradient norm is summed in an order that
//! does not depend on the order of the variables.

pub mod checkpoint;
mod cpu_kernel;
pub mod device;
pub mod error;
pub mod frozen;
pub mod fused_act;
mod fused_adamw;
pub mod fused_attn;
pub mod fused_loss;
pub mod fused_norm;
pub mod fused_rope;
pub mod init;
pub mod lock;
pub mod metrics;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod run_curves;
pub mod schedule;

pub use error::{Result, TrainError};
