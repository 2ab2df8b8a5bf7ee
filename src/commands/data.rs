//! `vqrae data setup|show` (the procedures are [`vqrae_data::setup`] and
//! [`vqrae_data::overview`]).

use std::path::Path;

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
    Show(ShowRequest),
}

pub fn run(cmd: DataCommand, root: &Path) -> Result<()> {
    match cmd {
        DataCommand::Setup => setup(root)?,
        DataCommand::Show(req) => show(root, &req, |line| println!("{line}"))?,
    }
    Ok(())
}
