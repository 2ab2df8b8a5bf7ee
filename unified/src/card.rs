//! The model card: what a model directory's model was trained on and so knows, as `card.json`
//! beside `unified.json`. A toy model answers confidently about anything (a prompt "a cat"
//! draws circles, "how many shapes are there?" gets "yellow, so no"); its card lets a server
//! say what the model knows, refuse or flag prompts and questions outside it, and take its
//! defaults from measurements rather than from constants.
//!
//! The out-of-distribution checks are exact and deliberately simple:
//! - a **caption** (text-to-image prompt) is known when every word of it is in the caption
//!   vocabulary: [`Captions::articles`], [`Captions::colors`], [`Captions::shapes`] and
//!   [`Captions::scene_words`] (counts, plurals and relations of procedural scenes' captions),
//!   with commas allowed between words. Word order is not checked: "two red circles left of a
//!   blue square" and "circle red a" both pass; the vocabulary is what the check promises;
//! - a **question** is known when it is one of the card's question forms ([`QuestionForm`]),
//!   word for word, where `{color}` and `{shape}` stand for any of the caption vocabulary's
//!   colours and shapes.
//!
//! - an **image** (asked about) is known when the model's own tokenizer reconstructs it at
//!   [`Images::min_reconstruction_psnr`] or better ([`crate::fidelity`]): a measured threshold
//!   below nearly every held-out test image, far above noise, photos and charts.
//!
//! Words are compared lowercased (the text tokenizer lowercases too); whitespace separates them,
//! and each of `, . ? ! ; :` is a word of its own.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, UnifiedError};

/// The card's file in a model directory.
pub const CARD_FILE: &str = "card.json";

/// The slots of a question form.
const COLOR_SLOT: &str = "{color}";
const SHAPE_SLOT: &str = "{shape}";
/// Punctuation that is a word of its own.
const PUNCTUATION: [char; 6] = [',', '.', '?', '!', ';', ':'];
/// Largest sensible image side: the card is read from disk, so its numbers are checked.
const MAX_IMAGE_SIZE: usize = 4096;

/// What a model knows, with where each fact comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// One line: what the model is.
    pub summary: String,
    /// How the card was written: by hand from the measured reports, or by a command.
    pub source: String,
    /// The data it was trained on, one entry per data set.
    pub trained_on: Vec<String>,
    /// Square image side, pixels: what it reads and draws.
    pub image_size: usize,
    pub captions: Captions,
    /// The kinds of question it answers, with their forms.
    pub questions: Vec<QuestionForm>,
    pub defaults: Defaults,
    /// The image check; a card without it checks no image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Images>,
    /// Held-out figures, each with its report.
    #[serde(default)]
    pub figures: Vec<Figure>,
    /// The evaluation reports behind the card (paths in the repository).
    #[serde(default)]
    pub reports: Vec<String>,
}

/// The vocabulary of the captions the model was trained to draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Captions {
    pub articles: Vec<String>,
    pub colors: Vec<String>,
    pub shapes: Vec<String>,
    /// The other words of procedural scenes' captions (counts, plurals, "and", relations);
    /// empty when the model never saw a scene.
    #[serde(default)]
    pub scene_words: Vec<String>,
    /// Prompts to try, each within the vocabulary.
    pub examples: Vec<String>,
}

/// One kind of question and the forms of it the model was trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionForm {
    /// "color", "shape", "yes/no" (as `vqrae_data::easy_vqa::QuestionKind` prints them).
    pub kind: String,
    /// What its answers look like.
    pub answers: String,
    /// The questions word for word; `{color}` and `{shape}` stand for any caption colour or
    /// shape.
    pub templates: Vec<String>,
    /// Questions to try, each of one of the templates.
    pub examples: Vec<String>,
}

/// Defaults chosen by measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Classifier-free guidance scale of text-to-image.
    pub guidance: Measured,
}

/// What images the model knows, and the measured check of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Images {
    /// The images it was trained on, in words (for an error message).
    pub description: String,
    /// Lowest reconstruction PSNR (dB) through the model's own tokenizer of an image it is
    /// asked about; `why` quotes the measured distributions that chose it.
    pub min_reconstruction_psnr: Measured,
}

/// A default and the measurement that chose it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub value: f64,
    /// The measurement, quoted from the report.
    pub why: String,
    /// The report (a path in the repository).
    pub report: String,
}

/// One held-out figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    pub what: String,
    /// A fraction in [0, 1].
    pub value: f64,
    pub report: String,
}

/// A prompt or question outside what the card says the model knows; its `Display` says what
/// the model knows instead.
#[derive(Clone, Debug, PartialEq)]
pub enum OutOfDistribution {
    /// Caption words outside the vocabulary, each once, in order.
    Caption { unknown: Vec<String>, knows: String },
    /// A question of none of the forms.
    Question { question: String, knows: String },
    /// An image the model's tokenizer reconstructs worse than the card's threshold.
    Image {
        psnr: f64,
        min_psnr: f64,
        knows: String,
    },
}

impl fmt::Display for OutOfDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Caption { unknown, knows } => {
                let words: Vec<String> = unknown.iter().map(|w| format!("{w:?}")).collect();
                let (s, are) = if words.len() == 1 {
                    ("", "is")
                } else {
                    ("s", "are")
                };
                write!(
                    f,
                    "the word{s} {} {are} outside this model's caption vocabulary. {knows}",
                    words.join(", ")
                )
            }
            Self::Question { question, knows } => write!(
                f,
                "{question:?} is not one of the questions this model was trained on. {knows}"
            ),
            Self::Image {
                psnr,
                min_psnr,
                knows,
            } => write!(
                f,
                "the image does not look like what this model knows: its tokenizer reconstructs \
                 it at {psnr:.1} dB PSNR, below the {min_psnr:.1} dB that the images it knows \
                 reach. {knows}"
            ),
        }
    }
}

/// Lowercased words; each of [`PUNCTUATION`] is a word of its own.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for ch in text.chars().flat_map(char::to_lowercase) {
        if ch.is_whitespace() || PUNCTUATION.contains(&ch) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
        } else {
            word.push(ch);
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// "a, b and c".
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl ModelCard {
    /// Reads and validates `dir/card.json`; `None` when the directory has no card.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CARD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UnifiedError::io(&path)(e)),
        };
        let card: Self = serde_json::from_str(&text).map_err(|source| UnifiedError::Json {
            path: path.clone(),
            source,
        })?;
        card.validate()
            .map_err(|m| UnifiedError::Config(format!("{}: {m}", path.display())))?;
        Ok(Some(card))
    }

    /// Every caption word, in the card's order.
    pub fn caption_vocabulary(&self) -> impl Iterator<Item = &str> {
        let c = &self.captions;
        c.articles
            .iter()
            .chain(&c.colors)
            .chain(&c.shapes)
            .chain(&c.scene_words)
            .map(String::as_str)
    }

    /// `Ok` when every word of `prompt` is in the caption vocabulary.
    pub fn check_caption(&self, prompt: &str) -> std::result::Result<(), OutOfDistribution> {
        let known: HashSet<&str> = self.caption_vocabulary().chain([","]).collect();
        let mut unknown: Vec<String> = Vec::new();
        for w in words(prompt) {
            if !known.contains(w.as_str()) && !unknown.contains(&w) {
                unknown.push(w);
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(OutOfDistribution::Caption {
                unknown,
                knows: self.knows_captions(),
            })
        }
    }

    /// The kind of `question` when it is one of the card's question forms.
    pub fn question_kind(&self, question: &str) -> Option<&str> {
        let asked = words(question);
        let c = &self.captions;
        let fits = |slot: &str, word: &String| match slot {
            COLOR_SLOT => c.colors.contains(word),
            SHAPE_SLOT => c.shapes.contains(word),
            _ => slot == word,
        };
        self.questions
            .iter()
            .find(|form| {
                form.templates.iter().any(|t| {
                    let slots = words(t);
                    slots.len() == asked.len() && slots.iter().zip(&asked).all(|(s, w)| fits(s, w))
                })
            })
            .map(|form| form.kind.as_str())
    }

    /// `Ok` when `question` is one of the card's question forms.
    pub fn check_question(&self, question: &str) -> std::result::Result<(), OutOfDistribution> {
        match self.question_kind(question) {
            Some(_) => Ok(()),
            None => Err(OutOfDistribution::Question {
                question: question.trim().to_string(),
                knows: self.knows_questions(),
            }),
        }
    }

    /// `Ok` when an image's reconstruction PSNR (dB, [`crate::fidelity`]) is at least the
    /// card's threshold, or the card has no image check.
    pub fn check_image_psnr(&self, psnr: f64) -> std::result::Result<(), OutOfDistribution> {
        let Some(images) = &self.images else {
            return Ok(());
        };
        let min_psnr = images.min_reconstruction_psnr.value;
        if psnr >= min_psnr {
            return Ok(());
        }
        Err(OutOfDistribution::Image {
            psnr,
            min_psnr,
            knows: format!("It knows {}.", images.description.trim_end_matches('.')),
        })
    }

    /// What the model draws, for an error message.
    pub fn knows_captions(&self) -> String {
        let c = &self.captions;
        let size = self.image_size;
        let mut s = format!(
            "It draws {size}x{size} images of captions made of the words {}; colours {}; shapes {}",
            list(&c.articles),
            list(&c.colors),
            list(&c.shapes),
        );
        if !c.scene_words.is_empty() {
            s += &format!(
                "; and, for scenes of several shapes, {}",
                list(&c.scene_words)
            );
        }
        let examples: Vec<String> = c.examples.iter().map(|e| format!("{e:?}")).collect();
        s += &format!(". Examples: {}.", list(&examples));
        s
    }

    /// What the model answers, for an error message.
    pub fn knows_questions(&self) -> String {
        let kinds: Vec<String> = self
            .questions
            .iter()
            .map(|q| {
                let first = q.examples.first().or(q.templates.first());
                format!(
                    "{} questions ({}; {} forms)",
                    q.kind,
                    first.map(|e| format!("{e:?}")).unwrap_or_default(),
                    q.templates.len()
                )
            })
            .collect();
        let size = self.image_size;
        format!(
            "It answers, about one {size}x{size} image, {}, where a colour is one of {} and a \
             shape one of {}.",
            list(&kinds),
            list(&self.captions.colors),
            list(&self.captions.shapes),
        )
    }

    /// Checks the card: its numbers in range, its words single lowercase words and distinct,
    /// its examples within its own vocabulary and forms. The error says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.summary.trim().is_empty() || self.source.trim().is_empty() {
            return Err("summary and source must not be empty".into());
        }
        if self.image_size == 0 || self.image_size > MAX_IMAGE_SIZE {
            return Err(format!(
                "image_size must be in 1..={MAX_IMAGE_SIZE}, got {}",
                self.image_size
            ));
        }
        let c = &self.captions;
        if c.colors.is_empty() || c.shapes.is_empty() {
            return Err("captions.colors and captions.shapes must not be empty".into());
        }
        let mut seen = HashSet::new();
        for w in self.caption_vocabulary() {
            if w.is_empty() || !w.chars().all(|ch| ch.is_ascii_lowercase()) {
                return Err(format!(
                    "caption word {w:?} is not one lowercase word (a-z)"
                ));
            }
            if !seen.insert(w) {
                return Err(format!("caption word {w:?} is listed twice"));
            }
        }
        for e in &c.examples {
            self.check_caption(e)
                .map_err(|o| format!("caption example {e:?}: {o}"))?;
        }
        self.validate_questions()?;
        let g = &self.defaults.guidance;
        if !(g.value.is_finite() && (0.0..=50.0).contains(&g.value)) {
            return Err(format!(
                "defaults.guidance.value must be in [0, 50], got {}",
                g.value
            ));
        }
        if g.why.trim().is_empty() || g.report.trim().is_empty() {
            return Err("defaults.guidance needs its measurement (why) and report".into());
        }
        if let Some(images) = &self.images {
            let m = &images.min_reconstruction_psnr;
            if !(m.value.is_finite() && 0.0 < m.value && m.value <= crate::fidelity::MAX_PSNR) {
                return Err(format!(
                    "images.min_reconstruction_psnr.value must be in (0, {}] dB, got {}",
                    crate::fidelity::MAX_PSNR,
                    m.value
                ));
            }
            if images.description.trim().is_empty() || m.why.trim().is_empty() {
                return Err("images needs its description and its measurement (why)".into());
            }
        }
        for f in &self.figures {
            if !(0.0..=1.0).contains(&f.value) {
                return Err(format!(
                    "figure {:?}: {} is not a fraction",
                    f.what, f.value
                ));
            }
        }
        Ok(())
    }

    fn validate_questions(&self) -> std::result::Result<(), String> {
        if self.questions.is_empty() {
            return Err("questions must list at least one kind".into());
        }
        let mut kinds = HashSet::new();
        for q in &self.questions {
            if !kinds.insert(q.kind.as_str()) {
                return Err(format!("question kind {:?} is listed twice", q.kind));
            }
            if q.templates.is_empty() {
                return Err(format!("question kind {:?} has no templates", q.kind));
            }
            for t in &q.templates {
                if t.trim().is_empty() {
                    return Err(format!("question kind {:?}: an empty template", q.kind));
                }
            }
            for e in &q.examples {
                match self.question_kind(e) {
                    Some(k) if k == q.kind => {}
                    _ => {
                        return Err(format!(
                            "question example {e:?} is not one of the {:?} templates",
                            q.kind
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
