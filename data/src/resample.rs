//! Resizing whose working memory follows its output, not its input's longest side.
//!
//! `image::imageops::resize` filters in two passes and keeps an `f32` RGBA intermediate of
//! *input width x output height* (16 bytes a pixel): a 16,777,216 x 1 image resized to 64x64
//! asks for 16 GiB. Ordinary inputs keep that exact path, so their results stay bit-identical
//! (the shipped model's figures depend on them); only an input wider than
//! [`MAX_DIRECT_WIDTH_RATIO`] times the output is first averaged down by whole-number factors
//! (a box filter, streamed row by row) and then resized the same way.

use image::imageops::{self, FilterType};
use image::RgbImage;

/// The widest input, in multiples of the output's width, that is resized directly: the
/// intermediate then holds at most this many times the output's pixels (16 MiB for a 64x64
/// output). 256 keeps every input up to 16,384 pixels wide on the direct path when the output
/// is 64 wide (the tokenizer), and up to 57,344 for DINOv2's 224.
pub(crate) const MAX_DIRECT_WIDTH_RATIO: u64 = 256;

/// After a box reduction, each side is at least this many times the output's (so the filter
/// still has room to work) and under twice that.
const REDUCE_GAP: u32 = 2;

/// Catmull-Rom resize of `img` to `w` x `h`; see the module documentation for its memory.
pub(crate) fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    match reduction(img.dimensions(), (w, h)) {
        None => imageops::resize(img, w, h, FilterType::CatmullRom),
        Some((fx, fy)) => imageops::resize(&box_reduce(img, fx, fy), w, h, FilterType::CatmullRom),
    }
}

/// The whole-number factors `(fx, fy)` to average the input down by first, or `None` when the
/// direct resize's intermediate (`in_w x out_h`) stays within [`MAX_DIRECT_WIDTH_RATIO`]
/// outputs. An axis already under twice the output's side is left alone.
pub(crate) fn reduction((iw, ih): (u32, u32), (ow, oh): (u32, u32)) -> Option<(u32, u32)> {
    if ow == 0 || oh == 0 || u64::from(iw) <= MAX_DIRECT_WIDTH_RATIO * u64::from(ow) {
        return None;
    }
    let factor = |i: u32, o: u32| (i / o.saturating_mul(REDUCE_GAP)).max(1);
    Some((factor(iw, ow), factor(ih, oh)))
}

/// Averages each `fx` x `fy` block of pixels into one (the last row and column of blocks may be
/// partial and are averaged over what they hold). Memory: the output plus one row of sums.
pub(crate) fn box_reduce(img: &RgbImage, fx: u32, fy: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (fx, fy) = (fx.max(1), fy.max(1));
    let (ow, oh) = (w.div_ceil(fx), h.div_ceil(fy));
    let (w, fx_us, ow_us) = (w as usize, fx as usize, ow as usize);
    let mut out = RgbImage::new(ow, oh);
    let mut sums = vec![0u64; ow_us * 3];
    let raw = img.as_raw();
    for oy in 0..oh {
        sums.iter_mut().for_each(|s| *s = 0);
        let (y0, y1) = (oy * fy, ((oy + 1) * fy).min(h));
        for y in y0..y1 {
            let row = &raw[y as usize * w * 3..(y as usize + 1) * w * 3];
            for (ox, sum) in sums.chunks_exact_mut(3).enumerate() {
                let x0 = ox * fx_us;
                let x1 = (x0 + fx_us).min(w);
                for px in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    sum[0] += u64::from(px[0]);
                    sum[1] += u64::from(px[1]);
                    sum[2] += u64::from(px[2]);
                }
            }
        }
        let rows = u64::from(y1 - y0);
        let out_row = &mut out.as_mut()[oy as usize * ow_us * 3..(oy as usize + 1) * ow_us * 3];
        for (ox, (sum, dst)) in sums
            .chunks_exact(3)
            .zip(out_row.chunks_exact_mut(3))
            .enumerate()
        {
            let cols = ((ox + 1) * fx_us).min(w) - ox * fx_us;
            let n = rows * cols as u64;
            for c in 0..3 {
                // Rounded average of bytes: always <= 255.
                dst[c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 + y * 3) as u8,
                ((y * 11) ^ x) as u8,
                ((x / 3 + y / 2) % 2 * 255) as u8,
            ])
        })
    }

    #[test]
    fn ordinary_sizes_take_the_library_path_bit_for_bit() {
        // Downscales, upscales, mixed, the tokenizer's 64 and DINOv2's 112 / 224, and inputs up
        // to the direct bound (256 x the output's width).
        for ((iw, ih), (ow, oh)) in [
            ((10, 10), (4, 3)),
            ((100, 80), (64, 64)),
            ((640, 480), (64, 64)),
            ((300, 200), (224, 224)),
            ((300, 200), (336, 224)),
            ((50, 40), (112, 112)),
            ((4096, 8), (64, 64)),
            ((16384, 3), (64, 64)),
            ((3, 5000), (64, 64)),
        ] {
            let img = pattern(iw, ih);
            assert_eq!(reduction((iw, ih), (ow, oh)), None, "{iw}x{ih}");
            assert!(
                resize(&img, ow, oh) == imageops::resize(&img, ow, oh, FilterType::CatmullRom),
                "{iw}x{ih} -> {ow}x{oh} differs from imageops::resize"
            );
        }
    }

    #[test]
    fn wide_inputs_are_reduced_first_and_bounded_by_the_output() {
        assert_eq!(reduction((16385, 1), (64, 64)), Some((128, 1)));
        assert_eq!(reduction((16_777_216, 1), (64, 64)), Some((131_072, 1)));
        assert_eq!(reduction((4_194_304, 4), (64, 64)), Some((32_768, 1)));
        assert_eq!(reduction((1 << 20, 1 << 12), (64, 64)), Some((8192, 32)));
        assert_eq!(reduction((1 << 20, 1), (0, 64)), None);
        // After the reduction, the direct path's intermediate and the reduced image are a few
        // outputs, whatever the input.
        for ((iw, ih), (ow, oh)) in [
            ((16_777_216, 1), (64, 64)),
            ((4_194_304, 4), (64, 64)),
            ((67_108_864, 1), (224, 224)),
            ((1 << 20, 1 << 12), (64, 64)),
            ((100_000, 3), (7, 5)),
        ] {
            let (fx, fy) = reduction((iw, ih), (ow, oh)).expect("reduced");
            let (rw, rh) = (u64::from(iw.div_ceil(fx)), u64::from(ih.div_ceil(fy)));
            let out = u64::from(ow) * u64::from(oh);
            assert!(rw < 4 * u64::from(ow) + 4, "{iw}x{ih}: {rw}");
            assert!(
                rw * u64::from(oh) <= 4 * out + 4 * u64::from(oh),
                "{iw}x{ih}"
            );
            assert!(rw * rh <= 16 * out + 16 * u64::from(ow + oh), "{iw}x{ih}");
            assert_eq!(reduction((rw as u32, rh as u32), (ow, oh)), None);
        }
    }

    #[test]
    fn box_reduce_averages_blocks_including_partial_ones() {
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([(x * 10) as u8, (y * 100) as u8, 7]));
        let r = box_reduce(&img, 2, 2);
        assert_eq!(r.dimensions(), (3, 2));
        // Block (0,0): x 0..2, y 0..2 -> mean x*10 = 5, mean y*100 = 50.
        assert_eq!(*r.get_pixel(0, 0), Rgb([5, 50, 7]));
        // Partial last column (x = 4 only) and row (y = 2 only).
        assert_eq!(*r.get_pixel(2, 0), Rgb([40, 50, 7]));
        assert_eq!(*r.get_pixel(2, 1), Rgb([40, 200, 7]));
        assert_eq!(box_reduce(&img, 1, 1), img);
    }

    #[test]
    fn a_huge_wide_image_resizes_in_output_sized_memory() {
        // 16,777,216 x 1: the direct path would ask for 16 GiB; the input itself is 48 MiB.
        let mut img = RgbImage::from_pixel(16_777_216, 1, Rgb([10, 20, 30]));
        img.put_pixel(0, 0, Rgb([255, 255, 255]));
        let out = resize(&img, 64, 64);
        assert_eq!(out.dimensions(), (64, 64));
        assert_eq!(*out.get_pixel(40, 40), Rgb([10, 20, 30]));
        let out = resize(&RgbImage::new(4_194_304, 4), 64, 64);
        assert!(out.pixels().all(|p| *p == Rgb([0, 0, 0])));
    }
}
