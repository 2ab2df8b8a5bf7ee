//! Scoring a LLaVA model on visual questions: each answer is a sentence, scored by exact match
//! of the answer word it gives ([`vqrae_understand::sentences::answer_word`]), per source (and,
//! for scenes, per skill).

use std::collections::BTreeMap;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_understand::sentences::answer_word;

use super::data::{Source, VqaItem, VqaSet};
use crate::error::Result;

/// Correct answers out of asked, for one group of questions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub asked: usize,
    pub correct: usize,
    /// Answers in which no word of the asked kind was found.
    pub no_answer_word: usize,
    pub accuracy: f64,
}

/// One answered question, kept for the report's examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    pub question: String,
    pub expected: String,
    pub sentence: String,
    pub word: Option<String>,
}

/// Accuracy per group (`easy_vqa`, `scene/count`, ...) and overall, with a few examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VqaScore {
    pub groups: BTreeMap<String, Tally>,
    pub overall: Tally,
    pub examples: Vec<Answered>,
}

/// The group a question is reported in.
pub fn group(source: Source) -> String {
    match source {
        Source::EasyVqa => "easy_vqa".to_string(),
        Source::Scene(skill) => format!("scene/{}", skill.to_string().replace(' ', "_")),
    }
}

impl VqaScore {
    /// Adds one answer.
    pub fn add(&mut self, item: &VqaItem, sentence: &str) {
        let word = answer_word(item.kind, sentence);
        let correct = word.as_deref() == Some(item.answer.as_str());
        for t in [
            self.groups.entry(group(item.source)).or_default(),
            &mut self.overall,
        ] {
            t.asked += 1;
            t.correct += usize::from(correct);
            t.no_answer_word += usize::from(word.is_none());
            t.accuracy = t.correct as f64 / t.asked as f64;
        }
        if self.examples.len() < 24 {
            self.examples.push(Answered {
                question: item.question.clone(),
                expected: item.answer.clone(),
                sentence: sentence.to_string(),
                word,
            });
        }
    }
}

/// Answers every question of `set` (the first `limit`, 0: all) through `answer`, `batch` at a
/// time (images and questions of one batch, in the set's order), and scores the sentences.
pub fn score(
    set: &VqaSet,
    limit: usize,
    batch: usize,
    mut answer: impl FnMut(&[RgbImage], &[&str]) -> Result<Vec<String>>,
    mut progress: impl FnMut(usize, usize),
) -> Result<VqaScore> {
    let n = match limit {
        0 => set.items.len(),
        l => l.min(set.items.len()),
    };
    let mut out = VqaScore::default();
    for (c, chunk) in set.items[..n].chunks(batch.max(1)).enumerate() {
        let images: Vec<RgbImage> = chunk
            .iter()
            .map(|it| set.images[it.image].clone())
            .collect();
        let questions: Vec<&str> = chunk.iter().map(|it| it.question.as_str()).collect();
        let sentences = answer(&images, &questions)?;
        for (it, s) in chunk.iter().zip(&sentences) {
            out.add(it, s);
        }
        progress((c * batch.max(1) + chunk.len()).min(n), n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vqrae_data::scenes::Skill;
    use vqrae_understand::sentences::AnswerKind;

    fn item(answer: &str, kind: AnswerKind, source: Source) -> VqaItem {
        VqaItem {
            image: 0,
            question: "q?".into(),
            answer: answer.into(),
            kind,
            source,
        }
    }

    #[test]
    fn sentences_are_scored_by_their_answer_word_per_group() {
        let mut s = VqaScore::default();
        s.add(
            &item("red", AnswerKind::Color, Source::EasyVqa),
            "It is red.",
        );
        s.add(
            &item("red", AnswerKind::Color, Source::EasyVqa),
            "It is blue.",
        );
        s.add(
            &item("two", AnswerKind::Count, Source::Scene(Skill::Count)),
            "There are two.",
        );
        s.add(
            &item("yes", AnswerKind::YesNo, Source::Scene(Skill::ColorBinding)),
            "I am not sure.",
        );
        assert_eq!(s.groups["easy_vqa"].correct, 1);
        assert_eq!(s.groups["easy_vqa"].asked, 2);
        assert_eq!(s.groups["scene/count"].accuracy, 1.0);
        assert_eq!(s.groups["scene/color_binding"].no_answer_word, 1);
        assert_eq!((s.overall.correct, s.overall.asked), (2, 4));
    }
}
