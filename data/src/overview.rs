//! A summary of the installed data sets (`vqrae data show`): sizes, question kinds and class
//! counts, sample captions (easy-VQA's, or procedural scenes' with their questions) with an
//! optional grid of the samples, and a check of an image folder or JSONL file of the user's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::easy_vqa::{self, EasyVqa, Split};
use crate::error::{DataError, Result};
use crate::fashion_mnist::{FashionMnist, CLASSES};
use crate::image_io::{grid, load_rgb, save_png};
use crate::scenes::{self, SceneConfig, SceneDataset};
use crate::{folder, jsonl};

/// What to show beside the installed sets; with the `clap` feature, the flags of
/// `vqrae data show` (the field docs are their help).
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ShowRequest {
    /// Write a grid of sample images (easy-VQA test, or the scenes with --scenes) here.
    #[cfg_attr(feature = "clap", arg(short = 'o', long = "out", value_name = "OUT"))]
    pub grid: Option<PathBuf>,
    /// Number of sample images in the grid.
    #[cfg_attr(feature = "clap", arg(short = 'n', long, default_value_t = 16))]
    pub samples: usize,
    /// Also generate this many procedural scenes and print their captions and questions.
    #[cfg_attr(feature = "clap", arg(long))]
    pub scenes: Option<usize>,
    /// Seed of the procedural scenes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// Also summarise an image folder of yours.
    #[cfg_attr(feature = "clap", arg(long))]
    pub folder: Option<PathBuf>,
    /// Also summarise a JSONL file of `{image, caption}` / `{image, question, answer}` records.
    #[cfg_attr(feature = "clap", arg(long))]
    pub jsonl: Option<PathBuf>,
}

/// Summarises the data sets under `root` as `req` asks, one line at a time to `say` (the
/// loading takes seconds; lines come as they are known).
pub fn show(root: &Path, req: &ShowRequest, mut say: impl FnMut(&str)) -> Result<()> {
    say(&format!("data root: {}", root.display()));
    say(&easy_vqa_line(&easy_vqa::load_split(root, Split::Train)?));
    let easy_test = easy_vqa::load_split(root, Split::Test)?;
    say(&easy_vqa_line(&easy_test));
    for split in [Split::Train, Split::Test] {
        let ds = FashionMnist::load(&root.join("fashion-mnist"), split)?;
        say(&fashion_mnist_line(&ds, split));
    }
    let images = match req.scenes {
        Some(n) => scene_samples(n, req.seed, req.samples, &mut say),
        None => easy_vqa_samples(&easy_test, req.samples, &mut say)?,
    };
    if let Some(out) = &req.grid {
        let cols = (images.len() as f64).sqrt().ceil().max(1.0) as usize;
        save_png(&grid(&images, cols, 2), out)?;
        say(&format!("wrote {}", out.display()));
    }
    if let Some(dir) = &req.folder {
        let images = folder::list_images(dir)?;
        say(&format!(
            "folder {}: {} images",
            dir.display(),
            images.len()
        ));
    }
    if let Some(path) = &req.jsonl {
        say(&jsonl_line(path)?);
    }
    Ok(())
}

/// Images, questions by kind, captions and answers of an easy-VQA split.
fn easy_vqa_line(ds: &EasyVqa) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for q in &ds.questions {
        *kinds.entry(q.kind.to_string()).or_default() += 1;
    }
    let captions = ds.images.iter().filter(|i| i.caption().is_some()).count();
    format!(
        "easy-VQA {}: {} images, {} questions {kinds:?}, {captions} captions, {} answers",
        ds.split,
        ds.images.len(),
        ds.questions.len(),
        ds.answers.len()
    )
}

/// Images, their size and the count of each class of a Fashion-MNIST split.
fn fashion_mnist_line(ds: &FashionMnist, split: Split) -> String {
    let mut counts = [0usize; 10];
    for &l in &ds.labels {
        counts[l as usize % 10] += 1;
    }
    let per: Vec<String> = CLASSES
        .iter()
        .zip(counts)
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    format!(
        "Fashion-MNIST {split}: {} images {}x{} ({})",
        ds.len(),
        ds.rows,
        ds.cols,
        per.join(", ")
    )
}

/// Says `n` seeded scenes' captions with their first three questions; the first `samples`
/// renders.
fn scene_samples(n: usize, seed: u64, samples: usize, say: &mut impl FnMut(&str)) -> Vec<RgbImage> {
    let ds = SceneDataset::new(SceneConfig::default(), n, seed);
    let mut images = Vec::new();
    for (i, scene) in ds.scenes.iter().enumerate() {
        let qa: Vec<String> = scenes::questions(scene)
            .into_iter()
            .take(3)
            .map(|q| format!("{} -> {}", q.question, q.answer))
            .collect();
        say(&format!(
            "scene {i}: {} | {}",
            scenes::caption(scene),
            qa.join("; ")
        ));
        if i < samples {
            images.push(scenes::render(&ds.cfg, scene));
        }
    }
    images
}

/// Says the captions of the split's first `samples` images; those images.
fn easy_vqa_samples(
    ds: &EasyVqa,
    samples: usize,
    say: &mut impl FnMut(&str),
) -> Result<Vec<RgbImage>> {
    let idx: Vec<usize> = (0..samples.min(ds.images.len())).collect();
    for &i in &idx {
        say(&format!(
            "easy-VQA {} {i}: {}",
            ds.split,
            ds.images[i].caption().unwrap_or_default()
        ));
    }
    ds.load_images(&idx)
}

/// Records of a JSONL file by kind, after decoding every record's image.
fn jsonl_line(path: &Path) -> Result<String> {
    let records = jsonl::read_jsonl(path)?;
    let captions = records
        .iter()
        .filter(|r| matches!(r, jsonl::Record::Caption { .. }))
        .count();
    for r in &records {
        load_rgb(r.image()).map_err(|e| DataError::Invalid {
            path: path.to_path_buf(),
            message: format!("record image: {e}"),
        })?;
    }
    Ok(format!(
        "jsonl {}: {} records ({} captions, {} question/answer)",
        path.display(),
        records.len(),
        captions,
        records.len() - captions
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_sets_are_summarised_with_scene_samples_and_a_grid() -> Result<()> {
        let root = crate::test_root();
        let dir = tempfile::tempdir().map_err(|e| DataError::io("tempdir", e))?;
        let records = dir.path().join("r.jsonl");
        let img = root.join("easy-vqa/test/images/0.png");
        let text = format!(
            "{{\"image\": {img:?}, \"caption\": \"a red triangle\"}}\n\
             {{\"image\": {img:?}, \"question\": \"what shape?\", \"answer\": \"triangle\"}}\n"
        );
        std::fs::write(&records, text).map_err(|e| DataError::io(&records, e))?;
        let req = ShowRequest {
            grid: Some(dir.path().join("grid.png")),
            samples: 2,
            scenes: Some(3),
            seed: 4,
            folder: Some(root.join("easy-vqa/test/images")),
            jsonl: Some(records.clone()),
        };
        let mut lines = Vec::new();
        show(&root, &req, |l| lines.push(l.to_string()))?;
        assert!(
            lines[1].starts_with("easy-VQA train: 4000 images, 38575 questions"),
            "{lines:?}"
        );
        assert!(lines[4].starts_with("Fashion-MNIST test: 10000 images 28x28 (T-shirt/top: 1000"));
        assert_eq!(lines.iter().filter(|l| l.starts_with("scene ")).count(), 3);
        assert!(lines
            .iter()
            .any(|l| l.ends_with(": 1000 images") && l.starts_with("folder ")));
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.ends_with("2 records (1 captions, 1 question/answer)"),
            "{last}"
        );
        // two scene samples side by side
        let g = load_rgb(&dir.path().join("grid.png"))?;
        assert!(g.width() > g.height(), "{:?}", g.dimensions());
        // without scenes: easy-VQA's first test images and their captions
        let req = ShowRequest {
            samples: 2,
            ..Default::default()
        };
        lines.clear();
        show(&root, &req, |l| lines.push(l.to_string()))?;
        assert_eq!(lines.len(), 7);
        assert!(lines[5].starts_with("easy-VQA test 0: a "), "{lines:?}");
        Ok(())
    }
}
