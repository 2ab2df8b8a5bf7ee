//! Attention of one new token per row against the KV cache, as one CPU kernel (f32).
//!
//! A cached decoding step asks each (row, kv head) for a `groups x head_dim` by
//! `head_dim x keys` product and its transpose twin: through candle's batched matmul that is one
//! gemm call per row and kv head, per layer and product (256 calls per step for 32 rows of the
//! default model), each too small for its packing and dispatch to pay, plus a mask add, a
//! softmax and their buffers. Here the scores, the masked softmax and the weighted sum of the
//! values run in one pass per (row, head), the rows in parallel. Inference only: no gradient.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `softmax(q k^T * scale + mask) v` for `q (B, H, 1, D)` and the cache's views
/// `k, v (B, KV, L, D)` (query head `h` reads kv head `h / (H / KV)`), `mask` `(B, L)` row-major
/// additive (0 or -inf), or none. Returns `(B, H, 1, D)`.
pub(crate) fn one_token(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<Vec<f32>>,
    scale: f32,
) -> Result<Tensor> {
    q.apply_op3_no_bwd(k, v, &OneToken { mask, scale })
}

/// Multiply-adds of the scores below which the heads run on the calling thread.
const PARALLEL_WORK: usize = 1 << 16;

struct OneToken {
    mask: Option<Vec<f32>>,
    scale: f32,
}

/// A tensor's f32 data with its 4-d strides, checked.
fn view<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<(&'a [f32], [usize; 4])> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("decode attention: {what} must be f32")
    };
    let st: [usize; 4] = l
        .stride()
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("decode attention: {what} must be 4-d")))?;
    if st[3] != 1 {
        candle_core::bail!("decode attention: {what}'s last dimension must be contiguous");
    }
    Ok((&data[l.start_offset()..], st))
}

/// Dot product with eight independent sums, so that it vectorises without fast-math.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl CustomOp3 for OneToken {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, t, d) = ql.shape().dims4()?;
        let (kb, kv, len, kd) = kl.shape().dims4()?;
        if t != 1 || kb != b || kd != d || vl.shape() != kl.shape() || kv == 0 || h % kv != 0 {
            candle_core::bail!(
                "decode attention: q {:?}, k {:?}, v {:?}",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        if let Some(m) = &self.mask {
            if m.len() != b * len {
                candle_core::bail!("decode attention: mask of {} for {b} x {len}", m.len());
            }
        }
        let (q, qst) = view(qs, ql, "q")?;
        let (k, kst) = view(ks, kl, "k")?;
        let (v, vst) = view(vs, vl, "v")?;
        let groups = h / kv;
        let mut out = vec![0f32; b * h * d];
        let head = |(i, o): (usize, &mut [f32])| {
            let (r, head) = (i / h, i % h);
            let g = head / groups;
            let qi = &q[r * qst[0] + head * qst[1]..][..d];
            let mut p: Vec<f32> = (0..len)
                .map(|j| {
                    let kj = &k[r * kst[0] + g * kst[1] + j * kst[2]..][..d];
                    let m = self.mask.as_ref().map_or(0.0, |m| m[r * len + j]);
                    dot(qi, kj) * self.scale + m
                })
                .collect();
            let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in &mut p {
                *x = (*x - max).exp();
                sum += *x;
            }
            for (j, pj) in p.iter().enumerate() {
                let w = pj / sum;
                let vj = &v[r * vst[0] + g * vst[1] + j * vst[2]..][..d];
                for (o, x) in o.iter_mut().zip(vj) {
                    *o += w * x;
                }
            }
        };
        // a fork costs more than a few heads' work (one row without guidance: 3 heads)
        if b * h * len * d < PARALLEL_WORK {
            out.chunks_mut(d).enumerate().for_each(head);
        } else {
            out.par_chunks_mut(d).enumerate().for_each(head);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, 1, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The same attention through candle's ops: repeat kv heads, matmul, mask, softmax, matmul.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
    ) -> Result<Tensor> {
        let (_, h, _, _) = q.dims4()?;
        let rep = |x: &Tensor| -> Result<Tensor> {
            let (b, kv, l, d) = x.dims4()?;
            x.unsqueeze(2)?
                .broadcast_as((b, kv, h / kv, l, d))?
                .reshape((b, h, l, d))
        };
        let (k, v) = (rep(k)?, rep(v)?);
        let s = (q.matmul(&k.t()?)? * scale)?;
        let s = match mask {
            Some(m) => s.broadcast_add(m)?,
            None => s,
        };
        candle_nn::ops::softmax(&s, D::Minus1)?.matmul(&v)
    }

    #[test]
    fn matches_candle_ops_on_cache_views_with_padding() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, kv, d, max_len, len) = (3, 6, 2, 20, 16, 11);
        let q = Tensor::randn(0f32, 1.0, (b, h, 1, d), &dev)?;
        // views into a larger preallocated cache, as the KV cache hands them out
        let kc = Tensor::randn(0f32, 1.0, (b, kv, max_len, d), &dev)?;
        let vc = Tensor::randn(0f32, 1.0, (b, kv, max_len, d), &dev)?;
        let (k, v) = (kc.narrow(2, 0, len)?, vc.narrow(2, 0, len)?);
        // row 1 left-padded by 3, row 2 by 5
        let pads = [0usize, 3, 5];
        let m: Vec<f32> = pads
            .iter()
            .flat_map(|&p| (0..len).map(move |j| if j < p { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(m.clone(), (b, 1, 1, len), &dev)?;
        let scale = 1.0 / (d as f64).sqrt();
        let got = one_token(&q, &k, &v, Some(m), scale as f32)?;
        let want = reference(&q, &k, &v, Some(&mask), scale)?;
        let diff = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max abs difference {diff}");
        let unmasked = one_token(&q, &k, &v, None, scale as f32)?;
        let diff = (unmasked - reference(&q, &k, &v, None, scale)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max abs difference {diff}");
        Ok(())
    }

    #[test]
    fn refuses_what_it_does_not_compute() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 2, 4), DType::F32, &dev)?; // two query positions
        let k = Tensor::zeros((1, 1, 3, 4), DType::F32, &dev)?;
        assert!(one_token(&q, &k, &k, None, 1.0).is_err());
        let q = Tensor::zeros((1, 2, 1, 4), DType::F32, &dev)?;
        assert!(one_token(&q, &k, &k, Some(vec![0.0; 2]), 1.0).is_err());
        assert!(one_token(&q.to_dtype(DType::BF16)?, &k, &k, None, 1.0).is_err());
        Ok(())
    }
}
