//! Inference-only weight fusion ([`Llama::fuse_for_inference`]): each layer's q/k/v weights
//! stacked into one matrix, and on the CPU contiguous transposed copies of the projections
//! (`Proj`). Kept apart from the layers because none of it changes the weights or the
//! architecture, only how inference multiplies by them; the fused copies are not the training
//! variables, so a fused model refuses training mode.

use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::error::{LmError, Result};
use crate::model::Llama;

/// A bias-free projection `x @ W^T` with `W` `(out, in)`. Once [`Self::keep_transposed`] (inference
/// on the CPU) it also holds a contiguous `(in, out)` copy of `W` and multiplies inputs of more
/// than one row by it: gemm multiplies 2-32 rows by a contiguous matrix 1.1-4x faster than by the
/// transposed view of `W` (docs/PERFORMANCE.md); for one row the view, a row of dot products,
/// is the faster one.
#[derive(Clone, Debug)]
pub(crate) struct Proj {
    linear: Linear,
    transposed: Option<Tensor>,
}

impl Proj {
    pub(crate) fn new(linear: Linear) -> Self {
        Self {
            linear,
            transposed: None,
        }
    }

    pub(crate) fn weight(&self) -> &Tensor {
        self.linear.weight()
    }

    fn keep_transposed(&mut self) -> candle_core::Result<()> {
        self.transposed = Some(self.weight().t()?.contiguous()?);
        Ok(())
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.transposed {
            Some(w_t) if x.elem_count() > x.dim(candle_core::D::Minus1)? => x.broadcast_matmul(w_t),
            _ => self.linear.forward(x),
        }
    }
}

/// The weights of `parts` stacked along the output axis, and each part again as a view into it.
fn stack(parts: &[&Linear]) -> candle_core::Result<(Proj, Vec<Linear>)> {
    let weights: Vec<&Tensor> = parts.iter().map(|l| l.weight()).collect();
    let stacked = Tensor::cat(&weights, 0)?;
    let mut start = 0;
    let mut views = Vec::with_capacity(parts.len());
    for w in weights {
        let n = w.dim(0)?;
        views.push(Linear::new(stacked.narrow(0, start, n)?, None));
        start += n;
    }
    Ok((Proj::new(Linear::new(stacked, None)), views))
}

impl Llama {
    /// Stacks each layer's q/k/v weights into one matrix, so that inference runs one matmul
    /// where it ran three (fewer calls, a wider matrix: what decoding a few rows at a time is
    /// bound by; the three outputs are split by the head reshape, which copies anyway). The
    /// separate weights become views into the stacked ones (no second copy), so saving and
    /// [`Self::tensors`] are unchanged. On the CPU every projection and the output head also
    /// keep a contiguous transposed copy, which gemm multiplies faster when more than one row
    /// comes at a time (`Proj`); this doubles the weights' memory there. The stacked and
    /// transposed matrices are copies, not the variables: a fused model refuses training mode.
    pub fn fuse_for_inference(&mut self) -> Result<()> {
        let cpu = self.device().is_cpu();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let ctx = |e| LmError::candle(format!("fusing layer {l}"), e);
            let a = &mut layer.self_attn;
            let (mut qkv, parts) = stack(&[&a.q_proj, &a.k_proj, &a.v_proj]).map_err(ctx)?;
            if let [q, k, v] = parts.as_slice() {
                (a.q_proj, a.k_proj, a.v_proj) = (q.clone(), k.clone(), v.clone());
            }
            if cpu {
                let m = &mut layer.mlp;
                for p in [
                    &mut qkv,
                    &mut a.o_proj,
                    &mut m.gate_proj,
                    &mut m.up_proj,
                    &mut m.down_proj,
                ] {
                    p.keep_transposed().map_err(ctx)?;
                }
            }
            a.qkv = Some(qkv);
        }
        if cpu {
            self.lm_head
                .keep_transposed()
                .map_err(|e| LmError::candle("fusing the output head", e))?;
        }
        self.fused = true;
        Ok(())
    }
}
