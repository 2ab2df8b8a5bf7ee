//! vqrae-unified: the one model that serves both paths, above the VQA path (`vqrae-understand`)
//! and the text-to-image path (`vqrae-generate`).
//!
//! - [`card`]: [`ModelCard`], what a model knows (`card.json` in its directory): caption
//!   vocabulary, question forms, measured defaults, and the checks of prompts and questions
//!   against them;
//! - [`fidelity`]: how faithfully the model's tokenizer reconstructs an image, the card's
//!   image check, and the summary of its measured distributions;
//! - [`model`]: [`UnifiedModel`], the directory that joins the VQRAE tokenizer, one LLaMA-style
//!   LM over the unified vocabulary, the understanding projector and the text tokenizer;
//! - [`image_files`]: text-to-image into a folder of PNGs (`vqrae generate`), in bounded
//!   batches, at most [`image_files::MAX_IMAGES`] a call;
//! - [`joint`]: phased joint training of that LM on VQA (continuous features) and
//!   text-to-image (codes), so one checkpoint answers and draws.

pub mod card;
pub mod draws;
mod error;
pub mod fidelity;
pub mod image_files;
pub mod joint;
pub mod llava;
pub mod model;

pub use card::ModelCard;
pub use error::{Result, UnifiedError};
pub use model::{UnifiedConfig, UnifiedModel};
