//! vqrae-scaling: scaling experiments on autoregressive generation over VQRAE codes: a family of LMs of one
//! recipe at several sizes, trained on the same pre-tokenised data for a budget in tokens or
//! FLOPs, with their held-out image-token loss fitted as `L(N) = a N^-alpha + L_inf` and, on
//! the compute-efficient frontier, `L(C)`; the fits predict the next size up, which is then
//! trained to check; a second sweep holds the LM fixed and varies the tokenizer's codebook.
//!
//! - [`config`]: the sweep's TOML (`configs/scaling/*.toml`) and its `--smoke` shrink;
//! - `data`: the sweep's images from the data root (easy-VQA and the procedural scenes);
//! - [`codes`]: the images' codes, encoded once per tokenizer and cached;
//! - [`run`]: one resumable run and its validation curve;
//! - `quality`: the referee on generated images, and its ceiling on reconstructions;
//! - [`fit`]: the power-law fits and the frontier;
//! - [`sweep`]: the whole sweep ([`sweep::run_and_report`]: what `vqrae scale` does);
//!   [`report`]: CSV, plots and the markdown report.

pub mod codes;
pub mod config;
mod data;
pub mod error;
pub mod fit;
mod quality;
pub mod report;
pub mod run;
pub mod sweep;

pub use config::ScalingConfig;
pub use error::{Result, ScalingError};
pub use sweep::SweepReport;
