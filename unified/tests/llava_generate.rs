//! The LLaVA trainer's generation phase on tiny files: after a VQA run (`configs/llava/tiny.toml`),
//! `configs/llava/tiny-generate.toml` continues the same adapters on text-to-image examples
//! coded by a tiny tokenizer, with image rows beside the frozen vocabulary. One model
//! directory then answers questions and draws images, seeded and independent of its batch;
//! bad setups are refused with the reason.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_test_support::{repo, save_tiny_tokenizer, tiny_llava_data, tiny_vqa_llava, toy_image};
use vqrae_unified::llava::config::LlavaConfig;
use vqrae_unified::llava::image_rows::IMAGE_ROWS;
use vqrae_unified::llava::model::{LlavaModel, TOKENIZER_DIR};
use vqrae_unified::llava::run::{run, LlavaInputs, ADAPTERS_FILE, CODES_FILE};

/// The generation config pointed at `init` and the tokenizer in `tok`.
fn generate_config(init: &Path, tok: &Path) -> Result<LlavaConfig> {
    let mut cfg = LlavaConfig::from_toml_file(&repo().join("configs/llava/tiny-generate.toml"))?;
    cfg.init_from = Some(init.to_path_buf());
    cfg.generation
        .as_mut()
        .context("the tiny generation config has a [generation] table")?
        .tokenizer = tok.to_path_buf();
    Ok(cfg)
}

fn load(inputs: &LlavaInputs, dir: &Path, quantized: Option<bool>) -> Result<LlavaModel> {
    Ok(LlavaModel::load(
        dir,
        &inputs.models_root,
        quantized,
        &Device::Cpu,
    )?)
}

#[test]
fn a_generation_phase_gives_one_model_that_answers_and_draws() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let inputs = tiny_vqa_llava(root, 4)?;
    let tok_dir = root.join("tok");
    let tok = save_tiny_tokenizer(&tok_dir)?;
    let cfg = generate_config(&root.join("vqa/model"), &tok_dir)?;
    let summary = run(&cfg, &inputs, &root.join("gen"), &Device::Cpu)?;
    assert_eq!(summary.steps, 3);

    // the six captioned images' codes, cached; every step trained both objectives
    let gen = root.join("gen");
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gen.join(CODES_FILE))?)?;
    let codes = cache["codes"].as_array().context("codes")?;
    let probe = tok.encode(&tok.images_to_input(&[toy_image(0)])?)?;
    let tokens = probe.grid.0 * probe.grid.1;
    assert_eq!(codes.len(), 6);
    assert!(codes
        .iter()
        .all(|c| c.as_array().map(Vec::len) == Some(tokens)));
    let log = vqrae_train::metrics::MetricsLog::read(&gen.join("metrics.jsonl"))?;
    assert_eq!(log.len(), 3);
    for rec in &log {
        assert!(
            rec["t2i_loss"].as_f64().is_some_and(f64::is_finite),
            "{rec}"
        );
        assert!(
            rec["vqa_loss"].as_f64().is_some_and(f64::is_finite),
            "{rec}"
        );
    }
    let adapters = candle_core::safetensors::load(gen.join(ADAPTERS_FILE), &Device::Cpu)?;
    let k = tok.config().quantizer.codebook_size;
    assert_eq!(adapters[IMAGE_ROWS].dims(), [k + 3, 64]);

    // one directory: the tokenizer travels with it, and the model draws and answers
    let dir = gen.join("model");
    assert!(dir.join(TOKENIZER_DIR).join("config.json").is_file());
    let m = load(&inputs, &dir, None)?;
    let gen_cfg = GenerationConfig {
        guidance: 2.0,
        sampling: SamplingConfig::default(),
    };
    let captions = ["a red circle".to_string(), "a blue square".to_string()];
    let requests = ImageRequest::grid(&captions, 3..5);
    let images = m.generate(&requests, &gen_cfg)?;
    let side = tok.config().image_size as u32;
    assert_eq!(images.len(), 4);
    assert!(images.iter().all(|i| i.dimensions() == (side, side)));
    // seeded, and independent of the batch it is drawn in
    let alone = m.generate(&requests[2..3], &gen_cfg)?;
    assert_eq!(alone[0], images[2]);
    assert_eq!(m.generate(&requests, &gen_cfg)?, images);
    let answers = m.ask(
        &[toy_image(0)],
        &["What color is the shape?"],
        8,
        &SamplingConfig::greedy(),
    )?;
    assert_eq!(answers.len(), 1);

    // the quantized base cannot carry the image rows; the VQA model cannot draw
    let err = load(&inputs, &dir, Some(true)).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("dequantized"), "{err}");
    let vqa = load(&inputs, &root.join("vqa/model"), None)?;
    let err = vqa.generate(&requests, &gen_cfg).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("not trained to generate"), "{err}");

    // a tokenizer that is not the one trained with is refused by its hash
    save_tiny_tokenizer(&root.join("other"))?;
    let moved = root.join("moved");
    std::fs::rename(&dir, &moved)?;
    std::fs::remove_dir_all(moved.join(TOKENIZER_DIR))?;
    std::fs::rename(root.join("other"), moved.join(TOKENIZER_DIR))?;
    let cfg_path = moved.join(TOKENIZER_DIR).join("config.json");
    let mut text = std::fs::read_to_string(&cfg_path)?;
    text.push(' ');
    std::fs::write(&cfg_path, text)?;
    let err = load(&inputs, &moved, None).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("was trained with"), "{err}");
    Ok(())
}

#[test]
fn bad_generation_setups_are_refused_before_training() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let inputs = tiny_llava_data(root, 2)?;
    let tok_dir = root.join("tok");
    save_tiny_tokenizer(&tok_dir)?;
    // a generation phase without a [generation] table
    let mut cfg = generate_config(&root.join("none"), &tok_dir)?;
    cfg.generation = None;
    let err = cfg.validate().unwrap_err();
    assert!(
        err.to_string().contains("without a [generation] table"),
        "{err}"
    );
    // caption dropout outside [0, 1)
    let mut cfg = generate_config(&root.join("none"), &tok_dir)?;
    if let Some(g) = cfg.generation.as_mut() {
        g.caption_dropout = 1.0;
    }
    assert!(cfg.validate().is_err());
    // an unknown source name in the data table
    let text = std::fs::read_to_string(repo().join("configs/llava/tiny-generate.toml"))?
        .replace("\"scenes\"]", "\"sceens\"]");
    std::fs::write(root.join("bad.toml"), text)?;
    let err = LlavaConfig::from_toml_file(&root.join("bad.toml")).unwrap_err();
    assert!(err.to_string().contains("sceens"), "{err}");
    // starting from a model that is not there
    let cfg = generate_config(&root.join("missing"), &tok_dir)?;
    let err = run(&cfg, &inputs, &root.join("gen"), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    Ok(())
}
