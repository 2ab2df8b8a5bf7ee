//! The data sets the training and evaluation commands read, as images plus label columns.

use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use image::RgbImage;
use vqrae_data::batch::shuffled;
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::fashion_mnist::FashionMnist;
use vqrae_data::scenes::{render, SceneDataset, MAX_OBJECTS, TEST_SCENES, TRAIN_SCENES};
use vqrae_tokenizer::pretrain::LabelColumn;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    EasyVqa,
    FashionMnist,
    /// The procedural scenes' fixed split (`SceneDataset::split`): 4,000 / 1,000 images.
    Scenes,
    /// easy-VQA and the procedural scenes together (8,000 / 2,000 images): a tokenizer that
    /// has to draw both, e.g. for an LM trained on both kinds of caption.
    EasyVqaScenes,
}

/// Images of a split with their label columns (easy-VQA: shape, colour; Fashion-MNIST: class).
pub struct Labelled {
    pub images: Vec<RgbImage>,
    pub columns: Vec<LabelColumn>,
}

/// Loads `split` of `dataset`; `limit > 0` keeps a seeded random subset of that size.
pub fn load(
    root: &Path,
    dataset: Dataset,
    split: Split,
    limit: usize,
    seed: u64,
) -> Result<Labelled> {
    let keep = |n: usize| -> Vec<usize> {
        if limit == 0 || limit >= n {
            (0..n).collect()
        } else {
            shuffled(n, seed)[..limit].to_vec()
        }
    };
    match dataset {
        Dataset::Scenes => {
            let ds = scene_split(split);
            let idx = keep(ds.len());
            Ok(Labelled {
                images: idx
                    .iter()
                    .map(|&i| render(&ds.cfg, &ds.scenes[i]))
                    .collect(),
                columns: vec![LabelColumn {
                    name: "count".into(),
                    classes: MAX_OBJECTS,
                    labels: idx
                        .iter()
                        .map(|&i| ds.scenes[i].objects.len().saturating_sub(1) as u32)
                        .collect(),
                }],
            })
        }
        Dataset::EasyVqaScenes => {
            let easy = load(root, Dataset::EasyVqa, split, 0, seed)?;
            let scenes = scene_split(split);
            let mut images = easy.images;
            let from_easy = images.len();
            images.extend(scenes.scenes.iter().map(|s| render(&scenes.cfg, s)));
            let idx = keep(images.len());
            Ok(Labelled {
                images: idx.iter().map(|&i| images[i].clone()).collect(),
                columns: vec![LabelColumn {
                    name: "scene".into(),
                    classes: 2,
                    labels: idx.iter().map(|&i| u32::from(i >= from_easy)).collect(),
                }],
            })
        }
        Dataset::EasyVqa => {
            let ds = EasyVqa::load(&root.join("easy-vqa"), split)
                .with_context(|| format!("easy-VQA {split} (run `vqrae data setup`)"))?;
            let idx = keep(ds.images.len());
            let mut shape = Vec::with_capacity(idx.len());
            let mut colour = Vec::with_capacity(idx.len());
            for &i in &idx {
                let im = &ds.images[i];
                let (Some(s), Some(c)) = (im.shape, im.color) else {
                    anyhow::bail!("easy-VQA image {} has no shape/colour label", im.id);
                };
                shape.push(s as u32);
                colour.push(c as u32);
            }
            Ok(Labelled {
                images: ds.load_images(&idx)?,
                columns: vec![
                    LabelColumn {
                        name: "shape".into(),
                        classes: 3,
                        labels: shape,
                    },
                    LabelColumn {
                        name: "colour".into(),
                        classes: 8,
                        labels: colour,
                    },
                ],
            })
        }
        Dataset::FashionMnist => {
            let ds = FashionMnist::load(&root.join("fashion-mnist"), split)
                .with_context(|| format!("Fashion-MNIST {split} (run `vqrae data setup`)"))?;
            let idx = keep(ds.len());
            Ok(Labelled {
                images: idx.iter().map(|&i| ds.rgb(i)).collect(),
                columns: vec![LabelColumn {
                    name: "class".into(),
                    classes: 10,
                    labels: idx.iter().map(|&i| ds.labels[i] as u32).collect(),
                }],
            })
        }
    }
}

fn scene_split(split: Split) -> SceneDataset {
    let n = match split {
        Split::Train => TRAIN_SCENES,
        Split::Test => TEST_SCENES,
    };
    SceneDataset::split(split, n)
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::EasyVqa => "easy-VQA",
            Dataset::FashionMnist => "Fashion-MNIST",
            Dataset::Scenes => "procedural scenes",
            Dataset::EasyVqaScenes => "easy-VQA + procedural scenes",
        }
    }
}
