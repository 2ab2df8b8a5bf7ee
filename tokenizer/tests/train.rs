//! Two-stage training of a tiny tokenizer on real easy-VQA images: the loss goes down, stage 2
//! starts from stage 1, an interrupted run resumed from its checkpoint ends with exactly the
//! parameters of an uninterrupted one, and evaluation reports sane figures.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use image::RgbImage;
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::image_io::resize;
use vqrae_tokenizer::checkpoint::varmap_tensors;
use vqrae_tokenizer::eval::evaluate;
use vqrae_tokenizer::train::{frozen_encoder, train, write_teacher, TrainConfig};
use vqrae_tokenizer::{Vqrae, VqraeConfig};
use vqrae_train::metrics::MetricsLog;
use vqrae_train::schedule::LrSchedule;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn images(split: Split, n: usize) -> Result<Vec<RgbImage>> {
    let root = std::env::var_os("VQRAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".data"));
    let ds = EasyVqa::load(&root.join("easy-vqa"), split)?;
    let idx: Vec<usize> = (0..n).collect();
    Ok(ds
        .load_images(&idx)?
        .iter()
        .map(|i| resize(i, 32, 32))
        .collect())
}

fn tiny() -> Result<VqraeConfig> {
    Ok(VqraeConfig::from_toml_file(
        &repo().join("configs/tiny.toml"),
    )?)
}

fn cfg(stage: u8, steps: u64) -> TrainConfig {
    let lr = |peak| LrSchedule {
        peak_lr: peak,
        min_lr: peak / 10.0,
        warmup_steps: 5,
        total_steps: steps,
    };
    TrainConfig {
        stage,
        steps,
        batch_size: 8,
        decoder_lr: lr(3e-3),
        encoder_lr: lr(1e-4),
        checkpoint_every: 6,
        log_every: 1,
        ..TrainConfig::default()
    }
}

fn all_params(vars: &vqrae_tokenizer::init::SeededVarMap) -> Result<Vec<(String, Vec<f32>)>> {
    let mut t: Vec<_> = varmap_tensors(&vars.varmap)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<_>>()?;
    t.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(t)
}

#[test]
fn stage_one_loss_goes_down_and_stage_two_starts_from_it() -> Result<()> {
    let dev = Device::Cpu;
    let data = images(Split::Train, 64)?;
    let dir = tempfile::tempdir()?;
    let (model, vars) = Vqrae::init(&tiny()?, None, 0, &dev)?;
    let encoder_before = frozen_encoder(&model, &vars, &dev)?;
    let run1 = dir.path().join("s1");
    let summary = train(&model, &vars, &data, &cfg(1, 40), &run1, true, &dev)?;
    let log = MetricsLog::read(&run1.join("metrics.jsonl"))?;
    assert_eq!(log.len(), 40);
    let mean = |r: &[serde_json::Value]| {
        r.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (mean(&log[..5]), mean(&log[35..]));
    assert!(
        last < 0.7 * first,
        "stage 1 loss did not go down: {first} -> {last}"
    );
    // stage 1 leaves the encoder alone
    let x = model.images_to_input(&data[..4])?;
    let d = (model.encoder().patch_tokens(&x, false)? - encoder_before.patch_tokens(&x, false)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(d, 0.0, "stage 1 changed the frozen encoder");

    let (model2, vars2) = Vqrae::init_from_checkpoint(&summary.model_dir, 0, &dev)?;
    let test = images(Split::Test, 16)?;
    let (before, _) = evaluate(&model2, &test, Some(&encoder_before), 8, 0)?;
    assert!((before.feature_cosine.unwrap() - 1.0).abs() < 1e-5);
    let run2 = dir.path().join("s2");
    train(&model2, &vars2, &data, &cfg(2, 12), &run2, false, &dev)?;
    let (after, recs) = evaluate(&model2, &test, Some(&encoder_before), 8, 4)?;
    assert_eq!(recs.len(), 4);
    let cos = after.feature_cosine.unwrap();
    assert!(
        cos < 1.0 && cos > 0.5,
        "stage 2 moved the encoder by an implausible amount: {cos}"
    );
    assert!(
        after.psnr > 5.0 && after.ssim > 0.0 && after.utilisation > 0.0,
        "{after:?}"
    );
    Ok(())
}

#[test]
fn resume_gives_the_parameters_of_an_uninterrupted_run() -> Result<()> {
    let dev = Device::Cpu;
    let data = images(Split::Train, 32)?;
    let dir = tempfile::tempdir()?;
    let (start, start_vars) = Vqrae::init(&tiny()?, None, 1, &dev)?;
    let init_dir = dir.path().join("init");
    start.save(&init_dir, &start_vars)?;

    // uninterrupted: 10 steps of stage 2 (encoder, distillation, every loss term, the GAN
    // from step 3, so that the checkpoint at step 6 holds a trained discriminator, and dead-code
    // restarts every 4 steps, so that code use counted at steps 5-6 crosses the checkpoint)
    let with_gan = |mut c: TrainConfig| {
        c.gan.weight = 0.1;
        c.gan.start_step = 3;
        c.restart_dead_codes = 4;
        c
    };
    let (m, v) = Vqrae::init_from_checkpoint(&init_dir, 0, &dev)?;
    let full_dir = dir.path().join("full");
    train(&m, &v, &data, &with_gan(cfg(2, 10)), &full_dir, false, &dev)?;
    let log = MetricsLog::read(&full_dir.join("metrics.jsonl"))?;
    assert_eq!(
        log[1]["disc"].as_f64(),
        Some(0.0),
        "GAN before its start step"
    );
    assert!(
        log[5]["disc"].as_f64().unwrap() > 0.0,
        "GAN after its start step"
    );
    let restarted = |i: usize| log[i]["codes_restarted"].as_u64().unwrap();
    assert!(restarted(3) > 0, "no dead code restarted at step 4");
    assert_eq!(restarted(4), 0, "a restart between the restart steps");
    let full = all_params(&v)?;

    // interrupted after the checkpoint at step 6, then resumed by a fresh process
    let run = dir.path().join("interrupted");
    let (m, v) = Vqrae::init_from_checkpoint(&init_dir, 0, &dev)?;
    let mut short = with_gan(cfg(2, 10));
    short.steps = 6;
    short.decoder_lr.total_steps = 10;
    short.encoder_lr.total_steps = 10;
    train(&m, &v, &data, &short, &run, false, &dev)?;
    let (m, v) = Vqrae::init_from_checkpoint(&init_dir, 99, &dev)?;
    let summary = train(&m, &v, &data, &with_gan(cfg(2, 10)), &run, false, &dev)?;
    assert_eq!(summary.resumed_from, Some(6));
    assert_eq!(
        all_params(&v)?,
        full,
        "resumed run differs from the uninterrupted one"
    );
    assert_eq!(MetricsLog::read(&run.join("metrics.jsonl"))?.len(), 10);
    Ok(())
}

#[test]
fn bad_train_configs_are_rejected() {
    let mut c = cfg(3, 10);
    assert!(c.validate().is_err());
    c.stage = 1;
    c.batch_size = 0;
    assert!(c.validate().is_err());
    let err = toml::from_str::<TrainConfig>("stage = 1\nstpes = 10").unwrap_err();
    assert!(err.to_string().contains("stpes"));
}

#[test]
fn stage_two_distils_to_the_teacher_written_before_it_starts() -> Result<()> {
    let dev = Device::Cpu;
    let data = images(Split::Train, 16)?;
    let dir = tempfile::tempdir()?;
    let first_distill = |run: &Path| -> Result<f64> {
        let log = MetricsLog::read(&run.join("metrics.jsonl"))?;
        Ok(log[0]["distill"].as_f64().unwrap())
    };
    // without a written teacher the student starts as its own teacher: nothing to distil yet
    let (model, vars) = Vqrae::init(&tiny()?, None, 0, &dev)?;
    let own = dir.path().join("own");
    train(&model, &vars, &data, &cfg(2, 6), &own, false, &dev)?;
    let own_first = first_distill(&own)?;
    assert!(
        own_first < 1e-9,
        "distilled to a copy of itself at the start: {own_first}"
    );

    // another encoder as the teacher: the first step already pays for the distance to it
    let (other, other_vars) = Vqrae::init(&tiny()?, None, 7, &dev)?;
    let teacher: std::collections::HashMap<_, _> = varmap_tensors(&other_vars.varmap)?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("encoder.").map(|s| (s.to_string(), v)))
        .collect();
    drop(other);
    let (model, vars) = Vqrae::init(&tiny()?, None, 0, &dev)?;
    let run = dir.path().join("other");
    assert!(write_teacher(&run, &teacher)?);
    // a run keeps the teacher it has
    assert!(!write_teacher(&run, &teacher)?);
    train(&model, &vars, &data, &cfg(2, 6), &run, false, &dev)?;
    assert!(first_distill(&run)? > 0.0);
    Ok(())
}
