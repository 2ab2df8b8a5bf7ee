//! Answers in a sentence, and the answer word read back out of one.
//!
//! The from-scratch LM answers with the bare word ("red"); a pretrained chat LM is asked to keep
//! talking as it was taught, so its VQA targets are short sentences ("It is red.", "There are
//! two.", "Yes."). Scoring stays exact match on the **word**: [`answer_word`] finds it in a
//! generated sentence, looking only for words of the kind the question asks about, so "The
//! triangle is red." answers a colour question with "red", not with "triangle".

use serde::{Deserialize, Serialize};
use vqrae_data::easy_vqa::{QuestionKind, COLORS, SHAPES};
use vqrae_data::scenes::Skill;

/// What kind of word answers a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Color,
    Shape,
    YesNo,
    Count,
}

impl From<QuestionKind> for AnswerKind {
    fn from(kind: QuestionKind) -> Self {
        match kind {
            QuestionKind::Color => AnswerKind::Color,
            QuestionKind::Shape => AnswerKind::Shape,
            QuestionKind::YesNo => AnswerKind::YesNo,
        }
    }
}

impl From<Skill> for AnswerKind {
    fn from(skill: Skill) -> Self {
        match skill {
            Skill::Count => AnswerKind::Count,
            Skill::Color => AnswerKind::Color,
            Skill::Position | Skill::ColorBinding => AnswerKind::YesNo,
        }
    }
}

/// Shapes of both data sets: easy-VQA's three and the scenes' square.
const SHAPE_WORDS: [&str; 4] = ["circle", "rectangle", "triangle", "square"];
/// Counts as the scenes spell them ("zero" to "twelve").
const NUMBER_WORDS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];

/// The sentence that teaches `answer` (a bare answer word of the data set) for a question
/// of `kind`. `subject` names the object asked about where the question names one (a scene's
/// "what color is the triangle?" gives "The triangle is red."); otherwise "It".
pub fn sentence(kind: AnswerKind, answer: &str, subject: Option<&str>) -> String {
    let answer = answer.trim();
    match kind {
        AnswerKind::Color => match subject {
            Some(s) => format!("The {s} is {answer}."),
            None => format!("It is {answer}."),
        },
        AnswerKind::Shape => format!("It is {} {answer}.", article(answer)),
        AnswerKind::YesNo => match answer {
            "yes" => "Yes.".to_string(),
            "no" => "No.".to_string(),
            other => format!("{other}."),
        },
        AnswerKind::Count => match answer {
            "zero" | "0" => "There are none.".to_string(),
            "one" | "1" => "There is one.".to_string(),
            n => format!("There are {n}."),
        },
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The first word of `sentence` that answers a question of `kind` (lowercased), or `None`
/// when it has none: the scoring of an answer given in a sentence. "none" and "no" answer a
/// count question as "zero"; a count given in digits is read as its word.
pub fn answer_word(kind: AnswerKind, sentence: &str) -> Option<String> {
    let lower = sentence.to_lowercase();
    let words = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty());
    for word in words {
        let found = match kind {
            AnswerKind::Color => COLORS.contains(&word).then(|| word.to_string()),
            AnswerKind::Shape => SHAPE_WORDS
                .iter()
                .chain(SHAPES.iter())
                .find(|s| **s == word || format!("{s}s") == word)
                .map(|s| s.to_string()),
            AnswerKind::YesNo => ["yes", "no"].contains(&word).then(|| word.to_string()),
            AnswerKind::Count => match word {
                "none" | "no" => Some("zero".to_string()),
                w if NUMBER_WORDS.contains(&w) => Some(w.to_string()),
                w => w.parse::<usize>().ok().map(|n| {
                    NUMBER_WORDS
                        .get(n)
                        .map_or_else(|| w.to_string(), |s| s.to_string())
                }),
            },
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The object a scene's colour question names ("what color is the triangle?" -> "triangle").
pub fn color_question_subject(question: &str) -> Option<String> {
    let q = question.trim().trim_end_matches('?').to_lowercase();
    q.strip_prefix("what color is the ")
        .or_else(|| q.strip_prefix("what colour is the "))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_taught_sentence_gives_back_its_answer_word() {
        let cases: Vec<(AnswerKind, &str, Option<&str>)> = vec![
            (AnswerKind::Color, "red", None),
            (AnswerKind::Color, "teal", Some("triangle")),
            (AnswerKind::Shape, "circle", None),
            (AnswerKind::Shape, "rectangle", None),
            (AnswerKind::YesNo, "yes", None),
            (AnswerKind::YesNo, "no", None),
            (AnswerKind::Count, "zero", None),
            (AnswerKind::Count, "one", None),
            (AnswerKind::Count, "seven", None),
        ];
        for (kind, answer, subject) in cases {
            let s = sentence(kind, answer, subject);
            assert_eq!(answer_word(kind, &s).as_deref(), Some(answer), "{s}");
        }
    }

    #[test]
    fn the_word_is_read_by_the_question_kind_not_by_position() {
        assert_eq!(
            answer_word(AnswerKind::Color, "The triangle is red.").as_deref(),
            Some("red")
        );
        assert_eq!(
            answer_word(AnswerKind::Shape, "The red shape is a triangle.").as_deref(),
            Some("triangle")
        );
        assert_eq!(
            answer_word(AnswerKind::Count, "I can see 3 of them").as_deref(),
            Some("three")
        );
        assert_eq!(
            answer_word(AnswerKind::Count, "There are no circles.").as_deref(),
            Some("zero")
        );
        assert_eq!(answer_word(AnswerKind::YesNo, "Maybe."), None);
        assert_eq!(answer_word(AnswerKind::Color, ""), None);
    }

    #[test]
    fn a_scene_colour_question_names_its_subject() {
        assert_eq!(
            color_question_subject("what color is the triangle?").as_deref(),
            Some("triangle")
        );
        assert_eq!(color_question_subject("what shape is it?"), None);
    }
}
