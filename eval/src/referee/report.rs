//! What the referee reads in an image ([`Verdict`]) and how often it is right
//! ([`RefereeReport`]).

use serde::{Deserialize, Serialize};
use vqrae_data::easy_vqa::ColorShape;

use crate::error::{EvalError, Result};

/// What the referee reads in one image: a colour and a shape, the same kind of value as the
/// easy-VQA labels it is scored against.
pub type Verdict = ColorShape;

/// Accuracy of the referee on labelled images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefereeReport {
    pub images: usize,
    pub color: f64,
    pub shape: f64,
    /// Colour and shape both right.
    pub both: f64,
}

/// Accuracy of verdicts against labels.
pub(crate) fn score(verdicts: &[Verdict], labels: &[Verdict]) -> Result<RefereeReport> {
    if verdicts.len() != labels.len() || labels.is_empty() {
        return Err(EvalError::Config(format!(
            "referee score: {} verdicts for {} labels",
            verdicts.len(),
            labels.len()
        )));
    }
    let n = labels.len() as f64;
    let count = |f: &dyn Fn(&Verdict, &Verdict) -> bool| {
        verdicts.iter().zip(labels).filter(|(v, l)| f(v, l)).count() as f64 / n
    };
    Ok(RefereeReport {
        images: labels.len(),
        color: count(&|v, l| v.color == l.color),
        shape: count(&|v, l| v.shape == l.shape),
        both: count(&|v, l| v == l),
    })
}
