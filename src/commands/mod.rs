//! One module per group of subcommands.

pub mod bench;
pub mod bench_serve;
pub mod data;
pub mod datasets;
pub mod lm;
pub mod plot;
pub mod probe;
pub mod referee;
pub mod scale;
pub mod serve;
pub mod tokenizer;
pub mod train;

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// `cpu` or `cuda[:N]`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .with_context(|| format!("bad device ordinal in {s:?}"))?,
                None => 0,
            };
            Device::new_cuda(ordinal).with_context(|| {
                format!("cannot open {s}: is this binary built with `--features cuda` and is a GPU present?")
            })
        }
        other => bail!("unknown device {other:?}: use cpu or cuda"),
    }
}

/// The dtype a device computes in by default: f32 on CPU, bf16 on GPU.
pub fn default_dtype(device: &Device) -> candle_core::DType {
    if device.is_cuda() {
        candle_core::DType::BF16
    } else {
        candle_core::DType::F32
    }
}
