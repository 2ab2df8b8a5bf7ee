//! Text-to-image through a frozen pretrained LM: the unified vocabulary's image ids (the
//! tokenizer's codes, then `<boi>`, `<eoi>`, `<image>`; [`UnifiedVocab`]) get rows of their own,
//! learned beside the frozen text table as one adapter extra, [`IMAGE_ROWS`], `(codes + 3,
//! hidden)`. The base's embeddings are tied (SmolLM2), so a row is both how an image id is read
//! and how it is scored.
//!
//! Training never builds the grown table: text ids embed from the base, image ids from the rows
//! ([`embed`]), and an image target's cross-entropy runs over the image rows alone
//! ([`image_loss`]), the same candidates sampling draws from (it keeps only the code columns).
//! Serving appends the rows to the base ([`vqrae_lm::Llama::append_vocab_rows`]), after which
//! the generator of `vqrae-generate` samples from it as from any unified LM.

use candle_core::{DType, Tensor};
use vqrae_lm::batch::TrainBatch;
use vqrae_lm::{Llama, UnifiedVocab};

use crate::error::{Result, UnifiedError};

/// The adapter extra holding the image rows.
pub const IMAGE_ROWS: &str = "image_rows.weight";

fn lm_err(e: vqrae_lm::LmError) -> UnifiedError {
    UnifiedError::Lm(Box::new(e))
}

/// The vocabulary of a base with `codes` image codes after its text ids.
pub fn vocab_of(base: &Llama, codes: usize) -> Result<UnifiedVocab> {
    UnifiedVocab::new(base.config().vocab_size, codes).map_err(lm_err)
}

/// Initial image rows: [`Llama::grow_vocab`]'s (the text rows' mean plus seeded noise of 1% of
/// their spread), so training starts where a grown base would.
pub fn init_rows(base: &Llama, vocab: &UnifiedVocab, seed: u64) -> Result<Tensor> {
    let text = base.config().vocab_size;
    if vocab.text_range().end as usize != text {
        return Err(UnifiedError::Config(format!(
            "the vocabulary's {} text ids are not the base's {text}",
            vocab.text_range().end
        )));
    }
    let grown = base.grow_vocab(vocab.size(), seed).map_err(lm_err)?;
    let table = grown
        .into_iter()
        .find(|(name, _)| name == "model.embed_tokens.weight")
        .map(|(_, t)| t)
        .ok_or_else(|| UnifiedError::Config("grow_vocab gave no embedding table".into()))?;
    Ok(table.narrow(0, text, vocab.size() - text)?)
}

/// Embeddings `(B, T, hidden)` of unified ids `(B, T)`: text ids from the base's table, image
/// ids from `rows` (the gradient reaches only `rows`).
pub fn embed(lm: &Llama, rows: &Tensor, vocab: &UnifiedVocab, ids: &Tensor) -> Result<Tensor> {
    let text = vocab.text_range().end;
    let max = ids.max_all()?.to_scalar::<u32>()?;
    if max as usize >= vocab.size() {
        return Err(UnifiedError::Config(format!(
            "token id {max} is outside the unified vocabulary of {}",
            vocab.size()
        )));
    }
    let is_image = ids.ge(text)?;
    let text_ids = ids.clamp(0u32, text - 1)?;
    let image_ids = ids
        .maximum(text)?
        .broadcast_sub(&Tensor::new(text, ids.device())?)?;
    let from_text = lm.embed(&text_ids).map_err(lm_err)?;
    let (b, t) = ids.dims2()?;
    let from_rows = rows
        .embedding(&image_ids.flatten_all()?)?
        .reshape((b, t, rows.dim(1)?))?;
    let mask = is_image.unsqueeze(2)?.broadcast_as(from_text.shape())?;
    Ok(mask.where_cond(&from_rows, &from_text)?)
}

/// The mean cross-entropy of `batch`'s targets, which must all be image ids, over the image
/// rows: `hidden` `(B, T, hidden)` at the target positions against `rows`.
pub fn image_loss(
    batch: &TrainBatch,
    hidden: &Tensor,
    rows: &Tensor,
    vocab: &UnifiedVocab,
) -> Result<Tensor> {
    let text = vocab.text_range().end;
    if batch.targets.min_all()?.to_scalar::<u32>()? < text {
        return Err(UnifiedError::Config(
            "an image loss over a batch with text targets".into(),
        ));
    }
    let (b, t, d) = hidden.dims3()?;
    let at = hidden
        .reshape((b * t, d))?
        .index_select(&batch.positions, 0)?;
    let logits = at.matmul(&rows.t()?)?.to_dtype(DType::F32)?;
    let targets = batch
        .targets
        .broadcast_sub(&Tensor::new(text, hidden.device())?)?;
    Ok(vqrae_train::ops::cross_entropy(&logits, &targets)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};
    use vqrae_lm::batch::Example;
    use vqrae_lm::LlamaConfig;
    use vqrae_train::init::SeededVarMap;

    fn tiny() -> anyhow::Result<Llama> {
        let cfg = LlamaConfig {
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 32,
            tie_word_embeddings: true,
            initializer_range: 0.2,
        };
        let vars = SeededVarMap::new(3);
        Ok(Llama::new(
            &cfg,
            vars.var_builder(DType::F32, &Device::Cpu),
        )?)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    }

    /// The split computation (base table + rows, loss over the rows) is the grown model's.
    #[test]
    fn training_path_matches_the_grown_model() -> anyhow::Result<()> {
        let base = tiny()?;
        let vocab = vocab_of(&base, 6)?;
        let rows = init_rows(&base, &vocab, 1)?;
        assert_eq!(rows.dims(), [6 + 3, 16]);
        // rows trained elsewhere: move them off the init
        let rows = (rows + Tensor::randn(0f32, 0.5, (9, 16), &Device::Cpu)?)?;
        let mut grown = tiny()?;
        grown.append_vocab_rows(&rows)?;
        let codes = [2u32, 5, 0];
        let mut ids = vec![1u32, 7, 9, vocab.boi()];
        let loss_from = ids.len();
        ids.extend(vocab.codes_to_ids(&codes)?);
        ids.push(vocab.eoi());
        let batch = TrainBatch::new(&[Example { ids, loss_from }], 0, &Device::Cpu)?;
        let e = embed(&base, &rows, &vocab, &batch.ids)?;
        assert!(max_diff(&e, &grown.embed(&batch.ids)?)? == 0.0);
        let hidden = base.forward_hidden(&e, None, false)?;
        let loss = image_loss(&batch, &hidden, &rows, &vocab)?.to_scalar::<f32>()?;
        // the grown model's full logits, restricted to the image columns
        let logits = grown.forward(&grown.embed(&batch.ids)?, None, false)?;
        let (_, t, v) = logits.dims3()?;
        let at = logits
            .reshape((t, v))?
            .index_select(&batch.positions, 0)?
            .narrow(D::Minus1, 40, 9)?;
        let targets = (batch.targets.to_dtype(DType::I64)? - 40.0)?.to_dtype(DType::U32)?;
        let expected = candle_nn::loss::cross_entropy(&at, &targets)?.to_scalar::<f32>()?;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        // only the rows get a gradient through the embedding: the base is plain tensors
        let var = candle_core::Var::from_tensor(&rows)?;
        let e = embed(&base, var.as_tensor(), &vocab, &batch.ids)?;
        let hidden = base.forward_hidden(&e, None, true)?;
        let l = image_loss(&batch, &hidden, var.as_tensor(), &vocab)?;
        let grads = l.backward()?;
        let g = grads
            .get(var.as_tensor())
            .expect("the rows have a gradient");
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn bad_ids_and_text_targets_are_refused() -> anyhow::Result<()> {
        let base = tiny()?;
        let vocab = vocab_of(&base, 6)?;
        let rows = init_rows(&base, &vocab, 1)?;
        let outside = Tensor::new(&[[1u32, 49]], &Device::Cpu)?;
        let err = embed(&base, &rows, &vocab, &outside).unwrap_err();
        assert!(err.to_string().contains("outside the unified vocabulary"));
        let text_targets = TrainBatch::new(
            &[Example {
                ids: vec![1, 2, 3],
                loss_from: 1,
            }],
            0,
            &Device::Cpu,
        )?;
        let hidden = Tensor::zeros((1, 3, 16), DType::F32, &Device::Cpu)?;
        let err = image_loss(&text_targets, &hidden, &rows, &vocab).unwrap_err();
        assert!(err.to_string().contains("text targets"));
        Ok(())
    }
}
