//! Which encoder a LLaVA model's VQA path reads: the installed one it was trained on, or a
//! VQRAE tokenizer's own (after stage 2, the distilled encoder: the paper's Table 6). A
//! tokenizer on the same encoder weights gives the same features; a moved encoder gives other
//! ones; an encoder of the wrong width or token count is refused; a model trained with
//! `vqa_features = "tokenizer"` records it and loads its features from its tokenizer.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use vqrae_lm::SamplingConfig;
use vqrae_test_support::{repo, tiny_llava_model, tiny_vqa_llava, toy_image, TINY_ENCODER};
use vqrae_tokenizer::encoder::hf_encoder_config;
use vqrae_tokenizer::init::SeededVarMap;
use vqrae_tokenizer::{Vqrae, VqraeConfig};
use vqrae_unified::llava::config::LlavaConfig;
use vqrae_unified::llava::model::{read_model_config, LlavaModel, VqaFeatures};
use vqrae_unified::llava::run::run;

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// A tiny tokenizer whose encoder is the tiny DINOv2 under `models_root` (its weights, when
/// `copy_weights`; seeded random ones otherwise, standing in for an encoder stage 2 moved),
/// at the tiny LLaVA's 16 px and with `normalize`.
fn tokenizer_on_tiny_dinov2(
    models_root: &std::path::Path,
    normalize: vqrae_data::tensor::Normalize,
    copy_weights: bool,
) -> Result<(Vqrae, SeededVarMap)> {
    let enc = models_root.join(TINY_ENCODER);
    let mut cfg = VqraeConfig::from_toml_file(&repo().join("configs/tiny.toml"))?;
    cfg.image_size = 16;
    cfg.normalize = normalize;
    cfg.encoder = hf_encoder_config(&enc.join("config.json"))?;
    let from = copy_weights.then_some(enc.as_path());
    Ok(Vqrae::init(&cfg, from, 3, &Device::Cpu)?)
}

#[test]
fn the_vqa_path_reads_a_tokenizers_encoder_when_told() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let t = tiny_llava_model(tmp.path(), 256)?;
    let mut m = LlavaModel::load(&t.dir, &t.models_root, None, &Device::Cpu)?;
    let images = [toy_image(0), toy_image(5)];
    let own = m.features(&images)?;
    let normalize = m.preprocess.normalize;

    // stage 1 never moves the encoder: its tokenizer's features are the installed encoder's
    let (same, _) = tokenizer_on_tiny_dinov2(&t.models_root, normalize, true)?;
    m.use_features_of(&same)?;
    let d = max_diff(&m.features(&images)?, &own)?;
    assert!(d < 1e-6, "same weights, features differ by {d}");

    // a moved encoder feeds the projector other features
    let (moved, _) = tokenizer_on_tiny_dinov2(&t.models_root, normalize, false)?;
    m.use_features_of(&moved)?;
    let d = max_diff(&m.features(&images)?, &own)?;
    assert!(d > 1e-2, "a different encoder gave the same features ({d})");
    let answers = m.ask(
        &images,
        &["What shape?", "What color?"],
        4,
        &SamplingConfig::greedy(),
    )?;
    assert_eq!(answers.len(), 2);

    // the shipped tiny tokenizer: its own ViT is 32 wide but gives 2x2 tokens at 16 px
    let own_vit = VqraeConfig::from_toml_file(&repo().join("configs/tiny.toml"))?;
    let (other, _) = Vqrae::init(&own_vit, None, 0, &Device::Cpu)?;
    let err = m.use_features_of(&other).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("tokens at 16 px"), "{err}");
    // and one of another width
    let mut wide = own_vit.clone();
    wide.image_size = 16;
    wide.encoder = hf_encoder_config(&t.models_root.join(TINY_ENCODER).join("config.json"))?;
    if let vqrae_tokenizer::encoder::EncoderConfig::Dinov2(c) = &mut wide.encoder {
        c.hidden_size = 48;
    }
    let (wide, _) = Vqrae::init(&wide, None, 0, &Device::Cpu)?;
    let err = m.use_features_of(&wide).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("48 wide"), "{err}");
    Ok(())
}

#[test]
fn a_model_trained_on_its_tokenizers_features_serves_them() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let inputs = tiny_vqa_llava(root, 4)?;
    let vqa = LlavaModel::load(
        &root.join("vqa/model"),
        &inputs.models_root,
        None,
        &Device::Cpu,
    )?;
    // a moved encoder (random weights), so that the two sources are told apart
    let (tok, vars) =
        tokenizer_on_tiny_dinov2(&inputs.models_root, vqa.preprocess.normalize, false)?;
    tok.save(&root.join("tok"), &vars)?;

    let mut cfg = LlavaConfig::from_toml_file(&repo().join("configs/llava/tiny-generate.toml"))?;
    cfg.init_from = Some(root.join("vqa/model"));
    let g = cfg.generation.as_mut().context("[generation]")?;
    g.tokenizer = root.join("tok");
    g.vqa_features = VqaFeatures::Tokenizer;
    run(&cfg, &inputs, &root.join("gen"), &Device::Cpu)?;

    let dir = root.join("gen/model");
    assert_eq!(
        read_model_config(&dir)?.vqa_features,
        VqaFeatures::Tokenizer
    );
    let m = LlavaModel::load(&dir, &inputs.models_root, None, &Device::Cpu)?;
    let images = [toy_image(1)];
    let saved = Vqrae::load(
        &dir.join("tokenizer"),
        &Device::Cpu,
        candle_core::DType::F32,
    )?;
    let mut expect = LlavaModel::load(&dir, &inputs.models_root, None, &Device::Cpu)?;
    expect.use_features_of(&saved)?;
    let d = max_diff(&m.features(&images)?, &expect.features(&images)?)?;
    assert!(d < 1e-6, "{d}");
    let d = max_diff(&m.features(&images)?, &vqa.features(&images)?)?;
    assert!(d > 1e-2, "the model read the installed encoder ({d})");
    Ok(())
}
