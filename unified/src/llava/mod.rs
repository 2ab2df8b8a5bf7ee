//! The LLaVA recipe on a pretrained LM: a frozen foundation encoder's continuous features
//! (DINOv2-S) -> a 2-layer GELU projector -> a pretrained chat LM (SmolLM2-135M-Instruct from
//! GGUF) with low-rank adapters; phase 1 trains the projector, phase 2 the projector and the
//! adapters. Answers are sentences; scoring reads the answer word back out of them.
//!
//! - [`data`]: the questions (easy-VQA and the procedural scenes) and the encoder's features;
//! - [`run`]: a training run (`vqrae train-llava`), from the config to the saved model directory;
//! - [`report`]: the held-out report of a model directory (`vqrae eval-llava`).

pub mod answer;
pub mod config;
pub mod data;
pub mod eval;
pub mod image_rows;
pub mod instructions;
pub mod model;
pub mod parts;
pub mod prompt;
pub mod report;
pub mod run;
pub mod train;
