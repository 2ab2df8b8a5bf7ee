//! Reconstruction metrics on 8-bit RGB images, with the conventions of scikit-image so that
//! outside tools give the same numbers:
//!
//! - PSNR: `10 log10(255^2 / MSE)` over all pixels and channels (`peak_signal_noise_ratio`
//!   with `data_range=255`); identical images give `f64::INFINITY`.
//! - SSIM: Wang et al. (2004): Gaussian window sigma 1.5 truncated at 3.5 sigma (11 taps),
//!   `K1 = 0.01`, `K2 = 0.03`, population covariances, borders reflected (scipy `reflect`)
//!   and then cropped by the window radius before averaging, mean over channels.
//!   This is `structural_similarity(a, b, channel_axis=2, data_range=255,
//!   gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.

use image::RgbImage;

/// Peak signal-to-noise ratio in dB.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_same_size(a, b);
    let n = a.as_raw().len().max(1) as f64;
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let mse = se / n;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn assert_same_size(a: &RgbImage, b: &RgbImage) {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "metrics need images of the same size"
    );
}

const SIGMA: f64 = 1.5;
const RADIUS: usize = 5; // int(3.5 * 1.5 + 0.5)

fn gaussian_taps() -> [f64; 2 * RADIUS + 1] {
    let mut w = [0.0; 2 * RADIUS + 1];
    for (i, v) in w.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-0.5 * x * x / (SIGMA * SIGMA)).exp();
    }
    let s: f64 = w.iter().sum();
    w.map(|v| v / s)
}

/// scipy's `reflect` boundary: `d c b a | a b c d | d c b a`.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

/// Separable Gaussian filter of a `h x w` plane: along x, then along y.
fn blur(plane: &[f64], h: usize, w: usize, taps: &[f64]) -> Vec<f64> {
    let tmp = filter_axis(plane, h, w, taps, true);
    filter_axis(&tmp, h, w, taps, false)
}

/// One pass of the separable filter over a `h x w` plane, along x or along y: each sample
/// becomes the taps' weighted sum of its reflected neighbours on that axis.
fn filter_axis(plane: &[f64], h: usize, w: usize, taps: &[f64], along_x: bool) -> Vec<f64> {
    let r = RADIUS as isize;
    // the axis' length and the distance between its neighbouring samples in `plane`
    let (len, stride) = if along_x { (w, 1) } else { (h, w) };
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            // the sample's position on the axis, and where its line starts
            let (pos, start) = if along_x { (x, y * w) } else { (y, x) };
            out[y * w + x] = taps
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    t * plane[start + reflect(pos as isize + k as isize - r, len) * stride]
                })
                .sum();
        }
    }
    out
}

/// Structural similarity, mean over channels.
pub fn ssim(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_same_size(a, b);
    let (w, h) = (a.width() as usize, a.height() as usize);
    let taps = gaussian_taps();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let mut total = 0.0;
    for ch in 0..3 {
        let plane = |img: &RgbImage| -> Vec<f64> { img.pixels().map(|p| p.0[ch] as f64).collect() };
        let (x, y) = (plane(a), plane(b));
        let prod =
            |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
        let mx = blur(&x, h, w, &taps);
        let my = blur(&y, h, w, &taps);
        let mxx = blur(&prod(&x, &x), h, w, &taps);
        let myy = blur(&prod(&y, &y), h, w, &taps);
        let mxy = blur(&prod(&x, &y), h, w, &taps);
        let (mut sum, mut count) = (0.0, 0usize);
        for yy in RADIUS..h.saturating_sub(RADIUS) {
            for xx in RADIUS..w.saturating_sub(RADIUS) {
                let i = yy * w + xx;
                let (vx, vy, cxy) = (
                    mxx[i] - mx[i] * mx[i],
                    myy[i] - my[i] * my[i],
                    mxy[i] - mx[i] * my[i],
                );
                let num = (2.0 * mx[i] * my[i] + c1) * (2.0 * cxy + c2);
                let den = (mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2);
                sum += num / den;
                count += 1;
            }
        }
        total += sum / count.max(1) as f64;
    }
    total / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u32) -> RgbImage {
        RgbImage::from_fn(32, 24, |x, y| {
            let v = (x * 7 + y * 13 + seed * 31) % 256;
            image::Rgb([v as u8, ((v * 3) % 256) as u8, (255 - v) as u8])
        })
    }

    #[test]
    fn identical_images_are_perfect() {
        let a = pattern(1);
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_constant_offset() {
        let a = RgbImage::from_pixel(8, 8, image::Rgb([100, 100, 100]));
        let b = RgbImage::from_pixel(8, 8, image::Rgb([110, 110, 110]));
        let want = 10.0 * (255.0f64 * 255.0 / 100.0).log10();
        assert!((psnr(&a, &b) - want).abs() < 1e-12);
    }

    #[test]
    fn ssim_drops_with_distortion_and_is_symmetric() {
        let a = pattern(1);
        let b = pattern(2);
        let s = ssim(&a, &b);
        assert!(s < 0.9, "{s}");
        assert!((s - ssim(&b, &a)).abs() < 1e-12);
    }

    #[test]
    fn reflect_matches_scipy() {
        let idx: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
    }
}
