//! Why a fused LM keeps transposed copies of its weights on the CPU: times `x @ W^T` for the
//! default model's projection shapes, with `W^T` as the transposed view of the `(out, in)`
//! weight (what `candle_nn::Linear` multiplies by) and as a contiguous `(in, out)` copy.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p vqrae-lm --example matmul_layout
//!
//! A benchmark, not a test: it prints microseconds per product and asserts nothing.

use std::time::Instant;

use candle_core::{Device, Result, Tensor};

fn main() -> Result<()> {
    let dev = Device::Cpu;
    // rows x in x out: 1 row (decoding without guidance), 2-32 rows (a guided batch of 1-16
    // images), 656 rows (a prefill of 8 prompts); 192 -> 512 is gate/up, 512 -> 192 is down
    let shapes = [
        (1, 192, 512),
        (2, 192, 512),
        (8, 192, 512),
        (8, 512, 192),
        (32, 192, 512),
        (32, 192, 1385),
        (656, 192, 512),
    ];
    let iters = 5000;
    for (m, k, n) in shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let view = w.t()?;
        let copy = view.contiguous()?;
        let mut line = format!("{m:>4} x {k:>3} x {n:>4}:");
        for (name, rhs) in [("view", &view), ("contiguous", &copy)] {
            for _ in 0..50 {
                x.matmul(rhs)?;
            }
            let t = Instant::now();
            for _ in 0..iters {
                x.matmul(rhs)?;
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
            line += &format!("  {name} {us:8.2} us");
        }
        println!("{line}");
    }
    Ok(())
}
