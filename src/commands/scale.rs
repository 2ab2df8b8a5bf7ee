//! `scale`: the scaling sweep of `configs/scaling/*.toml` on easy-VQA and the procedural scenes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use image::{imageops, RgbImage};
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::scenes::{caption, render, Scene, SceneConfig, SceneDataset};
use vqrae_eval::referee::Verdict;
use vqrae_scaling::quality::Prompt;
use vqrae_scaling::{report, sweep, ScalingConfig, SweepData};

#[derive(Args)]
pub struct ScaleArgs {
    /// The sweep (configs/scaling/*.toml): recipe, sizes, held-out size, codebook sweep.
    #[arg(long)]
    config: PathBuf,
    /// Output folder: cached codes, one folder per run, the report; an existing one resumes.
    #[arg(short, long)]
    out: PathBuf,
    /// The same pipeline shrunk to a few minutes (the config's [smoke] section).
    #[arg(long)]
    smoke: bool,
}

/// Images with their captions (images without a colour or shape label are skipped).
fn captioned(ds: &EasyVqa) -> Result<(Vec<image::RgbImage>, Vec<String>, Vec<Verdict>)> {
    let keep: Vec<usize> = (0..ds.images.len())
        .filter(|&i| ds.images[i].caption().is_some())
        .collect();
    let images = ds.load_images(&keep)?;
    let mut captions = Vec::with_capacity(keep.len());
    let mut labels = Vec::with_capacity(keep.len());
    for &i in &keep {
        let im = &ds.images[i];
        if let (Some(c), Some(color), Some(shape)) = (im.caption(), im.color, im.shape) {
            captions.push(c);
            labels.push(Verdict { color, shape });
        }
    }
    Ok((images, captions, labels))
}

/// `a[0], b[0], a[1], b[1], ...` then the rest of the longer one: any prefix (a smoke run's
/// `train_limit`) holds both kinds.
fn interleave<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

type Labelled = (RgbImage, String, Option<Verdict>);

fn scene_items(cfg: &SceneConfig, scenes: &[Scene]) -> Vec<Labelled> {
    scenes
        .iter()
        .map(|s| (render(cfg, s), caption(s), None))
        .collect()
}

pub fn run(a: ScaleArgs, root: &Path, device: &Device) -> Result<()> {
    let mut cfg = ScalingConfig::from_toml_file(&a.config)?;
    if a.smoke {
        cfg = cfg.smoke()?;
    }
    let load = |split| {
        EasyVqa::load(&root.join("easy-vqa"), split)
            .with_context(|| format!("easy-VQA {split} (run `vqrae data setup`)"))
    };
    let (train_images, train_captions, _) = captioned(&load(Split::Train)?)?;
    let (val_images, val_captions, val_labels) = captioned(&load(Split::Test)?)?;
    let mut combos: Vec<Verdict> = val_labels.clone();
    combos.sort_by_key(|v| (v.color, v.shape));
    combos.dedup();
    let prompts = combos
        .into_iter()
        .map(|label| Prompt {
            caption: label.caption(),
            label,
        })
        .collect();

    let d = &cfg.data;
    let train_scenes = SceneDataset::split(Split::Train, d.scenes);
    let test_scenes = SceneDataset::split(Split::Test, d.val_scenes.max(cfg.quality.scene_prompts));
    let scene_cfg = train_scenes.cfg.clone();
    let easy_mirror: Vec<Labelled> = if d.mirror {
        train_images
            .iter()
            .zip(&train_captions)
            .map(|(im, c)| (imageops::flip_horizontal(im), c.clone(), None))
            .collect()
    } else {
        Vec::new()
    };
    let scenes_mirror: Vec<Scene> = if d.mirror {
        train_scenes.scenes.iter().map(Scene::mirrored).collect()
    } else {
        Vec::new()
    };
    let easy: Vec<Labelled> = train_images
        .into_iter()
        .zip(train_captions)
        .map(|(im, c)| (im, c, None))
        .collect();
    let mut train = interleave(easy, scene_items(&scene_cfg, &train_scenes.scenes));
    train.extend(interleave(
        easy_mirror,
        scene_items(&scene_cfg, &scenes_mirror),
    ));
    let easy_val: Vec<Labelled> = val_images
        .into_iter()
        .zip(val_captions)
        .zip(val_labels)
        .map(|((im, c), l)| (im, c, Some(l)))
        .collect();
    let val = interleave(
        easy_val,
        scene_items(&scene_cfg, &test_scenes.scenes[..d.val_scenes]),
    );

    let (train_images, train_captions): (Vec<_>, Vec<_>) =
        train.into_iter().map(|(im, c, _)| (im, c)).unzip();
    let mut data = SweepData {
        train_images,
        train_captions,
        val_images: Vec::with_capacity(val.len()),
        val_captions: Vec::with_capacity(val.len()),
        val_labels: Vec::with_capacity(val.len()),
        prompts,
        scene_prompts: test_scenes.scenes[..cfg.quality.scene_prompts].to_vec(),
        scene_cfg,
    };
    for (im, c, l) in val {
        data.val_images.push(im);
        data.val_captions.push(c);
        data.val_labels.push(l);
    }
    let result = sweep::run(&cfg, &data, &a.out, device)?;
    report::write_all(&result, &a.out)?;
    println!("{}", report::markdown(&result));
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_alternates_then_finishes_the_longer() {
        assert_eq!(interleave(vec![1, 3, 5, 6], vec![2, 4]), [1, 2, 3, 4, 5, 6]);
        assert_eq!(interleave(Vec::<u8>::new(), vec![1]), [1]);
    }

    #[test]
    fn a_mirrored_scene_is_the_mirror_image_and_captioned_again() {
        let ds = SceneDataset::split(Split::Train, 200);
        let scene = ds
            .scenes
            .iter()
            .find(|s| caption(s).contains(" left of "))
            .expect("a scene with a left-of caption");
        let m = scene.mirrored();
        // the caption names the left object first: the mirror swaps which one that is
        assert_ne!(caption(&m), caption(scene));
        for (a, b) in m.mirrored().objects.iter().zip(&scene.objects) {
            assert!((a.x - b.x).abs() < 1e-6 && a.y == b.y);
        }
        // the mirrored scene draws the mirror image
        let flipped = imageops::flip_horizontal(&render(&ds.cfg, scene));
        assert_eq!(render(&ds.cfg, &m), flipped);
    }
}
