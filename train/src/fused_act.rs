//! GELU (erf and tanh), `silu(gate) * up` and softmax over the last dimension, each as one
//! differentiable CPU kernel (f32) whose backward pass is one more kernel.
//!
//! candle's forward passes of these are cheap (one parallel element-wise op for GELU, two for
//! SiLU-times-gate, five for softmax: max, subtract, exp, sum, divide), but their backward
//! passes are compositions: GELU's is a dozen full-size tensor ops (powers, tanh or erf, exp,
//! products, sums), `silu(gate) * up`'s about ten (the sigmoid rebuilt from `neg`, `exp`, `+1`,
//! `recip`, then the products), softmax's about fifteen (through the division, the sums, the
//! exp, the subtraction and the max's mask), each writing a full-size intermediate. Here each
//! backward pass reads its operands once and writes the gradients once, recomputing what it
//! needs (`tanh`/`erf`, the sigmoid) from the input instead of storing it:
//!
//! ```text
//! gelu_erf'(x)  = (1 + erf(x / sqrt 2)) / 2 + x exp(-x^2 / 2) / sqrt(2 pi)
//! gelu_tanh'(x) = (1 + t) / 2 + x (1 - t^2) c (1 + 3 a x^2) / 2,
//!                 t = tanh(c (x + a x^3)), c = sqrt(2 / pi), a = 0.044715
//! silu(g) * u:    dg = dy u s (1 + g (1 - s)), du = dy g s,  s = sigmoid(g)
//! softmax y:      dx = y (dy - sum(dy y))   (per row, from the saved output y)
//! ```
//!
//! The forward passes use candle's own f32 formulas, so their values are bit-identical to
//! `Tensor::gelu` and `silu() * up` on the CPU without MKL/Accelerate; but not its `erf_f32`
//! (libm's `erff`: scalar, branching, 6% of a tokenizer training step), whose place a
//! branch-free rational approximation takes ([`erf`]; within 4.5e-7 of the exact erf, so exact
//! GELU within 8e-7), which the compiler vectorises. Softmax sums each row in eight interleaved lanes (vectorised, and
//! the same on every machine), where candle's `sum_keepdim` uses whatever SIMD the CPU has, so
//! its values agree with the composition to within rounding (a few 1e-7, relative), not bitwise.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_kernel::{cpu_f32, f32_slice};

/// Elements per parallel task (element-wise ops; softmax takes whole rows of about this many
/// elements). Fixed, so that results do not depend on the thread count.
const ELEMS_PER_TASK: usize = 4096;

// candle's constant (candle-core op.rs, huggingface/candle#1982)
#[allow(clippy::excessive_precision)]
const SQRT_TWO_OVER_PI: f32 = 0.79788456080286535587989211986876373;
const GELU_A: f32 = 0.044715;
#[allow(clippy::excessive_precision)]
const INV_SQRT_TWO_PI: f32 = 0.39894228040143267793994605993438187;

/// GELU of `x`, exact (erf, `Tensor::gelu_erf`) or the tanh approximation (`Tensor::gelu`),
/// differentiable, as one kernel (f32 on the CPU; `None` for anything else, which the caller
/// composes instead).
pub fn gelu(x: &Tensor, tanh: bool) -> Result<Option<Tensor>> {
    if !cpu_f32(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(Gelu { tanh })?))
}

/// `silu(gate) * up` (the element-wise part of SwiGLU), differentiable in both, as one kernel
/// (f32 on the CPU; `None` for anything else). `gate` and `up` must have the same shape.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    if gate.shape() != up.shape() {
        candle_core::bail!(
            "silu_mul: gate {:?} and up {:?} differ in shape",
            gate.dims(),
            up.dims()
        )
    }
    if !(cpu_f32(gate) && cpu_f32(up)) {
        return Ok(None);
    }
    let y = gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)?;
    Ok(Some(y))
}

/// Softmax over the last dimension (max-subtracted), differentiable, as one kernel (f32 on the
/// CPU, rank 1 or more; `None` for anything else).
pub fn softmax_last_dim(x: &Tensor) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || x.rank() == 0 {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(SoftmaxLastDim)?))
}

/// Two operands of the same shape as f32 slices.
fn pair<'a>(
    what: &str,
    a: (&'a CpuStorage, &Layout),
    b: (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32])> {
    if a.1.shape() != b.1.shape() {
        candle_core::bail!(
            "{what}: shapes {:?} and {:?} differ",
            a.1.dims(),
            b.1.dims()
        )
    }
    Ok((f32_slice(what, a.0, a.1)?, f32_slice(what, b.0, b.1)?))
}

/// `f` of every element of `x`, in parallel tasks of [`ELEMS_PER_TASK`].
fn map1(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(ELEMS_PER_TASK)
        .zip(x.par_chunks(ELEMS_PER_TASK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = f(x);
            }
        });
    y
}

/// `f` of every pair of elements of `a` and `b` (of one length).
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(ELEMS_PER_TASK)
        .zip(a.par_chunks(ELEMS_PER_TASK))
        .zip(b.par_chunks(ELEMS_PER_TASK))
        .for_each(|((y, a), b)| {
            for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                *y = f(a, b);
            }
        });
    y
}

/// The error function as Eigen (and TensorFlow after it) computes it in single precision: an
/// odd degree-13 polynomial over an even degree-8 one, on `x` clamped to [-4, 4] (outside it
/// erf is ±1 in f32). No branch and no table, so a loop over it vectorises; within 4.5e-7 of
/// the exact erf (a few ulp near ±1; the test measures it against libm).
#[inline]
#[allow(clippy::excessive_precision)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
    for c in [
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    ] {
        p = x2 * p + c;
    }
    let mut q = x2 * -1.45660718464996e-05 - 2.13374055278905e-04;
    for c in [
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    ] {
        q = x2 * q + c;
    }
    x * p / q
}

/// Exact GELU, `x (1 + erf(x / sqrt 2)) / 2` (candle's formula; [`erf`]'s erf).
#[inline]
fn gelu_erf(v: f32) -> f32 {
    (erf(v * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * v
}

/// candle's f32 `gelu` (tanh approximation).
#[inline]
fn gelu_tanh(v: f32) -> f32 {
    0.5 * v * (1.0 + f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_A * v * v)))
}

#[inline]
fn gelu_erf_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
        + x * (-0.5 * x * x).exp() * INV_SQRT_TWO_PI
}

#[inline]
fn gelu_tanh_grad(x: f32) -> f32 {
    let x2 = x * x;
    let t = f32::tanh(SQRT_TWO_OVER_PI * x * (1.0 + GELU_A * x2));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_A * x2)
}

/// GELU on `x`.
#[derive(Clone, Copy, Debug)]
struct Gelu {
    tanh: bool,
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        if self.tanh {
            "fused-gelu-tanh"
        } else {
            "fused-gelu-erf"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s, l)?;
        let y = if self.tanh {
            map1(x, gelu_tanh)
        } else {
            map1(x, gelu_erf)
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let dx = x.apply_op2_no_bwd(&dy, &GeluGrad { tanh: self.tanh })?;
        Ok(Some(dx))
    }
}

/// GELU's input gradient, from `(x, dy)`.
struct GeluGrad {
    tanh: bool,
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "fused-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = pair(self.name(), (s1, l1), (s2, l2))?;
        let dx = if self.tanh {
            map2(x, dy, |x, g| g * gelu_tanh_grad(x))
        } else {
            map2(x, dy, |x, g| g * gelu_erf_grad(x))
        };
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `silu(gate) * up` on `(gate, up)`.
#[derive(Clone, Copy, Debug)]
struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = pair(self.name(), (s1, l1), (s2, l2))?;
        // candle's f32 silu, then the product
        let y = map2(gate, up, |g, u| g / (1.0 + (-g).exp()) * u);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // both gradients from one pass, stacked on a new leading dimension; none for an operand
        // outside the graph (a constant), which would otherwise get an entry in the gradients
        let grads = gate.apply_op3_no_bwd(up, &dy, &SiluMulGrad)?;
        let grad = |i: usize, t: &Tensor| t.track_op().then(|| grads.get(i)).transpose();
        Ok((grad(0, gate)?, grad(1, up)?))
    }
}

/// The gradients of `silu(gate) * up`, from `(gate, up, dy)`: `(2, ...)`, gate's then up's.
struct SiluMulGrad;

impl CustomOp3 for SiluMulGrad {
    fn name(&self) -> &'static str {
        "fused-silu-mul-grad"
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
        let (gate, up) = pair(self.name(), (s1, l1), (s2, l2))?;
        let (_, dy) = pair(self.name(), (s1, l1), (s3, l3))?;
        let n = gate.len();
        let mut out = vec![0f32; 2 * n];
        let (dgate, dup) = out.split_at_mut(n);
        let t = ELEMS_PER_TASK;
        dgate
            .par_chunks_mut(t)
            .zip(dup.par_chunks_mut(t))
            .zip(gate.par_chunks(t))
            .zip(up.par_chunks(t))
            .zip(dy.par_chunks(t))
            .for_each(|((((dg, du), g), u), dy)| {
                let it = dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(dy);
                for ((((dg, du), &g), &u), &dy) in it {
                    let s = 1.0 / (1.0 + (-g).exp());
                    *dg = dy * u * s * (1.0 + g * (1.0 - s));
                    *du = dy * g * s;
                }
            });
        let mut dims = vec![2];
        dims.extend_from_slice(l1.dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Lanes of the row sums: that many interleaved partial sums, which the compiler vectorises
/// (a plain f32 sum has to stay sequential), then added in order.
const LANES: usize = 8;

/// The sum of `x`, in [`LANES`] interleaved partial sums, then the tail in order.
#[inline]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (s, v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    acc.iter().chain(tail).fold(0f32, |s, v| s + v)
}

/// `sum(a * b)` over two rows of one width, added as [`lane_sum`] adds.
#[inline]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let lanes = acc.iter().fold(0f32, |s, v| s + v);
    ta.iter().zip(tb).fold(lanes, |s, (x, y)| s + x * y)
}

/// Rows of width `d` per parallel task.
fn rows_per_task(d: usize) -> usize {
    (ELEMS_PER_TASK / d.max(1)).max(1)
}

/// The last dimension of a layout, which must have one.
fn last_dim(what: &str, l: &Layout) -> Result<usize> {
    match l.dims().last() {
        Some(&d) => Ok(d),
        None => candle_core::bail!("{what}: a scalar has no last dimension"),
    }
}

/// Softmax over the last dimension of `x`.
#[derive(Clone, Copy, Debug)]
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "fused-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s, l)?;
        let d = last_dim(self.name(), l)?;
        let mut y = vec![0f32; x.len()];
        if d > 0 {
            let task = d * rows_per_task(d);
            y.par_chunks_mut(task)
                .zip(x.par_chunks(task))
                .for_each(|(y, x)| {
                    for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                        let max = x[1..].iter().fold(x[0], |m, &v| m.max(v));
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = (x - max).exp();
                        }
                        let sum = lane_sum(y);
                        for y in y.iter_mut() {
                            *y /= sum;
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let dx = y.apply_op2_no_bwd(&dy, &SoftmaxGrad)?;
        Ok(Some(dx))
    }
}

/// Softmax's input gradient, from its output and the output's gradient `(y, dy)`.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, dy) = pair(self.name(), (s1, l1), (s2, l2))?;
        let d = last_dim(self.name(), l1)?;
        let mut dx = vec![0f32; y.len()];
        if d > 0 {
            let task = d * rows_per_task(d);
            dx.par_chunks_mut(task)
                .zip(y.par_chunks(task))
                .zip(dy.par_chunks(task))
                .for_each(|((dx, y), dy)| {
                    for ((dx, y), dy) in dx.chunks_mut(d).zip(y.chunks(d)).zip(dy.chunks(d)) {
                        let dot = lane_dot(y, dy);
                        for ((dx, y), g) in dx.iter_mut().zip(y).zip(dy) {
                            *dx = y * (g - dot);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_kernel::max_rel;
    use crate::init::seeded_randn;
    use candle_core::{DType, Device, Var, D};

    /// Shapes with odd widths and row/element counts that do not fill the last parallel task
    /// (4,736 and 18,081 elements for the element-wise tasks of 4,096; 37 rows of 515 for
    /// softmax's tasks of 7 rows).
    const SHAPES: [&[usize]; 5] = [
        &[3, 7],
        &[2, 37, 64],
        &[5, 3, 129],
        &[3, 41, 147],
        &[37, 515],
    ];

    /// The worst relative error of the values and of each gradient (with `probe` as the
    /// output's gradient) of `fused` against `composed`, both functions of `vars`.
    fn compare(
        vars: &[&Var],
        probe: &Tensor,
        fused: impl Fn(&[&Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<(f32, f32)> {
        let xs: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let (yf, yc) = (fused(&xs)?, composed(&xs)?);
        assert_eq!(yf.dims(), yc.dims());
        let value = max_rel(&yf, &yc)?;
        let gf = (&yf * probe)?.sum_all()?.backward()?;
        let gc = (&yc * probe)?.sum_all()?.backward()?;
        let mut grad = 0f32;
        for v in vars {
            let (a, b) = (gf.get(v).expect("fused grad"), gc.get(v).expect("grad"));
            assert_eq!(a.dims(), v.dims());
            grad = grad.max(max_rel(a, b)?);
        }
        Ok((value, grad))
    }

    fn var(shape: &[usize], mean: f64, std: f64, seed: u64) -> Result<Var> {
        Var::from_tensor(&seeded_randn(shape, mean, std, seed, &Device::Cpu)?)
    }

    /// The rational erf against libm's (correctly rounded to ~1 ulp) on a dense grid over
    /// [-6, 6], past the clamp; odd; and ±1 far out.
    #[test]
    fn rational_erf_is_within_its_stated_error() {
        let mut worst = 0f32;
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            worst = worst.max((erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
            assert_eq!(erf(-x), -erf(x));
        }
        assert!(worst < 4.5e-7, "erf off by {worst:e}");
        assert_eq!((erf(50.0), erf(-1e30)), (1.0, -1.0));
        eprintln!("erf: worst {worst:e}");
    }

    #[test]
    fn gelu_matches_candles_in_values_and_gradients() -> Result<()> {
        let mut worst = (0f32, 0f32);
        for tanh in [false, true] {
            let reference = |x: &Tensor| if tanh { x.gelu() } else { x.gelu_erf() };
            for (i, shape) in SHAPES.into_iter().enumerate() {
                let seed = 100 + 10 * i as u64;
                let x = var(shape, 0.0, 2.0, seed)?;
                let probe = seeded_randn(shape, 0.0, 1.0, seed + 1, &Device::Cpu)?;
                let (v, g) = compare(
                    &[&x],
                    &probe,
                    |x| Ok(gelu(x[0], tanh)?.expect("cpu f32")),
                    |x| reference(x[0]),
                )?;
                assert!(v < 1e-6, "tanh {tanh} {shape:?}: values differ by {v:e}");
                assert!(g < 1e-5, "tanh {tanh} {shape:?}: dx differs by {g:e}");
                worst = (worst.0.max(v), worst.1.max(g));
            }
            // a transposed input is made contiguous first
            let x = seeded_randn((7, 5), 0.0, 2.0, 190, &Device::Cpu)?.t()?;
            assert!(!x.is_contiguous());
            let e = max_rel(&gelu(&x, tanh)?.expect("cpu f32"), &reference(&x)?)?;
            assert!(e < 1e-6, "tanh {tanh}: strided values differ by {e:e}");
            assert!(gelu(&x.to_dtype(DType::F64)?, tanh)?.is_none());
        }
        eprintln!("gelu: worst value {:e}, worst grad {:e}", worst.0, worst.1);
        Ok(())
    }

    #[test]
    fn silu_mul_matches_candles_in_values_and_gradients() -> Result<()> {
        let mut worst = (0f32, 0f32);
        for (i, shape) in SHAPES.into_iter().enumerate() {
            let seed = 200 + 10 * i as u64;
            let gate = var(shape, 0.0, 3.0, seed)?;
            let up = var(shape, 0.0, 1.0, seed + 1)?;
            let probe = seeded_randn(shape, 0.0, 1.0, seed + 2, &Device::Cpu)?;
            let (v, g) = compare(
                &[&gate, &up],
                &probe,
                |x| Ok(silu_mul(x[0], x[1])?.expect("cpu f32")),
                |x| x[0].silu()? * x[1],
            )?;
            assert!(v < 1e-6, "{shape:?}: values differ by {v:e}");
            assert!(g < 1e-5, "{shape:?}: gradients differ by {g:e}");
            worst = (worst.0.max(v), worst.1.max(g));
        }
        eprintln!(
            "silu_mul: worst value {:e}, worst grad {:e}",
            worst.0, worst.1
        );
        // strided operands, differentiable through the transpose
        let gate = var(&[6, 9], 0.0, 3.0, 290)?;
        let up = var(&[9, 6], 0.0, 1.0, 291)?;
        let probe = seeded_randn((6, 9), 0.0, 1.0, 292, &Device::Cpu)?;
        let (v, g) = compare(
            &[&gate, &up],
            &probe,
            |x| Ok(silu_mul(x[0], &x[1].t()?)?.expect("cpu f32")),
            |x| x[0].silu()? * x[1].t()?,
        )?;
        assert!(v < 1e-6 && g < 1e-5, "strided: {v:e} / {g:e}");
        // a constant operand gets no gradient
        let (a, b) = (gate.as_tensor(), up.as_tensor());
        let constant = b.t()?.contiguous()?.detach();
        let grads = silu_mul(a, &constant)?
            .expect("cpu f32")
            .sum_all()?
            .backward()?;
        assert!(grads.get(a).is_some() && grads.get(&constant).is_none());
        // shapes must agree; other dtypes are left to the caller
        assert!(silu_mul(a, b).is_err());
        assert!(silu_mul(&a.to_dtype(DType::BF16)?, &a.to_dtype(DType::BF16)?)?.is_none());
        Ok(())
    }

    #[test]
    fn softmax_matches_candles_in_values_and_gradients() -> Result<()> {
        let mut worst = (0f32, 0f32);
        for (i, shape) in SHAPES.into_iter().enumerate() {
            let seed = 300 + 10 * i as u64;
            let x = var(shape, 0.5, 3.0, seed)?;
            let probe = seeded_randn(shape, 0.0, 1.0, seed + 1, &Device::Cpu)?;
            let (v, g) = compare(
                &[&x],
                &probe,
                |x| Ok(softmax_last_dim(x[0])?.expect("cpu f32")),
                |x| candle_nn::ops::softmax(x[0], D::Minus1),
            )?;
            assert!(v < 1e-6, "{shape:?}: values differ by {v:e}");
            assert!(g < 1e-5, "{shape:?}: dx differs by {g:e}");
            worst = (worst.0.max(v), worst.1.max(g));
        }
        eprintln!(
            "softmax: worst value {:e}, worst grad {:e}",
            worst.0, worst.1
        );
        // a transposed input, and masked (-inf) entries as attention makes them
        let x = var(&[9, 6], 0.0, 2.0, 390)?;
        let mask = Tensor::from_iter(
            (0..54).map(|i| if i % 7 == 3 { f32::NEG_INFINITY } else { 0.0 }),
            &Device::Cpu,
        )?
        .reshape((6, 9))?;
        let probe = seeded_randn((6, 9), 0.0, 1.0, 391, &Device::Cpu)?;
        let (v, g) = compare(
            &[&x],
            &probe,
            |x| Ok(softmax_last_dim(&(x[0].t()? + &mask)?)?.expect("cpu f32")),
            |x| candle_nn::ops::softmax(&(x[0].t()? + &mask)?, D::Minus1),
        )?;
        assert!(v < 1e-6 && g < 1e-5, "strided, masked: {v:e} / {g:e}");
        let t = x.as_tensor();
        assert!(softmax_last_dim(&t.to_dtype(DType::F64)?)?.is_none());
        assert!(softmax_last_dim(&t.sum_all()?)?.is_none());
        Ok(())
    }

    /// Results do not depend on how rayon splits the work.
    #[test]
    fn results_do_not_depend_on_the_thread_count() -> Result<()> {
        let x = seeded_randn((37, 515), 0.0, 2.0, 400, &Device::Cpu)?;
        let run = |threads: usize| -> Result<Vec<Tensor>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            pool.install(|| {
                Ok(vec![
                    gelu(&x, false)?.expect("f32"),
                    gelu(&x, true)?.expect("f32"),
                    silu_mul(&x, &x.sin()?)?.expect("f32"),
                    softmax_last_dim(&x)?.expect("f32"),
                ])
            })
        };
        for (a, b) in run(1)?.iter().zip(run(3)?.iter()) {
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0);
        }
        Ok(())
    }
}
