//! Answering visual questions with a LLaVA model: a batch of (features, question) pairs in,
//! sentences out. Prompts are left-padded into one batch (each row's image slots shifted by its
//! padding), the image features spliced in, then decoded by the LM crate's one loop
//! ([`generate_from_embeds`]) until each row ends its turn.

use candle_core::Tensor;
use vqrae_lm::batch::left_padded;
use vqrae_lm::generate_text::{generate_from_embeds, GenerateOptions};
use vqrae_lm::{Llama, SamplingConfig};
use vqrae_understand::prompt::splice;
use vqrae_understand::Projector;

use super::prompt::ImagePrompt;
use crate::error::{Result, UnifiedError};

/// Everything answering needs, borrowed from the loaded model.
pub struct LlavaVqa<'a> {
    pub lm: &'a Llama,
    pub projector: &'a Projector,
    pub prompt: ImagePrompt<'a>,
    /// Ids that end a reply (the template's end of turn, eos).
    pub stops: Vec<u32>,
}

fn lm_err(e: vqrae_lm::LmError) -> UnifiedError {
    UnifiedError::Lm(Box::new(e))
}

impl LlavaVqa<'_> {
    /// Answers one question per image (`features: (B, N, d)`), at most `max_tokens` tokens
    /// each; `on_token(row, id)` sees every generated token as it comes (streaming).
    pub fn answer_with(
        &self,
        features: &Tensor,
        questions: &[&str],
        max_tokens: usize,
        sampling: &SamplingConfig,
        on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<String>> {
        let (b, n, _) = features.dims3()?;
        if b != questions.len() || b == 0 {
            return Err(UnifiedError::Config(format!(
                "{b} images for {} questions",
                questions.len()
            )));
        }
        if n != self.prompt.image_tokens {
            return Err(UnifiedError::Config(format!(
                "features of {n} tokens per image, the model reads {}",
                self.prompt.image_tokens
            )));
        }
        let mut prompts = Vec::with_capacity(b);
        let mut starts = Vec::with_capacity(b);
        for q in questions {
            let (ids, start) = self.prompt.ids(q)?;
            prompts.push(ids);
            starts.push(start);
        }
        let dev = features.device();
        let (ids, left_pad) =
            left_padded(&prompts, self.prompt.text.pad_id(), dev).map_err(lm_err)?;
        let l = ids.dim(1)?;
        let context = self.lm.config().max_position_embeddings;
        if l >= context {
            return Err(UnifiedError::Config(format!(
                "a prompt of {l} tokens (image included) leaves no room for an answer in the \
                 model's context of {context}"
            )));
        }
        let max_tokens = max_tokens.min(context - l);
        let embeds = self.lm.embed(&ids).map_err(lm_err)?;
        let image = self
            .projector
            .forward(&features.to_dtype(self.lm.dtype())?)?;
        let starts: Vec<usize> = starts.iter().zip(&left_pad).map(|(s, p)| s + p).collect();
        let embeds =
            splice(&embeds, &image, &starts).map_err(|e| UnifiedError::Understand(Box::new(e)))?;
        // answers are text: a model that draws has image ids after the text ids
        let text_ids = u32::try_from(self.prompt.text.vocab_size())
            .map_err(|_| UnifiedError::Config("the text vocabulary does not fit u32 ids".into()))?;
        let opts = GenerateOptions {
            sampling: sampling.clone(),
            max_new_tokens: max_tokens,
            stop_ids: self.stops.clone(),
            allowed: Some(0..text_ids),
        };
        let rows =
            generate_from_embeds(self.lm, &embeds, left_pad, &opts, on_token).map_err(lm_err)?;
        rows.iter()
            .map(|g| {
                Ok(self
                    .prompt
                    .text
                    .decode(&g.ids)
                    .map_err(lm_err)?
                    .trim()
                    .to_string())
            })
            .collect()
    }
}
