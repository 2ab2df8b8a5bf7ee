//! The one switch between fused inference kernels and differentiable training ops, for every
//! model of the workspace (the tokenizer's ViTs and the LM).
//!
//! candle's fused `softmax_last_dim`, `layer_norm`, `rms_norm` and `rope` kernels are fast but
//! cut their output from the autograd graph without an error (docs/GPU.md, section 4). Every
//! layer goes through these functions with the `train` flag of candle's `ModuleT` convention,
//! so the choice is made here and nowhere else: candle's fused kernels when `train` is false;
//! when it is true, this crate's fused differentiable kernels (`fused_*`: CPU f32) where they
//! apply and differentiable compositions of candle ops elsewhere.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, Module};

use crate::{frozen, fused_attn, fused_norm, fused_rope};

/// A linear layer over the last dimension, with the leading dimensions flattened into one for
/// the bias add too (candle's `Linear` flattens them for the matmul only): candle's broadcasting
/// add indexes every element through all its dimensions (on CUDA, a 64-bit division and modulo
/// per dimension), so `(B*N, out) + (out)` costs two of those where `(B, N, out) + (out)` costs
/// three. The same arithmetic either way, and differentiable; under frozen weights (none of them
/// tracked) only in the input, so the backward pass skips the weights' gradients
/// ([`crate::frozen`]).
pub fn linear(l: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let flat = |x: &Tensor| match frozen::linear(l, x)? {
        Some(y) => Ok(y),
        None => l.forward(x),
    };
    if dims.len() <= 1 {
        return l.forward(x);
    }
    if dims.len() == 2 {
        return flat(x);
    }
    let (lead, k) = dims.split_at(dims.len() - 1);
    let y = flat(&x.reshape(((), k[0]))?)?;
    let mut out = lead.to_vec();
    out.push(y.dim(1)?);
    y.reshape(out)
}

/// Scaled dot-product attention, `softmax(scale q kᵀ + mask) v`, for `q: (B, H, T, hd)` and
/// `k`, `v: (B, KV, S, hd)` with `KV` dividing `H` (grouped-query attention: query head `h`
/// reads kv head `h / (H / KV)`, without repeated copies of the keys), and an additive `mask`
/// of `T x S` elements (every row alike) or `B x T x S` (one per row), in
/// [`attention_dtype`]. Returns `(B, H, T, hd)`.
///
/// On CPU f32, inference and training alike, the fused kernel ([`crate::fused_attn`]: no
/// `(B, H, T, S)` tensor kept, the backward pass recomputing it); elsewhere the composition,
/// with the scores in [`attention_dtype`].
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    train: bool,
) -> Result<Tensor> {
    if let Some(y) = fused_attn::attention(q, k, v, mask, scale as f32)? {
        return Ok(y);
    }
    let (b, h, t, hd) = q.dims4()?;
    let (kv, s) = (k.dim(1)?, k.dim(2)?);
    if kv == 0 || h % kv != 0 {
        candle_core::bail!("attention: {h} query heads over {kv} kv heads")
    }
    // The query heads of one kv head stacked along the query axis: one batched matmul serves
    // them all (HF's `repeat_kv` without its copies). q scaled rather than the scores: (T, hd)
    // elements per head instead of (T, S).
    let groups = h / kv;
    let q = (q * scale)?.reshape((b, kv, groups * t, hd))?;
    let scores = q.matmul(&k.t()?)?.to_dtype(attention_dtype(&q, train))?;
    // The mask add with the (T, S) plane flattened, and the heads too when every row shares
    // one mask: candle's broadcasting add indexes each element through every dimension (on
    // CUDA, a 64-bit division and modulo per dimension).
    let scores = match mask {
        Some(m) if m.elem_count() == t * s => scores
            .reshape((b * h, t * s))?
            .broadcast_add(&m.reshape((1, t * s))?)?,
        Some(m) => scores
            .reshape((b, h, t * s))?
            .broadcast_add(&m.reshape((b, 1, t * s))?)?,
        None => scores,
    };
    let probs = softmax(&scores.reshape((b, h, t, s))?, train)?.to_dtype(v.dtype())?;
    probs
        .reshape((b, kv, groups * t, s))?
        .matmul(v)?
        .reshape((b, h, t, hd))
}

/// The dtype of attention's scores, mask and softmax for an input `x`: f32 on the CPU and for
/// training, `x`'s own for inference on a GPU, where candle's softmax kernel accumulates in f32
/// anyway and the scores come out of a bf16 matmul: there the up- and down-casts and the f32
/// mask add were a quarter of a prefill's kernel time (docs/PERFORMANCE.md).
pub fn attention_dtype(x: &Tensor, train: bool) -> DType {
    if train || x.device().is_cpu() {
        DType::F32
    } else {
        x.dtype()
    }
}

/// Softmax over the last dimension. The fused kernel needs a contiguous input; `contiguous`
/// on one that already is changes nothing (no copy). Training takes the differentiable fused
/// kernel on CPU f32 and the composition elsewhere.
pub fn softmax(x: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        match crate::fused_act::softmax_last_dim(x)? {
            Some(y) => Ok(y),
            None => candle_nn::ops::softmax(x, D::Minus1),
        }
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Layer norm over the last dimension with weight and bias.
pub fn layer_norm(x: &Tensor, ln: &LayerNorm, train: bool) -> Result<Tensor> {
    let bias = ln
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
    let eps = ln.eps() as f32;
    if train {
        match fused_norm::layer_norm(x, ln.weight(), bias, eps)? {
            Some(y) => Ok(y),
            None => candle_nn::ops::layer_norm_slow(x, ln.weight(), bias, eps),
        }
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

/// RMSNorm over the last dimension; both paths accumulate in f32 (as HF does).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, train: bool) -> Result<Tensor> {
    if train {
        match fused_norm::rms_norm(x, w, eps as f32)? {
            Some(y) => Ok(y),
            None => candle_nn::ops::rms_norm_slow(x, w, eps as f32),
        }
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
    }
}

/// Rotary embedding of `x: (B, H, T, hd)` in HF's rotate-half layout; `cos`/`sin` are
/// `(T, hd/2)` (one set of positions for all rows) or `(B, T, hd/2)` (per row).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, train: bool) -> Result<Tensor> {
    if !train {
        return candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin);
    }
    match fused_rope::rope(x, cos, sin)? {
        Some(y) => Ok(y),
        None => rope_composed(x, cos, sin),
    }
}

/// [`rope`]'s training path as a composition of differentiable candle ops (candle's
/// `rope_slow` takes only the 2-D form; this is the same arithmetic for both forms).
pub(crate) fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    let (cos, sin) = if cos.rank() == 3 {
        (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
    } else {
        (cos, sin)
    };
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// The mean softmax cross-entropy of `logits` `(N, V)` against class ids `targets` `(N)`
/// (u32, u8 or i64), the training loss: one fused kernel for f32 logits on the CPU
/// ([`crate::fused_loss`]), candle's composition (`candle_nn::loss::cross_entropy`) otherwise.
/// Both are differentiable in `logits`; an empty batch is an error on both paths.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match crate::fused_loss::cross_entropy(logits, targets)? {
        Some(loss) => Ok(loss),
        None => candle_nn::loss::cross_entropy(logits, targets),
    }
}

/// GELU, exact (erf, `tanh` false) or the tanh approximation: the fused differentiable kernel on
/// CPU f32 (bit-identical to candle's forward), candle's op elsewhere. Differentiable either
/// way, so inference and training share it.
pub fn gelu(x: &Tensor, tanh: bool) -> Result<Tensor> {
    match crate::fused_act::gelu(x, tanh)? {
        Some(y) => Ok(y),
        None if tanh => x.gelu(),
        None => x.gelu_erf(),
    }
}

/// `silu(gate) * up`, SwiGLU's element-wise part: the fused differentiable kernel on CPU f32
/// (bit-identical to the composition's forward), the composition elsewhere.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    match crate::fused_act::silu_mul(gate, up)? {
        Some(y) => Ok(y),
        None => gate.silu()? * up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn fused_and_differentiable_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((2, 5, 8), 0.0, 1.0, 4, &dev)?;
        let ln = LayerNorm::new(
            seeded_randn(8, 1.0, 0.2, 5, &dev)?,
            seeded_randn(8, 0.0, 0.2, 6, &dev)?,
            1e-6,
        );
        let diff = max_diff(&layer_norm(&x, &ln, true)?, &layer_norm(&x, &ln, false)?)?;
        assert!(diff < 1e-5, "layer norm paths differ by {diff}");
        let diff = max_diff(&softmax(&x, true)?, &softmax(&x, false)?)?;
        assert!(diff < 1e-6, "softmax paths differ by {diff}");
        let w = seeded_randn(8, 1.0, 0.2, 7, &dev)?;
        let diff = max_diff(
            &rms_norm(&x, &w, 1e-5, true)?,
            &rms_norm(&x, &w, 1e-5, false)?,
        )?;
        assert!(diff < 1e-5, "rms norm paths differ by {diff}");
        Ok(())
    }

    #[test]
    fn rope_paths_agree_for_shared_and_per_row_positions() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, t, hd) = (2, 3, 4, 8);
        let x = seeded_randn((b, h, t, hd), 0.0, 1.0, 9, &dev)?;
        let angles = seeded_randn((t, hd / 2), 0.0, 2.0, 10, &dev)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let diff = max_diff(&rope(&x, &cos, &sin, true)?, &rope(&x, &cos, &sin, false)?)?;
        assert!(diff < 1e-6, "rope paths differ by {diff}");
        let angles = seeded_randn((b, t, hd / 2), 0.0, 2.0, 11, &dev)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let diff = max_diff(&rope(&x, &cos, &sin, true)?, &rope(&x, &cos, &sin, false)?)?;
        assert!(diff < 1e-6, "per-row rope paths differ by {diff}");
        Ok(())
    }

    #[test]
    fn inference_softmax_takes_a_strided_input() -> Result<()> {
        let x = seeded_randn((4, 6), 0.0, 1.0, 12, &Device::Cpu)?.t()?;
        assert!(!x.is_contiguous());
        let diff = max_diff(&softmax(&x, false)?, &softmax(&x, true)?)?;
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
            let diff = max_diff(&a, &b)?;
            assert!(diff < 1e-6, "{shape:?}: differs by {diff}");
        }
        // a transposed (non-contiguous) input too
        let x = seeded_randn((8, 4), 0.0, 1.0, 4, &dev)?.t()?.unsqueeze(0)?;
        assert!(max_diff(&linear(&l, &x)?, &l.forward(&x)?)? < 1e-6);
        Ok(())
    }

    #[test]
    fn train_path_carries_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&seeded_randn((1, 1, 3, 4), 0.0, 1.0, 7, &dev)?)?;
        let ln = LayerNorm::new(
            Tensor::ones(4, DType::F32, &dev)?,
            Tensor::zeros(4, DType::F32, &dev)?,
            1e-6,
        );
        let rms_w = Var::from_tensor(&Tensor::ones(4, DType::F32, &dev)?)?;
        let angles = seeded_randn((3, 2), 0.0, 1.0, 13, &dev)?;
        let w = seeded_randn((1, 1, 3, 4), 0.0, 1.0, 8, &dev)?;
        let y = layer_norm(x.as_tensor(), &ln, true)?;
        let y = rms_norm(&y, rms_w.as_tensor(), 1e-5, true)?;
        let y = rope(&y, &angles.cos()?, &angles.sin()?, true)?;
        let y = softmax(&y, true)?;
        let grads = (y * w)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("rms weight", &rms_w)] {
            let g = grads.get(v.as_tensor()).expect("a gradient");
            let total = g.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(total > 0.0, "no gradient reaches {name}");
        }
        Ok(())
    }

    #[test]
    fn activations_agree_with_candles_on_fused_and_composed_paths() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = seeded_randn((3, 10), 0.0, 2.0, 14, &dev)?.to_dtype(dtype)?;
            let up = seeded_randn((3, 10), 0.0, 1.0, 15, &dev)?.to_dtype(dtype)?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
                (a - b)?
                    .abs()?
                    .max_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()
            };
            assert!(diff(&gelu(&x, false)?, &x.gelu_erf()?)? < 1e-6);
            assert!(diff(&gelu(&x, true)?, &x.gelu()?)? < 1e-6);
            assert!(diff(&silu_mul(&x, &up)?, &(x.silu()? * &up)?)? < 1e-6);
        }
        Ok(())
    }
}
