//! AdamW's update of an f32 variable on the CPU as one in-place pass over the variable, its
//! gradient and its two moments (kept as host vectors), with gradient-norm clipping folded in:
//! the clipping factor scales each gradient element as the pass reads it, where clipping as
//! tensor operations writes a scaled copy of every gradient first; and a gradient's sum of
//! squares (for the global norm) is one read-only pass too. The tensor path
//! ([`crate::optim::AdamW`] on other devices and dtypes) runs about a dozen operations per
//! variable per step, each allocating and writing a full-size temporary; this pass allocates
//! nothing and reads each element once.
//!
//! Every element goes through the same f32 operations in the same order as the tensor path
//! (candle's scalar arithmetic is `x * mul + add` with the constants rounded to f32, kept here
//! down to the `+ 0.0`), so the two agree bit for bit: a run can switch paths, or resume a
//! checkpoint written by the other, without changing a number.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, InplaceOp2, Layout, Shape};
use rayon::prelude::*;

use crate::optim::AdamWConfig;

/// Elements per parallel task: large enough that scheduling costs nothing, small enough that
/// two cores share a 100k-element variable.
const CHUNK: usize = 1 << 14;

/// The step's constants, rounded to f32 as the tensor path rounds them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Coeffs {
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    grad_scale: f32,
}

impl Coeffs {
    /// Constants of step `t` (1-based) at learning rate `lr`.
    pub(crate) fn new(cfg: &AdamWConfig, lr: f64, t: f64) -> Self {
        let bc1 = 1.0 - cfg.beta1.powf(t);
        let bc2_sqrt = (1.0 - cfg.beta2.powf(t)).sqrt();
        Self {
            b1: cfg.beta1 as f32,
            one_minus_b1: (1.0 - cfg.beta1) as f32,
            b2: cfg.beta2 as f32,
            one_minus_b2: (1.0 - cfg.beta2) as f32,
            inv_bc2_sqrt: (1.0 / bc2_sqrt) as f32,
            eps: cfg.eps as f32,
            decay: (1.0 - lr * cfg.weight_decay) as f32,
            step_size: (lr / bc1) as f32,
            grad_scale: 1.0,
        }
    }

    /// The same step applied to the gradient times `scale` (a clipping factor), rounded as
    /// `g * scale` on a tensor rounds it. A scale of 1 changes no bit of the update.
    pub(crate) fn with_grad_scale(self, scale: f64) -> Self {
        Self {
            grad_scale: scale as f32,
            ..self
        }
    }

    /// One element, in the tensor path's order of operations.
    #[inline]
    fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let g = g * self.grad_scale + 0.0;
        *m = (*m * self.b1 + 0.0) + (g * self.one_minus_b1 + 0.0);
        *v = (*v * self.b2 + 0.0) + ((g * g) * self.one_minus_b2 + 0.0);
        let denom = (v.sqrt() * self.inv_bc2_sqrt + 0.0) * 1.0 + self.eps;
        let delta = (*m / denom) * self.step_size + 0.0;
        *p = (*p * self.decay + 0.0) - delta;
    }
}

/// The in-place op: applied to the variable with its gradient as the source; the moments
/// travel inside (a custom op has one mutable operand, the variable).
pub(crate) struct FusedUpdate<'a> {
    pub(crate) coeffs: Coeffs,
    pub(crate) moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp2 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("fused-adamw: f32 variable and gradient only")
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("fused-adamw: contiguous variable and gradient only")
        };
        let mut guard = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused-adamw: moments lock poisoned".into()))?;
        let (m, v) = &mut *guard;
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!(
                "fused-adamw: {} elements, gradient {}, moments {} and {}",
                p.len(),
                g.len(),
                m.len(),
                v.len()
            )
        }
        let c = self.coeffs;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                let elems = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
                for (((p, g), m), v) in elems {
                    c.update(p, *g, m, v);
                }
            });
        Ok(())
    }
}

/// The sum of squares of a contiguous f32 tensor, accumulated in f64 (per chunk, the chunks
/// added in order: the same bits whatever the thread count), as an f64 scalar tensor.
pub(crate) struct SumOfSquares;

impl CustomOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "fused-sum-of-squares"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(g) = s else {
            candle_core::bail!("fused-sum-of-squares: f32 only")
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("fused-sum-of-squares: contiguous input only")
        };
        let partials: Vec<f64> = g[start..end]
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum())
            .collect();
        let total: f64 = partials.iter().sum();
        Ok((CpuStorage::F64(vec![total]), Shape::from(())))
    }
}
