//! The VQA prompt format: `<bos> <image> x N question` then `answer <eos>`.
//!
//! The image comes first so that every prompt has its `N` feature slots at the same place
//! (positions `1..=N`), which keeps splicing one `narrow` + `cat` per batch; the question follows
//! in plain text (the LM learns where it ends from the `?`-terminated templates, and any text is
//! accepted). Text ids are unified ids: the text vocabulary starts at 0.

use candle_core::Tensor;
use vqrae_lm::batch::Example;
use vqrae_lm::{TextTokenizer, UnifiedVocab};

use crate::error::{Result, UnderstandError};

/// Where the `<image>` slots start in every prompt.
pub const IMAGE_START: usize = 1;

/// Prompt ids: `<bos>`, `image_tokens` x `<image>`, the question's tokens.
pub fn prompt_ids(
    text: &TextTokenizer,
    vocab: &UnifiedVocab,
    image_tokens: usize,
    question: &str,
) -> Result<Vec<u32>> {
    if question.trim().is_empty() {
        return Err(UnderstandError::Input("the question is empty".into()));
    }
    let mut ids = vec![text.bos_id()];
    ids.extend(std::iter::repeat_n(vocab.image(), image_tokens));
    ids.extend(text.encode(question.trim())?);
    Ok(ids)
}

/// A training example: the prompt, then the answer's tokens and `<eos>` as targets.
pub fn example(
    text: &TextTokenizer,
    vocab: &UnifiedVocab,
    image_tokens: usize,
    question: &str,
    answer: &str,
) -> Result<Example> {
    let mut ids = prompt_ids(text, vocab, image_tokens, question)?;
    let loss_from = ids.len();
    ids.extend(text.encode(answer.trim())?);
    ids.push(text.eos_id());
    Ok(Example { ids, loss_from })
}

/// Replaces each row's `<image>` run with its projected features: `embeds (B, T, D)` with the run
/// of row `b` at `starts[b]..starts[b] + N`, `image (B, N, D)`. Differentiable in both inputs.
pub fn splice(embeds: &Tensor, image: &Tensor, starts: &[usize]) -> Result<Tensor> {
    let (b, t, _) = embeds.dims3()?;
    let (bi, n, _) = image.dims3()?;
    if bi != b || starts.len() != b {
        return Err(UnderstandError::Input(format!(
            "splice: {b} rows of embeddings, {bi} images, {} starts",
            starts.len()
        )));
    }
    let mut rows = Vec::with_capacity(b);
    for (r, &s) in starts.iter().enumerate() {
        if s + n > t {
            return Err(UnderstandError::Input(format!(
                "splice: row {r} has no room for {n} image slots at {s} in {t} positions"
            )));
        }
        let row = embeds.narrow(0, r, 1)?;
        let mut parts = Vec::with_capacity(3);
        if s > 0 {
            parts.push(row.narrow(1, 0, s)?);
        }
        parts.push(image.narrow(0, r, 1)?);
        if s + n < t {
            parts.push(row.narrow(1, s + n, t - s - n)?);
        }
        rows.push(Tensor::cat(&parts, 1)?);
    }
    Ok(Tensor::cat(&rows, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn splice_replaces_exactly_the_image_slots() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let embeds = Tensor::zeros((2, 5, 3), candle_core::DType::F32, &dev)?;
        let image = Tensor::ones((2, 2, 3), candle_core::DType::F32, &dev)?;
        let out = splice(&embeds, &image, &[1, 3])?;
        let sums: Vec<Vec<f32>> = out.sum(2)?.to_vec2()?;
        assert_eq!(
            sums,
            vec![vec![0., 3., 3., 0., 0.], vec![0., 0., 0., 3., 3.]]
        );
        assert!(splice(&embeds, &image, &[4, 0]).is_err());
        Ok(())
    }

    #[test]
    fn prompt_layout() -> anyhow::Result<()> {
        let text = TextTokenizer::train_bpe(["what color is the shape?", "red", "blue"], 300)?;
        let vocab = UnifiedVocab::new(text.vocab_size(), 16)?;
        let ex = example(&text, &vocab, 4, "what color is the shape?", "red")?;
        assert_eq!(ex.ids[0], text.bos_id());
        assert!(ex.ids[IMAGE_START..IMAGE_START + 4]
            .iter()
            .all(|&i| i == vocab.image()));
        assert_eq!(ex.ids.last(), Some(&text.eos_id()));
        assert_eq!(text.decode(&ex.ids[ex.loss_from..])?, "red");
        assert!(prompt_ids(&text, &vocab, 4, "  ").is_err());
        Ok(())
    }
}
