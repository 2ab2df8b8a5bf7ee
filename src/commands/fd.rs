//! `fd-dinov2` (the procedure is [`vqrae_tokenizer::fd_dinov2::fd_dinov2_folders`]).

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use vqrae_tokenizer::fd_dinov2::FdRequest;
use vqrae_unified::llava::run::LlavaInputs;

use super::args::JsonArgs;

pub fn run(a: FdRequest, root: &Path, device: &Device) -> Result<()> {
    let report = a.run(&LlavaInputs::installed(root).encoder_dir(), device)?;
    JsonArgs { json: a.json }.write(&report)
}
