//! The `train-referee` and `eval-referee` procedures on a miniature easy-VQA installation.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use vqrae_data::easy_vqa::Split;
use vqrae_data::fs::sha256_model;
use vqrae_eval::referee::{
    evaluate_on_real, read_qualification, train_and_qualify, EvalRefereeOptions, Referee,
    TrainRefereeOptions,
};
use vqrae_test_support::{mini_easy_vqa, save_tiny_tokenizer};

/// A referee config small enough to train in a moment.
fn tiny_config(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("referee.toml");
    std::fs::write(
        &path,
        "[model]\nimage_size = 16\nchannels = [4, 4, 8, 8]\n\
         [train]\nsteps = 4\nbatch_size = 8\nlr = 3e-3\n",
    )?;
    Ok(path)
}

#[test]
fn trains_saves_and_records_its_test_accuracy() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("data");
    mini_easy_vqa(&root, 30, 12)?;
    let config = tiny_config(tmp.path())?;
    let out = tmp.path().join("referee");
    let subset = TrainRefereeOptions {
        limit: 24,
        test_limit: 8,
    };
    let report = train_and_qualify(&config, &out, &root, &subset, &Device::Cpu)?;
    assert_eq!((report.train_images, report.test.images), (24, 8));
    assert_eq!((report.model.image_size, report.train.steps), (16, 4));
    assert!(report.parameters > 0 && report.train_seconds > 0.0);
    assert!(
        !report.qualified,
        "a subset of the test split never qualifies"
    );
    let q = read_qualification(&out)?.expect("a qualification record");
    assert_eq!(q.split, "test (subset of 8)");
    assert_eq!(q.report, report.test);
    Referee::load(&out, &Device::Cpu)?;
    // the referee is identified by the hash of its weights, its qualification left out
    assert_eq!(report.out_sha256, sha256_model(&out)?);
    // the whole test split is recorded as such
    let all = TrainRefereeOptions {
        limit: 0,
        test_limit: 0,
    };
    let report = train_and_qualify(&config, &out, &root, &all, &Device::Cpu)?;
    assert_eq!((report.train_images, report.test.images), (30, 12));
    assert_eq!(read_qualification(&out)?.expect("a record").split, "test");
    Ok(())
}

#[test]
fn judges_real_images_and_a_tokenizers_reconstructions() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("data");
    mini_easy_vqa(&root, 16, 12)?;
    let referee = tmp.path().join("referee");
    let options = TrainRefereeOptions::default();
    train_and_qualify(
        &tiny_config(tmp.path())?,
        &referee,
        &root,
        &options,
        &Device::Cpu,
    )?;
    let tok = tmp.path().join("tok");
    save_tiny_tokenizer(&tok)?;
    let errors = tmp.path().join("errors.png");
    let options = EvalRefereeOptions {
        tokenizer: Some(tok.clone()),
        split: Split::Test,
        limit: 10,
        batch: 4,
        errors: Some(errors.clone()),
    };
    let report = evaluate_on_real(&referee, &root, &options, &Device::Cpu)?;
    assert_eq!((report.images, report.split.as_str()), (10, "test"));
    assert!(
        !report.qualified,
        "four steps on 16 images do not reach 99%"
    );
    let wrong = (10.0 * (1.0 - report.real.report.both)).round() as usize;
    assert_eq!(report.real_errors.len(), wrong);
    assert_eq!(errors.exists(), wrong > 0);
    let per_colour: usize = report.real.by_color.iter().map(|c| c.images).sum();
    assert_eq!(per_colour, 10);
    let rec = report
        .reconstructed
        .as_ref()
        .expect("reconstructions judged");
    assert_eq!(rec.report.images, 10);
    assert!(report.reconstruct_seconds.is_some());
    assert_eq!(report.tokenizer.as_deref(), Some(tok.as_path()));
    // the per-class lists sit beside the accuracy fields
    let json = serde_json::to_value(&report)?;
    assert_eq!(json["real"]["images"], 10);
    assert!(json["real"]["by_shape"].is_array());
    // both models measured are recorded by content hash beside their paths
    assert_eq!(json["referee_sha256"], sha256_model(&referee)?.as_str());
    assert_eq!(json["tokenizer_sha256"], sha256_model(&tok)?.as_str());
    let without = EvalRefereeOptions {
        tokenizer: None,
        ..options
    };
    let report = evaluate_on_real(&referee, &root, &without, &Device::Cpu)?;
    assert!(report.tokenizer_sha256.is_none());
    Ok(())
}
