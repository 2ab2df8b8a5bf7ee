//! The referee's CPU convolutions as `im2col` + one matmul: the patch gather and its
//! adjoint, as candle custom ops.

use candle_core::Tensor;

/// The patches of a 3x3 convolution with padding 1: channels-last f32 `(B, H, W, C)` to
/// `(B, Ho, Wo, C * 9)`, column `c * 9 + ky * 3 + kx` (the order of a `(C_out, C, 3, 3)`
/// kernel flattened), so the convolution is one matmul. Its gradient is [`Col2Im3x3`].
pub(super) struct Im2Col3x3 {
    pub(super) stride: usize,
}

/// Output size of a 3x3 convolution with padding 1.
fn conv_out(size: usize, stride: usize) -> usize {
    (size + 2 - 3) / stride + 1
}

/// For output position `o` and tap `k`, the input position, if inside the image.
fn tap(o: usize, k: usize, stride: usize, size: usize) -> Option<usize> {
    (o * stride + k).checked_sub(1).filter(|&i| i < size)
}

/// Calls `f(o, i, t)` for every output position `o = oy * wo + ox` of a 3x3 convolution with
/// padding 1 and stride `s` over an `h x w` image and each of its taps `t = ky * 3 + kx` that
/// falls inside the image, at input position `i = iy * w + ix`; in that (row-major) order.
fn for_each_tap(h: usize, w: usize, s: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (conv_out(h, s), conv_out(w, s));
    for oy in 0..ho {
        for ox in 0..wo {
            for ky in 0..3 {
                let Some(iy) = tap(oy, ky, s, h) else {
                    continue;
                };
                for kx in 0..3 {
                    let Some(ix) = tap(ox, kx, s, w) else {
                        continue;
                    };
                    f(oy * wo + ox, iy * w + ix, ky * 3 + kx);
                }
            }
        }
    }
}

fn f32_contiguous<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous input only");
    };
    Ok(&data[start..end])
}

impl candle_core::CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "referee-im2col-3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let src = f32_contiguous(storage, layout, self.name())?;
        let (b, h, w, c) = layout.shape().dims4()?;
        let (ho, wo, s) = (
            conv_out(h, self.stride),
            conv_out(w, self.stride),
            self.stride,
        );
        let k = 9 * c;
        let mut dst = vec![0f32; b * ho * wo * k];
        for (n, out) in dst.chunks_mut(ho * wo * k).enumerate() {
            let img = &src[n * h * w * c..(n + 1) * h * w * c];
            for_each_tap(h, w, s, |o, i, t| {
                let row = &mut out[o * k..(o + 1) * k];
                for (ch, &v) in img[i * c..(i + 1) * c].iter().enumerate() {
                    row[ch * 9 + t] = v;
                }
            });
        }
        Ok((candle_core::CpuStorage::F32(dst), (b, ho, wo, k).into()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, h, w, _) = arg.dims4()?;
        let op = Col2Im3x3 {
            stride: self.stride,
            h,
            w,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// The adjoint of [`Im2Col3x3`]: sums each patch column back onto the pixel it came from.
struct Col2Im3x3 {
    stride: usize,
    h: usize,
    w: usize,
}

impl candle_core::CustomOp1 for Col2Im3x3 {
    fn name(&self) -> &'static str {
        "referee-col2im-3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let src = f32_contiguous(storage, layout, self.name())?;
        let (b, ho, wo, k) = layout.shape().dims4()?;
        let (h, w, s, c) = (self.h, self.w, self.stride, k / 9);
        if k % 9 != 0 || ho != conv_out(h, s) || wo != conv_out(w, s) {
            candle_core::bail!(
                "{}: shape {:?} does not fit {h}x{w}",
                self.name(),
                layout.shape()
            );
        }
        let mut dst = vec![0f32; b * h * w * c];
        for (n, img) in dst.chunks_mut(h * w * c).enumerate() {
            let cols = &src[n * ho * wo * k..(n + 1) * ho * wo * k];
            for_each_tap(h, w, s, |o, i, t| {
                let row = &cols[o * k..(o + 1) * k];
                for (ch, v) in img[i * c..(i + 1) * c].iter_mut().enumerate() {
                    *v += row[ch * 9 + t];
                }
            });
        }
        Ok((candle_core::CpuStorage::F32(dst), (b, h, w, c).into()))
    }
}
