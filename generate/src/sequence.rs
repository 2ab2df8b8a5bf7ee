//! The text-to-image sequence: `<bos> caption <boi> code_1 .. code_N <eoi>`.
//!
//! The loss covers the `N` codes and `<eoi>` only (the caption is the condition, not a target).
//! The null prompt of classifier-free guidance is the same sequence without a caption,
//! `<bos> <boi>`, which training shows the model by dropping captions at a fixed rate.

use vqrae_lm::batch::Example;
use vqrae_lm::{TextTokenizer, UnifiedVocab};

use crate::error::{GenerateError, Result};

/// Prompt ids: `<bos>`, the caption's tokens (none for the null prompt), `<boi>`.
pub fn prompt_ids(
    text: &TextTokenizer,
    vocab: &UnifiedVocab,
    caption: Option<&str>,
) -> Result<Vec<u32>> {
    let mut ids = vec![text.bos_id()];
    if let Some(c) = caption {
        ids.extend(text.encode(c.trim())?);
    }
    ids.push(vocab.boi());
    Ok(ids)
}

/// A training example: the prompt, then the image's codes as unified ids and `<eoi>`.
pub fn example(
    text: &TextTokenizer,
    vocab: &UnifiedVocab,
    caption: Option<&str>,
    codes: &[u32],
) -> Result<Example> {
    if codes.is_empty() {
        return Err(GenerateError::Config("an image without codes".into()));
    }
    let mut ids = prompt_ids(text, vocab, caption)?;
    let loss_from = ids.len();
    ids.extend(vocab.codes_to_ids(codes)?);
    ids.push(vocab.eoi());
    Ok(Example { ids, loss_from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_null_prompt() -> anyhow::Result<()> {
        let text = TextTokenizer::train_bpe(["a blue rectangle", "a red circle"], 300)?;
        let vocab = UnifiedVocab::new(text.vocab_size(), 8)?;
        let ex = example(&text, &vocab, Some("a red circle"), &[3, 7])?;
        let n = ex.ids.len();
        assert_eq!(ex.ids[ex.loss_from - 1], vocab.boi());
        assert_eq!(
            vocab.ids_to_codes(&ex.ids[ex.loss_from..n - 1])?,
            vec![3, 7]
        );
        assert_eq!(ex.ids[n - 1], vocab.eoi());
        assert_eq!(
            prompt_ids(&text, &vocab, None)?,
            vec![text.bos_id(), vocab.boi()]
        );
        assert!(
            example(&text, &vocab, None, &[8]).is_err(),
            "code outside the codebook"
        );
        Ok(())
    }
}
