//! vqrae-unified: the one model that serves both paths, above the VQA path (`vqrae-understand`)
//! and the text-to-image path (`vqrae-generate`).
//!
//! - [`model`]: [`UnifiedModel`], the directory that joins the VQRAE tokenizer, one LLaMA-style
//!   LM over the unified vocabulary, the understanding projector and the text tokenizer;
//! - [`joint`]: phased joint training of that LM on VQA (continuous features) and
//!   text-to-image (codes), so one checkpoint answers and draws.

mod error;
pub mod joint;
pub mod model;

pub use error::{Result, UnifiedError};
pub use model::{UnifiedConfig, UnifiedModel};
