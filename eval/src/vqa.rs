//! Exact-match VQA accuracy, overall and per question kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts of right answers, by kind (any string: easy-VQA's `color` / `shape` / `yes/no`, or the
/// procedural scenes' skills).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VqaScore {
    pub total: usize,
    pub correct: usize,
    pub by_kind: BTreeMap<String, KindScore>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KindScore {
    pub total: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// Answers are compared by their conclusion ([`vqrae_understand::reasoning::conclusion`]: "red, so no" is
/// "no"), after trimming, lowercasing and dropping a final period.
pub fn normalize(answer: &str) -> String {
    vqrae_understand::reasoning::conclusion(answer.trim())
        .trim()
        .trim_end_matches('.')
        .trim()
        .to_lowercase()
}

impl VqaScore {
    pub fn add(&mut self, kind: &str, predicted: &str, expected: &str) {
        let right = normalize(predicted) == normalize(expected);
        self.total += 1;
        self.correct += right as usize;
        let k = self.by_kind.entry(kind.to_string()).or_default();
        k.total += 1;
        k.correct += right as usize;
        k.accuracy = k.correct as f64 / k.total as f64;
    }

    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_with_normalised_answers() {
        let mut s = VqaScore::default();
        s.add("color", " Red.", "red");
        s.add("color", "blue", "red");
        s.add("shape", "circle", "circle");
        s.add("yes/no", "red, so no", "no");
        s.add("yes/no", "red, so yes", "no");
        assert_eq!((s.total, s.correct), (5, 3));
        assert_eq!(s.by_kind["color"].accuracy, 0.5);
        assert_eq!(s.by_kind["shape"].accuracy, 1.0);
        assert_eq!(s.by_kind["yes/no"].accuracy, 0.5);
        assert!((s.accuracy() - 3.0 / 5.0).abs() < 1e-12);
    }
}
