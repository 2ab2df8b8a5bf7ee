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

/// What a process that computes sets first thing in `main`, before any thread starts:
/// [`pin_thread_count`], [`short_barrier_spins`] and [`keep_freed_pages`].
pub fn prepare_process() {
    pin_thread_count();
    short_barrier_spins();
    keep_freed_pages();
}

/// candle runs its element-wise CPU ops on its own barrier pool, whose workers spin 25,000
/// times after each op before they sleep; gemm and this workspace's fused kernels run on rayon's
/// pool beside it. With as many threads per pool as cores, those spins take the cores the other
/// pool's threads need next. 100 spins (still enough for back-to-back element-wise ops) measured
/// +21% on a prefill, +26% on tokenizer decoding, +10% on an LM training step and within noise
/// on batch-1 decoding (docs/PERFORMANCE.md). Sets `CANDLE_BARRIER_POOL_SPIN_LIMIT` where the
/// user has not; first thing in `main`, before the pool starts.
pub fn short_barrier_spins() {
    if std::env::var_os(SPIN_LIMIT).is_none() {
        std::env::set_var(SPIN_LIMIT, "100");
    }
}

/// candle-core's variable for the barrier pool's spins before a worker sleeps.
const SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3): the Rust bindings do not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// candle allocates every op's output afresh, so a training step frees and allocates the same
/// large buffers again and again. mimalloc (the binary's allocator) hands freed memory back to
/// the kernel a second after it is freed (its default purge delay), and every reuse then
/// page-faults and has the kernel zero the pages again: 72,000 faults and ~15% of a `train_lm` 32 step's time in the kernel's
/// `clear_page` (perf). With the purge off, freed pages stay for the next allocation (873
/// faults in the same run); resident memory then stays at its peak, which each step reaches
/// anyway. Harmless where mimalloc is not the global allocator (only its option is set).
pub fn keep_freed_pages() {
    // SAFETY: sets one integer option of mimalloc's; any value is valid for it (-1: never).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
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

    /// Option 15 is the purge delay: the default of the mimalloc v3 this build vendors (1,000 ms) unless the
    /// environment overrides it, and -1 once the purge is off.
    #[test]
    fn the_purge_option_is_mimallocs_purge_delay() {
        // SAFETY: reads one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000);
        }
        keep_freed_pages();
        assert_eq!(get(), -1);
    }
}
