//! RMSNorm over the last dimension as one differentiable CPU kernel (f32): the forward pass
//! reads each row twice (its mean square, then the output) and writes it once, where the
//! composition `rms_norm_slow` runs six tensor operations and keeps four full-size
//! intermediates for its backward pass; the backward pass here recomputes each row's
//! `1 / rms` from the input instead of storing it, and is two more kernels (the input's and the
//! weight's gradients).
//!
//! For a row `x` of width `d`, `r = 1 / sqrt(mean(x^2) + eps)`, `y = x * r * w`:
//!
//! ```text
//! dx = r * (w * dy - x * r^2 * mean(w * dy * x))
//! dw = sum over rows of dy * x * r
//! ```

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// RMSNorm of `x` over its last dimension with weight `w`, differentiable in both, as one
/// kernel (f32 on the CPU; `None` for anything else, which the caller composes instead).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(cpu_f32(x) && cpu_f32(w)) {
        return Ok(None);
    }
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps })?;
    Ok(Some(y))
}

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// A contiguous f32 operand as a slice.
fn f32_slice<'a>(what: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: f32 only")
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: contiguous inputs only")
    };
    Ok(&v[start..end])
}

/// `x` (rows of width `d`, its last dimension) and `other` as f32 slices; `other` must hold
/// `other_len(x.len(), d)` elements.
fn operands<'a>(
    what: &str,
    x: (&'a CpuStorage, &Layout),
    other: (&'a CpuStorage, &Layout),
    other_len: impl Fn(usize, usize) -> usize,
) -> Result<(&'a [f32], &'a [f32], usize)> {
    let (xs, os) = (
        f32_slice(what, x.0, x.1)?,
        f32_slice(what, other.0, other.1)?,
    );
    let d = x.1.dims().last().copied().unwrap_or(0);
    if d == 0 || os.len() != other_len(xs.len(), d) {
        candle_core::bail!(
            "{what}: {} elements beside rows of {d} ({} in all)",
            os.len(),
            xs.len()
        )
    }
    Ok((xs, os, d))
}

/// `x` and a weight `w` of one row's width.
fn rows<'a>(
    what: &str,
    x: (&'a CpuStorage, &Layout),
    w: (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32], usize)> {
    operands(what, x, w, |_, d| d)
}

/// `1 / sqrt(mean(x^2) + eps)` of one row, accumulated in f32 as `rms_norm_slow` does.
#[inline]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

/// The forward op on `(x, w)`.
#[derive(Clone, Copy, Debug)]
struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, d) = rows(self.name(), (s1, l1), (s2, l2))?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                    let r = inv_rms(x, self.eps);
                    for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                        *y = x * r * w;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &dy, &RmsNormGradX { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(&dy, &RmsNormGradW { eps: self.eps })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// The input's gradient, from `(x, w, dy)`.
struct RmsNormGradX {
    eps: f32,
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, d) = rows(self.name(), (s1, l1), (s2, l2))?;
        let (_, dy, _) = operands(self.name(), (s1, l1), (s3, l3), |n, _| n)?;
        let mut dx = vec![0f32; x.len()];
        let task = d * ROWS_PER_TASK;
        dx.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .zip(dy.par_chunks(task))
            .for_each(|((dx, x), dy)| {
                for ((dx, x), dy) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                    let r = inv_rms(x, self.eps);
                    let dot: f32 = x.iter().zip(dy).zip(w).map(|((x, g), w)| w * g * x).sum();
                    let k = r * r * dot / d as f32;
                    for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                        *dx = r * (w * g - x * k);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The weight's gradient, from `(x, dy)`: a sum over rows, one partial per task.
struct RmsNormGradW {
    eps: f32,
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy, d) = operands(self.name(), (s1, l1), (s2, l2), |n, _| n)?;
        let task = d * ROWS_PER_TASK;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(task)
            .zip(dy.par_chunks(task))
            .map(|(x, dy)| {
                let mut acc = vec![0f32; d];
                for (x, dy) in x.chunks(d).zip(dy.chunks(d)) {
                    let r = inv_rms(x, self.eps);
                    for ((a, x), g) in acc.iter_mut().zip(x).zip(dy) {
                        *a += g * x * r;
                    }
                }
                acc
            })
            .collect();
        // summed in task order: the same bits whatever the thread count
        let mut dw = vec![0f32; d];
        for p in &partials {
            for (a, v) in dw.iter_mut().zip(p) {
                *a += v;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;
    use candle_core::{Device, Var};

    fn max_rel(a: &Tensor, b: &Tensor) -> Result<f32> {
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
    }

    /// Values and both gradients against candle's composition, over odd widths and row counts
    /// that do not fill the last parallel task, and a strided input.
    #[test]
    fn matches_the_composed_rms_norm_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (i, shape) in [vec![3, 7], vec![2, 37, 64], vec![5, 3, 129]]
            .into_iter()
            .enumerate()
        {
            let d = *shape.last().unwrap_or(&1);
            let seed = 10 * i as u64;
            let x = Var::from_tensor(&seeded_randn(shape.as_slice(), 0.5, 2.0, seed, &dev)?)?;
            let w = Var::from_tensor(&seeded_randn(d, 1.0, 0.3, seed + 1, &dev)?)?;
            let probe = seeded_randn(shape.as_slice(), 0.0, 1.0, seed + 2, &dev)?;
            let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5)?.expect("cpu f32");
            let composed = candle_nn::ops::rms_norm_slow(x.as_tensor(), w.as_tensor(), 1e-5)?;
            let e = max_rel(&fused, &composed)?;
            assert!(e < 1e-6, "{shape:?}: values differ by {e:e}");
            let gf = (&fused * &probe)?.sum_all()?.backward()?;
            let gc = (&composed * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &w)] {
                let (a, b) = (gf.get(v).expect("fused grad"), gc.get(v).expect("grad"));
                let e = max_rel(a, b)?;
                assert!(e < 1e-5, "{shape:?}: d{name} differs by {e:e}");
            }
        }
        // a transposed input is made contiguous first
        let x = seeded_randn((6, 4), 0.0, 1.0, 40, &dev)?.t()?;
        let w = seeded_randn(6, 1.0, 0.3, 41, &dev)?;
        let fused = rms_norm(&x, &w, 1e-5)?.expect("cpu f32");
        let composed = candle_nn::ops::rms_norm_slow(&x, &w, 1e-5)?;
        assert!(max_rel(&fused, &composed)? < 1e-6);
        // other dtypes are left to the caller
        assert!(rms_norm(&x.to_dtype(DType::F64)?, &w, 1e-5)?.is_none());
        Ok(())
    }
}
