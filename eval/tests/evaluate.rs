//! The `eval-vqa` and `eval-t2i` procedures with a tiny unified model on a miniature easy-VQA
//! installation: the reports count what they should and print the keys they always have.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use vqrae_data::easy_vqa::{load_split, Split};
use vqrae_data::fs::sha256_model;
use vqrae_eval::referee::{train_and_qualify, Referee, TrainRefereeOptions};
use vqrae_eval::t2i::{self, T2iOptions};
use vqrae_eval::vqa::{self, VqaOptions};
use vqrae_lm::SamplingConfig;
use vqrae_test_support::{mini_easy_vqa, shared_tiny_model};
use vqrae_unified::model::UnifiedModel;

/// The tiny model and the directory it was loaded from.
fn tiny_model() -> Result<(UnifiedModel, &'static Path)> {
    let dir = shared_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), "eval-tiny-");
    Ok((UnifiedModel::load(dir, &Device::Cpu, DType::F32)?, dir))
}

/// The keys of a JSON object, in printed order.
fn keys(v: &serde_json::Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn vqa_scores_every_question_asked_and_lists_examples_and_mistakes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    mini_easy_vqa(tmp.path(), 4, 6)?;
    let ds = load_split(tmp.path(), Split::Test)?;
    let (model, dir) = tiny_model()?;
    let options = VqaOptions {
        limit: 14,
        batch: 4,
        mistakes: 2,
    };
    let report = vqa::evaluate((&model, dir), &ds, &options)?;
    assert_eq!((report.split, report.questions), (Split::Test, 14));
    let total: usize = report.by_kind.values().map(|k| k.total).sum();
    let correct: usize = report.by_kind.values().map(|k| k.correct).sum();
    assert_eq!(total, 14);
    assert_eq!(report.accuracy, correct as f64 / 14.0);
    assert_eq!(report.examples.len(), 12);
    for (e, q) in report.examples.iter().zip(&ds.questions) {
        assert_eq!(
            (e.image, &e.question, &e.expected),
            (q.image_id, &q.question, &q.answer)
        );
    }
    assert_eq!(report.mistakes.len(), (14 - correct).min(2));
    let json = serde_json::to_value(&report)?;
    assert_eq!(
        keys(&json),
        [
            "accuracy",
            "by_kind",
            "examples",
            "mistakes",
            "model",
            "model_sha256",
            "questions",
            "seconds",
            "split"
        ]
    );
    assert_eq!(json["split"], "test");
    // the model asked is recorded by path and by the hash of its files
    assert_eq!(json["model"], dir.to_string_lossy().as_ref());
    assert_eq!(json["model_sha256"], sha256_model(dir)?.as_str());
    let zero = VqaOptions {
        batch: 0,
        ..options
    };
    assert!(vqa::evaluate((&model, dir), &ds, &zero).is_err());
    Ok(())
}

#[test]
fn t2i_judges_every_caption_and_scene_at_every_guidance_scale() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    mini_easy_vqa(tmp.path(), 2, 8)?;
    let ds = load_split(tmp.path(), Split::Test)?;
    let (model, dir) = tiny_model()?;
    let referee_dir = tmp.path().join("referee");
    let config = tmp.path().join("referee.toml");
    std::fs::write(
        &config,
        "[model]\nimage_size = 16\nchannels = [2, 2, 4, 4]\n\n[train]\nsteps = 1\nbatch_size = 2\n",
    )?;
    let all = TrainRefereeOptions::default();
    train_and_qualify(&config, &referee_dir, tmp.path(), &all, &Device::Cpu)?;
    let referee = Referee::load(&referee_dir, &Device::Cpu)?;
    let judge = (&referee, referee_dir.as_path());
    let grids = tmp.path().join("grids");
    let options = T2iOptions {
        guidance: vec![1.0, 2.5],
        images_per_caption: 2,
        first_seed: 3,
        sampling: SamplingConfig::default(),
        scenes: 2,
        grids: Some(grids.clone()),
        emoji: None,
    };
    let report = t2i::evaluate((&model, dir), judge, &ds, &options)?;
    // the toy images: three colours, two shapes
    assert_eq!((report.captions, report.images_per_caption), (6, 2));
    assert_eq!(report.by_guidance.keys().collect::<Vec<_>>(), ["1", "2.5"]);
    assert!(report.by_guidance.values().all(|r| r.images == 12));
    let scenes = report.scenes.as_ref().expect("scenes asked for");
    assert_eq!((scenes.prompts, scenes.images_per_prompt), (2, 2));
    assert_eq!(scenes.ceiling.images, 2);
    assert!(scenes.by_guidance.values().all(|r| r.images == 4));
    for name in ["grid-cfg1.png", "grid-cfg2.5.png", "scenes-grid-cfg2.5.png"] {
        assert!(grids.join(name).is_file(), "{name}");
    }
    let json = serde_json::to_value(&report)?;
    assert_eq!(
        keys(&json),
        [
            "by_guidance",
            "captions",
            "first_seed",
            "images_per_caption",
            "model",
            "model_sha256",
            "referee",
            "referee_sha256",
            "scenes",
            "seconds",
            "split",
            "temperature",
            "top_k",
            "top_p"
        ]
    );
    assert_eq!(json["model_sha256"], sha256_model(dir)?.as_str());
    assert_eq!(json["referee_sha256"], sha256_model(&referee_dir)?.as_str());
    assert_ne!(json["referee_sha256"], json["model_sha256"]);
    assert_eq!(
        keys(&json["scenes"]),
        ["by_guidance", "ceiling", "images_per_prompt", "prompts"]
    );
    // seeded: the same images again; without scenes, `scenes` is null
    let again = T2iOptions {
        guidance: vec![2.5],
        scenes: 0,
        grids: None,
        ..options.clone()
    };
    let report2 = t2i::evaluate((&model, dir), judge, &ds, &again)?;
    assert_eq!(report2.by_guidance["2.5"], report.by_guidance["2.5"]);
    assert!(serde_json::to_value(&report2)?["scenes"].is_null());
    let none = T2iOptions {
        images_per_caption: 0,
        ..again
    };
    assert!(t2i::evaluate((&model, dir), judge, &ds, &none).is_err());
    Ok(())
}
