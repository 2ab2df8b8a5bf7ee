//! The sweep's images from the data root: easy-VQA's captioned images and the procedural
//! scenes, interleaved so that any prefix (a smoke run's `train_limit`) holds both kinds, with
//! their mirror images when the config asks for them.

use std::path::Path;

use image::{imageops, RgbImage};
use vqrae_data::easy_vqa::{self, Split};
use vqrae_data::scenes::{caption, render, Scene, SceneConfig, SceneDataset};
use vqrae_eval::referee::Verdict;

use crate::config::ScalingConfig;
use crate::error::Result;
use crate::quality::Prompt;
use crate::sweep::SweepData;

/// One image as the sweep sees it: its caption and, for an easy-VQA image, the colour and shape
/// the referee should read in it (scenes have none: the scene judge reads them instead).
struct CaptionedImage {
    image: RgbImage,
    caption: String,
    label: Option<Verdict>,
}

/// Loads the easy-VQA splits and renders the scenes `cfg.data` asks for: the data of
/// [`crate::sweep::run`].
pub(crate) fn sweep_data(cfg: &ScalingConfig, root: &Path) -> Result<SweepData> {
    let captioned = |split| -> Result<Vec<CaptionedImage>> {
        let known = easy_vqa::load_split(root, split)?.color_shape_images(0, 0)?;
        let items = known
            .images
            .into_iter()
            .zip(known.captions)
            .zip(known.labels);
        Ok(items
            .map(|((image, caption), l)| CaptionedImage {
                image,
                caption,
                label: Some(Verdict {
                    color: l.color,
                    shape: l.shape,
                }),
            })
            .collect())
    };
    Ok(assemble(
        cfg,
        captioned(Split::Train)?,
        captioned(Split::Test)?,
    ))
}

/// The sweep's data from easy-VQA's captioned training and test images: training images
/// interleaved with the training scenes, then (with `mirror`) the mirror images of both,
/// interleaved the same way; held-out images interleaved with the first `val_scenes` test
/// scenes; one prompt per colour-shape pair of the held-out images.
fn assemble(
    cfg: &ScalingConfig,
    easy_train: Vec<CaptionedImage>,
    easy_val: Vec<CaptionedImage>,
) -> SweepData {
    let d = &cfg.data;
    let train_scenes = SceneDataset::split(Split::Train, d.scenes);
    let test_scenes = SceneDataset::split(Split::Test, d.val_scenes.max(cfg.quality.scene_prompts));
    let scene_cfg = train_scenes.cfg.clone();
    let (easy_mirror, scenes_mirror) = if d.mirror {
        let easy = easy_train
            .iter()
            .map(|it| CaptionedImage {
                image: imageops::flip_horizontal(&it.image),
                caption: it.caption.clone(),
                label: None,
            })
            .collect();
        (
            easy,
            train_scenes.scenes.iter().map(Scene::mirrored).collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut train = interleave(easy_train, scene_items(&scene_cfg, &train_scenes.scenes));
    train.extend(interleave(
        easy_mirror,
        scene_items(&scene_cfg, &scenes_mirror),
    ));
    let val = interleave(
        easy_val,
        scene_items(&scene_cfg, &test_scenes.scenes[..d.val_scenes]),
    );

    let mut combos: Vec<Verdict> = val.iter().filter_map(|it| it.label).collect();
    combos.sort_by_key(|v| (v.color, v.shape));
    combos.dedup();
    let prompts = combos
        .into_iter()
        .map(|label| Prompt {
            caption: label.caption(),
            label,
        })
        .collect();
    let (train_images, train_captions) = train.into_iter().map(|it| (it.image, it.caption)).unzip();
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
    for it in val {
        data.val_images.push(it.image);
        data.val_captions.push(it.caption);
        data.val_labels.push(it.label);
    }
    data
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

fn scene_items(cfg: &SceneConfig, scenes: &[Scene]) -> Vec<CaptionedImage> {
    scenes
        .iter()
        .map(|s| CaptionedImage {
            image: render(cfg, s),
            caption: caption(s),
            label: None,
        })
        .collect()
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

    fn easy(colors: &[usize]) -> Vec<CaptionedImage> {
        colors
            .iter()
            .map(|&color| {
                let label = Verdict { color, shape: 1 };
                let mut image = RgbImage::new(4, 4);
                image.put_pixel(0, 0, image::Rgb([color as u8, 0, 0]));
                CaptionedImage {
                    image,
                    caption: label.caption(),
                    label: Some(label),
                }
            })
            .collect()
    }

    #[test]
    fn the_sweep_data_interleaves_mirrors_and_prompts_each_held_out_label_once() {
        let text = include_str!("../../configs/scaling/easyvqa-scenes.toml");
        let mut cfg: ScalingConfig = toml::from_str(text).expect("the shipped sweep config");
        cfg.data.mirror = true;
        cfg.data.scenes = 3;
        cfg.data.val_scenes = 1;
        cfg.quality.scene_prompts = 2;
        let data = assemble(&cfg, easy(&[1, 2]), easy(&[3, 1, 3]));
        let scenes = SceneDataset::split(Split::Train, 3);
        let scene = |i: usize| caption(&scenes.scenes[i]);
        let easy_caption = |c: usize| Verdict { color: c, shape: 1 }.caption();
        let want = [
            easy_caption(1),
            scene(0),
            easy_caption(2),
            scene(1),
            scene(2),
        ];
        assert_eq!(data.train_captions[..5], want);
        assert_eq!(data.train_captions.len(), 10, "the mirror images follow");
        assert_eq!(data.train_captions[5], easy_caption(1));
        assert_eq!(
            data.train_captions[6],
            caption(&scenes.scenes[0].mirrored())
        );
        // the mirror image of the first easy image: its marked pixel moves to the right edge
        assert_eq!(data.train_images[5].get_pixel(3, 0).0, [1, 0, 0]);
        // held out: easy, scene, easy, easy; only the easy images carry a label
        let labelled: Vec<bool> = data.val_labels.iter().map(Option::is_some).collect();
        assert_eq!(labelled, [true, false, true, true]);
        let prompts: Vec<usize> = data.prompts.iter().map(|p| p.label.color).collect();
        assert_eq!(prompts, [1, 3]);
        assert_eq!(data.scene_prompts.len(), 2);
    }
}
