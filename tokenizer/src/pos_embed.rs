//! Position embeddings: fixed 2-D sin-cos tables, and bicubic resizing of a learned grid to
//! another grid size, reproducing PyTorch's `interpolate(mode="bicubic", align_corners=False)`
//! that the Hugging Face models use.
//!
//! Bicubic resizing is separable, so it is two small matmuls with fixed interpolation
//! matrices: exact, differentiable with respect to the learned table, and device-agnostic.

use candle_core::{Device, Result, Tensor};

/// MAE-style 2-D sin-cos table `(rows * cols, dim)`: the first half of the channels encodes the
/// row, the second half the column; each half is `[sin(pos * w), cos(pos * w)]` with
/// `w_i = 10000^(-i / (dim / 4))`.
pub(crate) fn sincos_2d(dim: usize, rows: usize, cols: usize, device: &Device) -> Result<Tensor> {
    if !dim.is_multiple_of(4) {
        candle_core::bail!("sin-cos position embedding needs a width divisible by 4, got {dim}");
    }
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut table = Vec::with_capacity(rows * cols * dim);
    for r in 0..rows {
        for c in 0..cols {
            for pos in [r as f64, c as f64] {
                table.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                table.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Tensor::from_vec(table, (rows * cols, dim), device)
}

/// How the source coordinate scale of a resize is chosen, after PyTorch's
/// `area_pixel_compute_scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeScale {
    /// `interpolate(size=...)`: scale = in / out.
    Size,
    /// `interpolate(scale_factor=f)`: scale = 1 / f (older HF DINOv2 passes
    /// `(out + 0.1) / in` to dodge a rounding bug).
    Factor(f64),
}

const CUBIC_A: f64 = -0.75;

fn cubic1(x: f64) -> f64 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f64) -> f64 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// The `(out, in)` matrix of 1-D bicubic resizing with `align_corners=False` and border
/// clamping, so that `resized = M @ signal`.
pub(crate) fn bicubic_matrix(input: usize, output: usize, scale: ResizeScale) -> Vec<f32> {
    let scale = match scale {
        ResizeScale::Size => input as f64 / output as f64,
        ResizeScale::Factor(f) if f > 0.0 => 1.0 / f,
        ResizeScale::Factor(_) => input as f64 / output as f64,
    };
    let mut m = vec![0f64; output * input];
    for o in 0..output {
        let src = scale * (o as f64 + 0.5) - 0.5;
        let base = src.floor();
        let t = src - base;
        let coeffs = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, c) in coeffs.iter().enumerate() {
            let idx = (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            m[o * input + idx] += c;
        }
    }
    m.into_iter().map(|v| v as f32).collect()
}

/// Resizes a grid of embeddings `(rows * cols, d)` laid out row-major to `(new_rows * new_cols, d)`.
pub(crate) fn resize_grid(
    grid: &Tensor,
    from: (usize, usize),
    to: (usize, usize),
    scale: (ResizeScale, ResizeScale),
) -> Result<Tensor> {
    if from == to {
        return Ok(grid.clone());
    }
    let (n, d) = grid.dims2()?;
    if n != from.0 * from.1 {
        candle_core::bail!("grid of {n} positions is not {}x{}", from.0, from.1);
    }
    let dev = grid.device();
    // Resample in f32 whatever the model's dtype, as HF does: bicubic in half precision
    // shifts the embeddings.
    let dtype = grid.dtype();
    let grid = grid.to_dtype(candle_core::DType::F32)?;
    let mh = Tensor::from_vec(bicubic_matrix(from.0, to.0, scale.0), (to.0, from.0), dev)?;
    let mw = Tensor::from_vec(bicubic_matrix(from.1, to.1, scale.1), (to.1, from.1), dev)?;
    // rows: (to.0, from.0) @ (from.0, from.1 * d)
    let rows = mh.matmul(&grid.reshape((from.0, from.1 * d))?)?;
    // columns: (to.0, to.1, from.1) @ (to.0, from.1, d)
    let rows = rows.reshape((to.0, from.1, d))?;
    let out = mw
        .unsqueeze(0)?
        .broadcast_as((to.0, to.1, from.1))?
        .contiguous()?
        .matmul(&rows)?;
    out.reshape((to.0 * to.1, d))?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_resize_is_identity() {
        let m = bicubic_matrix(5, 5, ResizeScale::Size);
        for o in 0..5 {
            for i in 0..5 {
                let want = if o == i { 1.0 } else { 0.0 };
                assert!((m[o * 5 + i] - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn rows_of_the_matrix_sum_to_one() {
        for (i, o) in [(4, 6), (37, 16), (16, 37), (3, 7)] {
            let m = bicubic_matrix(i, o, ResizeScale::Size);
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "row {r} of {i}->{o} sums to {s}");
            }
        }
    }

    #[test]
    fn constant_grid_stays_constant() -> Result<()> {
        let dev = Device::Cpu;
        let g = Tensor::ones((4 * 4, 3), candle_core::DType::F32, &dev)?;
        let r = resize_grid(&g, (4, 4), (6, 7), (ResizeScale::Size, ResizeScale::Size))?;
        assert_eq!(r.dims(), &[42, 3]);
        let err = (r - 1.0)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5);
        Ok(())
    }

    #[test]
    fn sincos_table_has_expected_values() -> Result<()> {
        let t = sincos_2d(8, 2, 3, &Device::Cpu)?.to_vec2::<f32>()?;
        // position (row 0, col 0): sin(0)=0, cos(0)=1 for both halves
        assert_eq!(t[0], vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // row 1, col 2: first omega is 1
        assert!((t[5][0] - 1f32.sin()).abs() < 1e-6);
        assert!((t[5][4] - 2f32.sin()).abs() < 1e-6);
        assert!(sincos_2d(6, 2, 2, &Device::Cpu).is_err());
        Ok(())
    }
}
