//! The prompt of a visual question to a chat LM: the model's own chat template around the
//! question, with the image's `N` feature slots at the start of the user's turn
//! (`<|im_start|>user\n` + N slots + `\n` + question), as LLaVA puts `<image>` first.
//!
//! The slots are a placeholder id whose embeddings [`vqrae_understand::prompt::splice`]
//! replaces with the projected features, so the id itself is never read.

use vqrae_lm::batch::Example;
use vqrae_lm::chat::{ChatMessage, ChatTemplate};
use vqrae_lm::TextTokenizer;

use crate::error::{Result, UnifiedError};

/// Builds the ids of image prompts for one model.
pub struct ImagePrompt<'a> {
    pub template: &'a ChatTemplate,
    pub text: &'a TextTokenizer,
    /// Feature slots per image.
    pub image_tokens: usize,
}

/// Where `needle` last occurs in `haystack`.
fn rfind(haystack: &[u32], needle: &[u32]) -> Option<usize> {
    (0..=haystack.len().checked_sub(needle.len())?)
        .rev()
        .find(|&i| haystack[i..i + needle.len()] == *needle)
}

impl ImagePrompt<'_> {
    /// The placeholder id of the image slots: the pad id (never a target, never generated).
    pub fn slot_id(&self) -> u32 {
        self.text.pad_id()
    }

    /// The prompt ids for `question` (ending with the assistant's header) and where its image
    /// slots start.
    pub fn ids(&self, question: &str) -> Result<(Vec<u32>, usize)> {
        let question = question.trim();
        if question.is_empty() {
            return Err(UnifiedError::Config("the question is empty".into()));
        }
        let lm = |e| UnifiedError::Lm(Box::new(e));
        let ids = self
            .template
            .encode(self.text, &[ChatMessage::user(question)], true)
            .map_err(lm)?;
        // the user's turn starts after its header; the question is its own text after it
        let mut header = self
            .text
            .encode_with_special_tokens("<|im_start|>")
            .map_err(lm)?;
        header.extend(self.text.encode("user\n").map_err(lm)?);
        let start = rfind(&ids, &header)
            .map(|i| i + header.len())
            .ok_or_else(|| {
                UnifiedError::Config(
                    "the chat template has no \"<|im_start|>user\\n\" header to put the image \
                     after (only ChatML templates are supported for images)"
                        .into(),
                )
            })?;
        let mut out = Vec::with_capacity(ids.len() + self.image_tokens + 1);
        out.extend_from_slice(&ids[..start]);
        out.extend(std::iter::repeat_n(self.slot_id(), self.image_tokens));
        out.extend(self.text.encode("\n").map_err(lm)?);
        out.extend_from_slice(&ids[start..]);
        Ok((out, start))
    }

    /// A training example: the prompt, then `answer` and the end of the turn as targets.
    pub fn example(&self, question: &str, answer: &str) -> Result<(Example, usize)> {
        let (mut ids, start) = self.ids(question)?;
        let loss_from = ids.len();
        let lm = |e| UnifiedError::Lm(Box::new(e));
        ids.extend(self.text.encode(answer.trim()).map_err(lm)?);
        ids.extend(
            self.text
                .encode_with_special_tokens("<|im_end|>")
                .map_err(lm)?,
        );
        Ok((Example { ids, loss_from }, start))
    }
}

/// A text-only training example: the conversation `[user, assistant]` through the template,
/// the assistant's reply (and its end of turn) as targets.
pub fn text_example(
    template: &ChatTemplate,
    text: &TextTokenizer,
    prompt: &str,
    reply: &str,
) -> Result<Example> {
    let lm = |e| UnifiedError::Lm(Box::new(e));
    let mut ids = template
        .encode(text, &[ChatMessage::user(prompt)], true)
        .map_err(lm)?;
    let loss_from = ids.len();
    ids.extend(text.encode(reply.trim()).map_err(lm)?);
    ids.extend(text.encode_with_special_tokens("<|im_end|>").map_err(lm)?);
    Ok(Example { ids, loss_from })
}

#[cfg(test)]
mod tests {
    use super::rfind;

    #[test]
    fn rfind_finds_the_last_occurrence() {
        assert_eq!(rfind(&[1, 2, 3, 1, 2], &[1, 2]), Some(3));
        assert_eq!(rfind(&[1, 2], &[1, 2, 3]), None);
        assert_eq!(rfind(&[4, 5], &[6]), None);
    }
}
