//! The data sets the tokenizer commands train and are measured on, as images with label
//! columns: the encoder's pretraining learns the columns, the linear probes read them back from
//! frozen features, the tokenizer's training and evaluation use the images alone.

use std::path::Path;

use image::RgbImage;

use crate::batch::shuffled;
use crate::easy_vqa::{self, Split};
use crate::error::Result;
use crate::fashion_mnist::FashionMnist;
use crate::scenes::{render, SceneDataset, MAX_OBJECTS, TEST_SCENES, TRAIN_SCENES};

/// One classification target: a name, its number of classes, a label per image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelColumn {
    pub name: String,
    pub classes: usize,
    pub labels: Vec<u32>,
}

/// A data set of the data root, or the procedural scenes (made, not installed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Dataset {
    EasyVqa,
    FashionMnist,
    /// The procedural scenes' fixed split (`SceneDataset::split`): 4,000 / 1,000 images.
    Scenes,
    /// easy-VQA and the procedural scenes together (8,000 / 2,000 images): a tokenizer that
    /// has to draw both, e.g. for an LM trained on both kinds of caption.
    EasyVqaScenes,
}

/// Images of a split with their label columns (easy-VQA: shape, colour; Fashion-MNIST: class;
/// scenes: object count; easy-VQA + scenes: which of the two).
#[derive(Clone, Debug)]
pub struct LabelledImages {
    pub images: Vec<RgbImage>,
    pub columns: Vec<LabelColumn>,
}

impl Dataset {
    /// The name reports and tables use.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::EasyVqa => "easy-VQA",
            Dataset::FashionMnist => "Fashion-MNIST",
            Dataset::Scenes => "procedural scenes",
            Dataset::EasyVqaScenes => "easy-VQA + procedural scenes",
        }
    }

    /// Loads `split` from the data `root`; `limit > 0` keeps a seeded random subset of that
    /// size (in the shuffled order).
    pub fn load(
        self,
        root: &Path,
        split: Split,
        limit: usize,
        seed: u64,
    ) -> Result<LabelledImages> {
        let keep = |n: usize| -> Vec<usize> {
            if limit == 0 || limit >= n {
                (0..n).collect()
            } else {
                shuffled(n, seed)[..limit].to_vec()
            }
        };
        match self {
            Dataset::Scenes => {
                let ds = scene_split(split);
                let idx = keep(ds.len());
                Ok(LabelledImages {
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
                let easy = Dataset::EasyVqa.load(root, split, 0, seed)?;
                let scenes = scene_split(split);
                let mut images = easy.images;
                let from_easy = images.len();
                images.extend(scenes.scenes.iter().map(|s| render(&scenes.cfg, s)));
                let idx = keep(images.len());
                Ok(LabelledImages {
                    images: idx.iter().map(|&i| images[i].clone()).collect(),
                    columns: vec![LabelColumn {
                        name: "scene".into(),
                        classes: 2,
                        labels: idx.iter().map(|&i| u32::from(i >= from_easy)).collect(),
                    }],
                })
            }
            Dataset::EasyVqa => {
                let known = easy_vqa::load_split(root, split)?.color_shape_images(limit, seed)?;
                let column =
                    |name: &str, classes: usize, label: fn(&easy_vqa::ColorShape) -> usize| {
                        LabelColumn {
                            name: name.into(),
                            classes,
                            labels: known.labels.iter().map(|l| label(l) as u32).collect(),
                        }
                    };
                let columns = vec![
                    column("shape", easy_vqa::SHAPES.len(), |l| l.shape),
                    column("colour", easy_vqa::COLORS.len(), |l| l.color),
                ];
                Ok(LabelledImages {
                    images: known.images,
                    columns,
                })
            }
            Dataset::FashionMnist => {
                let ds = FashionMnist::load(&root.join("fashion-mnist"), split)?;
                let idx = keep(ds.len());
                Ok(LabelledImages {
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
}

/// The procedural scenes' fixed split of `split`.
fn scene_split(split: Split) -> SceneDataset {
    let n = match split {
        Split::Train => TRAIN_SCENES,
        Split::Test => TEST_SCENES,
    };
    SceneDataset::split(split, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_labelled_with_their_object_count_and_subset_by_seed() -> Result<()> {
        let root = Path::new("/nonexistent");
        let all = Dataset::Scenes.load(root, Split::Test, 0, 0)?;
        assert_eq!(all.images.len(), TEST_SCENES);
        let col = &all.columns[0];
        assert_eq!((col.name.as_str(), col.classes), ("count", MAX_OBJECTS));
        let ds = scene_split(Split::Test);
        assert_eq!(col.labels[7] as usize, ds.scenes[7].objects.len() - 1);
        let some = Dataset::Scenes.load(root, Split::Test, 5, 3)?;
        let order = shuffled(TEST_SCENES, 3);
        assert_eq!(some.images.len(), 5);
        assert_eq!(some.images[0], all.images[order[0]]);
        assert_eq!(some.columns[0].labels[4], col.labels[order[4]]);
        Ok(())
    }

    #[test]
    fn installed_sets_have_one_label_per_image_in_every_column() -> Result<()> {
        let root = crate::test_root();
        let easy = Dataset::EasyVqa.load(&root, Split::Test, 20, 1)?;
        assert_eq!(easy.images.len(), 20);
        let names: Vec<&str> = easy.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["shape", "colour"]);
        let fashion = Dataset::FashionMnist.load(&root, Split::Test, 30, 1)?;
        assert_eq!(fashion.columns[0].classes, 10);
        let both = Dataset::EasyVqaScenes.load(&root, Split::Test, 50, 2)?;
        for set in [&easy, &fashion, &both] {
            for c in &set.columns {
                assert_eq!(c.labels.len(), set.images.len(), "{}", c.name);
                assert!(c.labels.iter().all(|&l| (l as usize) < c.classes));
            }
        }
        // easy-VQA's 1,000 test images come first, the scenes after them
        let all = Dataset::EasyVqaScenes.load(&root, Split::Test, 0, 0)?;
        let scene = &all.columns[0].labels;
        assert_eq!((scene[999], scene[1000], scene.len()), (0, 1, 2000));
        Ok(())
    }
}
