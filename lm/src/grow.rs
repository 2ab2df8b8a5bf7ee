//! Growing the vocabulary of a trained LM: new rows for the image codes and markers of the
//! unified vocabulary, either initialised so that text decoding is unchanged
//! ([`Llama::grow_vocab`]) or learned elsewhere and appended ([`Llama::append_vocab_rows`]).

use candle_core::{DType, Tensor};
use candle_nn::Linear;

use crate::error::{LmError, Result};
use crate::fuse::Proj;
use crate::model::Llama;

impl Llama {
    /// New embedding (and untied `lm_head`) tensors for a vocabulary grown to `new_vocab`, by HF
    /// name; the other tensors are unchanged (take them from [`Self::tensors`]).
    ///
    /// The old rows are kept bit for bit. A new embedding row is the mean of the old rows plus
    /// seeded noise of 1% of their spread (the noise tells new tokens apart). A new `lm_head` row
    /// is exactly the mean of the old rows, so its logit is the mean of the old logits: the first
    /// `V_old` logits are unchanged and the new ones never exceed the old maximum, so greedy text
    /// decoding is unchanged (HF `resize_token_embeddings(mean_resizing=True)` does the same).
    /// With tied embeddings the head rows are the noisy embedding rows, so only the first
    /// `V_old` logits are guaranteed unchanged.
    pub fn grow_vocab(&self, new_vocab: usize, seed: u64) -> Result<Vec<(String, Tensor)>> {
        let old = self.cfg.vocab_size;
        if new_vocab < old || new_vocab > u32::MAX as usize {
            return Err(LmError::Config(format!(
                "grow_vocab: new size {new_vocab} must be between the current {old} and u32::MAX"
            )));
        }
        let grow = |table: &Tensor, noise_seed: Option<u64>| -> candle_core::Result<Tensor> {
            let n = new_vocab - old;
            if n == 0 {
                return Ok(table.clone());
            }
            let d = self.cfg.hidden_size;
            let f = table.to_dtype(DType::F32)?;
            let mean = f.mean_keepdim(0)?; // (1, d)
            let mut rows = mean.broadcast_as((n, d))?.contiguous()?;
            if let Some(seed) = noise_seed {
                let spread = f
                    .broadcast_sub(&mean)?
                    .sqr()?
                    .mean_all()?
                    .to_scalar::<f32>()?
                    .sqrt();
                let noise = vqrae_train::init::seeded_randn(
                    (n, d),
                    0.0,
                    0.01 * spread as f64,
                    seed,
                    table.device(),
                )?;
                rows = (rows + noise)?;
            }
            Tensor::cat(&[table, &rows.to_dtype(table.dtype())?], 0)
        };
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            grow(&self.embed_tokens, Some(seed))
                .map_err(|e| LmError::candle("grow_vocab: embedding", e))?,
        )];
        if !self.cfg.tie_word_embeddings {
            out.push((
                "lm_head.weight".to_string(),
                self.lm_head
                    .dense_weight()
                    .and_then(|w| grow(&w, None))
                    .map_err(|e| LmError::candle("grow_vocab: lm_head", e))?,
            ));
        }
        Ok(out)
    }

    /// Appends `rows` `(n, hidden)` to a tied vocabulary: ids `vocab..vocab + n` embed as the
    /// rows and, the embeddings being tied, are scored by them; the first `vocab` logits are
    /// unchanged. What a frozen base with image rows learned beside it (a LoRA run's extra
    /// tensor, trained against the base's own table) becomes for sampling.
    ///
    /// Only a dense, tied model: an untied head would need rows of its own, and a quantized
    /// head cannot take dense rows.
    pub fn append_vocab_rows(&mut self, rows: &Tensor) -> Result<()> {
        let d = self.cfg.hidden_size;
        let n = match rows.dims() {
            [n, w] if *w == d => *n,
            other => {
                return Err(LmError::Config(format!(
                    "append_vocab_rows: rows of shape {other:?}, expected (n, {d})"
                )))
            }
        };
        if !self.cfg.tie_word_embeddings || self.is_quantized() {
            return Err(LmError::Config(
                "append_vocab_rows: needs a dense model with tied embeddings".into(),
            ));
        }
        let vocab = self.cfg.vocab_size + n;
        if vocab > u32::MAX as usize {
            return Err(LmError::Config(format!(
                "append_vocab_rows: {vocab} ids do not fit u32"
            )));
        }
        let table = rows
            .to_device(self.device())
            .and_then(|r| r.to_dtype(self.dtype()))
            .and_then(|r| Tensor::cat(&[&self.embed_tokens, &r], 0))
            .map_err(|e| LmError::candle("append_vocab_rows", e))?;
        self.lm_head = Proj::new(Linear::new(table.clone(), None));
        self.embed_tokens = table;
        self.cfg.vocab_size = vocab;
        Ok(())
    }
}
