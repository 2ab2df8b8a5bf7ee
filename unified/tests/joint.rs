//! The joint LM end to end at a tiny size: training lowers both losses, resuming (mid-phase and
//! at a phase boundary) gives the same weights as an uninterrupted run, and the saved model
//! answers questions and generates images through both paths.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};
use image::{Rgb, RgbImage};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;
use vqrae_test_support::{repo, save_tiny_tokenizer, tiny_joint_config, toy_data, Toy};
use vqrae_tokenizer::Vqrae;
use vqrae_unified::joint::{self, JointConfig, JointData, JointSummary};
use vqrae_unified::model::UnifiedModel;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// The tokenizer directory, `root/tok`.
    tok: PathBuf,
    data: JointData,
    cfg: JointConfig,
}

/// A tiny tokenizer in `root/tok`, 24 toy images encoded by it, the tiny joint config.
fn setup() -> Result<Setup> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    let tok_dir = root.join("tok");
    let tok = save_tiny_tokenizer(&tok_dir)?;
    let toy = toy_data(24);
    let data = JointData::encode(&tok, &toy.images, toy.captions, toy.questions)?;
    Ok(Setup {
        _tmp: tmp,
        root,
        tok: tok_dir,
        data,
        cfg: tiny_joint_config()?,
    })
}

impl Setup {
    /// Trains `cfg` on `data` with the tiny tokenizer into the run directory `root/<run>`.
    fn train(&self, cfg: &JointConfig, data: &JointData, run: &str) -> Result<JointSummary> {
        let run = self.root.join(run);
        Ok(joint::train(cfg, data, &self.tok, &run, &Device::Cpu)?)
    }

    /// Training `cfg` on the plain toy data into `root/<run>` fails (`why` it must, when it
    /// does not) with an error that names `word`.
    fn assert_refused(&self, cfg: &JointConfig, run: &str, why: &str, word: &str) {
        let err = self.train(cfg, &self.data, run).expect_err(why).to_string();
        assert!(err.contains(word), "{err}");
    }

    /// The tiny tokenizer and the 24 toy images, captions and questions the data encodes, to
    /// encode again with more.
    fn tokenizer_and_toys(&self) -> Result<(Vqrae, Toy)> {
        let tok = Vqrae::load(&self.tok, &Device::Cpu, DType::F32)?;
        Ok((tok, toy_data(24)))
    }
}

fn weights(dir: &Path) -> Result<Vec<(String, Vec<f32>)>> {
    let m = UnifiedModel::load(dir, &Device::Cpu, DType::F32)?;
    let mut out: Vec<(String, Vec<f32>)> =
        m.lm.tensors()
            .into_iter()
            .map(|(k, v)| Ok((k, v.flatten_all()?.to_vec1::<f32>()?)))
            .collect::<Result<_>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The config's first phase (generation) alone, shortened to `steps`.
fn generation_only(cfg: &JointConfig, steps: u64) -> JointConfig {
    let mut cfg = cfg.clone();
    cfg.phases.truncate(1);
    cfg.phases[0].steps = steps;
    for sched in cfg.phases[0].lm_lr.iter_mut() {
        sched.total_steps = steps;
    }
    cfg
}

fn losses(run: &Path, key: &str) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v[key].as_f64())
        .collect())
}

#[test]
fn joint_training_learns_resumes_exactly_and_serves_both_paths() -> Result<()> {
    let s = setup()?;

    // uninterrupted
    let a = s.root.join("a");
    let summary = s.train(&s.cfg, &s.data, "a")?;
    assert_eq!(summary.steps, 30);
    let hash = vqrae_data::fs::sha256_model(&summary.model_dir)?;
    assert_eq!(
        summary.model_dir_sha256, hash,
        "the model saved, by content"
    );
    let t2i = losses(&a, "loss_t2i")?;
    assert!(
        t2i.last() < t2i.first(),
        "text-to-image loss did not fall: {t2i:?}"
    );
    let vqa = losses(&a, "loss_vqa")?;
    assert!(vqa.last() < vqa.first(), "VQA loss did not fall: {vqa:?}");

    // stopped at the end of phase 2 (a boundary), then continued with the full config
    let b = s.root.join("b");
    let mut first_two = s.cfg.clone();
    first_two.phases.truncate(2);
    s.train(&first_two, &s.data, "b")?;
    s.train(&s.cfg, &s.data, "b")?;
    assert_eq!(weights(&a.join("model"))?, weights(&b.join("model"))?);

    // killed mid-phase: drop the final checkpoint, resume from step 25
    std::fs::remove_dir_all(b.join("state").join("step-30"))?;
    let resumed = s.train(&s.cfg, &s.data, "b")?;
    assert_eq!(resumed.resumed_from, Some(25));
    assert_eq!(weights(&a.join("model"))?, weights(&b.join("model"))?);

    // both paths from the one saved model
    let model = UnifiedModel::load(&a.join("model"), &Device::Cpu, DType::F32)?;
    let images = toy_data(2).images;
    let answers = model.ask(
        &images,
        &["what color is the shape?", "what shape is in the image?"],
        4,
        &SamplingConfig::greedy(),
    )?;
    assert_eq!(answers.len(), 2);
    let gen = GenerationConfig {
        guidance: 3.0,
        sampling: SamplingConfig::default(),
    };
    let request = |seed| ImageRequest {
        caption: "a red circle".into(),
        negative: None,
        seed,
    };
    let out = model.generate(&[request(1), request(2)], &gen)?;
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].dimensions(), (32, 32));
    // a seed gives the same codes again
    let t2i = model.t2i();
    assert_eq!(
        t2i.sample_codes(&[request(1)], &gen)?,
        t2i.sample_codes(&[request(1)], &gen)?
    );
    Ok(())
}

#[test]
fn reasoned_answers_with_twins_train() -> Result<()> {
    // the tiny config's last phase on reasoned yes/no answers and their counterfactual twins
    let s = setup()?;
    let mut cfg = s.cfg.clone();
    let joint = cfg.phases.pop().expect("the tiny config has phases");
    cfg.phases = vec![vqrae_unified::joint::Phase {
        t2i_batch: 0,
        reasoned_vqa: true,
        counterfactual_vqa: true,
        ..joint
    }];
    s.train(&cfg, &s.data, "reasoned")?;
    let vqa = losses(&s.root.join("reasoned"), "loss_vqa")?;
    assert!(vqa.last() < vqa.first(), "VQA loss did not fall: {vqa:?}");
    Ok(())
}

#[test]
fn bad_configs_are_clear_errors() -> Result<()> {
    let cfg = tiny_joint_config()?;
    let mut zero = cfg.clone();
    zero.phases[0].steps = 0;
    assert!(zero
        .validate()
        .unwrap_err()
        .to_string()
        .contains("zero steps"));
    let mut frozen = cfg.clone();
    frozen.phases[0].lm_lr = None;
    assert!(frozen.validate().is_err());
    let mut twins_without_questions = cfg.clone();
    twins_without_questions.phases[0].vqa_batch = 0;
    twins_without_questions.phases[0].t2i_batch = 4;
    twins_without_questions.phases[0].counterfactual_vqa = true;
    assert!(twins_without_questions
        .validate()
        .unwrap_err()
        .to_string()
        .contains("counterfactual_vqa"));
    let mut heads = cfg.clone();
    heads.lm.num_attention_heads = 5;
    assert!(heads.validate().is_err());
    Ok(())
}

#[test]
fn bad_requests_are_clear_errors() -> Result<()> {
    let s = setup()?;
    let mut cfg = s.cfg.clone();
    cfg.phases.truncate(1);
    cfg.phases[0].steps = 1;
    s.train(&cfg, &s.data, "run")?;
    let model = UnifiedModel::load(&s.root.join("run/model"), &Device::Cpu, DType::F32)?;
    let gen = GenerationConfig {
        guidance: 2.0,
        sampling: SamplingConfig::default(),
    };
    let req = |caption: &str| ImageRequest {
        caption: caption.into(),
        negative: None,
        seed: 0,
    };
    let empty = model.generate(&[req("  ")], &gen).unwrap_err().to_string();
    assert!(empty.contains("empty"), "{empty}");
    let long = "a red circle ".repeat(40);
    let too_long = model.generate(&[req(&long)], &gen).unwrap_err().to_string();
    assert!(too_long.contains("context"), "{too_long}");
    let images = toy_data(1).images;
    let q = format!("what color is {}?", "the shape ".repeat(60));
    let err = model
        .ask(&images, &[q.as_str()], 4, &SamplingConfig::greedy())
        .unwrap_err()
        .to_string();
    assert!(err.contains("context"), "{err}");
    assert!(model
        .ask(&images, &[""], 4, &SamplingConfig::greedy())
        .is_err());
    Ok(())
}

#[test]
fn every_shipped_lm_config_parses_and_its_schedules_end_with_their_phase() -> Result<()> {
    let mut n = 0;
    let dirs = [
        repo().join("configs/lm"),
        repo().join("configs/lm/experiments"),
    ];
    for entry in dirs
        .iter()
        .map(std::fs::read_dir)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
    {
        let p = entry?.path();
        if p.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cfg = JointConfig::from_toml_file(&p)?;
        for phase in &cfg.phases {
            for s in phase.lm_lr.iter().chain(phase.projector_lr.iter()) {
                assert_eq!(
                    s.total_steps,
                    phase.steps,
                    "{}: {}",
                    p.display(),
                    phase.name
                );
            }
        }
        n += 1;
    }
    assert!(n >= 4);
    Ok(())
}

#[test]
fn mirrored_phases_need_mirror_codes_and_train_on_them() -> Result<()> {
    let s = setup()?;
    let mut cfg = generation_only(&s.cfg, 4);
    cfg.phases[0].mirror_t2i = true;
    assert!(cfg.uses_mirrors());
    s.assert_refused(
        &cfg,
        "m0",
        "a mirrored phase without mirror codes must be refused",
        "mirror",
    );

    let (tok, mut toy) = s.tokenizer_and_toys()?;
    // a left-right symmetric image is its own mirror: the same codes
    toy.images[0] = RgbImage::from_fn(32, 32, |x, y| {
        if (8..24).contains(&x) && (4..12).contains(&y) {
            Rgb([255, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    });
    let data = JointData::encode(&tok, &toy.images, toy.captions, toy.questions)?
        .with_mirrors(&tok, &toy.images)?;
    assert_eq!(data.mirror_codes.len(), data.codes.len());
    assert_eq!(data.mirror_codes[0], data.codes[0]);
    assert_eq!(s.train(&cfg, &data, "m1")?.steps, 4);
    Ok(())
}

#[test]
fn shifted_phases_need_their_copies_and_train_on_them() -> Result<()> {
    let s = setup()?;
    let mut cfg = generation_only(&s.cfg, 4);
    cfg.phases[0].shifted_copies = 2;
    cfg.validate()?;
    assert_eq!(cfg.shifted_copies_needed(), 2);
    let mut vqa_only = cfg.clone();
    vqa_only.phases[0].t2i_batch = 0;
    vqa_only.phases[0].vqa_batch = 4;
    let err = vqa_only
        .validate()
        .expect_err("shifted copies in a phase without text-to-image must be refused");
    assert!(err.to_string().contains("shifted_copies"), "{err}");
    s.assert_refused(
        &cfg,
        "s0",
        "a shifted phase without shifted copies must be refused",
        "shifted",
    );

    let (tok, toy) = s.tokenizer_and_toys()?;
    let data = JointData::encode(
        &tok,
        &toy.images,
        toy.captions.clone(),
        toy.questions.clone(),
    )?
    .with_shifted_copies(&tok, &toy.images, 2, 5)?;
    assert_eq!(data.shifted_codes.len(), 2 * data.codes.len());
    // the copies are moved: most differ from the original's codes
    let moved = (0..data.codes.len())
        .filter(|&i| data.shifted_codes[i] != data.codes[i])
        .count();
    assert!(moved > data.codes.len() / 2, "{moved} copies moved");
    // copy c of image i depends on (seed, c, i) only: asking for one copy gives the first
    let one = JointData::encode(&tok, &toy.images, toy.captions, toy.questions)?
        .with_shifted_copies(&tok, &toy.images, 1, 5)?;
    assert_eq!(
        one.shifted_codes[..],
        data.shifted_codes[..data.codes.len()]
    );
    assert_eq!(s.train(&cfg, &data, "s1")?.steps, 4);
    Ok(())
}

#[test]
fn scene_phases_need_scenes_train_on_them_and_keep_the_text_tokenizer() -> Result<()> {
    let s = setup()?;
    let mut cfg = generation_only(&s.cfg, 4);
    cfg.phases[0].scene_t2i_batch = 3;
    let err = cfg
        .validate()
        .expect_err("scene examples without training scenes must be refused");
    assert!(err.to_string().contains("scenes"), "{err}");
    cfg.scenes = 6;
    cfg.validate()?;
    s.assert_refused(
        &cfg,
        "c0",
        "a scene phase without encoded scenes must be refused",
        "scenes",
    );

    let (tok, toy) = s.tokenizer_and_toys()?;
    // two-object toy scenes with words the easy-VQA-like corpus never holds
    let scenes: Vec<RgbImage> = toy.images.iter().take(6).cloned().collect();
    let scene_captions: Vec<String> = (0..6)
        .map(|i| format!("{} squares left of a zebra", i % 3 + 1))
        .collect();
    let data = JointData::encode(&tok, &toy.images, toy.captions, toy.questions)?.with_scenes(
        &tok,
        &scenes,
        scene_captions,
    )?;
    assert_eq!(data.scene_codes.len(), 6);
    assert_eq!(s.train(&cfg, &data, "c1")?.steps, 4);
    let run = s.root.join("c1");
    let scene_losses = losses(&run, "loss_scenes")?;
    assert!(!scene_losses.is_empty(), "no scene loss logged");
    // the scene captions stay out of the BPE's corpus: the same text tokenizer as without them
    let mut no_scenes = cfg.clone();
    no_scenes.phases[0].scene_t2i_batch = 0;
    s.train(&no_scenes, &s.data, "c2")?;
    assert_eq!(
        std::fs::read_to_string(run.join("tokenizer.json"))?,
        std::fs::read_to_string(s.root.join("c2").join("tokenizer.json"))?
    );
    Ok(())
}

/// Rewrites every float tensor of a checkpoint's model file with NaN, keeping the file intact
/// on disk (header and size agree), as a run that diverged just before saving leaves it.
fn poison(step_dir: &Path) -> Result<()> {
    let file = step_dir.join(vqrae_train::checkpoint::MODEL_FILE);
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu)?;
    let poisoned = tensors
        .into_iter()
        .map(|(k, t)| {
            let t = if t.dtype().is_float() {
                candle_core::Tensor::full(f32::NAN, t.shape(), &Device::Cpu)?.to_dtype(t.dtype())?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    candle_core::safetensors::save(&poisoned, &file)?;
    Ok(())
}

#[test]
fn a_nan_checkpoint_is_skipped_and_a_second_trainer_refused() -> Result<()> {
    let s = setup()?;
    let cfg = generation_only(&s.cfg, 10);
    let whole = s.train(&cfg, &s.data, "whole")?;
    let run = s.root.join("run");
    s.train(&cfg, &s.data, "run")?;

    // the newest checkpoint holds NaN weights: the run resumes from the one before and ends
    // where an uninterrupted run does
    poison(&run.join("state/step-10"))?;
    let resumed = s.train(&cfg, &s.data, "run")?;
    assert_eq!(resumed.resumed_from, Some(5));
    assert_eq!(weights(&whole.model_dir)?, weights(&resumed.model_dir)?);

    // every checkpoint poisoned: a clear error naming them
    poison(&run.join("state/step-5"))?;
    poison(&run.join("state/step-10"))?;
    let err = s.train(&cfg, &s.data, "run").unwrap_err().to_string();
    assert!(
        err.contains("every checkpoint holds NaN or infinite"),
        "{err}"
    );
    assert!(err.contains("step-5") && err.contains("step-10"), "{err}");

    // another trainer holds the run: refused at once, naming the directory and the holder
    let held = vqrae_train::lock::RunLock::acquire(&run)?;
    let err = s.train(&cfg, &s.data, "run").unwrap_err().to_string();
    assert!(err.contains("in use by another trainer"), "{err}");
    assert!(err.contains(&run.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    Ok(())
}
