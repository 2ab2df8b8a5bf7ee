//! One low-rank adapter: `delta(x) = scale * (x A^T) B^T` beside a frozen projection `x W^T`.

use candle_core::{DType, Tensor};

use crate::error::{LmError, Result};

/// The adapter of one projection `W: (out, in)`: `A: (rank, in)`, `B: (out, rank)`, f32.
///
/// The tensors share storage with the [`super::Adapters`]' `VarMap` variables, so an optimizer
/// step (or a checkpoint restore) on the map is seen here without rebuilding anything.
#[derive(Clone, Debug)]
pub struct LoraLinear {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl LoraLinear {
    /// Wraps `a: (rank, in)` and `b: (out, rank)`; the ranks must agree.
    pub(crate) fn new(a: Tensor, b: Tensor, scale: f64) -> Result<Self> {
        let (rank, _) = a.dims2()?;
        let (_, rank_b) = b.dims2()?;
        if rank != rank_b {
            return Err(LmError::Config(format!(
                "lora: A {:?} and B {:?} disagree on the rank",
                a.dims(),
                b.dims()
            )));
        }
        Ok(Self { a, b, scale })
    }

    /// `A`, `(rank, in)`.
    pub fn a(&self) -> &Tensor {
        &self.a
    }

    /// `B`, `(out, rank)`.
    pub fn b(&self) -> &Tensor {
        &self.b
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// `(in_features, out_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let i = self.a.dims().get(1).copied().unwrap_or(0);
        let o = self.b.dims().first().copied().unwrap_or(0);
        (i, o)
    }

    /// `(x A^T) B^T * scale` for `x: (..., in)`, returned as `(..., out)` in `x`'s dtype.
    ///
    /// The product is taken in f32 (the adapters' dtype) whatever the base runs in, and in
    /// this order so the cost is `rank * (in + out)` per row, never an `out x in` matrix.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let (i, o) = self.dims();
        let dims = x.dims();
        if dims.last() != Some(&i) {
            return Err(LmError::Config(format!(
                "lora: input of shape {dims:?} does not end in the adapter's in_features {i}"
            )));
        }
        let rows = x.elem_count() / i.max(1);
        let x32 = x.to_dtype(DType::F32)?.reshape((rows, i))?;
        let y = x32.matmul(&self.a.t()?)?.matmul(&self.b.t()?)?;
        let y = (y * self.scale)?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = o;
        }
        Ok(y.reshape(out_dims)?.to_dtype(x.dtype())?)
    }

    /// `W + scale * B A` in `w`'s dtype (detached): the dense weight with the adapter folded
    /// in, for inference on a dense base. `w` must be `(out, in)`.
    pub fn merged(&self, w: &Tensor) -> Result<Tensor> {
        let (i, o) = self.dims();
        if w.dims() != [o, i] {
            return Err(LmError::Config(format!(
                "lora: base weight of shape {:?} is not the adapter's (out, in) = ({o}, {i})",
                w.dims()
            )));
        }
        let ba = (self.b.matmul(&self.a)? * self.scale)?;
        let merged = w.to_dtype(DType::F32)?.add(&ba)?;
        Ok(merged.to_dtype(w.dtype())?.detach())
    }
}
