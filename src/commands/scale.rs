//! `scale`: the scaling sweep of `configs/scaling/*.toml` on easy-VQA.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_generate::referee::Verdict;
use vqrae_generate::scaling::quality::Prompt;
use vqrae_generate::scaling::{report, sweep, ScalingConfig, SweepData};

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
    let data = SweepData {
        train_images,
        train_captions,
        val_images,
        val_captions,
        val_labels,
        prompts,
    };
    let result = sweep::run(&cfg, &data, &a.out, device)?;
    report::write_all(&result, &a.out)?;
    println!("{}", report::markdown(&result));
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}
