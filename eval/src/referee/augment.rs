//! The training views of an image: flips, quarter turns and small shifts, none of which
//! changes its colour or shape.

use image::RgbImage;
use rand::Rng;

/// A training view of a square image: a random flip / quarter turn (with `flips`), then a
/// random shift of up to `max_shift` pixels each way onto the background colour.
pub(super) fn augment(img: &RgbImage, flips: bool, max_shift: u32, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let t: u8 = if flips && w == h {
        rng.gen_range(0..8)
    } else {
        0
    };
    let s = i64::from(max_shift);
    let (dx, dy) = if s > 0 {
        (rng.gen_range(-s..=s), rng.gen_range(-s..=s))
    } else {
        (0, 0)
    };
    if t == 0 && dx == 0 && dy == 0 {
        return img.clone();
    }
    let bg = background(img);
    let (wi, hi) = (i64::from(w), i64::from(h));
    RgbImage::from_fn(w, h, |x, y| {
        let (mut u, mut v) = (i64::from(x) - dx, i64::from(y) - dy);
        if u < 0 || v < 0 || u >= wi || v >= hi {
            return bg;
        }
        if t & 4 != 0 {
            std::mem::swap(&mut u, &mut v);
        }
        if t & 1 != 0 {
            u = wi - 1 - u;
        }
        if t & 2 != 0 {
            v = hi - 1 - v;
        }
        *img.get_pixel(u as u32, v as u32)
    })
}

/// The background colour: the commonest of the four corner pixels.
fn background(img: &RgbImage) -> image::Rgb<u8> {
    let (w, h) = img.dimensions();
    let corners =
        [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)].map(|(x, y)| *img.get_pixel(x, y));
    *corners
        .iter()
        .max_by_key(|c| corners.iter().filter(|d| d == c).count())
        .unwrap_or(&corners[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn augmentation_only_moves_pixels() {
        // an asymmetric image: every flip / quarter turn of it differs
        let img = RgbImage::from_fn(16, 16, |x, y| {
            if (2..6).contains(&x) && (3..12).contains(&y) || (x, y) == (9, 3) {
                Rgb([200, 10, 10])
            } else {
                Rgb([240, 240, 250])
            }
        });
        let sorted = |i: &RgbImage| {
            let mut p: Vec<[u8; 3]> = i.pixels().map(|p| p.0).collect();
            p.sort_unstable();
            p
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let a = augment(&img, true, 0, &mut rng);
            assert_eq!(
                sorted(&a),
                sorted(&img),
                "a flip or turn only permutes pixels"
            );
            seen.insert(a.into_raw());
        }
        assert_eq!(seen.len(), 8, "all 8 symmetries of the square are drawn");
        // a shift brings in background, never new colours, and keeps the shape whole here
        for _ in 0..16 {
            let a = augment(&img, false, 2, &mut rng);
            assert!(a
                .pixels()
                .all(|p| p.0 == [200, 10, 10] || p.0 == [240, 240, 250]));
            assert_eq!(
                a.pixels().filter(|p| p.0 == [200, 10, 10]).count(),
                img.pixels().filter(|p| p.0 == [200, 10, 10]).count()
            );
        }
        assert_eq!(augment(&img, false, 0, &mut rng), img);
    }
}
