//! A model directory's card is loaded with the model: its guidance becomes the model's default,
//! a card that contradicts the model is refused, and a directory without one has none.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use vqrae_data::fs::copy_dir;
use vqrae_test_support::{repo, shared_tiny_model};
use vqrae_unified::card::{ModelCard, CARD_FILE};
use vqrae_unified::model::UnifiedModel;

fn tiny() -> &'static Path {
    shared_tiny_model(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "vqrae-unified-card-",
    )
}

fn shipped_card() -> Result<ModelCard> {
    let dir = repo().join("models/vqrae-easyvqa");
    Ok(ModelCard::load(&dir)?.expect("the shipped model has a card"))
}

#[test]
fn the_card_is_loaded_with_the_model_and_gives_its_defaults() -> Result<()> {
    let plain = UnifiedModel::load(tiny(), &Device::Cpu, DType::F32)?;
    assert!(plain.card.is_none());
    assert_eq!(
        plain.default_guidance(),
        vqrae_generate::sample::DEFAULT_GUIDANCE
    );

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("model");
    copy_dir(tiny(), &dir)?;
    let mut card = shipped_card()?;
    card.image_size = plain.tokenizer.config().image_size;
    card.defaults.guidance.value = 1.5;
    std::fs::write(dir.join(CARD_FILE), serde_json::to_string(&card)?)?;
    let model = UnifiedModel::load(&dir, &Device::Cpu, DType::F32)?;
    assert_eq!(model.card.as_ref(), Some(&card));
    assert_eq!(model.default_guidance(), 1.5);

    // a card for another image size than the tokenizer's is refused, naming both
    card.image_size += 32;
    std::fs::write(dir.join(CARD_FILE), serde_json::to_string(&card)?)?;
    let err = UnifiedModel::load(&dir, &Device::Cpu, DType::F32)
        .err()
        .expect("a card for another image size")
        .to_string();
    assert!(err.contains("image size"), "{err}");
    Ok(())
}

#[test]
fn the_shipped_model_loads_with_its_card() -> Result<()> {
    let model = UnifiedModel::load(
        &repo().join("models/vqrae-easyvqa"),
        &Device::Cpu,
        DType::F32,
    )?;
    let card = model.card.as_ref().expect("a card");
    assert_eq!(card.image_size, 64);
    assert_eq!(model.default_guidance(), 2.0);
    Ok(())
}

/// A greyscale "photo": smooth waves of several frequencies, 96x96.
fn grey_photo() -> image::RgbImage {
    image::RgbImage::from_fn(96, 96, |x, y| {
        let (x, y) = (x as f64, y as f64);
        let v = 128.0
            + 60.0 * (x / 7.0).sin() * (y / 11.0).cos()
            + 40.0 * ((x + 2.0 * y) / 3.0).sin()
            + 20.0 * ((x * y).sqrt() / 2.0).cos();
        let l = v.clamp(0.0, 255.0) as u8;
        image::Rgb([l, l, l])
    })
}

/// Uniform noise, 64x64, from a fixed seed.
fn noise() -> image::RgbImage {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    image::RgbImage::from_fn(64, 64, |_, _| image::Rgb(rng.gen()))
}

#[test]
fn the_shipped_model_sees_its_examples_and_refuses_noise_and_photos() -> Result<()> {
    let model = UnifiedModel::load(
        &repo().join("models/vqrae-easyvqa"),
        &Device::Cpu,
        DType::F32,
    )?;
    let examples: Vec<image::RgbImage> = ["red-triangle", "yellow-rectangle", "green-circle"]
        .iter()
        .map(|n| vqrae_data::image_io::load_rgb(&repo().join(format!("examples/{n}.png"))))
        .collect::<std::result::Result<_, _>>()?;
    let mut images = examples.clone();
    images.extend([noise(), grey_photo()]);
    let verdicts = model.check_images(&images)?;
    assert!(verdicts[..3].iter().all(Result::is_ok), "{verdicts:?}");
    for v in &verdicts[3..] {
        let msg = v.as_ref().expect_err("refused").to_string();
        assert!(
            msg.contains("does not look like") && msg.contains("20.5 dB"),
            "{msg}"
        );
    }
    // the server's one encoding: the same features as `features`, the same PSNR as the check
    let (features, psnr) = model.features_and_psnr(&images)?;
    let plain = model.features(&images)?;
    let diff = (features - plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    let alone = vqrae_unified::fidelity::reconstruction_psnr(&model.tokenizer, &images)?;
    for (a, b) in psnr.iter().zip(&alone) {
        assert!((a - b).abs() < 1e-9, "{psnr:?} vs {alone:?}");
    }
    Ok(())
}
