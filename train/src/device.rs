//! Where computation runs, and in which dtype: the one place every command and benchmark
//! turns `--device cpu|cuda[:N]` into a candle device.

use candle_core::{DType, Device};

use crate::error::{Result, TrainError};

/// `cpu` or `cuda[:N]`.
pub fn parse_device(name: &str) -> Result<Device> {
    let bad = |msg: String| TrainError::Config(msg);
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|e| bad(format!("bad device ordinal in {s:?}: {e}")))?,
                None => 0,
            };
            Device::new_cuda(ordinal).map_err(|e| {
                bad(format!(
                    "cannot open {s}: is this binary built with `--features cuda` and is a GPU \
                     present? ({e})"
                ))
            })
        }
        other => Err(bad(format!("unknown device {other:?}: use cpu or cuda"))),
    }
}

/// The dtype a device computes in by default: f32 on CPU, bf16 on GPU.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_unknown_names_are_refused() {
        assert!(parse_device("cpu").is_ok_and(|d| d.is_cpu()));
        assert_eq!(default_dtype(&Device::Cpu), DType::F32);
        for bad in ["gpu", "cuda:x", ""] {
            assert!(parse_device(bad).is_err(), "{bad:?} accepted");
        }
    }
}
