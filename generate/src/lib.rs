//! vqrae-generate: text-to-image generation on VQRAE's discrete codes.
//!
//! - [`augment`]: caption-preserving moves of easy-VQA training images (more text-to-image data);
//! - [`sequence`]: `<bos> caption <boi> codes <eoi>`, loss on the image tokens only;
//! - [`sample`]: code sampling with classifier-free guidance on a doubled batch;
//! - [`unified`]: the one model directory (tokenizer + LM + projector + text tokenizer) that
//!   serves both paths;
//! - [`joint`]: phased joint training of the one LM on VQA and text-to-image;
//! - [`referee`]: the independent judge of generated easy-VQA images (a small CNN trained on
//!   real images only);
//! - [`scene_judge`]: an exact pixel judge of generated procedural scenes, scored per skill
//!   (count, colour, position) as GenEval does with a detector.

pub mod augment;
pub mod error;
pub mod joint;
pub mod referee;
pub mod sample;
pub mod scaling;
pub mod scene_judge;
pub mod sequence;
pub mod unified;

pub use error::{GenerateError, Result};
