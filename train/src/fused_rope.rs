//! Rotary embedding (HF's rotate-half layout) as one differentiable CPU kernel (f32). candle's
//! fused `rope` has no backward pass, so training composed it from two concatenations, two
//! narrows, a negation, two broadcast multiplies and an add (eight full-size tensors forward and
//! as many backward). A rotation's gradient is the inverse rotation of the output's gradient
//! (the same kernel with `-sin`), so the backward pass is this kernel once more.
//!
//! For `x: (B, H, T, hd)` with halves `x1`, `x2` and `cos`/`sin` of `(T, hd/2)` (one set of
//! positions for all rows) or `(B, T, hd/2)` (per row):
//!
//! ```text
//! y1 = x1 * cos - x2 * sin          dx1 =  dy1 * cos + dy2 * sin
//! y2 = x1 * sin + x2 * cos          dx2 = -dy1 * sin + dy2 * cos
//! ```

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_kernel::{cpu_f32, f32_slice};

/// The rotary embedding of `x` by `cos`/`sin`, differentiable in `x` (the tables are
/// constants), as one kernel (f32 on the CPU; `None` for anything else).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    if !(cpu_f32(x) && cpu_f32(cos) && cpu_f32(sin)) {
        return Ok(None);
    }
    let y = x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { inverse: false },
    )?;
    Ok(Some(y))
}

/// The rotation, or with `inverse` its inverse (the angle negated).
#[derive(Clone, Copy, Debug)]
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
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
        let what = self.name();
        let (x, cos, sin) = (
            f32_slice(what, s1, l1)?,
            f32_slice(what, s2, l2)?,
            f32_slice(what, s3, l3)?,
        );
        let (b, h, t, d) = l1.shape().dims4()?;
        let half = d / 2;
        let per_row = match l2.dims() {
            [ct, ch] if *ct == t && *ch == half => false,
            [cb, ct, ch] if *cb == b && *ct == t && *ch == half => true,
            other => candle_core::bail!(
                "{what}: cos/sin of {other:?} for an input of {:?}: (T, hd/2) or (B, T, hd/2)",
                l1.dims()
            ),
        };
        if d % 2 != 0 || l3.dims() != l2.dims() {
            candle_core::bail!(
                "{what}: head dim {d} (must be even), cos {:?}, sin {:?}",
                l2.dims(),
                l3.dims()
            )
        }
        let sign = if self.inverse { -1.0f32 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(t * d)
            .zip(x.par_chunks(t * d))
            .enumerate()
            .for_each(|(bh, (y, x))| {
                let table = if per_row { (bh / h) * t * half } else { 0 };
                for ((y, x), i) in y.chunks_mut(d).zip(x.chunks(d)).zip(0..t) {
                    let at = table + i * half;
                    let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
                    let (y1, y2) = y.split_at_mut(half);
                    let (x1, x2) = x.split_at(half);
                    for j in 0..half {
                        let s = sign * s[j];
                        y1[j] = x1[j] * c[j] - x2[j] * s;
                        y2[j] = x1[j] * s + x2[j] * c[j];
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !x.track_op() {
            return Ok((None, None, None));
        }
        let inverse = Rope {
            inverse: !self.inverse,
        };
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, sin, &inverse)?;
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_kernel::max_rel;
    use crate::init::seeded_randn;
    use candle_core::{DType, Device, Var};

    /// Values and the input's gradient against the composition, for shared and per-row
    /// tables; and against candle's inference kernel.
    #[test]
    fn matches_the_composed_rope_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, t, hd) = (3, 2, 5, 12);
        for (i, per_row) in [false, true].into_iter().enumerate() {
            let seed = 20 * i as u64;
            let x = Var::from_tensor(&seeded_randn((b, h, t, hd), 0.0, 1.0, seed, &dev)?)?;
            let shape: Vec<usize> = if per_row {
                vec![b, t, hd / 2]
            } else {
                vec![t, hd / 2]
            };
            let angles = seeded_randn(shape.as_slice(), 0.0, 2.0, seed + 1, &dev)?;
            let (cos, sin) = (angles.cos()?, angles.sin()?);
            let probe = seeded_randn((b, h, t, hd), 0.0, 1.0, seed + 2, &dev)?;
            let fused = rope(x.as_tensor(), &cos, &sin)?.expect("cpu f32");
            let reference = crate::ops::rope_composed(x.as_tensor(), &cos, &sin)?;
            let e = max_rel(&fused, &reference)?;
            assert!(e < 1e-6, "per row {per_row}: values differ by {e:e}");
            let inference = candle_nn::rotary_emb::rope(x.as_tensor(), &cos, &sin)?;
            assert!(max_rel(&fused, &inference)? < 1e-6);
            let gf = (&fused * &probe)?.sum_all()?.backward()?;
            let gc = (&reference * &probe)?.sum_all()?.backward()?;
            let e = max_rel(gf.get(&x).expect("grad"), gc.get(&x).expect("grad"))?;
            assert!(e < 1e-6, "per row {per_row}: dx differs by {e:e}");
        }
        Ok(())
    }

    #[test]
    fn mismatched_tables_are_refused_and_other_dtypes_left_to_the_caller() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((1, 2, 4, 8), 0.0, 1.0, 50, &dev)?;
        let short = seeded_randn((3, 4), 0.0, 1.0, 51, &dev)?;
        assert!(rope(&x, &short, &short).is_err());
        let wide = seeded_randn((4, 8), 0.0, 1.0, 52, &dev)?;
        assert!(rope(&x, &wide, &wide).is_err());
        let ok = seeded_randn((4, 4), 0.0, 1.0, 53, &dev)?;
        assert!(rope(&x.to_dtype(DType::F64)?, &ok, &ok)?.is_none());
        Ok(())
    }
}
