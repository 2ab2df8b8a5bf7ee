//! vqrae-test-support: the tiny models and toy data that tests across the workspace share, in
//! one copy (a dev-dependency only; not published).
//!
//! - [`toy`]: 32 px toy images (a disc or a square of one of three colours) with captions and
//!   questions;
//! - [`easy_vqa`]: those toy images installed as a miniature easy-VQA under a data root;
//! - [`tiny`]: the tiny tokenizer and joint LM configs (`configs/tiny.toml`,
//!   `configs/lm/tiny.toml`), a saved tiny tokenizer, and a tiny unified model trained for a
//!   few steps, built once per test binary;
//! - [`llava`]: a tiny LLaVA model directory (GGUF base with a ChatML template, DINOv2 fixture,
//!   adapters and projector) under a models root of its own, and the data root a tiny LLaVA
//!   training run reads (`configs/llava/tiny.toml`).
//!
//! Errors are `anyhow`: these helpers run in tests only, where a failure is reported, not
//! handled.

pub mod easy_vqa;
pub mod llava;
pub mod tiny;
pub mod toy;

use std::path::{Path, PathBuf};

pub use easy_vqa::mini_easy_vqa;
pub use llava::{
    shared_tiny_llava, tiny_generating_llava, tiny_llava_base, tiny_llava_config, tiny_llava_data,
    tiny_llava_model, tiny_vqa_llava, TinyLlava, TinyReplies, TINY_BASE, TINY_ENCODER,
};
pub use tiny::{save_tiny_tokenizer, shared_tiny_model, tiny_joint_config};
pub use toy::{toy_data, toy_image, Toy, COLORS};

/// The workspace root (where `configs/` is).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
