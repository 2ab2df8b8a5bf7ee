//! `vqrae generate`'s folder of PNGs: drawn in batches of bounded size with the very images of
//! one forward pass over all of them, the count capped, the grid bounded.

use anyhow::Result;
use candle_core::{DType, Device};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_test_support::shared_tiny_model;
use vqrae_unified::image_files::{
    check_count, generate_files, ImageBatchRequest, GRID_IMAGES, IMAGES_PER_BATCH, MAX_IMAGES,
};
use vqrae_unified::model::UnifiedModel;

fn model() -> Result<UnifiedModel> {
    let dir = shared_tiny_model(env!("CARGO_TARGET_TMPDIR").as_ref(), "unified-image-files-");
    Ok(UnifiedModel::load(dir, &Device::Cpu, DType::F32)?)
}

#[test]
fn batches_draw_the_images_of_one_pass_and_write_each_file() -> Result<()> {
    let model = model()?;
    let cfg = GenerationConfig {
        guidance: 3.0,
        sampling: SamplingConfig::default(),
    };
    // two full batches and a part: more than one forward pass
    let n = 2 * IMAGES_PER_BATCH + 3;
    let req = ImageBatchRequest {
        caption: "a red circle".into(),
        negative: None,
        n,
        seed: 7,
    };
    let tmp = tempfile::tempdir()?;
    let files = generate_files(&model, &req, &cfg, tmp.path())?;
    assert_eq!(files.images, n);
    // the same requests as one forward pass, as `generate` drew them before batching
    let one_pass = model.generate(
        &(0..n as u64)
            .map(|i| ImageRequest {
                caption: req.caption.clone(),
                negative: None,
                seed: 7 + i,
            })
            .collect::<Vec<_>>(),
        &cfg,
    )?;
    for (i, img) in one_pass.iter().enumerate() {
        let written = image::open(tmp.path().join(format!("{i}.png")))?.to_rgb8();
        assert_eq!(&written, img, "image {i} differs from the one-pass image");
    }
    assert!(!tmp.path().join(format!("{n}.png")).exists());
    // the grid holds the first 64 images at most: 8 columns, 8 rows of 32 px cells, 2 px gaps
    let grid = image::open(&files.grid)?.to_rgb8();
    let rows = GRID_IMAGES / 8;
    assert_eq!(
        grid.dimensions(),
        (8 * 32 + 9 * 2, rows as u32 * 32 + (rows as u32 + 1) * 2)
    );
    Ok(())
}

#[test]
fn the_count_is_bounded_before_anything_is_drawn() -> Result<()> {
    for bad in [0, MAX_IMAGES + 1, 1_000_000] {
        let msg = check_count(bad).unwrap_err().to_string();
        assert!(msg.contains("1 to 10000"), "{msg}");
    }
    check_count(1)?;
    check_count(MAX_IMAGES)?;
    let model = model()?;
    let tmp = tempfile::tempdir()?;
    let req = ImageBatchRequest {
        caption: "a red circle".into(),
        negative: None,
        n: 1_000_000,
        seed: 0,
    };
    let cfg = GenerationConfig {
        guidance: 1.0,
        sampling: SamplingConfig::default(),
    };
    assert!(generate_files(&model, &req, &cfg, &tmp.path().join("out")).is_err());
    assert!(!tmp.path().join("out").exists(), "nothing written");
    Ok(())
}
