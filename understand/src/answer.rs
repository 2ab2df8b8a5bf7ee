//! Answering questions about images: a batch of (features, question) pairs in, text out.
//!
//! Prompts are left-padded into one batch with the image features spliced in, then decoded by
//! the LM crate's one loop (`vqrae_lm::generate_text::generate_from_embeds`). Answers are
//! restricted to text tokens (an image code or marker is never a word), and a row stops at
//! `<eos>` while the others go on.

use candle_core::Tensor;
use vqrae_lm::batch::left_padded;
use vqrae_lm::generate_text::{generate_from_embeds, GenerateOptions};
use vqrae_lm::{Llama, SamplingConfig, TextTokenizer, UnifiedVocab};

use crate::error::{Result, UnderstandError};
use crate::projector::Projector;
use crate::prompt::{prompt_ids, splice, IMAGE_START};

/// Everything answering needs, borrowed from the loaded model.
pub struct Vqa<'a> {
    pub lm: &'a Llama,
    pub projector: &'a Projector,
    pub text: &'a TextTokenizer,
    pub vocab: &'a UnifiedVocab,
}

impl Vqa<'_> {
    /// Prompt embeddings `(B, L, D)` and left padding for `features (B, N, d)` and questions.
    pub(crate) fn prompt_embeds(
        &self,
        features: &Tensor,
        questions: &[&str],
    ) -> Result<(Tensor, Vec<usize>)> {
        let (b, n, _) = features.dims3()?;
        if b != questions.len() || b == 0 {
            return Err(UnderstandError::Input(format!(
                "{b} images for {} questions",
                questions.len()
            )));
        }
        let prompts = questions
            .iter()
            .map(|q| prompt_ids(self.text, self.vocab, n, q))
            .collect::<Result<Vec<_>>>()?;
        let (ids, left_pad) = left_padded(&prompts, self.text.pad_id(), features.device())?;
        let embeds = self.lm.embed(&ids)?;
        let image = self
            .projector
            .forward(&features.to_dtype(self.lm.dtype())?)?;
        let starts: Vec<usize> = left_pad.iter().map(|p| p + IMAGE_START).collect();
        Ok((splice(&embeds, &image, &starts)?, left_pad))
    }

    /// Answers one question per image, at most `max_tokens` tokens each; `on_token(row, id)` sees
    /// every generated text token as it comes (streaming).
    pub fn answer_with(
        &self,
        features: &Tensor,
        questions: &[&str],
        max_tokens: usize,
        sampling: &SamplingConfig,
        on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<String>> {
        let (embeds, left_pad) = self.prompt_embeds(features, questions)?;
        let (_, l, _) = embeds.dims3()?;
        let context = self.lm.config().max_position_embeddings;
        if l >= context {
            return Err(UnderstandError::Input(format!(
                "a prompt of {l} tokens (image included) leaves no room for an answer in the \
                 model's context of {context}"
            )));
        }
        // the answer may use what the context has left
        let opts = GenerateOptions {
            sampling: sampling.clone(),
            max_new_tokens: max_tokens.min(context - l),
            stop_ids: vec![self.text.eos_id()],
            allowed: Some(self.vocab.text_range()),
        };
        let rows = generate_from_embeds(self.lm, &embeds, left_pad, &opts, on_token)?;
        rows.iter()
            .map(|g| Ok(self.text.decode(&g.ids)?.trim().to_string()))
            .collect()
    }

    /// Greedy answers.
    pub fn answer(
        &self,
        features: &Tensor,
        questions: &[&str],
        max_tokens: usize,
    ) -> Result<Vec<String>> {
        self.answer_with(
            features,
            questions,
            max_tokens,
            &SamplingConfig::greedy(),
            |_, _| {},
        )
    }
}
