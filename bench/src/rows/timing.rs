//! How a row is timed (the PyTorch reference's method, so the two columns compare), the CUDA
//! profiler's window around the timed calls, and the process's peak memory.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;

/// How many timed calls [`time`] makes: a fixed count, or as many as fit in a time budget.
#[derive(Clone, Copy)]
pub(crate) enum Budget {
    Iters(usize),
    Seconds(f64),
}

#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) budget: Budget,
    /// Only the timed calls inside the CUDA profiler's window.
    pub(crate) profile: bool,
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB; NaN where it cannot be read.
pub(crate) fn peak_rss_mib() -> f64 {
    vqrae_data::memory::peak_rss_mib().unwrap_or(f64::NAN)
}

/// Starts or stops the CUDA profiler's collection (what `ncu --profile-from-start off` sees).
#[cfg(feature = "cuda")]
fn cuda_profiler(device: &Device, on: bool) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    device.synchronize()?;
    // SAFETY: plain driver calls without arguments; the device's context is current on this
    // thread since the warm-up calls ran on it.
    let r = unsafe {
        if on {
            sys::cuProfilerStart()
        } else {
            sys::cuProfilerStop()
        }
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        bail!("cuProfilerStart/Stop: {r:?}");
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda_profiler(_device: &Device, _on: bool) -> Result<()> {
    bail!("--profile needs the CUDA build (--features cuda)")
}

/// Times `f` as the PyTorch reference does: two untimed calls (warm-up; the second sizes the
/// run), then the budget's timed calls (at least 3 when sized by time).
/// Every call ends with the device synchronised, so GPU work is inside its call's time.
/// Returns `(timed calls, seconds per call)`.
pub(crate) fn time(
    device: &Device,
    timing: Timing,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(usize, f64)> {
    let mut f = || -> Result<()> {
        f()?;
        device.synchronize()?;
        Ok(())
    };
    f()?;
    let t = Instant::now();
    f()?;
    let one = t.elapsed().as_secs_f64().max(1e-6);
    let iters = match timing.budget {
        Budget::Iters(n) => n,
        Budget::Seconds(s) => ((s / one).ceil() as usize).clamp(3, 1000),
    };
    if timing.profile {
        cuda_profiler(device, true)?;
    }
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    let secs = t.elapsed().as_secs_f64() / iters as f64;
    if timing.profile {
        cuda_profiler(device, false)?;
    }
    Ok((iters, secs))
}

/// [`time`] for a call that times only part of itself (untimed setup, then the timed work):
/// `f` returns its timed part's seconds, ending with the device synchronised. The same calls
/// as [`time`] (two untimed ones, the second sizing the run by its timed part; the budget's
/// timed calls after them). The CUDA profiler's window is not offered (use rows timed whole).
/// Returns `(timed calls, mean seconds of the timed part)`.
pub(crate) fn time_part(
    timing: Timing,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<(usize, f64)> {
    if timing.profile {
        bail!("--profile is not offered for this row");
    }
    f()?;
    let one = f()?.max(1e-6);
    let iters = match timing.budget {
        Budget::Iters(n) => n,
        Budget::Seconds(s) => ((s / one).ceil() as usize).clamp(3, 1000),
    };
    let mut total = 0.0;
    for _ in 0..iters {
        total += f()?;
    }
    Ok((iters, total / iters as f64))
}
