//! Text-to-image into a folder of PNG files (`vqrae generate`), in batches of bounded size.
//!
//! One forward pass over every requested image holds every image's KV cache at once (with
//! guidance, two rows each): `-n 1000000` asked for ~35 GB. The images are drawn
//! [`IMAGES_PER_BATCH`] at a time instead and each batch's PNGs are written as it finishes, so
//! memory does not grow with the count, which is capped at [`MAX_IMAGES`]. Image `i` has its own
//! seed (`seed + i`), and a batch of at most [`IMAGES_PER_BATCH`] images is the one forward
//! pass it always was: a call with that many images or fewer draws exactly what it drew before
//! batching, and on the CPU the batch a row shares does not change its codes at all
//! (`generate -n 70` equals `-n 20` on its first 20 images, bit for bit).

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;
use vqrae_data::image_io::{grid, save_png};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};

use crate::error::{Result, UnifiedError};
use crate::model::UnifiedModel;

/// Most images one call draws: 10,000 (about 40 minutes on the CPU for the shipped model); more
/// is a loop of calls with other seeds.
pub const MAX_IMAGES: usize = 10_000;

/// Images drawn per forward pass (64 rows with guidance).
pub const IMAGES_PER_BATCH: usize = 32;

/// The first images, at most this many, also go into `grid.png` (eight a row).
pub const GRID_IMAGES: usize = 64;

/// What [`generate_files`] draws: `n` images of `caption`, image `i` seeded `seed + i`.
#[derive(Clone, Debug)]
pub struct ImageBatchRequest {
    pub caption: String,
    /// What to steer away from instead of the empty prompt.
    pub negative: Option<String>,
    pub n: usize,
    pub seed: u64,
}

/// What [`generate_files`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ImageFiles {
    pub images: usize,
    pub dir: PathBuf,
    /// `grid.png`: the first [`GRID_IMAGES`] images at most.
    pub grid: PathBuf,
}

/// Refuses a count of images outside 1 to [`MAX_IMAGES`] (before a model is loaded, say).
pub fn check_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_IMAGES {
        return Err(UnifiedError::Config(format!(
            "-n is {n}; one call draws 1 to {MAX_IMAGES} images (run again with another --seed \
             for more)"
        )));
    }
    Ok(())
}

/// Draws `req.n` images (1 to [`MAX_IMAGES`]) with `model` into `out`: `0.png`, `1.png`, ...
/// written batch by batch, then `grid.png` of the first [`GRID_IMAGES`].
pub fn generate_files(
    model: &UnifiedModel,
    req: &ImageBatchRequest,
    cfg: &GenerationConfig,
    out: &Path,
) -> Result<ImageFiles> {
    check_count(req.n)?;
    std::fs::create_dir_all(out).map_err(UnifiedError::io(out))?;
    let mut first: Vec<RgbImage> = Vec::with_capacity(req.n.min(GRID_IMAGES));
    for start in (0..req.n).step_by(IMAGES_PER_BATCH) {
        let end = (start + IMAGES_PER_BATCH).min(req.n);
        let requests: Vec<ImageRequest> = (start..end)
            .map(|i| ImageRequest {
                caption: req.caption.clone(),
                negative: req.negative.clone(),
                seed: req.seed.wrapping_add(i as u64),
            })
            .collect();
        let images = model.generate(&requests, cfg)?;
        for (i, img) in (start..).zip(&images) {
            save_png(img, &out.join(format!("{i}.png")))?;
        }
        let room = GRID_IMAGES.saturating_sub(first.len());
        first.extend(images.into_iter().take(room));
    }
    let grid_path = out.join("grid.png");
    save_png(&grid(&first, first.len().min(8), 2), &grid_path)?;
    Ok(ImageFiles {
        images: req.n,
        dir: out.to_path_buf(),
        grid: grid_path,
    })
}
