//! The one switch between fused inference kernels and differentiable training ops.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` are fast but cut their output from the
//! autograd graph without an error (see `shared/gpu.md`). Every layer of this crate goes through
//! these functions with the `train` flag of candle's `ModuleT` convention, so the choice is
//! made here and nowhere else.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, Module};

/// A linear layer over the last dimension, with the leading dimensions flattened into one for
/// the bias add too (candle's `Linear` flattens them for the matmul only): candle's broadcasting
/// add indexes every element through all its dimensions (on CUDA, a 64-bit division and modulo
/// per dimension), so `(B*N, out) + (out)` costs two of those where `(B, N, out) + (out)` costs
/// three. The same arithmetic either way, and differentiable.
pub fn linear(l: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() <= 2 {
        return l.forward(x);
    }
    let (lead, k) = dims.split_at(dims.len() - 1);
    let y = l.forward(&x.reshape(((), k[0]))?)?;
    let mut out = lead.to_vec();
    out.push(y.dim(1)?);
    y.reshape(out)
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Layer norm over the last dimension with weight and bias.
pub fn layer_norm(x: &Tensor, ln: &LayerNorm, train: bool) -> Result<Tensor> {
    let bias = ln
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
    let eps = ln.eps() as f32;
    if train {
        candle_nn::ops::layer_norm_slow(x, ln.weight(), bias, eps)
    } else {
        let x = x.contiguous()?;
        // candle's CUDA kernel accumulates in f32 whatever the dtype; its CPU kernel accumulates
        // in the input dtype, so there bf16/f16 go through f32 (four more ops per norm).
        if matches!(x.dtype(), DType::F32 | DType::F64) || x.device().is_cuda() {
            candle_nn::ops::layer_norm(&x, ln.weight(), bias, eps)
        } else {
            let y = candle_nn::ops::layer_norm(
                &x.to_dtype(DType::F32)?,
                &ln.weight().to_dtype(DType::F32)?,
                &bias.to_dtype(DType::F32)?,
                eps,
            )?;
            y.to_dtype(x.dtype())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_differentiable_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((2, 5, 8), 0.0, 1.0, 4, &dev)?;
        let ln = LayerNorm::new(
            seeded_randn(8, 1.0, 0.2, 5, &dev)?,
            seeded_randn(8, 0.0, 0.2, 6, &dev)?,
            1e-6,
        );
        let a = layer_norm(&x, &ln, true)?;
        let b = layer_norm(&x, &ln, false)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "layer norm paths differ by {diff}");
        let a = softmax(&x, true)?;
        let b = softmax(&x, false)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "softmax paths differ by {diff}");
        Ok(())
    }

    #[test]
    fn flattened_linear_matches_candles_linear() -> Result<()> {
        let dev = Device::Cpu;
        let l = Linear::new(
            seeded_randn((5, 8), 0.0, 0.3, 1, &dev)?,
            Some(seeded_randn(5, 0.0, 0.3, 2, &dev)?),
        );
        for shape in [vec![3, 8], vec![2, 3, 8], vec![2, 2, 3, 8]] {
            let x = seeded_randn(shape.as_slice(), 0.0, 1.0, 3, &dev)?;
            let (a, b) = (linear(&l, &x)?, l.forward(&x)?);
            assert_eq!(a.dims(), b.dims());
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{shape:?}: differs by {diff}");
        }
        // a transposed (non-contiguous) input too
        let x = seeded_randn((8, 4), 0.0, 1.0, 4, &dev)?.t()?;
        let diff = (linear(&l, &x.unsqueeze(0)?)? - l.forward(&x.unsqueeze(0)?)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }

    #[test]
    fn train_path_carries_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&seeded_randn((3, 4), 0.0, 1.0, 7, &dev)?)?;
        let ln = LayerNorm::new(
            Tensor::ones(4, DType::F32, &dev)?,
            Tensor::zeros(4, DType::F32, &dev)?,
            1e-6,
        );
        let w = seeded_randn((3, 4), 0.0, 1.0, 8, &dev)?;
        let y = softmax(&layer_norm(x.as_tensor(), &ln, true)?, true)?;
        let loss = (y * w)?.sum_all()?;
        let grads = loss.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient of x");
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }
}
