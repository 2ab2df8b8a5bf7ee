//! vqrae-eval: the judges and the evaluation procedures of the unified model.
//!
//! - [`vqa`]: exact-match accuracy, per question kind;
//! - [`referee`]: the independent judge of generated easy-VQA images (a small CNN trained on
//!   real images only);
//! - [`scene_judge`]: an exact pixel judge of generated procedural scenes, scored per skill
//!   (count, colour, position) as GenEval does with a detector; [`scenes`]: held-out scenes as
//!   prompts, judged, with the ceiling on a tokenizer's reconstructions.

pub mod error;
pub mod referee;
pub mod scene_judge;
pub mod scenes;
pub mod vqa;

pub use error::{EvalError, Result};
