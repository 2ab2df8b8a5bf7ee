//! One module per group of subcommands.

pub mod args;
pub mod chat;
pub mod data;
pub mod eval;
pub mod fd;
pub mod llava;
pub mod lm;
pub mod plot;
pub mod probe;
pub mod referee;
pub mod scale;
pub mod serve;
pub mod tokenizer;
pub mod train;

pub use vqrae_train::device::default_dtype;

/// `cpu` or `cuda[:N]`.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    Ok(vqrae_train::device::parse_device(name)?)
}
