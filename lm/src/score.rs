//! Scoring text with the LM: each token's log-probability given the tokens before it, and the
//! perplexity of a long text cut into chunks, the way the transformers reference of
//! `lm/tests/fixtures/smollm2/` measures it (consecutive, non-overlapping chunks, each run from
//! position 0 with no carried context, every token after a chunk's first predicted).
//!
//! The logits of a whole chunk are `chunk x vocab` floats (100 MB for 512 tokens of SmolLM2's
//! 49,152), so they are formed [`LOGIT_ROWS`] positions at a time from the chunk's hidden
//! states: memory stays bounded whatever the chunk length.

use candle_core::{DType, IndexOp, Tensor, D};
use serde::Serialize;

use crate::error::{LmError, Result};
use crate::model::Llama;

/// Positions whose logits are formed at once.
pub const LOGIT_ROWS: usize = 128;

/// `log p(ids[j + 1] | ids[..=j])` for `j` in `0..ids.len() - 1`: the sequence scored by
/// itself in one forward from position 0 (no BOS added). At least two ids, at most the
/// model's context.
pub fn next_token_logprobs(model: &Llama, ids: &[u32]) -> Result<Vec<f32>> {
    next_token_logprobs_over(model, ids, model.config().vocab_size)
}

/// [`next_token_logprobs`] with the softmax over the first `vocab` ids only: a model whose
/// vocabulary was grown by image ids scores text as it generates text, among text ids.
pub fn next_token_logprobs_over(model: &Llama, ids: &[u32], vocab: usize) -> Result<Vec<f32>> {
    if vocab == 0 || vocab > model.config().vocab_size {
        return Err(LmError::Config(format!(
            "scoring over {vocab} ids of a vocabulary of {}",
            model.config().vocab_size
        )));
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(LmError::Config(format!(
            "token {id} is outside the {vocab} ids scored over"
        )));
    }
    let context = model.config().max_position_embeddings;
    if ids.len() < 2 || ids.len() > context {
        return Err(LmError::Config(format!(
            "scoring needs 2 to {context} (the context) tokens, got {}",
            ids.len()
        )));
    }
    let dev = model.device();
    let input = Tensor::new(ids, dev)?.unsqueeze(0)?;
    let hidden = model.forward_hidden(&model.embed(&input)?, None, false)?;
    let hidden = hidden.i(0)?;
    let predicted = ids.len() - 1;
    let mut out = Vec::with_capacity(predicted);
    for start in (0..predicted).step_by(LOGIT_ROWS) {
        let n = LOGIT_ROWS.min(predicted - start);
        let logits = model
            .logits(&hidden.narrow(0, start, n)?)?
            .narrow(D::Minus1, 0, vocab)?;
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)
            .map_err(|e| LmError::candle("log-softmax", e))?;
        let targets = Tensor::new(&ids[start + 1..start + 1 + n], dev)?.unsqueeze(1)?;
        let picked = logp.gather(&targets, 1)?.squeeze(1)?;
        out.extend(picked.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// A text's perplexity under the model, in chunks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Perplexity {
    pub n_tokens: usize,
    pub chunk_tokens: usize,
    pub n_chunks: usize,
    /// Tokens predicted: every chunk's tokens after its first.
    pub n_predicted: usize,
    /// Sum of the predicted tokens' negative log-likelihoods (natural log).
    pub nll_sum: f64,
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Each predicted token's log-probability, chunk by chunk.
    #[serde(skip)]
    pub logprobs: Vec<f32>,
}

/// The perplexity of `ids` cut into consecutive chunks of at most `chunk_tokens` (a last
/// chunk of one token predicts nothing and is skipped).
pub fn chunked_perplexity(model: &Llama, ids: &[u32], chunk_tokens: usize) -> Result<Perplexity> {
    chunked_perplexity_over(model, ids, chunk_tokens, model.config().vocab_size)
}

/// [`chunked_perplexity`] with each softmax over the first `vocab` ids
/// ([`next_token_logprobs_over`]).
pub fn chunked_perplexity_over(
    model: &Llama,
    ids: &[u32],
    chunk_tokens: usize,
    vocab: usize,
) -> Result<Perplexity> {
    let context = model.config().max_position_embeddings;
    if chunk_tokens < 2 || chunk_tokens > context {
        return Err(LmError::Config(format!(
            "perplexity chunks must be 2 to {context} (the context) tokens, got {chunk_tokens}"
        )));
    }
    let mut logprobs = Vec::with_capacity(ids.len());
    let mut n_chunks = 0;
    for chunk in ids.chunks(chunk_tokens).filter(|c| c.len() >= 2) {
        logprobs.extend(next_token_logprobs_over(model, chunk, vocab)?);
        n_chunks += 1;
    }
    if logprobs.is_empty() {
        return Err(LmError::Config(
            "perplexity needs a text of at least 2 tokens".to_owned(),
        ));
    }
    let nll_sum: f64 = logprobs.iter().map(|&l| -(l as f64)).sum();
    let mean_nll = nll_sum / logprobs.len() as f64;
    Ok(Perplexity {
        n_tokens: ids.len(),
        chunk_tokens,
        n_chunks,
        n_predicted: logprobs.len(),
        nll_sum,
        mean_nll,
        perplexity: mean_nll.exp(),
        logprobs,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use vqrae_train::init::SeededVarMap;

    use super::*;
    use crate::LlamaConfig;

    fn tiny() -> Result<Llama> {
        let cfg = LlamaConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 300,
            tie_word_embeddings: true,
            initializer_range: 0.2,
        };
        Llama::new(
            &cfg,
            SeededVarMap::new(3).var_builder(DType::F32, &Device::Cpu),
        )
    }

    /// Over the first ids only: the log-softmax of those logits, and ids past them refused.
    #[test]
    fn logprobs_over_a_prefix_of_the_vocabulary() -> Result<()> {
        let model = tiny()?;
        let ids: Vec<u32> = vec![3, 9, 1, 20, 7];
        let lp = next_token_logprobs_over(&model, &ids, 30)?;
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&model.embed(&input)?, None, false)?.i(0)?;
        let text = candle_nn::ops::log_softmax(&logits.narrow(D::Minus1, 0, 30)?, D::Minus1)?
            .to_vec2::<f32>()?;
        for (j, l) in lp.iter().enumerate() {
            assert!((l - text[j][ids[j + 1] as usize]).abs() < 1e-5);
        }
        // fewer candidates: every token is at least as likely as among all 50
        let all = next_token_logprobs(&model, &ids)?;
        assert!(lp.iter().zip(&all).all(|(a, b)| a >= b));
        assert!(next_token_logprobs_over(&model, &[3, 31], 30).is_err());
        assert!(next_token_logprobs_over(&model, &ids, 51).is_err());
        Ok(())
    }

    /// Blocks of [`LOGIT_ROWS`] positions give the log-softmax of the whole logits matrix.
    #[test]
    fn logprobs_are_the_log_softmax_at_each_next_token() -> Result<()> {
        let model = tiny()?;
        let ids: Vec<u32> = (0..LOGIT_ROWS as u32 + 40).map(|i| (i * 7) % 50).collect();
        let lp = next_token_logprobs(&model, &ids)?;
        assert_eq!(lp.len(), ids.len() - 1);
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&model.embed(&input)?, None, false)?.i(0)?;
        let full = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        for (j, l) in lp.iter().enumerate() {
            let expected = full[j][ids[j + 1] as usize];
            assert!((l - expected).abs() < 1e-5, "{j}: {l} vs {expected}");
        }
        Ok(())
    }

    #[test]
    fn perplexity_is_over_independent_chunks() -> Result<()> {
        let model = tiny()?;
        let ids: Vec<u32> = (0..21u32).map(|i| (i * 11) % 50).collect();
        let ppl = chunked_perplexity(&model, &ids, 10)?;
        // chunks of 10, 10, 1: the last predicts nothing
        assert_eq!((ppl.n_chunks, ppl.n_predicted), (2, 18));
        let mut expected = next_token_logprobs(&model, &ids[..10])?;
        expected.extend(next_token_logprobs(&model, &ids[10..20])?);
        assert_eq!(ppl.logprobs, expected);
        let mean = -expected.iter().map(|&l| l as f64).sum::<f64>() / 18.0;
        assert!((ppl.perplexity - mean.exp()).abs() < 1e-9);
        assert!(chunked_perplexity(&model, &ids, 1).is_err());
        assert!(chunked_perplexity(&model, &ids, 301).is_err());
        assert!(chunked_perplexity(&model, &ids[..1], 10).is_err());
        assert!(next_token_logprobs(&model, &vec![1; 301]).is_err());
        Ok(())
    }
}
