//! Calibration of the model card's image check ([`vqrae_unified::fidelity`]): the
//! reconstruction PSNR through a tokenizer of held-out images the model knows (easy-VQA test
//! images, held-out procedural scenes) and of images it does not (greyscale copies, noise,
//! textured gradients, fractal "photos", checkerboards, the repository's rendered charts and
//! sample montages, crops of a sample sheet), per group, and the threshold that the held-out
//! in-distribution images alone choose. `eval/examples/image_ood.rs` runs it on the shipped
//! model and writes `docs/results/lm/image-ood.json`.

use std::path::Path;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use vqrae_data::easy_vqa::COLORS;
use vqrae_data::easy_vqa::{load_split, Split};
use vqrae_data::image_io::{load_rgb, resize};
use vqrae_data::scenes::{SceneConfig, SceneDataset, Shape};
use vqrae_tokenizer::Vqrae;
use vqrae_unified::fidelity::{reconstruction_psnr, summarize, PsnrSummary};

use crate::error::{EvalError, Result};

/// Images of one kind.
pub struct Group {
    /// A short name (the report's key).
    pub name: &'static str,
    pub what: String,
    /// Held-out images of what the model answers questions about: only these choose the
    /// threshold (easy-VQA's test images).
    pub in_distribution: bool,
    pub images: Vec<RgbImage>,
}

/// One group's measured distribution, and how much of it the threshold refuses.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub what: String,
    pub in_distribution: bool,
    pub psnr: PsnrSummary,
    /// Fraction of the group below the threshold (refused).
    pub refused: f64,
}

/// The calibration: the threshold, the rule that chose it, and every group's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    pub threshold: f64,
    pub rule: String,
    pub groups: Vec<GroupReport>,
}

/// The threshold the in-distribution groups choose: the lowest of their 0.5th percentiles,
/// less `margin` dB, rounded down to a multiple of 0.5 dB.
pub fn threshold_of(in_distribution: &[PsnrSummary], margin: f64) -> Option<f64> {
    let low = in_distribution
        .iter()
        .map(|s| s.p0_5)
        .min_by(f64::total_cmp)?;
    Some(((low - margin) * 2.0).floor() / 2.0)
}

/// Measures every group through `tokenizer`; the threshold comes from the in-distribution
/// groups only ([`threshold_of`]).
pub fn calibrate(tokenizer: &Vqrae, groups: &[Group], margin: f64) -> Result<Calibration> {
    let mut measured = Vec::with_capacity(groups.len());
    for g in groups {
        let psnr = reconstruction_psnr(tokenizer, &g.images)?;
        let summary = summarize(&psnr)
            .ok_or_else(|| EvalError::Config(format!("group {:?} has no images", g.name)))?;
        measured.push((psnr, summary));
    }
    let held_out: Vec<PsnrSummary> = groups
        .iter()
        .zip(&measured)
        .filter(|(g, _)| g.in_distribution)
        .map(|(_, (_, s))| s.clone())
        .collect();
    let threshold = threshold_of(&held_out, margin)
        .ok_or_else(|| EvalError::Config("no in-distribution group".into()))?;
    let reports = groups
        .iter()
        .zip(measured)
        .map(|(g, (psnr, summary))| GroupReport {
            name: g.name.to_string(),
            what: g.what.clone(),
            in_distribution: g.in_distribution,
            refused: psnr.iter().filter(|&&p| p < threshold).count() as f64 / psnr.len() as f64,
            psnr: summary,
        })
        .collect();
    Ok(Calibration {
        threshold,
        rule: format!(
            "the lowest 0.5th percentile of the in-distribution groups, less {margin} dB, \
             rounded down to 0.5 dB"
        ),
        groups: reports,
    })
}

/// Luma (ITU-R 601) in all three channels.
pub fn greyscale(img: &RgbImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b] = img.get_pixel(x, y).0;
        let l = (0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64).round() as u8;
        Rgb([l, l, l])
    })
}

/// Uniform noise, every channel of every pixel.
pub fn noise(rng: &mut impl Rng, size: u32) -> RgbImage {
    RgbImage::from_fn(size, size, |_, _| Rgb([rng.gen(), rng.gen(), rng.gen()]))
}

/// Value noise: random values on a `cells` x `cells` lattice, bilinear between them, in [0, 1].
fn value_noise(rng: &mut impl Rng, size: u32, cells: usize) -> Vec<f64> {
    let lattice: Vec<f64> = (0..(cells + 1) * (cells + 1)).map(|_| rng.gen()).collect();
    let at = |i: usize, j: usize| lattice[i * (cells + 1) + j];
    let mut out = Vec::with_capacity((size * size) as usize);
    for y in 0..size {
        for x in 0..size {
            let fy = y as f64 / size as f64 * cells as f64;
            let fx = x as f64 / size as f64 * cells as f64;
            let (i, j) = (fy as usize, fx as usize);
            let (ty, tx) = (fy - i as f64, fx - j as f64);
            let top = at(i, j) * (1.0 - tx) + at(i, j + 1) * tx;
            let bottom = at(i + 1, j) * (1.0 - tx) + at(i + 1, j + 1) * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// Fractal (fBm) noise of five octaves, normalised to [0, 1]: clouds, terrain, foliage.
fn fractal(rng: &mut impl Rng, size: u32) -> Vec<f64> {
    let mut sum = vec![0.0; (size * size) as usize];
    for octave in 0..5 {
        let amp = 0.5f64.powi(octave);
        let layer = value_noise(rng, size, 2 << octave);
        for (s, v) in sum.iter_mut().zip(layer) {
            *s += amp * v;
        }
    }
    let (lo, hi) = sum
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    sum.iter().map(|v| (v - lo) / (hi - lo).max(1e-9)).collect()
}

/// A photo-like image: three fractal fields as its colour channels, or one as grey.
pub fn fractal_photo(rng: &mut impl Rng, size: u32, grey: bool) -> RgbImage {
    let channels: Vec<Vec<f64>> = if grey {
        vec![fractal(rng, size); 3]
    } else {
        (0..3).map(|_| fractal(rng, size)).collect()
    };
    RgbImage::from_fn(size, size, |x, y| {
        let i = (y * size + x) as usize;
        Rgb(std::array::from_fn(|c| (channels[c][i] * 255.0) as u8))
    })
}

/// A smooth two-colour gradient with a fine random texture on it (a wall, a sky).
pub fn textured_gradient(rng: &mut impl Rng, size: u32) -> RgbImage {
    let (a, b): ([f64; 3], [f64; 3]) = (
        std::array::from_fn(|_| rng.gen_range(0.0..255.0)),
        std::array::from_fn(|_| rng.gen_range(0.0..255.0)),
    );
    let angle: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
    let amp: f64 = rng.gen_range(5.0..30.0);
    RgbImage::from_fn(size, size, |x, y| {
        let t = ((x as f64 * angle.cos() + y as f64 * angle.sin()) / size as f64 * 0.7 + 0.5)
            .clamp(0.0, 1.0);
        let n: f64 = rng.gen_range(-amp..amp);
        Rgb(std::array::from_fn(|c| {
            (a[c] * (1.0 - t) + b[c] * t + n).clamp(0.0, 255.0) as u8
        }))
    })
}

/// A checkerboard of two colours with squares of `period` pixels.
pub fn checkerboard(size: u32, period: u32, a: [u8; 3], b: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        if (x / period + y / period).is_multiple_of(2) {
            Rgb(a)
        } else {
            Rgb(b)
        }
    })
}

/// The `w` x `h` crop at (`x`, `y`), clamped to the image.
fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    let (x, y) = (x.min(img.width() - 1), y.min(img.height() - 1));
    let (w, h) = (w.min(img.width() - x), h.min(img.height() - y));
    image::imageops::crop_imm(img, x, y, w, h).to_image()
}

/// Sample sheet geometry (`docs/results/lm/samples-cfg2.png`): 8 x 6 cells of 128 pixels, 4
/// apart.
const SHEET_CELL: u32 = 128;
const SHEET_PAD: u32 = 4;

/// Crops of a sample sheet of generated images: single cells (one shape each: images the
/// model knows, drawn by it), blocks of 2x2 cells (several shapes), and random crops of 24 to
/// 600 pixels (up- and downscaled to 64).
fn sheet_crops(sheet: &RgbImage, rng: &mut impl Rng) -> (Vec<RgbImage>, Vec<RgbImage>) {
    let cell = |c: u32| SHEET_PAD + c * (SHEET_CELL + SHEET_PAD);
    let (cols, rows) = (
        sheet.width() / (SHEET_CELL + SHEET_PAD),
        sheet.height() / (SHEET_CELL + SHEET_PAD),
    );
    let mut cells = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            cells.push(crop(sheet, cell(c), cell(r), SHEET_CELL, SHEET_CELL));
        }
    }
    let mut other = Vec::new();
    for r in 0..rows.saturating_sub(1) {
        for c in (0..cols.saturating_sub(1)).step_by(2) {
            let side = 2 * SHEET_CELL + SHEET_PAD;
            other.push(crop(sheet, cell(c), cell(r), side, side));
        }
    }
    for _ in 0..60 {
        let side = rng.gen_range(24..600u32);
        let x = rng.gen_range(0..sheet.width().saturating_sub(side).max(1));
        let y = rng.gen_range(0..sheet.height().saturating_sub(side).max(1));
        other.push(crop(sheet, x, y, side, side));
    }
    (cells, other)
}

/// The PNGs under `dir`, recursively, sorted, split into charts (training curves and scaling
/// plots: file names with "curves" or "-vs-") and the rest (montages of images).
fn repository_pngs(dir: &Path) -> Result<(Vec<RgbImage>, Vec<RgbImage>)> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(EvalError::io(&d))? {
            let p = entry.map_err(EvalError::io(&d))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "png") {
                paths.push(p);
            }
        }
    }
    paths.sort();
    let (mut charts, mut montages) = (Vec::new(), Vec::new());
    for p in paths {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        let img = load_rgb(&p)?;
        if name.is_some_and(|n| n.contains("curves") || n.contains("-vs-")) {
            charts.push(img);
        } else {
            montages.push(img);
        }
    }
    Ok((charts, montages))
}

/// A group of images outside what the model knows.
fn ood(name: &'static str, what: &str, images: Vec<RgbImage>) -> Group {
    Group {
        name,
        what: what.to_string(),
        in_distribution: false,
        images,
    }
}

/// Generated images nothing like easy-VQA: `k` of each kind from `rng`, and checkerboards.
fn synthetic(rng: &mut ChaCha8Rng, k: usize) -> Vec<Group> {
    let mut make = |f: &dyn Fn(&mut ChaCha8Rng) -> RgbImage| -> Vec<RgbImage> {
        (0..k).map(|_| f(rng)).collect()
    };
    let noise64 = make(&|r| noise(r, 64));
    let noise256 = make(&|r| noise(r, 256));
    let gradients = make(&|r| textured_gradient(r, 128));
    let photos = make(&|r| fractal_photo(r, 128, false));
    let grey_photos = make(&|r| fractal_photo(r, 128, true));
    let boards: Vec<RgbImage> = [2u32, 4, 8, 16, 32]
        .iter()
        .flat_map(|&p| {
            [
                checkerboard(64, p, [0, 0, 0], [255, 255, 255]),
                checkerboard(64, p, [255, 0, 0], [0, 0, 255]),
                checkerboard(128, p, [40, 160, 40], [250, 250, 250]),
            ]
        })
        .collect();
    vec![
        ood("noise-64", "uniform RGB noise, 64x64", noise64),
        ood(
            "noise-256",
            "uniform RGB noise, 256x256 (resized to 64)",
            noise256,
        ),
        ood(
            "textured-gradients",
            "two-colour gradients with fine random texture, 128x128",
            gradients,
        ),
        ood(
            "fractal-photos",
            "fractal colour 'photos' (fBm clouds/terrain), 128x128",
            photos,
        ),
        ood(
            "greyscale-fractal-photos",
            "the same in greyscale",
            grey_photos,
        ),
        ood(
            "checkerboards",
            "checkerboards, 5 periods x 3 colour pairs",
            boards,
        ),
    ]
}

/// One shape of any easy-VQA colour on pure white, drawn by the scene renderer: what a client
/// draws by hand to try the model.
fn shapes_on_white(k: usize, seed: u64) -> Vec<RgbImage> {
    let cfg = SceneConfig {
        min_objects: 1,
        max_objects: 1,
        colors: COLORS.map(String::from).to_vec(),
        shapes: vec![Shape::Circle, Shape::Square, Shape::Triangle],
        small: 16,
        large: 32,
        ..SceneConfig::default()
    };
    let white = SceneDataset::new(cfg, k, seed);
    (0..white.len()).filter_map(|i| white.image(i)).collect()
}

/// The calibration groups: `n` easy-VQA test images (from `data_root`) and held-out scenes,
/// and the out-of-distribution images (from `seed`; the repository's PNGs from `results`,
/// its sample sheet `results/lm/samples-cfg2.png`).
pub fn groups(data_root: &Path, results: &Path, n: usize, seed: u64) -> Result<Vec<Group>> {
    let test = load_split(data_root, Split::Test)?;
    let easy: Vec<RgbImage> = test
        .images
        .iter()
        .take(n)
        .map(|i| load_rgb(&i.path))
        .collect::<std::result::Result<_, _>>()?;
    let scenes = SceneDataset::split(Split::Test, n);
    let scene_images: Vec<RgbImage> = (0..scenes.len()).filter_map(|i| scenes.image(i)).collect();
    let k = (n / 10).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let generated = synthetic(&mut rng, k);
    let (charts, montages) = repository_pngs(results)?;
    let sheet = load_rgb(&results.join("lm/samples-cfg2.png"))?;
    let (cells, crops) = sheet_crops(&sheet, &mut rng);
    let grey_easy: Vec<RgbImage> = easy.iter().map(greyscale).collect();
    let small_easy: Vec<RgbImage> = easy.iter().take(k).map(|i| resize(i, 32, 32)).collect();
    let mut out = vec![
        Group {
            name: "easy-vqa-test",
            what: "easy-VQA test images (held out)".into(),
            in_distribution: true,
            images: easy,
        },
        ood(
            "scenes-test",
            "procedural test scenes (held out; the model draws scenes but was never asked about \
             one, so they do not choose the threshold)",
            scene_images,
        ),
        ood(
            "one-shape-on-white",
            "one shape of an easy-VQA colour on pure white (16 or 32 px; the scene renderer)",
            shapes_on_white(k, seed),
        ),
        ood(
            "sample-cells",
            "single cells of the model's own sample sheet (one generated shape each)",
            cells,
        ),
        ood(
            "greyscale-easy-vqa",
            "easy-VQA test images in greyscale",
            grey_easy,
        ),
        ood(
            "easy-vqa-32px",
            "easy-VQA test images shrunk to 32x32 (upscaled back by the tokenizer)",
            small_easy,
        ),
    ];
    out.extend(generated);
    out.extend([
        ood(
            "charts",
            "the repository's rendered plots (docs/results/**/*curves*.png, *-vs-*.png)",
            charts,
        ),
        ood(
            "montages",
            "the repository's sample grids and reconstruction sheets (many images in one)",
            montages,
        ),
        ood(
            "sheet-crops",
            "2x2-cell blocks and random 24-600 px crops of samples-cfg2.png",
            crops,
        ),
    ]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_comes_from_the_lowest_held_out_percentile() {
        let a = summarize(
            &(0..1000)
                .map(|i| 20.0 + i as f64 / 100.0)
                .collect::<Vec<_>>(),
        );
        let b = summarize(
            &(0..1000)
                .map(|i| 25.0 + i as f64 / 100.0)
                .collect::<Vec<_>>(),
        );
        let (a, b) = (a.expect("a"), b.expect("b"));
        // a's 0.5th percentile is 20.04995: less 1 dB, rounded down to 0.5 dB
        assert_eq!(threshold_of(&[b.clone(), a], 1.0), Some(19.0));
        assert_eq!(threshold_of(&[b], 0.0), Some(25.0));
        assert_eq!(threshold_of(&[], 1.0), None);
    }

    #[test]
    fn generators_are_deterministic_and_what_they_say() {
        let mut r1 = ChaCha8Rng::seed_from_u64(1);
        let mut r2 = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            fractal_photo(&mut r1, 32, false),
            fractal_photo(&mut r2, 32, false)
        );
        let g = fractal_photo(&mut r1, 32, true);
        assert!(g.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        let grey = greyscale(&noise(&mut r1, 8));
        assert!(grey.pixels().all(|p| p.0[0] == p.0[2]));
        let board = checkerboard(8, 2, [0; 3], [255; 3]);
        assert_eq!(
            (board.get_pixel(0, 0).0, board.get_pixel(2, 0).0),
            ([0; 3], [255; 3])
        );
        assert_eq!(textured_gradient(&mut r1, 16).dimensions(), (16, 16));
    }
}
