//! RMSNorm and LayerNorm over the last dimension as differentiable CPU kernels (f32). The
//! forward pass reads each row two or three times (its statistics, then the output) and writes
//! it once, where the compositions `rms_norm_slow` / `layer_norm_slow` run six / nine tensor
//! operations and keep four / six full-size intermediates for their backward passes; the
//! backward passes here recompute each row's statistics from the input instead of storing them,
//! and are two more kernels (the input's gradient, and the weight's and bias's).
//!
//! RMSNorm, for a row `x` of width `d`: `r = 1 / sqrt(mean(x^2) + eps)`, `y = x * r * w`,
//!
//! ```text
//! dx = r * (w * dy - x * r^2 * mean(w * dy * x))
//! dw = sum over rows of dy * x * r
//! ```
//!
//! LayerNorm: `h = (x - mean(x)) * r` with `r = 1 / sqrt(var(x) + eps)`, `y = h * w + b`,
//!
//! ```text
//! dx = r * (w * dy - mean(w * dy) - h * mean(w * dy * h))
//! dw = sum over rows of dy * h,   db = sum over rows of dy
//! ```

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_kernel::{cpu_f32, f32_slice};

/// RMSNorm of `x` over its last dimension with weight `w`, differentiable in both, as one
/// kernel (f32 on the CPU; `None` for anything else, which the caller composes instead).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    if !(cpu_f32(x) && cpu_f32(w)) {
        return Ok(None);
    }
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps })?;
    Ok(Some(y))
}

/// LayerNorm of `x` over its last dimension with weight `w` and bias `b`, differentiable in all
/// three, as one kernel (f32 on the CPU; `None` for anything else).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    if !(cpu_f32(x) && cpu_f32(w) && cpu_f32(b)) {
        return Ok(None);
    }
    let y = x
        .contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })?;
    Ok(Some(y))
}

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;

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
        // a frozen operand (neither a variable nor computed from one) gets no gradient: the
        // composition would give it none, and it would cost a kernel
        let dx = x
            .track_op()
            .then(|| x.apply_op3_no_bwd(w, &dy, &RmsNormGradX { eps: self.eps }))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| x.apply_op2_no_bwd(&dy, &RmsNormGradW { eps: self.eps }))
            .transpose()?;
        Ok((dx, dw))
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
        Ok((CpuStorage::F32(sum_in_order(partials, d)), Shape::from(d)))
    }
}

/// A row's mean and `1 / sqrt(var + eps)`, accumulated in f32 as `layer_norm_slow` does (the
/// variance from the centred values, not `E[x^2] - E[x]^2`).
#[inline]
fn mean_inv_std(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The forward op on `(x, w, b)`.
#[derive(Clone, Copy, Debug)]
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let (_, b, _) = rows(self.name(), (s1, l1), (s3, l3))?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                    let (mean, r) = mean_inv_std(x, self.eps);
                    for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                        *y = (x - mean) * r * w + b;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = x
            .track_op()
            .then(|| x.apply_op3_no_bwd(w, &dy, &LayerNormGradX { eps: self.eps }))
            .transpose()?;
        let (dw, db) = if w.track_op() || b.track_op() {
            let dwb = x.apply_op2_no_bwd(&dy, &LayerNormGradWB { eps: self.eps })?;
            (
                w.track_op().then(|| dwb.get(0)).transpose()?,
                b.track_op().then(|| dwb.get(1)).transpose()?,
            )
        } else {
            (None, None)
        };
        Ok((dx, dw, db))
    }
}

/// The input's gradient, from `(x, w, dy)`.
struct LayerNormGradX {
    eps: f32,
}

impl CustomOp3 for LayerNormGradX {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad-x"
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
        let n = d as f32;
        dx.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .zip(dy.par_chunks(task))
            .for_each(|((dx, x), dy)| {
                for ((dx, x), dy) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                    let (mean, r) = mean_inv_std(x, self.eps);
                    let (mut sum_g, mut sum_gh) = (0f32, 0f32);
                    for ((x, g), w) in x.iter().zip(dy).zip(w) {
                        let wg = w * g;
                        sum_g += wg;
                        sum_gh += wg * (x - mean) * r;
                    }
                    let (mean_g, mean_gh) = (sum_g / n, sum_gh / n);
                    for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                        let h = (x - mean) * r;
                        *dx = r * (w * g - mean_g - h * mean_gh);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The weight's and bias's gradients, from `(x, dy)`, stacked as `(2, d)`: sums over rows, one
/// partial per task.
struct LayerNormGradWB {
    eps: f32,
}

impl CustomOp2 for LayerNormGradWB {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad-wb"
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
                let mut acc = vec![0f32; 2 * d];
                let (dw, db) = acc.split_at_mut(d);
                for (x, dy) in x.chunks(d).zip(dy.chunks(d)) {
                    let (mean, r) = mean_inv_std(x, self.eps);
                    for (((dw, db), x), g) in dw.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
                        *dw += g * (x - mean) * r;
                        *db += g;
                    }
                }
                acc
            })
            .collect();
        Ok((
            CpuStorage::F32(sum_in_order(partials, 2 * d)),
            Shape::from((2, d)),
        ))
    }
}

/// Per-task partial sums added in task order: the same bits whatever the thread count.
fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for p in &partials {
        for (a, v) in total.iter_mut().zip(p) {
            *a += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_kernel::max_rel;
    use crate::init::seeded_randn;
    use candle_core::{DType, Device, Var};

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

    /// LayerNorm likewise: values and the three gradients against candle's composition, with
    /// rows of a large common offset (the centred variance must not lose them).
    #[test]
    fn matches_the_composed_layer_norm_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (i, shape) in [vec![3, 7], vec![2, 37, 64], vec![5, 3, 129]]
            .into_iter()
            .enumerate()
        {
            let d = *shape.last().unwrap_or(&1);
            let seed = 100 + 10 * i as u64;
            let x = Var::from_tensor(&seeded_randn(shape.as_slice(), 3.0, 2.0, seed, &dev)?)?;
            let w = Var::from_tensor(&seeded_randn(d, 1.0, 0.3, seed + 1, &dev)?)?;
            let b = Var::from_tensor(&seeded_randn(d, 0.0, 0.3, seed + 2, &dev)?)?;
            let probe = seeded_randn(shape.as_slice(), 0.0, 1.0, seed + 3, &dev)?;
            let fused =
                layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)?.expect("cpu f32");
            let composed = candle_nn::ops::layer_norm_slow(x.as_tensor(), &w, &b, 1e-6)?;
            let e = max_rel(&fused, &composed)?;
            assert!(e < 1e-6, "{shape:?}: values differ by {e:e}");
            let gf = (&fused * &probe)?.sum_all()?.backward()?;
            let gc = (&composed * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (a, c) = (gf.get(v).expect("fused grad"), gc.get(v).expect("grad"));
                let e = max_rel(a, c)?;
                assert!(e < 1e-5, "{shape:?}: d{name} differs by {e:e}");
            }
        }
        let x = seeded_randn((6, 4), 0.0, 1.0, 140, &dev)?.t()?;
        let (w, b) = (
            seeded_randn(6, 1.0, 0.3, 141, &dev)?,
            seeded_randn(6, 0.0, 0.3, 142, &dev)?,
        );
        let fused = layer_norm(&x, &w, &b, 1e-6)?.expect("cpu f32");
        let composed = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-6)?;
        assert!(max_rel(&fused, &composed)? < 1e-6);
        assert!(layer_norm(&x.to_dtype(DType::F64)?, &w, &b, 1e-6)?.is_none());
        // frozen operands (plain tensors) get no gradient, as in the composition
        let xv = Var::from_tensor(&x.contiguous()?)?;
        let y = layer_norm(xv.as_tensor(), &w, &b, 1e-6)?.expect("cpu f32");
        let g = y.sum_all()?.backward()?;
        assert!(g.get(&w).is_none() && g.get(&b).is_none() && g.get(&xv).is_some());
        let y = rms_norm(xv.as_tensor(), &w, 1e-5)?.expect("cpu f32");
        let g = y.sum_all()?.backward()?;
        assert!(g.get(&w).is_none() && g.get(&xv).is_some());
        // a bias of the wrong width is refused
        let short = seeded_randn(5, 0.0, 0.3, 143, &dev)?;
        assert!(layer_norm(&x, &w, &short, 1e-6).is_err());
        Ok(())
    }
}
