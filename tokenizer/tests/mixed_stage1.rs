//! Stage 1 on the four sources mixed (easy-VQA, scenes, emoji, Tux Paint), with the tiny
//! random DINOv2 of the parity fixtures as the frozen encoder: the mixed set's split and
//! per-source counts on the installed data, the feature cache written by one run and read by
//! the next (which never runs the encoder), a changed key that recomputes, the per-source
//! evaluation of the result, and stage 2 from it on the same mix (the encoder distilled to
//! the original).

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use vqrae_data::captioned::{CaptionedOptions, CaptionedSource};
use vqrae_data::easy_vqa::Split;
use vqrae_data::labelled::Dataset;
use vqrae_tokenizer::checkpoint_eval::{evaluate_checkpoint, CheckpointEval};
use vqrae_tokenizer::encoder::hf_encoder_config;
use vqrae_tokenizer::mixed::{MixSource, MixedData, MixedSet};
use vqrae_tokenizer::runs::{
    train_tokenizer_run, QuantizerOverrides, TokenizerStart, TokenizerTraining,
};
use vqrae_tokenizer::VqraeConfig;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn data_root() -> PathBuf {
    std::env::var_os("VQRAE_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".data"))
}

fn fixture() -> PathBuf {
    repo().join("tokenizer/tests/fixtures/dinov2_tiny")
}

/// 3 training and 2 held-out images of each source; Tux Paint capped at 4 for training.
fn small_mix() -> MixedData {
    MixedData {
        train_per_source: 3,
        held_out_per_source: 2,
        train_caps: [(MixSource::TuxPaint, 4)].into(),
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn the_mixed_set_takes_each_source_from_its_own_split() -> Result<()> {
    let root = data_root();
    let mix = small_mix();
    let train = MixedSet::load(&root, &mix, Split::Train, 16)?;
    let held = MixedSet::load(&root, &mix, Split::Test, 16)?;
    use MixSource::*;
    assert_eq!(
        train.counts(),
        [(EasyVqa, 3), (Scenes, 3), (Emoji, 3), (TuxPaint, 4)]
    );
    assert_eq!(
        held.counts(),
        [(EasyVqa, 2), (Scenes, 2), (Emoji, 2), (TuxPaint, 2)]
    );
    assert_eq!(train.images.len(), 13);
    assert!(train.images.iter().all(|i| i.dimensions() == (16, 16)));
    // contiguous parts, in the config's order
    let ends: Vec<usize> = train.parts.iter().map(|p| p.start + p.len).collect();
    assert_eq!(ends, [3, 6, 9, 13]);
    // a caption for every image, in each source's own words
    assert_eq!(train.captions.len(), 13);
    assert!(train.captions.iter().all(|c| !c.trim().is_empty()));
    assert!(
        train.captions[..3].iter().all(|c| c.starts_with("a ")),
        "{:?}",
        train.captions
    );
    let emoji = CaptionedSource::Emoji.open(&root, &CaptionedOptions::default())?;
    assert!(train.captions[6..9]
        .iter()
        .all(|c| emoji.items.iter().any(|i| &i.caption == c)));
    // what each source has in all is its own split's size
    for (src, cap) in [
        (CaptionedSource::Emoji, Emoji),
        (CaptionedSource::TuxPaint, TuxPaint),
    ] {
        let (t, h) = src.open(&root, &CaptionedOptions::default())?.counts();
        let avail = |s: &MixedSet| {
            s.parts
                .iter()
                .find(|p| p.source == cap)
                .map(|p| p.available)
        };
        assert_eq!((avail(&train), avail(&held)), (Some(t), Some(h)), "{src}");
        assert!(h > 0 && t > 5 * h, "{src}: {t} / {h}");
    }
    // no held-out image is a training image (at a cap of all of the smaller split)
    let all_held = MixedSet::load(
        &root,
        &MixedData {
            sources: vec![Emoji],
            held_out_per_source: 0,
            train_caps: Default::default(),
            ..small_mix()
        },
        Split::Test,
        16,
    )?;
    let train_emoji = &train.images[6..9];
    assert!(all_held.images.iter().all(|h| !train_emoji.contains(h)));
    // deterministic, and the order of the sources does not change a source's subset
    let again = MixedSet::load(&root, &mix, Split::Train, 16)?;
    assert_eq!(again.images, train.images);
    assert_eq!(again.identity(), train.identity());
    let reversed = MixedData {
        sources: mix.sources.iter().rev().copied().collect(),
        ..mix.clone()
    };
    let rev = MixedSet::load(&root, &reversed, Split::Train, 16)?;
    assert_eq!(rev.images[..4], train.images[9..13]);
    assert_ne!(rev.identity(), train.identity());
    // another seed, other images
    let other = MixedSet::load(
        &root,
        &MixedData {
            seed: 8,
            ..mix.clone()
        },
        Split::Train,
        16,
    )?;
    assert_ne!(other.images, train.images);
    // a missing install says what to run
    let err = MixedSet::load(Path::new("/nonexistent"), &mix, Split::Train, 16).unwrap_err();
    assert!(err.to_string().contains("/nonexistent"), "{err}");
    Ok(())
}

/// A stage-1 training config on `mix` with the feature cache in `cache`.
fn stage1_toml(mix: &MixedData, cache: &Path) -> Result<String> {
    let data = toml::to_string(&std::collections::BTreeMap::from([("data", mix)]))?;
    Ok(format!(
        "stage = 1\nsteps = 2\nbatch_size = 4\ncheckpoint_every = 1\nlog_every = 1\n\
         restart_dead_codes = 1\nfeature_cache = {:?}\n[decoder_lr]\npeak_lr = 1e-3\n\
         min_lr = 1e-4\nwarmup_steps = 1\ntotal_steps = 2\n[loss]\nperceptual = 0.0\n\
         quant = 0.2\n{data}",
        cache.display().to_string()
    ))
}

#[test]
fn stage_one_on_the_mix_caches_the_encoder_features_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name);
    let root = data_root();
    // the tiny config with the tiny DINOv2 as its encoder, at 16 px (4x4 tokens)
    let mut cfg = VqraeConfig::from_toml_file(&repo().join("configs/tiny.toml"))?;
    cfg.image_size = 16;
    cfg.encoder = hf_encoder_config(&fixture().join("config.json"))?;
    std::fs::write(p("tok.toml"), toml::to_string(&cfg)?)?;
    let mix = small_mix();
    let cache = p("cache");
    std::fs::write(p("s1.toml"), stage1_toml(&mix, &cache)?)?;
    let run = |name: &str, train: &str| TokenizerTraining {
        start: TokenizerStart::Fresh {
            config: p("tok.toml"),
            encoder: Some(fixture()),
            overrides: QuantizerOverrides::default(),
        },
        train_config: p(train),
        dataset: Dataset::EasyVqa,
        limit: 0,
        run: p(name),
        teacher: None,
    };

    let first = train_tokenizer_run(&run("a", "s1.toml"), &root, &Device::Cpu)?;
    assert_eq!(first.steps, 2);
    let used = first.feature_cache.clone().expect("a cache was configured");
    assert!(!used.hit, "the first run computes the features");
    assert_eq!(used.images, 13);
    assert!(used.path.starts_with(&cache), "{}", used.path.display());
    assert!(first.model_dir.join("model.safetensors").is_file());
    let written = std::fs::metadata(&used.path)?.modified()?;

    // a second run of another model on the same encoder and images reads the file: the
    // encoder does not run, and the file is not rewritten
    let second = train_tokenizer_run(&run("b", "s1.toml"), &root, &Device::Cpu)?;
    let reused = second.feature_cache.expect("a cache was configured");
    assert!(reused.hit, "the second run reads the cache");
    assert_eq!(reused.path, used.path);
    assert_eq!(std::fs::metadata(&used.path)?.modified()?, written);
    // ... and trains on exactly the same features: the same first loss
    let loss = |run: &str| -> Result<f64> {
        let log = vqrae_train::metrics::MetricsLog::read(&p(run).join("metrics.jsonl"))?;
        Ok(log[0]["loss"].as_f64().unwrap_or(f64::NAN))
    };
    assert_eq!(loss("a")?, loss("b")?);

    // other images (another seed for the subsets) are another key: computed, in another file
    let reseeded = MixedData {
        seed: 8,
        ..mix.clone()
    };
    std::fs::write(p("s1-seed8.toml"), stage1_toml(&reseeded, &cache)?)?;
    let third = train_tokenizer_run(&run("c", "s1-seed8.toml"), &root, &Device::Cpu)?;
    let other = third.feature_cache.expect("a cache was configured");
    assert!(!other.hit);
    assert_ne!(other.path, used.path);
    assert_eq!(std::fs::read_dir(&cache)?.count(), 2);

    // --limit belongs to --dataset, not to a [data] table
    let limited = TokenizerTraining {
        limit: 5,
        ..run("d", "s1.toml")
    };
    let err = train_tokenizer_run(&limited, &root, &Device::Cpu).map(|_| ());
    assert!(err.is_err_and(|e| e.to_string().contains("[data]")));

    stage_two_on_the_mix(&first.model_dir, &root, dir.path(), &mix)?;
    held_out_figures_per_source(&first.model_dir, &root, dir.path())
}

/// Stage 2 from the stage-1 model in `model` on the same mix, distilled to the original
/// encoder (`--teacher`): the encoder moves, the distillation loss sees it, and the held-out
/// feature cosine to the original falls below 1.
fn stage_two_on_the_mix(model: &Path, root: &Path, dir: &Path, mix: &MixedData) -> Result<()> {
    let data = toml::to_string(&std::collections::BTreeMap::from([("data", mix)]))?;
    let lr = "peak_lr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 1\ntotal_steps = 3\n";
    let cfg = format!(
        "stage = 2\nsteps = 3\nbatch_size = 4\ncheckpoint_every = 1\nlog_every = 1\n\
         [decoder_lr]\n{lr}[encoder_lr]\n{lr}[loss]\nperceptual = 0.0\nquant = 0.2\n\
         distill = 1.0\n{data}"
    );
    std::fs::write(dir.join("s2.toml"), cfg)?;
    let s2 = train_tokenizer_run(
        &TokenizerTraining {
            start: TokenizerStart::Checkpoint(model.to_path_buf()),
            train_config: dir.join("s2.toml"),
            dataset: Dataset::EasyVqa,
            limit: 0,
            run: dir.join("s2"),
            teacher: Some(fixture()),
        },
        root,
        &Device::Cpu,
    )?;
    assert_eq!(s2.steps, 3);
    assert!(s2.feature_cache.is_none(), "stage 2 runs the encoder");
    let log = vqrae_train::metrics::MetricsLog::read(&dir.join("s2").join("metrics.jsonl"))?;
    // the first step starts at the teacher; the next ones see the moved encoder
    let distill = |i: usize| log[i]["distill"].as_f64().unwrap_or(f64::NAN);
    assert!(distill(0).abs() < 1e-9, "{}", distill(0));
    assert!(distill(2) > 0.0, "{}", distill(2));
    let eval = CheckpointEval {
        model: s2.model_dir.clone(),
        dataset: Dataset::EasyVqa,
        split: Split::Test,
        reference: Some(fixture()),
        grid: None,
        limit: 0,
        batch: 4,
        mix: Some(dir.join("s2.toml")),
        fd_encoder: None,
        fd_resolution: 16,
        fd_floor: false,
    };
    let r = evaluate_checkpoint(&eval, root, &Device::Cpu)?;
    for (name, rep) in r.per_source.as_ref().expect("per-source figures") {
        let cos = rep.feature_cosine.unwrap_or(f64::NAN);
        assert!(cos < 1.0 - 1e-6 && cos > 0.0, "{name}: {cos}");
    }
    Ok(())
}

/// The held-out figures of the model in `model`, per source, from the `[data]` table of
/// `<dir>/s1.toml`, with FD-DINOv2 and its floor; a config without `[data]` is refused.
fn held_out_figures_per_source(model: &Path, root: &Path, dir: &Path) -> Result<()> {
    let p = |name: &str| dir.join(name);
    // the held-out figures, per source, from the same [data] table
    let eval = CheckpointEval {
        model: model.to_path_buf(),
        dataset: Dataset::EasyVqa,
        split: Split::Test,
        reference: Some(fixture()),
        grid: Some(p("grid.png")),
        limit: 0,
        batch: 3,
        mix: Some(p("s1.toml")),
        fd_encoder: Some(fixture()),
        fd_resolution: 16,
        fd_floor: true,
    };
    let r = evaluate_checkpoint(&eval, root, &Device::Cpu)?;
    assert_eq!(r.report.images, 8);
    let per = r.per_source.as_ref().expect("per-source figures");
    let names: Vec<&str> = per.keys().map(String::as_str).collect();
    assert_eq!(names, ["easy-vqa", "emoji", "scenes", "tuxpaint"]);
    for (name, rep) in per {
        assert_eq!(rep.images, 2, "{name}");
        assert!(
            rep.psnr.is_finite() && rep.utilisation > 0.0,
            "{name}: {rep:?}"
        );
        // stage 1 leaves the encoder as it was
        let cos = rep.feature_cosine.unwrap_or(0.0);
        assert!((cos - 1.0).abs() < 1e-5, "{name}: {cos}");
        // an untrained decoder's pictures are far from the originals
        let fd = rep.fd_dinov2.unwrap_or(f64::NAN);
        assert!(fd > 0.0, "{name}: {fd}");
        // the floor: held-out against training images of the source, both real
        let floor = rep.fd_dinov2_floor.unwrap_or(f64::NAN);
        assert!(floor.is_finite() && floor >= 0.0, "{name}: {floor}");
    }
    assert!(r.report.fd_dinov2_floor.is_none());
    assert!(r.report.fd_dinov2.is_some_and(|fd| fd > 0.0));
    assert_eq!(
        r.fd_encoder_sha256,
        Some(vqrae_data::fs::sha256_model(&fixture())?)
    );
    assert_eq!(r.fd_resolution, Some(16));
    let mean_psnr = per.values().map(|r| r.psnr).sum::<f64>() / 4.0;
    assert!((mean_psnr - r.report.psnr).abs() < 1e-9);
    // 2 originals and 2 reconstructions of each source: one row of 8 over another
    let g = vqrae_data::image_io::load_rgb(&p("grid.png"))?;
    assert_eq!(g.dimensions(), (8 * 18 + 2, 2 * 18 + 2));
    let json = serde_json::to_string(&r.json()?)?;
    assert!(json.contains("\"per_source\""), "{json}");
    // a training config without a [data] table is refused, naming it
    std::fs::write(p("plain.toml"), "stage = 1\n")?;
    let plain = CheckpointEval {
        mix: Some(p("plain.toml")),
        ..eval
    };
    let err = evaluate_checkpoint(&plain, root, &Device::Cpu).map(|_| ());
    assert!(err.is_err_and(|e| e.to_string().contains("no [data] table")));
    Ok(())
}
