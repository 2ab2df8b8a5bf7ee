//! vqrae-understand: visual question answering on VQRAE's **continuous** features.
//!
//! - [`projector`]: the LLaVA-style 2-layer GELU MLP from the encoder width to the LM width;
//! - [`prompt`]: the one prompt format, `<bos> <image> x N question`, then the answer and
//!   `<eos>`; the `<image>` slots are replaced by the projected patch features;
//! - [`answer`]: batched greedy answering with the LM's KV cache;
//! - [`counterfactual`]: twins of yes/no training questions whose answers only the image decides;
//! - [`reasoning`]: reasoned yes/no answers ("red, so no") and their conclusions.
//!
//! Training (projector only, then projector + LM) is the joint trainer's, in `vqrae-unified`,
//! so that one LM checkpoint serves both paths.

pub mod answer;
pub mod counterfactual;
pub mod error;
pub mod projector;
pub mod prompt;
pub mod reasoning;
pub mod sentences;

pub use projector::{Projector, ProjectorConfig};
