//! Softmax cross-entropy as one differentiable CPU kernel (f32), with the meaning of
//! `candle_nn::loss::cross_entropy`: the mean over rows of `-log_softmax(logits)[target]`.
//!
//! candle's composition materialises `log_softmax` for the whole `(N, V)` logits: `x - max`,
//! its `exp`, and `diff - log(sum)` are three full `(N, V)` tensors (the first two kept for the
//! backward pass), before `gather` keeps one value per row. Its backward pass then builds about
//! as many again: the scattered one-hot gradient, the broadcast row sums, the gradient through
//! `exp`, and the mask of each row's maximum, each `(N, V)`. For an LM head (`V` in the tens of
//! thousands) those are the largest tensors of a training step.
//!
//! Here the forward pass reads each row twice (its maximum, then the sum of `exp(x - max)`)
//! and writes nothing of size `(N, V)`: it keeps two numbers per row, the maximum `m` and
//! `l = ln(sum(exp(x - m)))`, for the backward pass, which is one kernel that reads each row
//! once and writes its gradient once:
//!
//! ```text
//! loss    = 1/N * sum over rows of (m + l - x[t])
//! dlogits = g/N * (exp(x - m - l) - onehot(t))      (g: the loss's upstream gradient)
//! ```
//!
//! Row sums of `exp` and the sum over rows are accumulated in f64 (candle accumulates both in
//! f32; the two agree to about 1e-7 relative). The sum over rows adds one partial per parallel
//! task in task order, and tasks hold a number of rows fixed by `V` alone, so the loss has the
//! same bits whatever the thread count.
//!
//! Targets are u32, u8 or i64, as candle's `gather` takes them. As in candle, a target equal to
//! its type's maximum (`u32::MAX`, `u8::MAX`, `i64::MAX`) marks a row that is skipped: it adds
//! nothing to the sum and gets no gradient, but still counts in `N`. Any other target outside
//! `0..V` is an error.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The mean softmax cross-entropy of `logits` `(N, V)` against `targets` `(N)`, differentiable
/// in `logits`, as one kernel (f32 logits on the CPU; `None` for anything else, which the
/// caller composes instead). Shapes are checked for every dtype and device: ranks, lengths, and
/// `N = 0` or `V = 0` (candle's composition gives NaN for an empty batch) are errors.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Option<Tensor>> {
    let (n, v) = match logits.dims() {
        &[n, v] => (n, v),
        dims => candle_core::bail!("cross-entropy: logits of rank 2 expected, got {dims:?}"),
    };
    let len = match targets.dims() {
        &[len] => len,
        dims => candle_core::bail!("cross-entropy: targets of rank 1 expected, got {dims:?}"),
    };
    if len != n {
        candle_core::bail!("cross-entropy: {len} targets for {n} rows of logits")
    }
    if n == 0 || v == 0 {
        candle_core::bail!("cross-entropy: empty logits ({n}, {v})")
    }
    if !(logits.device().is_cpu() && logits.dtype() == DType::F32) {
        return Ok(None);
    }
    let loss = logits.contiguous()?.apply_op2(
        &targets.contiguous()?,
        CrossEntropy {
            stats: OnceLock::new(),
        },
    )?;
    Ok(Some(loss))
}

/// About this many logits per parallel task: a whole number of rows, at least one, fixed by
/// `V` alone so that the order of the loss's sum does not depend on the thread count.
const TASK_ELEMS: usize = 1 << 14;

fn rows_per_task(v: usize) -> usize {
    (TASK_ELEMS / v).max(1)
}

/// The logits `(N, V)` as an f32 slice, with `V`.
fn logits_of<'a>(what: &str, s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], usize)> {
    let CpuStorage::F32(x) = s else {
        candle_core::bail!("{what}: f32 logits only")
    };
    let (Some((start, end)), &[_, v]) = (l.contiguous_offsets(), l.dims()) else {
        candle_core::bail!("{what}: contiguous logits of rank 2 only")
    };
    if v == 0 {
        candle_core::bail!("{what}: logits without classes")
    }
    Ok((&x[start..end], v))
}

/// One target per row, checked against `0..v`; `None` for a skipped row (the type's maximum).
fn targets_of(
    what: &str,
    s: &CpuStorage,
    l: &Layout,
    n: usize,
    v: usize,
) -> Result<Vec<Option<usize>>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: contiguous targets only")
    };
    if end - start != n {
        candle_core::bail!("{what}: {} targets for {n} rows of logits", end - start)
    }
    let check = |t: usize| -> Result<Option<usize>> {
        if t >= v {
            candle_core::bail!("{what}: target {t} out of range for {v} classes")
        }
        Ok(Some(t))
    };
    match s {
        CpuStorage::U32(t) => unsigned(&t[start..end], u32::MAX, check),
        CpuStorage::U8(t) => unsigned(&t[start..end], u8::MAX, check),
        CpuStorage::I64(t) => t[start..end]
            .iter()
            .map(|&t| match t {
                i64::MAX => Ok(None),
                t if t < 0 => {
                    candle_core::bail!("{what}: target {t} out of range for {v} classes")
                }
                t => check(usize::try_from(t).unwrap_or(usize::MAX)),
            })
            .collect(),
        s => candle_core::bail!(
            "{what}: targets of u32, u8 or i64, not {:?}",
            candle_core::backend::BackendStorage::dtype(s)
        ),
    }
}

/// Unsigned targets, `skip` (the type's maximum) marking a skipped row.
fn unsigned<T: Copy + PartialEq + Into<u64>>(
    t: &[T],
    skip: T,
    check: impl Fn(usize) -> Result<Option<usize>>,
) -> Result<Vec<Option<usize>>> {
    t.iter()
        .map(|&t| {
            if t == skip {
                Ok(None)
            } else {
                check(usize::try_from(t.into()).unwrap_or(usize::MAX))
            }
        })
        .collect()
}

/// A row's maximum `m` and `ln(sum(exp(x - m)))`, the sum accumulated in f64.
#[inline]
fn row_stats(x: &[f32]) -> (f32, f64) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = x.iter().map(|&x| f64::from((x - m).exp())).sum();
    (m, s.ln())
}

/// The forward op on `(logits, targets)`; it keeps each row's `(m, l)` for its backward pass.
#[derive(Debug)]
struct CrossEntropy {
    stats: OnceLock<Vec<(f32, f32)>>,
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, v) = logits_of(self.name(), s1, l1)?;
        let n = x.len() / v;
        let targets = targets_of(self.name(), s2, l2, n, v)?;
        let rows = rows_per_task(v);
        let mut stats = vec![(0f32, 0f32); n];
        let partials: Vec<f64> = stats
            .par_chunks_mut(rows)
            .zip(x.par_chunks(v * rows))
            .zip(targets.par_chunks(rows))
            .map(|((stats, x), targets)| {
                let mut acc = 0f64;
                for ((st, x), t) in stats.iter_mut().zip(x.chunks(v)).zip(targets) {
                    let Some(&xt) = t.and_then(|t| x.get(t)) else {
                        continue;
                    };
                    let (m, l) = row_stats(x);
                    *st = (m, l as f32);
                    acc += (f64::from(m) - f64::from(xt)) + l;
                }
                acc
            })
            .collect();
        // summed in task order: the same bits whatever the thread count
        let total: f64 = partials.iter().sum();
        // a second forward on this op (there is none) would keep the first's statistics
        let _ = self.stats.set(stats);
        Ok((
            CpuStorage::F32(vec![(total / n as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        dloss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = dloss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let n = logits.dim(0)?;
        let grad = CrossEntropyGrad {
            scale: g / n as f32,
            stats: self.stats.get().map(Vec::as_slice),
        };
        Ok((Some(logits.apply_op2_no_bwd(targets, &grad)?), None))
    }
}

/// The logits' gradient, from `(logits, targets)`: `scale * (softmax(x) - onehot(t))` per row,
/// with each row's `(m, l)` from the forward pass, or recomputed where there are none.
struct CrossEntropyGrad<'a> {
    scale: f32,
    stats: Option<&'a [(f32, f32)]>,
}

impl CustomOp2 for CrossEntropyGrad<'_> {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, v) = logits_of(self.name(), s1, l1)?;
        let n = x.len() / v;
        let targets = targets_of(self.name(), s2, l2, n, v)?;
        if self.stats.is_some_and(|s| s.len() != n) {
            candle_core::bail!("{}: row statistics of another batch", self.name())
        }
        let rows = rows_per_task(v);
        let scale = self.scale;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(v * rows)
            .zip(x.par_chunks(v * rows))
            .zip(targets.par_chunks(rows))
            .enumerate()
            .for_each(|(task, ((dx, x), targets))| {
                let first = task * rows;
                let it = dx.chunks_mut(v).zip(x.chunks(v)).zip(targets);
                for (i, ((dx, x), t)) in it.enumerate() {
                    // a skipped row keeps its zero gradient
                    let Some(t) = *t else { continue };
                    let (m, l) = match self.stats.and_then(|s| s.get(first + i)) {
                        Some(&st) => st,
                        None => {
                            let (m, l) = row_stats(x);
                            (m, l as f32)
                        }
                    };
                    for (d, &x) in dx.iter_mut().zip(x) {
                        *d = scale * ((x - m) - l).exp();
                    }
                    if let (Some(d), Some(&xt)) = (dx.get_mut(t), x.get(t)) {
                        *d = scale * (((xt - m) - l).exp() - 1.0);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_kernel::max_rel;
    use crate::init::seeded_randn;
    use candle_core::{Device, IndexOp, Var};

    /// Seeded targets in `0..v`.
    fn targets(n: usize, v: usize, seed: u64) -> Result<Tensor> {
        let r = seeded_randn(n, 0.0, 1.0, seed, &Device::Cpu)?.to_vec1::<f32>()?;
        let t: Vec<u32> = r
            .iter()
            .map(|x| ((x.abs() * 7919.0) as usize % v) as u32)
            .collect();
        Tensor::new(t, &Device::Cpu)
    }

    /// The fused op's and candle's value and logits' gradient, for an upstream gradient of 3,
    /// and their relative differences.
    fn compare(logits: &Tensor, t: &Tensor) -> Result<(f32, f32)> {
        let x = Var::from_tensor(logits)?;
        let fused = cross_entropy(x.as_tensor(), t)?.expect("cpu f32");
        // candle's `gather` takes contiguous targets only
        let composed = candle_nn::loss::cross_entropy(x.as_tensor(), &t.contiguous()?)?;
        assert_eq!(fused.dims(), composed.dims());
        let (a, b) = (fused.to_scalar::<f32>()?, composed.to_scalar::<f32>()?);
        assert!(a.is_finite(), "loss {a}");
        let e_value = (a - b).abs() / b.abs().max(1e-12);
        let gf = (&fused * 3.0)?.backward()?;
        let gc = (&composed * 3.0)?.backward()?;
        let (gf, gc) = (gf.get(&x).expect("fused grad"), gc.get(&x).expect("grad"));
        Ok((e_value, max_rel(gf, gc)?))
    }

    /// Value and gradient against candle's composition: odd widths, row counts that do not fill
    /// the last parallel task, one row per task (`V > TASK_ELEMS`), and large logits.
    #[test]
    fn matches_the_composed_cross_entropy_in_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let (mut worst_v, mut worst_g) = (0f32, 0f32);
        for (i, (n, v, std)) in [
            (1, 1, 1.0),
            (1, 5, 1.0),
            (3, 7, 2.0),
            (300, 129, 1.0),
            (37, 1000, 3.0),
            (5, 20_011, 1.0),
            (40, 257, 50.0),
            (9, 4099, 50.0),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = 10 * i as u64;
            let x = seeded_randn((n, v), 0.3, std, seed, &dev)?;
            let t = targets(n, v, seed + 1)?;
            let (ev, eg) = compare(&x, &t)?;
            eprintln!("({n}, {v}) x{std}: value {ev:e}, gradient {eg:e}");
            assert!(ev < 1e-6, "({n}, {v}): values differ by {ev:e}");
            assert!(eg < 1e-5, "({n}, {v}): gradients differ by {eg:e}");
            worst_v = worst_v.max(ev);
            worst_g = worst_g.max(eg);
        }
        eprintln!("worst: value {worst_v:e}, gradient {worst_g:e}");
        Ok(())
    }

    /// Strided logits and targets are made contiguous first; u8 and i64 targets mean the same.
    #[test]
    fn takes_strided_inputs_and_other_target_types() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((50, 23), 0.0, 1.0, 1, &dev)?.t()?;
        assert!(!x.is_contiguous());
        let t = Tensor::stack(&[targets(23, 50, 2)?, targets(23, 50, 3)?], 1)?.i((.., 0))?;
        assert!(!t.is_contiguous());
        let (ev, eg) = compare(&x, &t)?;
        assert!(ev < 1e-6 && eg < 1e-5, "{ev:e} {eg:e}");
        let base = cross_entropy(&x, &t)?
            .expect("cpu f32")
            .to_scalar::<f32>()?;
        for dtype in [DType::U8, DType::I64] {
            let l = cross_entropy(&x, &t.to_dtype(dtype)?)?.expect("cpu f32");
            assert_eq!(l.to_scalar::<f32>()?, base, "{dtype:?}");
            let (ev, eg) = compare(&x, &t.to_dtype(dtype)?)?;
            assert!(ev < 1e-6 && eg < 1e-5, "{dtype:?}: {ev:e} {eg:e}");
        }
        Ok(())
    }

    /// A target at its type's maximum skips its row as candle's `gather` does.
    #[test]
    fn skips_rows_as_candle_does() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((6, 11), 0.0, 1.0, 5, &dev)?;
        let t = Tensor::new(&[3u32, u32::MAX, 0, 10, u32::MAX, 7], &dev)?;
        let (ev, eg) = compare(&x, &t)?;
        assert!(ev < 1e-6 && eg < 1e-5, "{ev:e} {eg:e}");
        let t = Tensor::new(&[3i64, i64::MAX, 0, 10, i64::MAX, 7], &dev)?;
        let (ev, eg) = compare(&x, &t)?;
        assert!(ev < 1e-6 && eg < 1e-5, "{ev:e} {eg:e}");
        Ok(())
    }

    /// The loss has the same bits on one thread as on many; the gradient recomputed without
    /// the forward's row statistics is the same as with them.
    #[test]
    fn is_deterministic_and_recomputes_the_same_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((500, 97), 0.0, 4.0, 7, &dev)?;
        let t = targets(500, 97, 8)?;
        let many = cross_entropy(&x, &t)?
            .expect("cpu f32")
            .to_scalar::<f32>()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        let one = pool.install(|| -> Result<f32> {
            cross_entropy(&x, &t)?.expect("cpu f32").to_scalar::<f32>()
        })?;
        assert_eq!(one.to_bits(), many.to_bits());
        let var = Var::from_tensor(&x)?;
        let loss = cross_entropy(var.as_tensor(), &t)?.expect("cpu f32");
        let stored = loss.backward()?.get(&var).expect("grad").clone();
        let grad = CrossEntropyGrad {
            scale: 1.0 / 500.0,
            stats: None,
        };
        let recomputed = x.apply_op2_no_bwd(&t, &grad)?;
        let e = max_rel(&recomputed, &stored)?;
        assert!(e < 1e-6, "{e:e}");
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes_and_targets_and_leaves_other_dtypes() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((4, 6), 0.0, 1.0, 9, &dev)?;
        let ok = Tensor::new(&[0u32, 1, 2, 5], &dev)?;
        assert!(cross_entropy(&x, &ok)?.is_some());
        // out of range, for each target type
        assert!(cross_entropy(&x, &Tensor::new(&[0u32, 1, 6, 5], &dev)?).is_err());
        assert!(cross_entropy(&x, &Tensor::new(&[0u8, 1, 200, 5], &dev)?).is_err());
        assert!(cross_entropy(&x, &Tensor::new(&[0i64, -1, 2, 5], &dev)?).is_err());
        assert!(cross_entropy(&x, &Tensor::new(&[0i64, 1, 2, 6], &dev)?).is_err());
        // targets of an unsupported type
        assert!(cross_entropy(&x, &ok.to_dtype(DType::F32)?).is_err());
        // lengths and ranks
        assert!(cross_entropy(&x, &ok.narrow(0, 0, 3)?).is_err());
        assert!(cross_entropy(&x, &ok.reshape((4, 1))?).is_err());
        assert!(cross_entropy(&x.reshape((2, 2, 6))?, &ok).is_err());
        assert!(cross_entropy(&x.narrow(0, 0, 0)?, &ok.narrow(0, 0, 0)?).is_err());
        assert!(cross_entropy(&x.narrow(1, 0, 0)?, &ok).is_err());
        // other dtypes are left to the caller, after the same shape checks
        assert!(cross_entropy(&x.to_dtype(DType::F64)?, &ok)?.is_none());
        assert!(cross_entropy(&x.to_dtype(DType::BF16)?, &ok)?.is_none());
        assert!(cross_entropy(&x.to_dtype(DType::F64)?, &ok.narrow(0, 0, 3)?).is_err());
        Ok(())
    }
}
