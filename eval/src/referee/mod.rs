//! The independent referee of generated images: a small CNN that reads colour and shape off
//! an easy-VQA-style image.
//!
//! It is trained on *real* easy-VQA training images only (never on generated ones, so it cannot
//! learn the generator's habits) and must reach 99% on real test images before its verdicts on
//! generated images count ([`Referee::load_qualified`] checks the record kept beside the
//! weights). Training shows each image under a random flip / quarter turn and small shift
//! (none changes a label; without them it overfits the 4,000 images) with light pixel noise
//! (so it does not key on the PNGs' exact flat colours, which a decoder only approximates).
//! Figures and ablations: docs/results/referee/README.md.
//!
//! - `config`: architecture and training settings, and the TOML file holding both;
//! - `model`: the network, its verdicts and its checkpoint; `im2col`: its CPU convolutions;
//! - `training`: the training loop, on the views of `augment`;
//! - `qualification`: the record of real test accuracy that lets a referee judge;
//! - `report`: verdicts and accuracy;
//! - `qualify` and `evaluation`: the `train-referee` ([`train_and_qualify`]) and
//!   `eval-referee` ([`evaluate_on_real`]) procedures on real easy-VQA images.

mod augment;
mod config;
mod evaluation;
mod im2col;
mod model;
mod qualification;
mod qualify;
mod report;
mod training;

pub use config::{Pool, RefereeConfig, RefereeTrainConfig};
pub use evaluation::{
    evaluate_on_real, ClassAccuracy, DetailedReport, EvalRefereeOptions, EvalRefereeReport,
    Misjudged,
};
pub use model::Referee;
pub use qualification::{read_qualification, Qualification, REQUIRED_ACCURACY};
pub use qualify::{train_and_qualify, TrainRefereeOptions, TrainRefereeReport};
pub use report::{RefereeReport, Verdict};

/// Test images: a flat background with a filled disc (`shape` 0) or square (any other) of a
/// palette colour, shifted by `offset` pixels; 32 px, so tests stay fast.
#[cfg(test)]
fn toy(color: usize, shape: usize, offset: u32) -> image::RgbImage {
    let [r, g, b] = vqrae_data::easy_vqa::PALETTE[color];
    image::RgbImage::from_fn(32, 32, |x, y| {
        let (cx, cy) = (8 + offset as i32, 8 + offset as i32);
        let (dx, dy) = (x as i32 - cx - 6, y as i32 - cy - 6);
        let inside = match shape {
            0 => dx * dx + dy * dy <= 36,
            _ => dx.abs() <= 5 && dy.abs() <= 5,
        };
        image::Rgb(if inside { [r, g, b] } else { [250, 245, 240] })
    })
}
