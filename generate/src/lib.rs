//! vqrae-generate: text-to-image generation on VQRAE's discrete codes.
//!
//! - [`referee`]: the independent judge of generated easy-VQA images (a small CNN trained on
//!   real images only).

pub mod error;
pub mod referee;

pub use error::{GenerateError, Result};
