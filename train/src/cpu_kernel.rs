//! What the fused CPU kernels (`fused_*`) share: which tensors they take, their operands as
//! slices, and (for their tests) how far two results are apart.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// Whether a fused kernel applies: f32 on the CPU (anything else is composed by the caller).
pub(crate) fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// A contiguous f32 operand as a slice.
pub(crate) fn f32_slice<'a>(what: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: f32 only")
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: contiguous inputs only")
    };
    Ok(&v[start..end])
}

/// The largest absolute difference of `a` from `b`, relative to `b`'s largest magnitude.
#[cfg(test)]
pub(crate) fn max_rel(a: &Tensor, b: &Tensor) -> Result<f32> {
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
}
