//! Answering questions about images: a batch of (features, question) pairs in, text out.
//!
//! Prompts are left-padded into one batch; one prefill fills the KV cache, then each step feeds
//! every row's last token. Answers are restricted to text tokens (an image code or marker is
//! never a word), and a row stops at `<eos>` while the others go on.

use candle_core::Tensor;
use vqrae_lm::batch::left_padded;
use vqrae_lm::{restrict_to_range, Llama, Sampler, SamplingConfig, TextTokenizer, UnifiedVocab};

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
        mut on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<String>> {
        let (embeds, left_pad) = self.prompt_embeds(features, questions)?;
        let (b, l, _) = embeds.dims3()?;
        let context = self.lm.config().max_position_embeddings;
        if l >= context {
            return Err(UnderstandError::Input(format!(
                "a prompt of {l} tokens (image included) leaves no room for an answer in the \
                 model's context of {context}"
            )));
        }
        // the answer may use what the context has left
        let max_tokens = max_tokens.min(context - l);
        let mut cache = self.lm.new_cache(b, l + max_tokens, left_pad)?;
        let hidden = self.lm.forward_hidden(&embeds, Some(&mut cache), false)?;
        let mut logits = self.lm.logits(&hidden.narrow(1, l - 1, 1)?.squeeze(1)?)?;
        let mut sampler = Sampler::new(sampling.clone())?;
        let eos = self.text.eos_id();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for step in 0..max_tokens {
            let allowed = restrict_to_range(&logits, self.vocab.text_range())?;
            let next = sampler.sample(&allowed)?;
            for (row, &id) in next.iter().enumerate() {
                if done[row] {
                    continue;
                }
                if id == eos {
                    done[row] = true;
                } else {
                    out[row].push(id);
                    on_token(row, id);
                }
            }
            if done.iter().all(|&d| d) || step + 1 == max_tokens {
                break;
            }
            let ids = Tensor::from_vec(next, (b, 1), features.device())?;
            let hidden = self
                .lm
                .forward_hidden(&self.lm.embed(&ids)?, Some(&mut cache), false)?;
            logits = self.lm.logits(&hidden.squeeze(1)?)?;
        }
        out.iter()
            .map(|ids| Ok(self.text.decode(ids)?.trim().to_string()))
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
