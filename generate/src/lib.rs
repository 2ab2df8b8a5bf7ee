//! vqrae-generate: the text-to-image path on VQRAE's discrete codes.
//!
//! - [`sequence`]: `<bos> caption <boi> codes <eoi>`, loss on the image tokens only;
//! - [`sample`]: code sampling with classifier-free guidance on a doubled batch, and drawing
//!   images through a tokenizer's decoder;
//! - [`augment`]: caption-preserving moves of training images (more text-to-image data).
//!
//! The unified model that serves this path beside VQA, and its joint trainer, live in
//! `vqrae-unified`; the judges of generated images in `vqrae-eval`.

pub mod augment;
pub mod error;
pub mod sample;
pub mod sequence;

pub use error::{GenerateError, Result};
