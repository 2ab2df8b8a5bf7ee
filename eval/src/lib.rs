//! vqrae-eval: the judges and the evaluation procedures of the unified model.
//!
//! - [`vqa`]: exact-match accuracy, per question kind, and the `eval-vqa` procedure;
//! - [`t2i`]: the `eval-t2i` procedure: colour-shape captions drawn and judged by the referee
//!   per guidance scale, and optionally held-out procedural scenes judged per skill;
//! - [`image_ood`]: calibration of the model card's image check: reconstruction PSNR of
//!   held-out and out-of-distribution images, per group, and the threshold it chooses;
//! - [`referee`]: the independent judge of generated easy-VQA images (a small CNN trained on
//!   real images only), with the `train-referee` and `eval-referee` procedures;
//! - [`scene_judge`]: an exact pixel judge of generated procedural scenes, scored per skill
//!   (count, colour, position) as GenEval does with a detector; [`scenes`]: held-out scenes as
//!   prompts, judged, with the ceiling on a tokenizer's reconstructions.

pub mod captioned_t2i;
pub mod error;
pub mod image_ood;
pub mod referee;
pub mod scene_judge;
pub mod scenes;
pub mod t2i;
pub mod vqa;

pub use error::{EvalError, Result};
