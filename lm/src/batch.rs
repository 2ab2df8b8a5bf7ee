//! Batches of token sequences for training and for generation.
//!
//! Training batches are **right**-padded: every row starts at position 0, so a plain causal
//! forward gives each row exactly the positions it has alone, and padding after a row's end can
//! influence nothing before it. The loss is taken only where the caller says (answer tokens in
//! VQA, image tokens in text-to-image), by gathering those positions before the output matrix.
//!
//! Generation batches are **left**-padded so that every row's next token is in the last column;
//! the KV cache masks the padding and shifts each row's positions (see [`crate::cache`]), which
//! again gives each row the positions it has alone.

use candle_core::{Device, Tensor};

use crate::error::{LmError, Result};
use crate::model::Llama;

/// One training sequence: the model learns to predict `ids[loss_from..]` from their prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub loss_from: usize,
}

/// A right-padded training batch.
#[derive(Clone, Debug)]
pub struct TrainBatch {
    /// `(B, T)` u32 input ids (padding after each row's end).
    pub ids: Tensor,
    /// Flat indices `b * T + t` of the positions whose next token is a target.
    pub positions: Tensor,
    /// The target id at each of `positions`.
    pub targets: Tensor,
    /// Row lengths before padding.
    pub lengths: Vec<usize>,
}

impl TrainBatch {
    pub fn new(examples: &[Example], pad: u32, device: &Device) -> Result<Self> {
        let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if examples.is_empty() || t < 2 {
            return Err(LmError::Config(
                "a training batch needs at least one sequence of two or more tokens".into(),
            ));
        }
        let mut ids = Vec::with_capacity(examples.len() * t);
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (b, e) in examples.iter().enumerate() {
            if e.loss_from == 0 || e.loss_from >= e.ids.len() {
                return Err(LmError::Config(format!(
                    "example {b}: loss_from {} must be in 1..{} (nothing predicts the first \
                     token, and a target needs a token)",
                    e.loss_from,
                    e.ids.len()
                )));
            }
            ids.extend_from_slice(&e.ids);
            ids.extend(std::iter::repeat_n(pad, t - e.ids.len()));
            for p in e.loss_from - 1..e.ids.len() - 1 {
                positions.push((b * t + p) as u32);
                targets.push(e.ids[p + 1]);
            }
        }
        if positions.is_empty() {
            return Err(LmError::Config("a training batch without targets".into()));
        }
        let n = positions.len();
        Ok(Self {
            ids: Tensor::from_vec(ids, (examples.len(), t), device)?,
            positions: Tensor::from_vec(positions, n, device)?,
            targets: Tensor::from_vec(targets, n, device)?,
            lengths: examples.iter().map(|e| e.ids.len()).collect(),
        })
    }

    /// Mean cross-entropy of the targets given hidden states `(B, T, D)` of this batch.
    pub fn loss(&self, lm: &Llama, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let rows = hidden
            .reshape((b * t, d))?
            .index_select(&self.positions, 0)?;
        let logits = lm.logits(&rows)?;
        vqrae_train::ops::cross_entropy(&logits, &self.targets)
            .map_err(|e| LmError::candle("cross-entropy", e))
    }
}

/// Left-pads prompts to one length: `(ids (B, L), left_pad per row)`.
pub fn left_padded(
    prompts: &[Vec<u32>],
    pad: u32,
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    let l = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(LmError::Config(
            "every prompt needs at least one token".into(),
        ));
    }
    let mut ids = Vec::with_capacity(prompts.len() * l);
    let mut left_pad = Vec::with_capacity(prompts.len());
    for p in prompts {
        left_pad.push(l - p.len());
        ids.extend(std::iter::repeat_n(pad, l - p.len()));
        ids.extend_from_slice(p);
    }
    Ok((Tensor::from_vec(ids, (prompts.len(), l), device)?, left_pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_padding_and_target_positions() -> Result<()> {
        let dev = Device::Cpu;
        let batch = TrainBatch::new(
            &[
                Example {
                    ids: vec![1, 5, 6, 7],
                    loss_from: 2,
                },
                Example {
                    ids: vec![1, 8],
                    loss_from: 1,
                },
            ],
            0,
            &dev,
        )?;
        assert_eq!(
            batch.ids.to_vec2::<u32>()?,
            vec![vec![1, 5, 6, 7], vec![1, 8, 0, 0]]
        );
        // row 0: positions 1, 2 predict 6, 7; row 1: position 0 predicts 8
        assert_eq!(batch.positions.to_vec1::<u32>()?, vec![1, 2, 4]);
        assert_eq!(batch.targets.to_vec1::<u32>()?, vec![6, 7, 8]);
        Ok(())
    }

    #[test]
    fn bad_examples_are_errors() {
        let dev = Device::Cpu;
        let one = |ids: Vec<u32>, loss_from| Example { ids, loss_from };
        assert!(TrainBatch::new(&[], 0, &dev).is_err());
        assert!(TrainBatch::new(&[one(vec![1, 2], 0)], 0, &dev).is_err());
        assert!(TrainBatch::new(&[one(vec![1, 2], 2)], 0, &dev).is_err());
        assert!(left_padded(&[vec![]], 0, &dev).is_err());
    }

    #[test]
    fn left_padding_aligns_the_last_column() -> Result<()> {
        let (ids, pad) = left_padded(&[vec![1, 2, 3], vec![4]], 0, &Device::Cpu)?;
        assert_eq!(ids.to_vec2::<u32>()?, vec![vec![1, 2, 3], vec![0, 0, 4]]);
        assert_eq!(pad, vec![0, 2]);
        Ok(())
    }
}
