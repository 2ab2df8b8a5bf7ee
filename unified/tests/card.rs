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
