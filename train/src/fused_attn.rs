//! Scaled dot-product attention as one differentiable CPU kernel (f32), flash-attention style:
//! the forward pass keeps only the output and each query's log-sum-exp, and the backward pass
//! recomputes the probabilities from them, block by block of queries.
//!
//! The composition it replaces materialises, per layer, the scores, the masked scores and the
//! probabilities `(B, H, T, S)` and keeps them until the backward pass, and candle runs each
//! batched matmul as one gemm call per (row, head), each with its own packing and thread fork.
//! Here one task per (row, head) (forward) or (row, kv head) (backward) calls gemm single-threaded
//! on a query block, with a scratch of `block x S` scores per task: memory linear in the sequence.
//!
//! For a query block `Q`, keys `K`, values `V`, additive mask `M` and scale `c`:
//!
//! ```text
//! S = c Q Kᵀ + M      P = softmax(S)      O = P V      lse = log Σ_j exp S_j
//! dP = dO Vᵀ          D = rowsum(dO ∘ O)  dS = P ∘ (dP - D)
//! dQ = c dS K         dK += c dSᵀ Q       dV += Pᵀ dO
//! ```
//!
//! Grouped-query attention is native: query head `h` reads kv head `h / (H / KV)` (HF's
//! `repeat_kv`), and the backward task of one kv head sums over the query heads that share it.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu_kernel::{cpu_f32, f32_slice};

/// Queries per block: the scratch per task is two `BLOCK x S` score planes.
const BLOCK: usize = 64;

/// `softmax(scale q kᵀ + mask) v` for `q: (B, H, T, hd)`, `k`, `v: (B, KV, S, hd)` with `KV`
/// dividing `H`, and an additive `mask` of `T x S` (shared by every row) or `B x T x S`
/// elements (one per row; in any shape with those elements, e.g. `(1, 1, T, S)`): one kernel,
/// differentiable in `q`, `k` and `v` (the mask is a constant), f32 on the CPU; `None` for
/// anything else. A query whose keys are all masked gets a zero output (the composition: NaN).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> Result<Option<Tensor>> {
    if !(cpu_f32(q) && cpu_f32(k) && cpu_f32(v) && mask.is_none_or(cpu_f32)) {
        return Ok(None);
    }
    let (b, _, t, _) = q.dims4()?;
    let s = k.dim(2)?;
    let mask = match mask {
        None => None,
        Some(m) => {
            let per_row = match m.elem_count() {
                n if n == t * s => false,
                n if n == b * t * s => true,
                n => candle_core::bail!(
                    "fused attention: a mask of {n} elements for {b} rows of {t} x {s}"
                ),
            };
            Some((m.flatten_all()?.contiguous()?, per_row))
        }
    };
    let keep_lse = q.track_op() || k.track_op() || v.track_op();
    let op = Attention {
        scale,
        mask,
        lse: keep_lse.then(OnceLock::new),
    };
    let y = q
        .contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?;
    Ok(Some(y))
}

struct Attention {
    scale: f32,
    /// The flattened mask, and whether it has one `T x S` plane per row.
    mask: Option<(Tensor, bool)>,
    /// Each query's log-sum-exp `(B, H, T)`, written by the forward pass where a backward pass
    /// may follow.
    lse: Option<OnceLock<Vec<f32>>>,
}

/// The problem's sizes, checked once.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    h: usize,
    kv: usize,
    t: usize,
    s: usize,
    hd: usize,
}

impl Dims {
    fn new(q: &Layout, k: &Layout, v: &Layout) -> Result<Self> {
        let (b, h, t, hd) = q.shape().dims4()?;
        let (kb, kv, s, khd) = k.shape().dims4()?;
        if kb != b || khd != hd || v.dims() != k.dims() || kv == 0 || h % kv != 0 {
            candle_core::bail!(
                "fused attention: q {:?}, k {:?}, v {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            )
        }
        Ok(Self { b, h, kv, t, s, hd })
    }

    /// Query heads per kv head.
    fn groups(&self) -> usize {
        self.h / self.kv
    }
}

/// One storage's f32 slice, read under its lock.
fn with_slice<R>(what: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{what}: CPU tensors only")
    };
    f(f32_slice(what, cpu, layout)?)
}

impl Attention {
    /// Runs `f` with the flattened mask and whether it has a plane per row (`None`: no mask).
    fn with_mask<R>(&self, f: impl FnOnce(Option<(&[f32], bool)>) -> Result<R>) -> Result<R> {
        match &self.mask {
            None => f(None),
            Some((m, per_row)) => with_slice("fused attention mask", m, |m| f(Some((m, *per_row)))),
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let dims = Dims::new(l1, l2, l3)?;
        let (q, k, v) = (
            f32_slice(what, s1, l1)?,
            f32_slice(what, s2, l2)?,
            f32_slice(what, s3, l3)?,
        );
        let Dims { t, s, hd, .. } = dims;
        let mut o = vec![0f32; q.len()];
        let mut lse = vec![0f32; dims.b * dims.h * t];
        self.with_mask(|mask| {
            o.par_chunks_mut(t * hd)
                .zip(lse.par_chunks_mut(t))
                .enumerate()
                .for_each_init(
                    || vec![0f32; BLOCK * s],
                    |scores, (bh, (o, lse))| {
                        let (row, head) = (bh / dims.h, bh % dims.h);
                        let kv_at = (row * dims.kv + head / dims.groups()) * s * hd;
                        let head_q = &q[bh * t * hd..(bh + 1) * t * hd];
                        let (k, v) = (&k[kv_at..kv_at + s * hd], &v[kv_at..kv_at + s * hd]);
                        let mask = mask.map(|(m, per_row)| plane(m, per_row, row, t * s));
                        for i0 in (0..t).step_by(BLOCK) {
                            let n = BLOCK.min(t - i0);
                            let p = &mut scores[..n * s];
                            let q_blk = &head_q[i0 * hd..(i0 + n) * hd];
                            scaled_scores(p, q_blk, k, self.scale, mask, i0, dims);
                            softmax_rows(p, s, &mut lse[i0..i0 + n]);
                            // O = P V
                            gemm_f32(
                                &mut o[i0 * hd..(i0 + n) * hd],
                                hd,
                                false,
                                (n, hd, s),
                                MatRef::rows(p, s),
                                MatRef::rows(v, hd),
                                1.0,
                            );
                        }
                    },
                );
            Ok(())
        })?;
        if let Some(keep) = &self.lse {
            keep.set(lse)
                .map_err(|_| candle_core::Error::Msg(format!("{what}: run twice")))?;
        }
        Ok((CpuStorage::F32(o), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        d_o: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !(q.track_op() || k.track_op() || v.track_op()) {
            return Ok((None, None, None));
        }
        let what = "fused attention backward";
        let lse = self
            .lse
            .as_ref()
            .and_then(OnceLock::get)
            .ok_or_else(|| candle_core::Error::Msg(format!("{what}: no forward statistics")))?;
        let d_o = d_o.contiguous()?;
        let dims = Dims::new(q.layout(), k.layout(), v.layout())?;
        let (dq, dk, dv) = with_slice(what, q, |q| {
            with_slice(what, k, |k| {
                with_slice(what, v, |v| {
                    with_slice(what, o, |o| {
                        with_slice(what, &d_o, |d_o| {
                            self.with_mask(|mask| {
                                let io = Operands {
                                    q,
                                    k,
                                    v,
                                    o,
                                    d_o,
                                    lse,
                                };
                                Ok(self.backward(&io, mask, dims))
                            })
                        })
                    })
                })
            })
        })?;
        let dev = Device::Cpu;
        let grad = |t: &Tensor, g: Vec<f32>| -> Result<Option<Tensor>> {
            t.track_op()
                .then(|| Tensor::from_vec(g, t.shape(), &dev))
                .transpose()
        };
        Ok((grad(q, dq)?, grad(k, dk)?, grad(v, dv)?))
    }
}

/// The backward pass's inputs, as slices.
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    d_o: &'a [f32],
    lse: &'a [f32],
}

impl Attention {
    /// `(dq, dk, dv)`: one task per (row, kv head), which owns that kv head's `dk`, `dv` and
    /// its query heads' `dq`.
    fn backward(
        &self,
        io: &Operands,
        mask: Option<(&[f32], bool)>,
        dims: Dims,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims { t, s, hd, .. } = dims;
        let g = dims.groups();
        let mut dq = vec![0f32; io.q.len()];
        let mut dk = vec![0f32; io.k.len()];
        let mut dv = vec![0f32; io.v.len()];
        dq.par_chunks_mut(g * t * hd)
            .zip(dk.par_chunks_mut(s * hd))
            .zip(dv.par_chunks_mut(s * hd))
            .enumerate()
            .for_each_init(
                || {
                    (
                        vec![0f32; BLOCK * s],
                        vec![0f32; BLOCK * s],
                        vec![0f32; BLOCK],
                    )
                },
                |(p, ds, rowdot), (bg, ((dq, dk), dv))| {
                    let row = bg / dims.kv;
                    let kv_at = bg * s * hd;
                    let (k, v) = (&io.k[kv_at..kv_at + s * hd], &io.v[kv_at..kv_at + s * hd]);
                    let mask = mask.map(|(m, per_row)| plane(m, per_row, row, t * s));
                    for j in 0..g {
                        let bh = bg * g + j;
                        let head = bh * t * hd..(bh + 1) * t * hd;
                        let (q, o, d_o) = (&io.q[head.clone()], &io.o[head.clone()], &io.d_o[head]);
                        let dq = &mut dq[j * t * hd..(j + 1) * t * hd];
                        for i0 in (0..t).step_by(BLOCK) {
                            let n = BLOCK.min(t - i0);
                            let rows = i0 * hd..(i0 + n) * hd;
                            let (p, ds) = (&mut p[..n * s], &mut ds[..n * s]);
                            scaled_scores(p, &q[rows.clone()], k, self.scale, mask, i0, dims);
                            let lse = &io.lse[bh * t + i0..bh * t + i0 + n];
                            for (p, &lse) in p.chunks_mut(s).zip(lse) {
                                p.iter_mut().for_each(|x| *x = (*x - lse).exp());
                            }
                            // dP = dO Vᵀ
                            let d_o = &d_o[rows.clone()];
                            let vt = MatRef::cols(v, hd);
                            gemm_f32(ds, s, false, (n, s, hd), MatRef::rows(d_o, hd), vt, 1.0);
                            let o = &o[rows.clone()];
                            for (r, d) in rowdot[..n].iter_mut().enumerate() {
                                let at = r * hd..(r + 1) * hd;
                                *d = dot(&d_o[at.clone()], &o[at]);
                            }
                            // dS = P ∘ (dP - D)
                            for ((ds, p), &d) in ds.chunks_mut(s).zip(p.chunks(s)).zip(&*rowdot) {
                                ds.iter_mut().zip(p).for_each(|(x, p)| *x = p * (*x - d));
                            }
                            let (ds, p) = (&*ds, &*p);
                            let c = self.scale;
                            let (dsm, q_blk) =
                                (MatRef::rows(ds, s), MatRef::rows(&q[rows.clone()], hd));
                            // dQ = c dS K; dK += c dSᵀ Q; dV += Pᵀ dO
                            gemm_f32(
                                &mut dq[rows],
                                hd,
                                false,
                                (n, hd, s),
                                dsm,
                                MatRef::rows(k, hd),
                                c,
                            );
                            gemm_f32(dk, hd, true, (s, hd, n), MatRef::cols(ds, s), q_blk, c);
                            let d_o = MatRef::rows(d_o, hd);
                            gemm_f32(dv, hd, true, (s, hd, n), MatRef::cols(p, s), d_o, 1.0);
                        }
                    }
                },
            );
        (dq, dk, dv)
    }
}

/// Row `row`'s `T x S` mask plane.
fn plane(m: &[f32], per_row: bool, row: usize, len: usize) -> &[f32] {
    let at = if per_row { row * len } else { 0 };
    &m[at..at + len]
}

/// `out = scale q_blk kᵀ (+ the mask's rows i0..)`, `n x S` for the block's `n` queries.
fn scaled_scores(
    out: &mut [f32],
    q_blk: &[f32],
    k: &[f32],
    scale: f32,
    mask: Option<&[f32]>,
    i0: usize,
    dims: Dims,
) {
    let (s, hd) = (dims.s, dims.hd);
    let n = out.len() / s;
    gemm_f32(
        out,
        s,
        false,
        (n, s, hd),
        MatRef::rows(q_blk, hd),
        MatRef::cols(k, hd),
        scale,
    );
    if let Some(m) = mask {
        let m = &m[i0 * s..(i0 + n) * s];
        out.iter_mut().zip(m).for_each(|(x, m)| *x += m);
    }
}

/// Each row of `p` (rows of `s`) replaced by its softmax, its log-sum-exp written to `lse`; a
/// row with every score `-inf` becomes zeros, its log-sum-exp `+inf` (so the backward pass's
/// `exp(score - lse)` is zero too).
fn softmax_rows(p: &mut [f32], s: usize, lse: &mut [f32]) {
    for (row, lse) in p.chunks_mut(s).zip(lse) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            *lse = f32::INFINITY;
            continue;
        }
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
        *lse = max + sum.ln();
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// A matrix read from a slice: element `(r, c)` at `r * rs + c * cs`.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major with rows of `width`.
    fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: width,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `width`.
    fn cols(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: width,
        }
    }

    /// Whether an `r x c` matrix fits in the slice.
    fn holds(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// `dst (m x n, row-major with rows of dst_width) = [dst +] scale lhs (m x k) rhs (k x n)` on
/// the calling thread (the tasks are the parallelism).
fn gemm_f32(
    dst: &mut [f32],
    dst_width: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: MatRef,
    rhs: MatRef,
    scale: f32,
) {
    let dst_fits = m == 0 || n == 0 || (m - 1) * dst_width + n <= dst.len();
    assert!(
        dst_fits && n <= dst_width && lhs.holds(m, k) && rhs.holds(k, n),
        "fused attention: a {m}x{k} by {k}x{n} product out of its buffers"
    );
    // SAFETY: the assertion above keeps every element gemm reads and writes inside the slices,
    // and `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_width as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests;
