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

/// candle asks for its thread count on every matmul and most element-wise ops; without
/// `RAYON_NUM_THREADS` set, each ask re-reads `/proc/cpuinfo` (`num_cpus::get_physical`), which
/// was ~8% of a batched decode step's profile. Sets it once, to the count candle would pick;
/// call it first thing in `main`, before any thread starts (the variable is process-wide).
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
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
