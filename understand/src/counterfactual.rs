//! Counterfactual twins of easy-VQA's yes/no questions, for training.
//!
//! A yes/no question about a one-shape image names one colour ("is there a red shape?") or one
//! shape ("does the image not contain a circle?"). Its *twin* keeps the image and the wording
//! and swaps that word so that the truth flips: the image's own colour becomes another, or
//! another becomes the image's own. The twin's answer is the original's flipped, negated
//! templates included (negation flips both the same way). Trained side by side, a question and
//! its twin differ only in one word and in the answer, so the words alone cannot predict it:
//! only comparing the word with the image can. Built from training labels only.

use rand::Rng;
use vqrae_data::easy_vqa::{COLORS, SHAPES};

/// The colour and shape of a one-shape image, from its caption "a <colour> <shape>".
pub fn caption_attributes(caption: &str) -> Option<(&'static str, &'static str)> {
    let mut words = caption.split_whitespace();
    let (Some("a"), Some(c), Some(s), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let color = COLORS.iter().find(|x| **x == c)?;
    let shape = SHAPES.iter().find(|x| **x == s)?;
    Some((color, shape))
}

/// The twin `(question, answer)` of a yes/no `question` about an image of `color` and `shape`,
/// or `None` when it has none: the answer is not yes/no, or the question names no attribute
/// word, or more than one.
pub fn twin<R: Rng>(
    question: &str,
    answer: &str,
    color: &str,
    shape: &str,
    rng: &mut R,
) -> Option<(String, String)> {
    let flipped = match answer.trim() {
        "yes" => "no",
        "no" => "yes",
        _ => return None,
    };
    let (s, e, values) = named_attribute(question)?;
    let word = &question[s..e];
    let own = if values == &COLORS[..] { color } else { shape };
    let swapped = if word == own {
        let others: Vec<&str> = values.iter().copied().filter(|v| *v != own).collect();
        others[rng.gen_range(0..others.len())]
    } else {
        own
    };
    Some((
        format!("{}{swapped}{}", &question[..s], &question[e..]),
        flipped.to_string(),
    ))
}

/// The one word of `question` that names a colour or a shape: its byte range and the values of
/// its kind; `None` when no word does, or more than one.
pub(crate) fn named_attribute(question: &str) -> Option<(usize, usize, &'static [&'static str])> {
    let mut named = Vec::new();
    let mut start = None;
    for (i, ch) in question.char_indices().chain([(question.len(), ' ')]) {
        match (ch.is_ascii_alphabetic(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if let Some(values) = attribute_of(&question[s..i]) {
                    named.push((s, i, values));
                }
                start = None;
            }
            _ => {}
        }
    }
    match named[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// Whether a yes/no question is negated ("is there not a ...", "is no ... present?"): its
/// answer is the opposite of whether the named attribute is in the image.
pub fn is_negated(question: &str) -> bool {
    question
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|w| w == "not" || w == "no")
}

fn attribute_of(word: &str) -> Option<&'static [&'static str]> {
    if COLORS.contains(&word) {
        Some(&COLORS[..])
    } else if SHAPES.contains(&word) {
        Some(&SHAPES[..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(3)
    }

    #[test]
    fn captions_give_their_attributes() {
        assert_eq!(caption_attributes("a red circle"), Some(("red", "circle")));
        assert_eq!(caption_attributes("a red"), None);
        assert_eq!(caption_attributes("two red circles"), None);
        assert_eq!(caption_attributes("a pink circle"), None);
    }

    #[test]
    fn the_own_attribute_swaps_to_another_and_the_answer_flips() {
        let mut r = rng();
        for _ in 0..50 {
            let (q, a) = twin("is there a red shape?", "yes", "red", "circle", &mut r).unwrap();
            assert_eq!(a, "no");
            let w = q
                .strip_prefix("is there a ")
                .and_then(|q| q.strip_suffix(" shape?"))
                .unwrap();
            assert!(COLORS.contains(&w) && w != "red", "{q}");
        }
    }

    #[test]
    fn another_attribute_swaps_to_the_own_one_negations_included() {
        let mut r = rng();
        let t =
            |q: &str, a: &str, r: &mut rand_chacha::ChaCha8Rng| twin(q, a, "teal", "triangle", r);
        assert_eq!(
            t("is there not a blue shape in the image?", "yes", &mut r),
            Some((
                "is there not a teal shape in the image?".into(),
                "no".into()
            ))
        );
        assert_eq!(
            t("does the image contain a circle?", "no", &mut r),
            Some(("does the image contain a triangle?".into(), "yes".into()))
        );
        // no twin: not yes/no, no attribute word, two attribute words
        assert_eq!(t("what color is the shape?", "teal", &mut r), None);
        assert_eq!(t("is there a shape?", "yes", &mut r), None);
        assert_eq!(t("is there a red circle?", "no", &mut r), None);
    }

    #[test]
    fn negations_are_recognised() {
        assert!(is_negated("is there not a red shape?"));
        assert!(is_negated("is no circle present?"));
        assert!(!is_negated("is there a red shape?"));
        assert!(!is_negated("does the image contain a notebook?"));
    }

    #[test]
    fn a_twin_of_a_twin_is_true_to_the_image() {
        // truth check from first principles: "is there a X" is yes iff X is the image's colour
        let truth = |q: &str| {
            let negated = q.contains(" not ") || q.starts_with("is no ");
            let present = q
                .split(|c: char| !c.is_ascii_alphabetic())
                .any(|w| w == "gray");
            if present != negated {
                "yes"
            } else {
                "no"
            }
        };
        let mut r = rng();
        for q in [
            "is no brown shape present?",
            "is a gray shape present?",
            "is there not a red shape?",
        ] {
            let (t1, a1) = twin(q, truth(q), "gray", "circle", &mut r).unwrap();
            assert_eq!(a1, truth(&t1), "{t1}");
            let (t2, a2) = twin(&t1, &a1, "gray", "circle", &mut r).unwrap();
            assert_eq!(a2, truth(&t2), "{t2}");
        }
    }
}
