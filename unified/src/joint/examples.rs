//! The examples a run trains on: VQA questions tokenised once before the first step (as given
//! and in reasoned form), the sampling weights and index lists drawn from, and each step's VQA,
//! text-to-image and scene batches.
//!
//! Every per-step draw comes from a generator or sampler seeded by `(seed, step)` alone, so a
//! resumed run draws exactly what an uninterrupted one does.

use std::collections::{HashMap, HashSet};

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqrae_data::batch::EpochSampler;
use vqrae_generate::sequence;
use vqrae_lm::batch::Example;
use vqrae_lm::{TextTokenizer, UnifiedVocab};
use vqrae_understand::{counterfactual, reasoning};

use super::config::{JointConfig, Phase};
use super::data::JointData;
use crate::error::{Result, UnifiedError};

/// How a run turns text into token ids: its text tokenizer, the unified vocabulary and the
/// number of image tokens a VQA prompt holds slots for.
pub(crate) struct Prompts {
    pub(crate) text: TextTokenizer,
    pub(crate) vocab: UnifiedVocab,
    pub(crate) image_tokens: usize,
}

impl Prompts {
    /// A VQA example: image slots, the question, the answer (the loss is on the answer).
    pub(crate) fn vqa(&self, question: &str, answer: &str) -> Result<Example> {
        Ok(vqrae_understand::prompt::example(
            &self.text,
            &self.vocab,
            self.image_tokens,
            question,
            answer,
        )?)
    }

    /// A text-to-image example: the caption (`None`: the null prompt of guidance), then codes.
    pub(crate) fn t2i(&self, caption: Option<&str>, codes: &[u32]) -> Result<Example> {
        Ok(sequence::example(&self.text, &self.vocab, caption, codes)?)
    }
}

/// What the steps of a run draw from, built once before the first step.
pub(crate) struct Examples<'a> {
    cfg: &'a JointConfig,
    data: &'a JointData,
    pub(crate) prompts: Prompts,
    /// `(image, example)` of every question, as given.
    vqa: Vec<(usize, Example)>,
    /// Every question with its reasoned answer, in the same order; empty unless a phase sets
    /// `reasoned_vqa`.
    reasoned: Vec<Example>,
    /// Balanced question weights ([`answer_prior_weights`]); `None` unless a phase balances.
    balanced: Option<WeightedIndex<f64>>,
    /// The questions that are not negated (for `skip_negated`).
    affirmative: Vec<usize>,
    /// The captioned images: the ones text-to-image examples are made of.
    t2i_images: Vec<usize>,
}

impl<'a> Examples<'a> {
    /// Tokenises the questions (and, if a phase asks, their reasoned answers) and builds the
    /// sampling weights and index lists.
    pub(crate) fn build(
        cfg: &'a JointConfig,
        data: &'a JointData,
        prompts: Prompts,
    ) -> Result<Self> {
        let vqa = data
            .questions
            .iter()
            .map(|(i, q, a)| Ok((*i, prompts.vqa(q, a)?)))
            .collect::<Result<Vec<(usize, Example)>>>()?;
        let reasoned = if cfg.phases.iter().any(|p| p.reasoned_vqa) {
            data.questions
                .iter()
                .map(|(i, q, a)| prompts.vqa(q, &reasoned_answer(&data.captions, *i, q, a)))
                .collect::<Result<Vec<Example>>>()?
        } else {
            Vec::new()
        };
        let balanced = if cfg.phases.iter().any(|p| p.balance_vqa && p.vqa_batch > 0) {
            Some(
                WeightedIndex::new(answer_prior_weights(&data.questions))
                    .map_err(|e| UnifiedError::Config(format!("balanced VQA sampling: {e}")))?,
            )
        } else {
            None
        };
        let affirmative = (0..data.questions.len())
            .filter(|&i| !counterfactual::is_negated(&data.questions[i].1))
            .collect();
        let t2i_images = (0..data.captions.len())
            .filter(|&i| data.captions[i].is_some())
            .collect();
        Ok(Self {
            cfg,
            data,
            prompts,
            vqa,
            reasoned,
            balanced,
            affirmative,
            t2i_images,
        })
    }

    /// The longest VQA example, in tokens (0: none).
    pub(crate) fn longest_vqa(&self) -> usize {
        self.vqa
            .iter()
            .map(|(_, e)| e)
            .chain(&self.reasoned)
            .map(|e| e.ids.len())
            .max()
            .unwrap_or(0)
    }

    /// Refuses a config whose phases draw on examples or codes the data does not hold.
    pub(crate) fn check_coverage(&self) -> Result<()> {
        let (cfg, data) = (self.cfg, self.data);
        let uses = |f: fn(&Phase) -> usize| cfg.phases.iter().any(|p| f(p) > 0);
        if uses(|p| p.vqa_batch) && self.vqa.is_empty() {
            return Err(UnifiedError::Config("VQA phases but no questions".into()));
        }
        if uses(|p| p.t2i_batch) && self.t2i_images.is_empty() {
            return Err(UnifiedError::Config(
                "text-to-image phases but no captions".into(),
            ));
        }
        let copies = cfg.shifted_copies_needed();
        if data.shifted_codes.len() < copies * data.codes.len() {
            return Err(UnifiedError::Config(format!(
                "the config asks for {copies} shifted copies of each image, the data has {} codes \
                 for {} images (JointData::with_shifted_copies)",
                data.shifted_codes.len(),
                data.codes.len()
            )));
        }
        if cfg.phases.iter().any(|p| p.scene_t2i_batch > 0) && data.scene_codes.is_empty() {
            return Err(UnifiedError::Config(
                "a phase sets scene_t2i_batch but the data has no scenes (JointData::with_scenes)"
                    .into(),
            ));
        }
        if cfg.uses_mirrors() && data.mirror_codes.len() != data.codes.len() {
            return Err(UnifiedError::Config(
                "a phase sets mirror_t2i but the data has no mirror codes (JointData::with_mirrors)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Step `step`'s VQA examples and the training image each one reads: `vqa_batch` drawn
    /// questions (balanced, affirmative only, or in epochs, as the phase says), then the
    /// counterfactual twins of those that have one.
    pub(crate) fn vqa_batch(&self, phase: &Phase, step: u64) -> Result<(Vec<Example>, Vec<u32>)> {
        let (seed, data) = (self.cfg.seed, self.data);
        let picks: Vec<usize> = if let (true, Some(weights)) = (phase.balance_vqa, &self.balanced) {
            // with replacement, from a generator seeded by the step: resumes exactly
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xba1a ^ step.wrapping_mul(0x2545_f491));
            (0..phase.vqa_batch)
                .map(|_| weights.sample(&mut rng))
                .collect()
        } else if phase.skip_negated {
            EpochSampler::new(self.affirmative.len(), phase.vqa_batch, seed, true)
                .batch_at(step)
                .into_iter()
                .map(|i| self.affirmative[i])
                .collect()
        } else {
            EpochSampler::new(self.vqa.len(), phase.vqa_batch, seed, true).batch_at(step)
        };
        let mut examples: Vec<Example> = picks
            .iter()
            .map(|&i| {
                if phase.reasoned_vqa {
                    self.reasoned[i].clone()
                } else {
                    self.vqa[i].1.clone()
                }
            })
            .collect();
        let mut images: Vec<u32> = picks.iter().map(|&i| self.vqa[i].0 as u32).collect();
        if phase.counterfactual_vqa {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0f7 ^ step.wrapping_mul(0x2545_f491));
            for (image, q, a) in twins(&picks, &data.questions, &data.captions, &mut rng) {
                let a = if phase.reasoned_vqa {
                    reasoned_answer(&data.captions, image, &q, &a)
                } else {
                    a
                };
                examples.push(self.prompts.vqa(&q, &a)?);
                images.push(image as u32);
            }
        }
        Ok((examples, images))
    }

    /// Step `step`'s text-to-image examples, drawn from a pool of the captioned images, then
    /// (each in the same order) their mirrors and their shifted copies, as the phase asks;
    /// each caption is dropped with the config's `caption_dropout`.
    pub(crate) fn t2i_batch(&self, phase: &Phase, step: u64) -> Result<Vec<Example>> {
        let (cfg, data) = (self.cfg, self.data);
        let images = &self.t2i_images;
        let mut sources: Vec<&[Vec<u32>]> = vec![&data.codes];
        if phase.mirror_t2i {
            sources.push(&data.mirror_codes);
        }
        sources.extend(
            data.shifted_codes
                .chunks(data.codes.len())
                .take(phase.shifted_copies),
        );
        let pool = images.len() * sources.len();
        let sampler = EpochSampler::new(pool, phase.t2i_batch, cfg.seed, true);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ step.wrapping_mul(0x9e37_79b9));
        sampler
            .batch_at(step)
            .iter()
            .map(|&k| {
                let i = images[k % images.len()];
                let codes = &sources[k / images.len()][i];
                let caption = if rng.gen::<f64>() < cfg.caption_dropout {
                    None
                } else {
                    data.captions[i].as_deref()
                };
                self.prompts.t2i(caption, codes)
            })
            .collect()
    }

    /// Step `step`'s procedural-scene text-to-image examples (captions dropped as in
    /// [`Examples::t2i_batch`], from a generator of their own).
    pub(crate) fn scene_batch(&self, phase: &Phase, step: u64) -> Result<Vec<Example>> {
        let (cfg, data) = (self.cfg, self.data);
        let sampler = EpochSampler::new(
            data.scene_codes.len(),
            phase.scene_t2i_batch,
            cfg.seed ^ 0x5ce7e,
            true,
        );
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5ce7e ^ step.wrapping_mul(0x9e37_79b9));
        sampler
            .batch_at(step)
            .iter()
            .map(|&k| {
                let caption = if rng.gen::<f64>() < cfg.caption_dropout {
                    None
                } else {
                    Some(data.scene_captions[k].as_str())
                };
                self.prompts.t2i(caption, &data.scene_codes[k])
            })
            .collect()
    }
}

/// Sampling weights that remove the answer prior of templated questions: each question weighs
/// `1 / n(template, answer)`, where the template is the question with every word that is also
/// an answer word masked ("is there a * shape?"). In easy-VQA, "is there a <colour> shape?" is
/// answered "no" 88% of the time in training; a model can score well on it from the words alone
/// and never learn to compare the colour word with the image. Balanced, each template's answers
/// come equally often, so only the image tells them apart.
pub(crate) fn answer_prior_weights(questions: &[(usize, String, String)]) -> Vec<f64> {
    let answers: HashSet<String> = questions
        .iter()
        .map(|(_, _, a)| a.trim().to_lowercase())
        .collect();
    let key = |q: &str, a: &str| {
        let template: Vec<String> = q
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| {
                if answers.contains(w) {
                    "*".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        (template.join(" "), a.trim().to_lowercase())
    };
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (_, q, a) in questions {
        *counts.entry(key(q, a)).or_default() += 1;
    }
    questions
        .iter()
        .map(|(_, q, a)| 1.0 / counts[&key(q, a)] as f64)
        .collect()
}

/// The counterfactual twins `(image, question, answer)` of the drawn questions `picks` that have
/// one (yes/no questions about an image with a one-shape caption).
fn twins(
    picks: &[usize],
    questions: &[(usize, String, String)],
    captions: &[Option<String>],
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for &i in picks {
        let (image, q, a) = &questions[i];
        let Some((color, shape)) = image_attributes(captions, *image) else {
            continue;
        };
        if let Some((q2, a2)) = counterfactual::twin(q, a, color, shape, rng) {
            out.push((*image, q2, a2));
        }
    }
    out
}

/// The colour and shape of training image `image`, from its caption.
fn image_attributes(
    captions: &[Option<String>],
    image: usize,
) -> Option<(&'static str, &'static str)> {
    captions
        .get(image)?
        .as_deref()
        .and_then(counterfactual::caption_attributes)
}

/// `answer` in its reasoned form where it has one ([`reasoning::reasoned`]), else unchanged.
fn reasoned_answer(
    captions: &[Option<String>],
    image: usize,
    question: &str,
    answer: &str,
) -> String {
    image_attributes(captions, image)
        .and_then(|(color, shape)| reasoning::reasoned(question, answer, color, shape))
        .unwrap_or_else(|| answer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_keep_the_image_and_flip_the_answer() {
        let q = |i: usize, q: &str, a: &str| (i, q.to_string(), a.to_string());
        let questions = vec![
            q(0, "is there a blue shape?", "no"),
            q(0, "what color is the shape?", "red"),
            q(1, "is no circle present?", "no"),
            q(2, "is there a red shape?", "no"),
        ];
        let captions = vec![
            Some("a red circle".into()),
            Some("a teal circle".into()),
            None,
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t = twins(&[0, 1, 2, 3], &questions, &captions, &mut rng);
        assert_eq!(
            t,
            vec![
                q(0, "is there a red shape?", "yes"),
                (1, t[1].1.clone(), "yes".into()),
            ]
        );
        // the circle's own shape swapped for another
        assert!(["is no rectangle present?", "is no triangle present?"].contains(&t[1].1.as_str()));
    }

    #[test]
    fn reasoned_answers_state_the_captioned_attribute() {
        let captions = vec![Some("a red circle".to_string()), None];
        let r = |image, q, a| reasoned_answer(&captions, image, q, a);
        assert_eq!(r(0, "is there a blue shape?", "no"), "red, so no");
        assert_eq!(r(0, "is no circle present?", "no"), "circle, so no");
        // not yes/no, or no caption, or an image past the captions: the answer unchanged
        assert_eq!(r(0, "what color is the shape?", "red"), "red");
        assert_eq!(r(1, "is there a blue shape?", "no"), "no");
        assert_eq!(r(7, "is there a blue shape?", "no"), "no");
    }

    #[test]
    fn balancing_gives_each_template_answer_pair_equal_mass() {
        let q = |q: &str, a: &str| (0, q.to_string(), a.to_string());
        let questions = vec![
            q("is there a red shape?", "no"),
            q("is there a blue shape?", "no"),
            q("is there a red shape?", "no"),
            q("is there a red shape?", "yes"),
            q("what color is the shape?", "red"),
            q("what color is the shape?", "blue"),
        ];
        let w = answer_prior_weights(&questions);
        // three "no"s share one third of what the single "yes" gets
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-12 && (w[3] - 1.0).abs() < 1e-12);
        let no: f64 = w[..3].iter().sum();
        assert!((no - w[3]).abs() < 1e-12);
        // answer words (here red, blue) are masked in templates; others are not
        assert_eq!(
            answer_prior_weights(&[q("is there a green shape?", "no")]),
            vec![1.0]
        );
        // two (template, answer) pairs of one question each
        assert_eq!(w[4], 1.0);
        assert_eq!(w[5], 1.0);
    }
}
