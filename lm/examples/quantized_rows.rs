//! Where a quantized projection should stop using candle's Q4_1 kernel: times `x @ W^T` for
//! SmolLM2-135M's projection shapes with `W` in Q4_1 blocks, (a) through `QMatMul` (each row
//! quantized to 8 bits and dotted against every block row: one pass over the weights per row),
//! (b) dequantizing `W` to f32 first and multiplying by gemm (one pass to dequantize, then a
//! dense product whose cost grows slowly with the rows), and (c) a resident f32 `W` (what the
//! dequantized model holds). The crossing of (a) and (b) is `Proj`'s threshold.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p vqrae-lm --example quantized_rows
//!
//! A benchmark, not a test: it prints microseconds per product and asserts nothing.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};

fn time(iters: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    // in -> out: q/o (576 -> 576), k/v (576 -> 192), gate/up (576 -> 1536), down (1536 -> 576)
    let shapes = [(576, 576), (576, 192), (576, 1536), (1536, 576)];
    for (k, n) in shapes {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        let qmm = QMatMul::from_qtensor(q)?;
        let QMatMul::QTensor(blocks) = &qmm else {
            unreachable!("Q4_1 stays quantized")
        };
        let deq = time(200, || blocks.dequantize(&dev))?;
        println!("{k:>4} -> {n:>4}: dequantize {deq:8.1} us");
        for m in [1, 2, 4, 8, 16, 32, 105] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let iters = (2000 / m).max(20);
            let kernel = time(iters, || qmm.forward(&x))?;
            let via_f32 = time(iters, || x.matmul(&blocks.dequantize(&dev)?.t()?))?;
            let resident = time(iters, || x.matmul(&w.t()?))?;
            println!(
                "  rows {m:>3}: Q4_1 kernel {kernel:9.1} us  dequantize+gemm {via_f32:9.1} us  f32 {resident:9.1} us"
            );
        }
    }
    Ok(())
}
