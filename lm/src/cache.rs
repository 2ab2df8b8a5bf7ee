//! The batched key/value cache for generation.
//!
//! Why preallocated: appending by concatenation copies the whole cache at every decoded token,
//! so the cost of a step would grow with the length generated so far on top of the attention
//! itself. Here every layer owns one `(batch, kv_heads, max_len, head_dim)` buffer for keys and
//! one for values, allocated once; a step writes its new columns in place (`slice_set`, as
//! `candle_nn::kv_cache` does) and attention reads a narrowed view of the filled part.
//!
//! Why left padding: prompts of different lengths in one batch are right-aligned, so every row's
//! next token lands in the same column and one decode step serves the whole batch. A row `b`
//! with `left_pad[b]` padding columns sees key column `j` only if `j >= left_pad[b]` (and
//! causally `j <=` the query's column), and column `j` sits at RoPE position `j - left_pad[b]`.
//! So a padded row computes exactly what it would alone; the padding columns never influence it.
//!
//! The cache holds no gradient graph (the in-place writes are not differentiable): it is for
//! inference only, and [`crate::Llama::forward_hidden`] refuses a cache in training mode.

use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::{LmError, Result};

/// Per-layer key/value buffers of a batch, plus how many columns are filled.
///
/// Not `Clone`: a cloned `Tensor` shares its storage, so a clone would write into the same
/// buffers. [`KvCache::try_clone`] makes an independent copy.
#[derive(Debug)]
pub struct KvCache {
    /// `(batch, kv_heads, max_len, head_dim)` per layer.
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    max_len: usize,
    left_pad: Vec<usize>,
}

impl KvCache {
    /// An empty cache for `batch` rows of at most `max_len` columns (prompt, padding included,
    /// plus generated tokens). `left_pad[b]` is the number of padding columns at the start of
    /// row `b` (all zeros for a batch without padding).
    pub fn new(
        cfg: &LlamaConfig,
        batch: usize,
        max_len: usize,
        left_pad: Vec<usize>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        cfg.validate()?;
        if batch == 0 || max_len == 0 {
            return Err(LmError::Config(format!(
                "KV cache needs a positive batch and length, got batch {batch}, max_len {max_len}"
            )));
        }
        if left_pad.len() != batch {
            return Err(LmError::Config(format!(
                "KV cache: {} left-pad counts for a batch of {batch}",
                left_pad.len()
            )));
        }
        if let Some((b, p)) = left_pad.iter().enumerate().find(|(_, p)| **p >= max_len) {
            return Err(LmError::Config(format!(
                "KV cache: row {b} has {p} padding columns, leaving no room in max_len {max_len}"
            )));
        }
        let shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim());
        let alloc = || -> Result<Vec<Tensor>> {
            (0..cfg.num_hidden_layers)
                .map(|_| {
                    Tensor::zeros(shape, dtype, device)
                        .map_err(|e| LmError::candle(format!("allocating KV cache {shape:?}"), e))
                })
                .collect()
        };
        Ok(Self {
            k: alloc()?,
            v: alloc()?,
            len: 0,
            max_len,
            left_pad,
        })
    }

    /// Filled columns (padding included), the same for every row.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Columns still free.
    pub fn remaining(&self) -> usize {
        self.max_len - self.len
    }

    pub fn batch(&self) -> usize {
        self.left_pad.len()
    }

    /// Padding columns at the start of each row.
    pub fn left_pad(&self) -> &[usize] {
        &self.left_pad
    }

    /// An independent copy (buffers copied), e.g. to continue one prefix in two ways.
    pub fn try_clone(&self) -> Result<Self> {
        let copy = |ts: &[Tensor]| -> Result<Vec<Tensor>> {
            ts.iter()
                .map(|t| t.copy().map_err(|e| LmError::candle("copying KV cache", e)))
                .collect()
        };
        Ok(Self {
            k: copy(&self.k)?,
            v: copy(&self.v)?,
            len: self.len,
            max_len: self.max_len,
            left_pad: self.left_pad.clone(),
        })
    }

    /// Empties the cache for a new batch with the same shape; the buffers are kept (stale
    /// columns are never read: attention only sees the filled part, and writes overwrite them).
    pub fn reset(&mut self, left_pad: Vec<usize>) -> Result<()> {
        if left_pad.len() != self.batch() {
            return Err(LmError::Config(format!(
                "KV cache reset: {} left-pad counts for a batch of {}",
                left_pad.len(),
                self.batch()
            )));
        }
        if let Some((b, p)) = left_pad
            .iter()
            .enumerate()
            .find(|(_, p)| **p >= self.max_len)
        {
            return Err(LmError::Config(format!(
                "KV cache reset: row {b} has {p} padding columns, max_len is {}",
                self.max_len
            )));
        }
        self.left_pad = left_pad;
        self.len = 0;
        Ok(())
    }

    /// Checks that `t` more columns for `batch` rows fit, before any layer writes.
    pub(crate) fn check_step(&self, batch: usize, t: usize) -> Result<()> {
        if batch != self.batch() {
            return Err(LmError::Config(format!(
                "input batch {batch} does not match the KV cache batch {}",
                self.batch()
            )));
        }
        if self.len + t > self.max_len {
            return Err(LmError::Config(format!(
                "KV cache full: {} columns filled + {t} new > max_len {}",
                self.len, self.max_len
            )));
        }
        Ok(())
    }

    /// RoPE positions of the next `t` columns, row-major `(batch, t)`: column `j` of row `b` is
    /// at `j - left_pad[b]` (padding columns, whose outputs nobody reads, are clamped to 0).
    pub(crate) fn positions(&self, t: usize) -> Vec<u32> {
        let mut pos = Vec::with_capacity(self.batch() * t);
        for &pad in &self.left_pad {
            pos.extend((self.len..self.len + t).map(|j| j.saturating_sub(pad) as u32));
        }
        pos
    }

    /// The additive attention mask of the next `t` queries over all `len + t` keys, row-major
    /// `(batch, t, len + t)`, or `None` where nothing is masked (one query, no padding).
    ///
    /// A query in a padding column would see no key at all, and a softmax over nothing gives
    /// NaN, which would then reach real rows through `0 * NaN` in the value product; so such a
    /// query sees its own column. Real queries are unaffected (their own column is visible anyway).
    pub(crate) fn mask(&self, t: usize) -> Option<Vec<f32>> {
        if t == 1 && self.left_pad.iter().all(|&p| p == 0) {
            return None;
        }
        let keys = self.len + t;
        let mut mask = Vec::with_capacity(self.batch() * t * keys);
        for &pad in &self.left_pad {
            for i in 0..t {
                let q = self.len + i;
                mask.extend((0..keys).map(|j| {
                    if (j >= pad && j <= q) || j == q {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
        Some(mask)
    }

    /// Writes layer `layer`'s new keys/values `(batch, kv_heads, t, head_dim)` at the current
    /// end and returns the filled views `(batch, kv_heads, len + t, head_dim)`. The length
    /// advances only in [`Self::advance`], once every layer has written.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let (kc, vc) = match (self.k.get(layer), self.v.get(layer)) {
            (Some(kc), Some(vc)) => (kc, vc),
            _ => candle_core::bail!("KV cache has no layer {layer}"),
        };
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((
            kc.narrow(2, 0, self.len + t)?,
            vc.narrow(2, 0, self.len + t)?,
        ))
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 32,
            tie_word_embeddings: false,
            initializer_range: 0.02,
        }
    }

    #[test]
    fn positions_and_mask_follow_left_padding() -> Result<()> {
        let mut c = KvCache::new(&cfg(), 2, 8, vec![0, 2], &Device::Cpu, DType::F32)?;
        assert_eq!(c.positions(4), vec![0, 1, 2, 3, 0, 0, 0, 1]);
        let m = c.mask(4).ok_or_else(|| LmError::Config("mask".into()))?;
        let vis: Vec<u8> = m.iter().map(|v| u8::from(v.is_finite())).collect();
        #[rustfmt::skip]
        assert_eq!(vis, vec![
            1, 0, 0, 0,  1, 1, 0, 0,  1, 1, 1, 0,  1, 1, 1, 1, // row 0: causal
            1, 0, 0, 0,  0, 1, 0, 0,  0, 0, 1, 0,  0, 0, 1, 1, // row 1: pads see themselves only
        ]);
        c.advance(4);
        assert_eq!(c.positions(1), vec![4, 2]);
        assert!(c.mask(1).is_some());
        c.reset(vec![0, 0])?;
        assert!(c.is_empty() && c.mask(1).is_none());
        Ok(())
    }

    #[test]
    fn refuses_overflow_and_bad_shapes() -> Result<()> {
        let c = KvCache::new(&cfg(), 2, 4, vec![0, 1], &Device::Cpu, DType::F32)?;
        assert!(c.check_step(2, 4).is_ok());
        let err = c.check_step(2, 5).unwrap_err().to_string();
        assert!(err.contains("KV cache full"), "{err}");
        assert!(c.check_step(3, 1).is_err());
        assert!(KvCache::new(&cfg(), 2, 4, vec![0], &Device::Cpu, DType::F32).is_err());
        assert!(KvCache::new(&cfg(), 1, 4, vec![4], &Device::Cpu, DType::F32).is_err());
        Ok(())
    }
}
