//! Reasoned yes/no answers: `"<the image's attribute>, so <yes|no>"`.
//!
//! A yes/no question names one colour or shape ("is there a red shape?"); its answer is whether
//! the image's own attribute of that kind is the named one, negation aside. Asked for "yes" or
//! "no" directly, the model has to compare a word of the question with the image's features in
//! one step, and the default LM never learnt that for colours (it answers the data's prior:
//! docs in the README's LM section). A reasoned answer first states the image's attribute, which
//! the model reads from the image as it does for "what color is the shape?" (99.8%), and then
//! concludes: the comparison is now between two words of the same sequence.
//!
//! Evaluation compares the [`conclusion`]; the whole answer is what a user sees.

use vqrae_data::easy_vqa::COLORS;

use crate::counterfactual::named_attribute;

/// What separates the stated attribute from the conclusion.
pub(crate) const SO: &str = ", so ";

/// The reasoned form of a yes/no `answer` to `question` about an image of `color` and `shape`,
/// or `None` when there is none: the answer is not yes/no, or the question names no attribute
/// word, or more than one.
pub fn reasoned(question: &str, answer: &str, color: &str, shape: &str) -> Option<String> {
    let answer = answer.trim();
    if answer != "yes" && answer != "no" {
        return None;
    }
    let (_, _, values) = named_attribute(question)?;
    let own = if values == &COLORS[..] { color } else { shape };
    Some(format!("{own}{SO}{answer}"))
}

/// The conclusion of a reasoned answer (what follows the last [`SO`]); any other answer whole.
pub fn conclusion(answer: &str) -> &str {
    answer.rsplit_once(SO).map_or(answer, |(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_images_attribute_of_the_named_kind() {
        let r = |q: &str, a: &str| reasoned(q, a, "teal", "triangle");
        assert_eq!(
            r("is there a red shape?", "no").as_deref(),
            Some("teal, so no")
        );
        assert_eq!(
            r("is there not a teal shape in the image?", "no").as_deref(),
            Some("teal, so no")
        );
        assert_eq!(
            r("does the image contain a triangle?", "yes").as_deref(),
            Some("triangle, so yes")
        );
        // not yes/no, no attribute word, two attribute words
        assert_eq!(r("what color is the shape?", "teal"), None);
        assert_eq!(r("is there a shape?", "yes"), None);
        assert_eq!(r("is there a red circle?", "no"), None);
    }

    #[test]
    fn the_conclusion_is_what_follows_the_reason() {
        assert_eq!(conclusion("teal, so no"), "no");
        assert_eq!(conclusion("blue"), "blue");
        assert_eq!(
            conclusion(&reasoned("is a circle present?", "yes", "red", "circle").unwrap()),
            "yes"
        );
    }
}
