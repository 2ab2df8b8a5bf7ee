//! `vqrae data setup|show` (the procedures are [`vqrae_data::setup`] and
//! [`vqrae_data::overview`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use vqrae_data::overview::{show, ShowRequest};
use vqrae_data::setup::setup;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Install easy-VQA (PyPI) and Fashion-MNIST (Debian) into the data root. Idempotent.
    /// (The DINOv2-small of `features` is a separate step: scripts/convert-dinov2.sh.)
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
        DataCommand::Setup => setup(root)?,
        DataCommand::Show {
            out,
            samples,
            scenes,
            seed,
            folder,
            jsonl,
        } => {
            let req = ShowRequest {
                grid: out,
                samples,
                scenes,
                seed,
                folder,
                jsonl,
            };
            show(root, &req, |line| println!("{line}"))?;
        }
    }
    Ok(())
}
