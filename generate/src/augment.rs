//! Caption-preserving augmentation of easy-VQA training images for text-to-image.
//!
//! An easy-VQA caption names a colour and a shape; where the shape sits is free. Moving the
//! shape on its solid background (and mirroring it left-right) keeps the caption true, so each
//! training image can stand for several: the text-to-image LM memorises 4,000 images otherwise
//! (more steps on them lower the training loss and generate worse).
//! Vertical flips are not used: they turn triangles upside down, which the data never shows.

use image::{Rgb, RgbImage};
use rand::Rng;

/// The smallest box `(x0, y0, x1, y1)` (inclusive) holding every pixel that differs from the
/// top-left pixel, which easy-VQA's solid backgrounds make the background colour. `None`: the
/// image is background only. Where the content covers the top-left pixel (2 of easy-VQA's 4,000
/// training images) the box spans the background instead, so [`random_placement`] does not move
/// such an image unless it mirrors it first (which frees the corner): a safe answer, and the one
/// the shipped model was trained with.
pub fn content_box(img: &RgbImage) -> Option<(u32, u32, u32, u32)> {
    let bg = *img.get_pixel(0, 0);
    let mut b: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in img.enumerate_pixels() {
        if *p != bg {
            b = Some(match b {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    b
}

/// `img` moved by `(dx, dy)` pixels, the uncovered area filled with `fill`.
pub(crate) fn translate(img: &RgbImage, dx: i64, dy: i64, fill: Rgb<u8>) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = (x as i64 - dx, y as i64 - dy);
        if (0..w as i64).contains(&sx) && (0..h as i64).contains(&sy) {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            fill
        }
    })
}

/// A copy of `img` with its content moved to a position drawn uniformly among those that keep
/// all of it inside the frame, mirrored left-right with probability one half. An image without
/// content is only (maybe) mirrored; see [`content_box`] for content on the top-left pixel.
pub fn random_placement(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let base = if rng.gen::<bool>() {
        image::imageops::flip_horizontal(img)
    } else {
        img.clone()
    };
    let Some((x0, y0, x1, y1)) = content_box(&base) else {
        return base;
    };
    let (w, h) = base.dimensions();
    let dx = rng.gen_range(-(x0 as i64)..=(w - 1 - x1) as i64);
    let dy = rng.gen_range(-(y0 as i64)..=(h - 1 - y1) as i64);
    let bg = *base.get_pixel(0, 0);
    translate(&base, dx, dy, bg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const BG: Rgb<u8> = Rgb([240, 235, 250]);
    const INK: Rgb<u8> = Rgb([200, 30, 30]);

    /// A 32x32 background with an L-shaped mark in the box (5, 7)-(12, 10): not symmetric,
    /// so a mirror is visible.
    fn mark() -> RgbImage {
        RgbImage::from_fn(32, 32, |x, y| {
            let bar = (5..=12).contains(&x) && (9..=10).contains(&y);
            let stem = (5..=6).contains(&x) && (7..=10).contains(&y);
            if bar || stem {
                INK
            } else {
                BG
            }
        })
    }

    fn ink_count(img: &RgbImage) -> usize {
        img.pixels().filter(|p| **p == INK).count()
    }

    /// The box of the mark's pixels, whatever the corner shows.
    fn ink_box(img: &RgbImage) -> (u32, u32, u32, u32) {
        img.enumerate_pixels()
            .filter(|(_, _, p)| **p == INK)
            .fold((u32::MAX, u32::MAX, 0, 0), |(x0, y0, x1, y1), (x, y, _)| {
                (x0.min(x), y0.min(y), x1.max(x), y1.max(y))
            })
    }

    #[test]
    fn content_box_bounds_the_mark_and_is_none_on_a_blank_image() {
        assert_eq!(content_box(&mark()), Some((5, 7, 12, 10)));
        assert_eq!(content_box(&RgbImage::from_pixel(8, 8, BG)), None);
    }

    #[test]
    fn translate_moves_the_box_and_fills_with_the_background() {
        let moved = translate(&mark(), 3, -7, BG);
        assert_eq!(content_box(&moved), Some((8, 0, 15, 3)));
        assert_eq!(ink_count(&moved), ink_count(&mark()));
        // moved far enough, the mark leaves the frame
        assert_eq!(content_box(&translate(&mark(), 40, 0, BG)), None);
    }

    #[test]
    fn random_placements_keep_the_whole_mark_and_vary() {
        let img = mark();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut boxes = std::collections::HashSet::new();
        let mut mirrored = 0;
        for _ in 0..200 {
            let out = random_placement(&img, &mut rng);
            assert_eq!(ink_count(&out), ink_count(&img), "the mark was cut");
            let (x0, y0, x1, y1) = ink_box(&out);
            assert_eq!((x1 - x0, y1 - y0), (7, 3), "the mark changed size");
            // the stem is at the left end unless the copy is mirrored
            if *out.get_pixel(x0, y0) != INK {
                mirrored += 1;
            }
            boxes.insert((x0, y0));
        }
        assert!(boxes.len() > 50, "only {} placements", boxes.len());
        assert!((60..140).contains(&mirrored), "{mirrored} of 200 mirrored");
    }

    #[test]
    fn content_on_the_corner_pixel_moves_only_when_mirrored() {
        let img = translate(&mark(), -5, -7, BG);
        assert_eq!(*img.get_pixel(0, 0), INK);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut kept, mut moved) = (0, 0);
        for _ in 0..40 {
            let out = random_placement(&img, &mut rng);
            assert_eq!(ink_count(&out), ink_count(&img), "the mark was cut");
            if out == img {
                kept += 1;
            } else {
                // mirrored: the stem is at the right end
                let (_, y0, x1, _) = ink_box(&out);
                assert_eq!(*out.get_pixel(x1, y0), INK);
                moved += 1;
            }
        }
        assert!(kept > 0 && moved > 0, "{kept} kept, {moved} moved");
    }

    #[test]
    fn a_fixed_seed_repeats() {
        let a = random_placement(&mark(), &mut ChaCha8Rng::seed_from_u64(9));
        let b = random_placement(&mark(), &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
    }
}
