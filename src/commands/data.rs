//! `vqrae data setup|show`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::fashion_mnist::{FashionMnist, CLASSES};
use vqrae_data::image_io::{grid, load_rgb, save_png};
use vqrae_data::scenes::{self, SceneConfig, SceneDataset};
use vqrae_data::{folder, jsonl};

/// The setup script, embedded so that the installed binary can set data up anywhere.
const SETUP_SCRIPT: &str = include_str!("../../scripts/setup-data.sh");

#[derive(Subcommand)]
pub enum DataCommand {
    /// Install easy-VQA (PyPI) and Fashion-MNIST (Debian) into the data root. Idempotent.
    Setup,
    /// Summarise the installed data sets, optionally writing a grid of sample images.
    Show {
        /// Write a grid of sample images (easy-VQA test, or the scenes with --scenes) here.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Number of sample images in the grid.
        #[arg(short = 'n', long, default_value_t = 16)]
        samples: usize,
        /// Also generate this many procedural scenes and print their captions and questions.
        #[arg(long)]
        scenes: Option<usize>,
        /// Seed of the procedural scenes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also summarise an image folder of yours.
        #[arg(long)]
        folder: Option<PathBuf>,
        /// Also summarise a JSONL file of `{image, caption}` / `{image, question, answer}` records.
        #[arg(long)]
        jsonl: Option<PathBuf>,
    },
}

pub fn run(cmd: DataCommand, root: &Path) -> Result<()> {
    match cmd {
        DataCommand::Setup => setup(root),
        DataCommand::Show {
            out,
            samples,
            scenes,
            seed,
            folder,
            jsonl,
        } => {
            show(root, out.as_deref(), samples, scenes, seed)?;
            if let Some(dir) = folder {
                let images = folder::list_images(&dir)?;
                println!("folder {}: {} images", dir.display(), images.len());
            }
            if let Some(path) = jsonl {
                let records = jsonl::read_jsonl(&path)?;
                let captions = records
                    .iter()
                    .filter(|r| matches!(r, jsonl::Record::Caption { .. }))
                    .count();
                println!(
                    "jsonl {}: {} records ({} captions, {} question/answer)",
                    path.display(),
                    records.len(),
                    captions,
                    records.len() - captions
                );
                for r in &records {
                    load_rgb(r.image())
                        .with_context(|| format!("record image of {}", path.display()))?;
                }
            }
            Ok(())
        }
    }
}

fn setup(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let mut child = Command::new("bash")
        .arg("-s")
        .env("VQRAE_DATA", &root)
        .stdin(Stdio::piped())
        .spawn()
        .context("running bash (needed by the data setup)")?;
    child
        .stdin
        .take()
        .context("bash stdin")?
        .write_all(SETUP_SCRIPT.as_bytes())
        .context("feeding the setup script to bash")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("data setup failed ({status})");
    }
    Ok(())
}

fn show(
    root: &Path,
    out: Option<&Path>,
    samples: usize,
    n_scenes: Option<usize>,
    seed: u64,
) -> Result<()> {
    println!("data root: {}", root.display());
    let ev_root = root.join("easy-vqa");
    for split in [Split::Train, Split::Test] {
        let ds = EasyVqa::load(&ev_root, split)
            .with_context(|| format!("easy-VQA {split} (run `vqrae data setup`)"))?;
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for q in &ds.questions {
            *kinds.entry(q.kind.to_string()).or_default() += 1;
        }
        let captions = ds.images.iter().filter(|i| i.caption().is_some()).count();
        println!(
            "easy-VQA {split}: {} images, {} questions {kinds:?}, {captions} captions, {} answers",
            ds.images.len(),
            ds.questions.len(),
            ds.answers.len()
        );
    }
    let fm_root = root.join("fashion-mnist");
    for split in [Split::Train, Split::Test] {
        let ds = FashionMnist::load(&fm_root, split)
            .with_context(|| format!("Fashion-MNIST {split} (run `vqrae data setup`)"))?;
        let mut counts = [0usize; 10];
        for &l in &ds.labels {
            counts[l as usize % 10] += 1;
        }
        let per: Vec<String> = CLASSES
            .iter()
            .zip(counts)
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        println!(
            "Fashion-MNIST {split}: {} images {}x{} ({})",
            ds.len(),
            ds.rows,
            ds.cols,
            per.join(", ")
        );
    }
    let mut images = Vec::new();
    if let Some(n) = n_scenes {
        let ds = SceneDataset::new(SceneConfig::default(), n, seed);
        for (i, scene) in ds.scenes.iter().enumerate() {
            let qa: Vec<String> = scenes::questions(scene)
                .into_iter()
                .take(3)
                .map(|q| format!("{} -> {}", q.question, q.answer))
                .collect();
            println!("scene {i}: {} | {}", scenes::caption(scene), qa.join("; "));
            if i < samples {
                images.push(scenes::render(&ds.cfg, scene));
            }
        }
    } else {
        let ds = EasyVqa::load(&ev_root, Split::Test)?;
        let idx: Vec<usize> = (0..samples.min(ds.images.len())).collect();
        for &i in &idx {
            println!(
                "easy-VQA test {i}: {}",
                ds.images[i].caption().unwrap_or_default()
            );
        }
        images = ds.load_images(&idx)?;
    }
    if let Some(out) = out {
        let cols = (images.len() as f64).sqrt().ceil().max(1.0) as usize;
        save_png(&grid(&images, cols, 2), out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
