//! The LLaVA trainer end to end on tiny files (test-support's tiny GGUF with a ChatML template,
//! the tiny DINOv2 fixture, a mini easy-VQA, `configs/llava/tiny.toml`): a run writes every
//! file it promises and its model answers, f32 and quantized; resuming after phase 1 or in the
//! middle of phase 2 ends with the adapters of an uninterrupted run, bit for bit; phase 1 moves
//! the projector alone, so the adapted LM is the base exactly; a model is refused on another
//! base; configs that train nothing or hold bad values are refused before any work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};
use vqrae_data::fs::sha256_model;
use vqrae_lm::converse::{ChatModel, WeightForm};
use vqrae_lm::score::next_token_logprobs;
use vqrae_lm::SamplingConfig;
use vqrae_test_support::{
    shared_tiny_model, tiny_llava_base, tiny_llava_config, tiny_llava_data, toy_image, TinyReplies,
    TINY_BASE,
};
use vqrae_unified::llava::config::LlavaConfig;
use vqrae_unified::llava::instructions::instructions;
use vqrae_unified::llava::model::{LlavaModel, LLAVA_FILE};
use vqrae_unified::llava::parts::{LlavaParts, PROJECTOR_PREFIX};
use vqrae_unified::llava::report::{evaluate, LlavaEvalOptions, HELDOUT_TEXT};
use vqrae_unified::llava::run::{
    run, LlavaInputs, TextSample, ADAPTERS_FILE, FEATURES_FILE, TEXT_FILE,
};
use vqrae_unified::llava::train::LlavaSummary;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    inputs: LlavaInputs,
    cfg: LlavaConfig,
}

/// The tiny data root (4 training and 4 test images of easy-VQA) and the tiny config.
fn setup() -> Result<Setup> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    let inputs = tiny_llava_data(&root, 4)?;
    Ok(Setup {
        _tmp: tmp,
        root,
        inputs,
        cfg: tiny_llava_config()?,
    })
}

impl Setup {
    fn run(&self, cfg: &LlavaConfig, name: &str) -> Result<LlavaSummary> {
        Ok(run(cfg, &self.inputs, &self.root.join(name), &Device::Cpu)?)
    }

    fn load(&self, run: &str, quantized: bool) -> Result<LlavaModel> {
        let dir = self.root.join(run).join("model");
        let m = LlavaModel::load(
            &dir,
            &self.inputs.models_root,
            Some(quantized),
            &Device::Cpu,
        )?;
        Ok(m)
    }
}

/// Every tensor of a safetensors file, as the bits of its f32 values.
fn tensor_bits(path: &Path) -> Result<BTreeMap<String, Vec<u32>>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    tensors
        .into_iter()
        .map(|(k, t)| {
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((k, v.into_iter().map(f32::to_bits).collect()))
        })
        .collect()
}

fn is_lora_b(name: &str) -> bool {
    name.contains(".lora_B.")
}

/// The config's first phase alone.
fn phase_one(cfg: &LlavaConfig) -> LlavaConfig {
    let mut c = cfg.clone();
    c.phases.truncate(1);
    c
}

/// Next-token log-probabilities of a fixed id sequence: equal models give equal bits.
fn logprobs(lm: &vqrae_lm::Llama) -> Result<Vec<u32>> {
    let ids: Vec<u32> = (3..40).collect();
    Ok(next_token_logprobs(lm, &ids)?
        .into_iter()
        .map(f32::to_bits)
        .collect())
}

#[test]
fn a_run_writes_its_files_and_its_model_answers_f32_and_quantized() -> Result<()> {
    let s = setup()?;
    let summary = s.run(&s.cfg, "run")?;
    assert_eq!((summary.steps, summary.resumed_from), (5, None));
    let dir = s.root.join("run");
    for f in [FEATURES_FILE, TEXT_FILE, ADAPTERS_FILE, "metrics.jsonl"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(dir.join("model").join(LLAVA_FILE).is_file());
    assert!(dir.join("model").join(ADAPTERS_FILE).is_file());
    let steps: Vec<u64> = vqrae_train::checkpoint::list(&dir)?
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    assert_eq!(steps.last(), Some(&5), "checkpoints {steps:?}");
    // the base's own replies: one finished word per instruction
    let text: Vec<TextSample> =
        serde_json::from_str(&std::fs::read_to_string(dir.join(TEXT_FILE))?)?;
    assert_eq!(text.len(), instructions().len());
    let odd: Vec<&TextSample> = text.iter().filter(|t| t.reply != "o").collect();
    assert!(odd.is_empty(), "{odd:?}");
    // phase 2 moved the adapters
    let saved = tensor_bits(&dir.join(ADAPTERS_FILE))?;
    assert!(saved
        .iter()
        .any(|(k, v)| is_lora_b(k) && v.iter().any(|&b| f32::from_bits(b) != 0.0)));

    let images = [toy_image(0), toy_image(1)];
    let questions = ["What color is the shape?", "Is there a circle?"];
    for quantized in [false, true] {
        let m = s.load("run", quantized)?;
        assert_eq!(m.quantized, quantized);
        let answers = m.ask(&images, &questions, 8, &SamplingConfig::greedy())?;
        assert_eq!(answers.len(), 2, "quantized {quantized}: {answers:?}");
    }
    Ok(())
}

#[test]
fn the_report_names_the_model_and_its_baseline_by_content_hash() -> Result<()> {
    let s = setup()?;
    s.run(&s.cfg, "run")?;
    let dir = s.root.join("run").join("model");
    let baseline = shared_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), "llava-baseline-");
    let opts = LlavaEvalOptions {
        data: s.root.clone(),
        quantized: Some(false),
        easy_vqa: 2,
        scenes: 1,
        batch: 4,
        baseline: Some(baseline.to_path_buf()),
        heldout_text: vqrae_test_support::repo().join(HELDOUT_TEXT),
        features_from: None,
    };
    let json = serde_json::to_value(evaluate(&dir, &opts, &Device::Cpu)?)?;
    assert_eq!(json["model_sha256"], sha256_model(&dir)?.as_str());
    // answered from its own encoder: no other tokenizer named
    assert!(json.get("features_from").is_none(), "{json}");
    assert_eq!(
        json["baseline"]["model_sha256"],
        sha256_model(baseline)?.as_str()
    );
    assert_ne!(json["model_sha256"], json["adapters_sha256"]);
    Ok(())
}

#[test]
fn resuming_after_phase_one_or_mid_phase_ends_with_the_uninterrupted_adapters() -> Result<()> {
    let s = setup()?;
    s.run(&s.cfg, "straight")?;

    // stopped at the phase boundary: phase 1 moved the projector alone
    let first = phase_one(&s.cfg);
    s.run(&first, "boundary")?;
    let after_one = tensor_bits(&s.root.join("boundary").join(ADAPTERS_FILE))?;
    let base = vqrae_lm::gguf::GgufFile::open(s.inputs.base_gguf())?
        .load_dequantized(&Device::Cpu, DType::F32)?;
    let init = LlavaParts::init(base, s.cfg.lora.clone(), 32, s.cfg.seed, &Device::Cpu)?;
    let mut projector_moved = false;
    for (name, var) in init.vars()? {
        let v: Vec<u32> = var
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect();
        if name.starts_with(PROJECTOR_PREFIX) {
            projector_moved |= after_one[&name] != v;
        } else {
            assert_eq!(after_one[&name], v, "{name} moved in phase 1");
        }
        if is_lora_b(&name) {
            assert!(v.iter().all(|&b| f32::from_bits(b) == 0.0), "{name}");
        }
    }
    assert!(projector_moved);
    // the adapted LM is the base exactly, in both forms
    for (quantized, form) in [
        (false, WeightForm::Dequantized(DType::F32)),
        (true, WeightForm::Quantized),
    ] {
        let adapted = s.load("boundary", quantized)?;
        let base = ChatModel::from_gguf(s.inputs.base_gguf(), form, &Device::Cpu)?;
        assert_eq!(
            logprobs(&adapted.lm)?,
            logprobs(&base.model)?,
            "quantized {quantized}"
        );
    }
    let resumed = s.run(&s.cfg, "boundary")?;
    assert_eq!(resumed.resumed_from, Some(2));

    // interrupted one step into phase 2
    let mut short = s.cfg.clone();
    short.checkpoint_every = 1;
    short.phases[1].steps = 1;
    s.run(&short, "mid")?;
    let mut full = s.cfg.clone();
    full.checkpoint_every = 1;
    assert_eq!(s.run(&full, "mid")?.resumed_from, Some(3));

    let straight = tensor_bits(&s.root.join("straight").join(ADAPTERS_FILE))?;
    for run in ["boundary", "mid"] {
        let resumed = tensor_bits(&s.root.join(run).join(ADAPTERS_FILE))?;
        assert_eq!(resumed.len(), straight.len());
        for (name, v) in &straight {
            assert!(&resumed[name] == v, "{run}: {name} differs");
        }
    }
    Ok(())
}

#[test]
fn a_model_is_refused_on_another_base() -> Result<()> {
    let s = setup()?;
    s.run(&phase_one(&s.cfg), "run")?;
    s.load("run", false)?;
    // another GGUF where the base was
    tiny_llava_base(&s.inputs.models_root, 256, 8, TinyReplies::OneWord)?;
    for quantized in [false, true] {
        let err = s.load("run", quantized).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("sha256") && err.contains(TINY_BASE), "{err}");
    }
    // llava.json edited to name the new file: the adapters still know their base
    let json_path = s.root.join("run/model").join(LLAVA_FILE);
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    let sha = vqrae_data::fs::sha256_file(&s.inputs.base_gguf())?;
    json["base"]["sha256"] = sha.clone().into();
    std::fs::write(&json_path, serde_json::to_string(&json)?)?;
    let err = s
        .load("run", false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("made for the base") && err.contains(&sha),
        "{err}"
    );
    Ok(())
}

#[test]
fn configs_that_train_nothing_or_hold_bad_values_are_refused() -> Result<()> {
    let s = setup()?;
    type Edit = fn(&mut LlavaConfig);
    let cases: [(&str, Edit, &str); 10] = [
        ("no phases", |c| c.phases.clear(), "no phases"),
        (
            "a phase training nothing",
            |c| c.phases[0].projector_lr = None,
            "trains nothing",
        ),
        ("a phase of 0 steps", |c| c.phases[1].steps = 0, "0 steps"),
        ("batch 0", |c| c.batch_size = 0, "batch_size"),
        ("resolution 0", |c| c.resolution = 0, "resolution"),
        ("grad clip NaN", |c| c.grad_clip = f64::NAN, "grad_clip"),
        (
            "checkpoint_every 0",
            |c| c.checkpoint_every = 0,
            "checkpoint_every",
        ),
        ("lora rank 0", |c| c.lora.rank = 0, "rank"),
        (
            "adapters with no targets",
            |c| c.lora.targets.clear(),
            "targets",
        ),
        (
            "negative weight decay",
            |c| c.adamw.weight_decay = -1.0,
            "weight_decay",
        ),
    ];
    for (why, edit, word) in cases {
        let mut cfg = s.cfg.clone();
        edit(&mut cfg);
        let err = cfg.validate().err().map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("{why} was accepted"));
        assert!(err.contains(word), "{why}: {err}");
        // refused before the run directory exists
        assert!(s.run(&cfg, "refused").is_err(), "{why}");
        assert!(!s.root.join("refused").exists(), "{why}");
    }
    // an unknown field in the file
    let path = s.root.join("typo.toml");
    let text = std::fs::read_to_string(vqrae_test_support::repo().join("configs/llava/tiny.toml"))?;
    std::fs::write(&path, text.replace("batch_size", "batch"))?;
    let err = LlavaConfig::from_toml_file(&path)
        .err()
        .map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("batch"));
    Ok(())
}
