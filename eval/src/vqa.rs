//! Exact-match VQA accuracy, overall and per question kind, and the `eval-vqa` procedure that
//! measures it on an easy-VQA split.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_lm::SamplingConfig;
use vqrae_unified::model::UnifiedModel;

use crate::error::{EvalError, Result};

/// Counts of right answers, by kind (any string: easy-VQA's `color` / `shape` / `yes/no`, or the
/// procedural scenes' skills).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct VqaScore {
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
pub(crate) fn normalize(answer: &str) -> String {
    vqrae_understand::reasoning::conclusion(answer.trim())
        .trim()
        .trim_end_matches('.')
        .trim()
        .to_lowercase()
}

impl VqaScore {
    /// Counts one answer; returns whether it was right.
    pub fn add(&mut self, kind: &str, predicted: &str, expected: &str) -> bool {
        let right = normalize(predicted) == normalize(expected);
        self.total += 1;
        self.correct += right as usize;
        let k = self.by_kind.entry(kind.to_string()).or_default();
        k.total += 1;
        k.correct += right as usize;
        k.accuracy = k.correct as f64 / k.total as f64;
        right
    }

    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Which questions [`evaluate`] asks, and how many answers its report lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VqaOptions {
    /// Ask only the first `limit` questions of the split (0: all of them).
    pub limit: usize,
    /// Questions per forward pass (at least 1).
    pub batch: usize,
    /// List up to this many wrong answers.
    pub mistakes: usize,
}

/// The first answers a report lists, right or wrong: a glance at what the model says.
const EXAMPLES: usize = 12;

/// Longest answer, in tokens: room for a reasoned one ("triangle, so yes"); answers stop at
/// `<eos>`.
const MAX_ANSWER_TOKENS: usize = 16;

/// One question about an image, the model's answer and the expected one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub image: usize,
    pub question: String,
    pub answer: String,
    pub expected: String,
}

/// What `eval-vqa` reports. Printed through a `serde_json::Value`, whose keys come out sorted,
/// as this report always has been.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqaReport {
    /// The model directory asked, and its [`vqrae_data::fs::sha256_model`]: what identifies
    /// the model once the path holds another (empty in reports written before they were kept).
    #[serde(default)]
    pub model: PathBuf,
    #[serde(default)]
    pub model_sha256: String,
    pub split: Split,
    pub questions: usize,
    pub accuracy: f64,
    pub by_kind: BTreeMap<String, KindScore>,
    /// Wall-clock time of the evaluation (the model already loaded).
    pub seconds: f64,
    /// The first answers, right or wrong.
    pub examples: Vec<Answer>,
    /// The first wrong answers, up to [`VqaOptions::mistakes`].
    pub mistakes: Vec<Answer>,
}

/// Asks `model` the questions of `dataset` (greedy answers) and scores them by exact match
/// (after `normalize`: trimmed, lowercased, by conclusion), per question kind. `model_dir` is
/// the directory `model` was loaded from, recorded with its hash.
pub fn evaluate(
    (model, model_dir): (&UnifiedModel, &Path),
    dataset: &EasyVqa,
    options: &VqaOptions,
) -> Result<VqaReport> {
    if options.batch == 0 {
        return Err(EvalError::Config(
            "VQA evaluation: the batch must hold at least one question".into(),
        ));
    }
    let started = Instant::now();
    let index: HashMap<usize, usize> = dataset
        .images
        .iter()
        .enumerate()
        .map(|(i, im)| (im.id, i))
        .collect();
    let limit = if options.limit == 0 {
        usize::MAX
    } else {
        options.limit
    };
    let questions: Vec<_> = dataset.questions.iter().take(limit).collect();
    let mut score = VqaScore::default();
    let mut examples = Vec::new();
    let mut mistakes = Vec::new();
    for chunk in questions.chunks(options.batch) {
        let idx = chunk
            .iter()
            .map(|q| {
                index
                    .get(&q.image_id)
                    .copied()
                    .ok_or(EvalError::UnknownImage(q.image_id))
            })
            .collect::<Result<Vec<_>>>()?;
        let images = dataset.load_images(&idx)?;
        let texts: Vec<&str> = chunk.iter().map(|q| q.question.as_str()).collect();
        let answers = model.ask(
            &images,
            &texts,
            MAX_ANSWER_TOKENS,
            &SamplingConfig::greedy(),
        )?;
        for (q, got) in chunk.iter().zip(answers) {
            let right = score.add(&q.kind.to_string(), &got, &q.answer);
            let answer = Answer {
                image: q.image_id,
                question: q.question.clone(),
                answer: got,
                expected: q.answer.clone(),
            };
            if !right && mistakes.len() < options.mistakes {
                mistakes.push(answer.clone());
            }
            if examples.len() < EXAMPLES {
                examples.push(answer);
            }
        }
    }
    Ok(VqaReport {
        model: model_dir.to_path_buf(),
        model_sha256: vqrae_data::fs::sha256_model(model_dir)?,
        split: dataset.split,
        questions: score.total,
        accuracy: score.accuracy(),
        by_kind: score.by_kind,
        seconds: started.elapsed().as_secs_f64(),
        examples,
        mistakes,
    })
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
