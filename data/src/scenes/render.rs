//! Drawing scenes: easy-VQA's exact palette, 4x4 supersampled edges.

use image::{Rgb, RgbImage};

use super::{Object, Scene, SceneConfig, Shape};
use crate::easy_vqa::PALETTE;

/// Subsamples per pixel side for antialiasing.
const SS: u32 = 4;

/// Renders a scene at `cfg.size` pixels with `cfg`'s object sizes and background. Shape
/// interiors are exactly the palette colour (as in easy-VQA); only edge pixels are blended.
pub fn render(cfg: &SceneConfig, scene: &Scene) -> RgbImage {
    let mut img = RgbImage::from_pixel(cfg.size, cfg.size, Rgb(cfg.background));
    for obj in &scene.objects {
        draw(&mut img, cfg, obj);
    }
    img
}

fn draw(img: &mut RgbImage, cfg: &SceneConfig, obj: &Object) {
    let side = cfg.size as f32;
    let s = cfg.pixels(obj.size) as f32;
    let (cx, cy) = (obj.x * side, obj.y * side);
    let color = PALETTE.get(obj.color).copied().unwrap_or([0, 0, 0]);
    // Pixels the shape's box touches, clipped to the image.
    let clip = |v: f32| v.max(0.0).min(side) as u32;
    let (x0, x1) = (clip((cx - s / 2.0).floor()), clip((cx + s / 2.0).ceil()));
    let (y0, y1) = (clip((cy - s / 2.0).floor()), clip((cy + s / 2.0).ceil()));
    for y in y0..y1 {
        for x in x0..x1 {
            let mut hits = 0;
            for sy in 0..SS {
                for sx in 0..SS {
                    let px = x as f32 + (sx as f32 + 0.5) / SS as f32;
                    let py = y as f32 + (sy as f32 + 0.5) / SS as f32;
                    hits += u32::from(inside(obj.shape, px - cx, py - cy, s));
                }
            }
            if hits == 0 {
                continue;
            }
            let a = hits as f32 / (SS * SS) as f32;
            let p = img.get_pixel_mut(x, y);
            for c in 0..3 {
                p[c] = (p[c] as f32 * (1.0 - a) + color[c] as f32 * a).round() as u8;
            }
        }
    }
}

/// Whether offset (dx, dy) from the centre lies in the shape of side `s`. The triangle
/// points up, its base on the bottom of the box.
fn inside(shape: Shape, dx: f32, dy: f32, s: f32) -> bool {
    let h = s / 2.0;
    match shape {
        Shape::Circle => dx * dx + dy * dy <= h * h,
        Shape::Square => dx.abs() <= h && dy.abs() <= h,
        Shape::Triangle => dy.abs() <= h && dx.abs() <= (dy + h) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{generate, ObjSize};
    use super::*;
    use crate::easy_vqa::{infer_from_pixels, SHAPES};

    fn one(shape: Shape, color: usize) -> Scene {
        Scene {
            objects: vec![Object {
                shape,
                color,
                size: ObjSize::Large,
                x: 0.5,
                y: 0.5,
            }],
        }
    }

    #[test]
    fn single_shapes_read_back_like_easy_vqa() {
        // The easy-VQA pixel reader, which knows nothing of this renderer, recognises what
        // it drew: colours are exact and shapes have the right proportions.
        let cfg = SceneConfig::default();
        for color in 0..PALETTE.len() {
            for (shape, name) in Shape::ALL.iter().zip(["circle", "rectangle", "triangle"]) {
                let img = render(&cfg, &one(*shape, color));
                let (c, s) = infer_from_pixels(&img);
                assert_eq!(c, Some(color), "{shape}");
                assert_eq!(s.map(|s| SHAPES[s]), Some(name), "{shape} colour {color}");
            }
        }
    }

    #[test]
    fn sizes_and_background() {
        let cfg = SceneConfig::default();
        let img = render(&cfg, &one(Shape::Square, 2));
        assert_eq!(img.dimensions(), (64, 64));
        assert_eq!(*img.get_pixel(0, 0), Rgb([255; 3]));
        // A 20px square centred at 32: exactly pixels 22..42, all pure blue.
        let blue = img.pixels().filter(|p| p.0 == PALETTE[2]).count();
        assert_eq!(blue, 20 * 20);
        assert_eq!(
            render(&cfg, &Scene::default()),
            RgbImage::from_pixel(64, 64, Rgb([255; 3]))
        );
    }

    #[test]
    fn every_object_is_visible_in_its_colour() {
        let cfg = SceneConfig::default();
        for seed in 0..40 {
            let scene = generate(&cfg, seed);
            let img = render(&cfg, &scene);
            assert_eq!(img, render(&cfg, &scene));
            for obj in &scene.objects {
                let (x, y) = ((obj.x * 64.0) as u32, (obj.y * 64.0 + 2.0) as u32);
                assert_eq!(
                    img.get_pixel(x, y).0,
                    PALETTE[obj.color],
                    "seed {seed} {obj:?}"
                );
            }
        }
    }
}
