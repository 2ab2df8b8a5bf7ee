//! Measures the model card's image check: reconstruction PSNR through a model's tokenizer of
//! held-out easy-VQA test images and procedural scenes, and of out-of-distribution images
//! (see `vqrae_eval::image_ood`), per group, with the threshold the held-out images choose.
//!
//! ```text
//! cargo run --release -p vqrae-eval --example image_ood -- \
//!     [MODEL_DIR=models/vqrae-easyvqa] [DATA_ROOT=.data] [OUT=docs/results/lm/image-ood.json]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use vqrae_eval::image_ood::{calibrate, groups};
use vqrae_unified::UnifiedModel;

/// Held-out images per in-distribution group (easy-VQA's test split has 1,000).
const N: usize = 1000;
/// Single-image calls timed for the check's added latency.
const REPS: usize = 200;
/// dB below the 0.5th percentile of the held-out easy-VQA test images: wide enough that an
/// easy-VQA-like shape drawn on pure white (which the model answers right) passes, well above
/// every noise, gradient and photo-like group.
const MARGIN: f64 = 4.0;
const SEED: u64 = 22;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| PathBuf::from(args.get(i).map_or(default, String::as_str));
    let model = arg(0, "models/vqrae-easyvqa");
    let data = arg(1, ".data");
    let out = arg(2, "docs/results/lm/image-ood.json");
    let unified = UnifiedModel::load(&model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading {}", model.display()))?;
    let groups = groups(&data, &PathBuf::from("docs/results"), N, SEED)?;
    let start = Instant::now();
    let cal = calibrate(&unified.tokenizer, &groups, MARGIN)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<26} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  refused",
        "group", "n", "min", "p0.5", "p1", "p5", "median", "max"
    );
    for g in &cal.groups {
        let s = &g.psnr;
        println!(
            "{:<26} {:>5} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2}  {:.1}%",
            g.name,
            s.n,
            s.min,
            s.p0_5,
            s.p1,
            s.p5,
            s.median,
            s.max,
            100.0 * g.refused
        );
    }
    println!("threshold {} dB ({}); {secs:.1} s", cal.threshold, cal.rule);
    // what the check adds to a chat request: the decode beside the encoding the answer needs
    let image = std::slice::from_ref(&groups[0].images[0]);
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        f()?;
        let t = Instant::now();
        for _ in 0..REPS {
            f()?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / REPS as f64)
    };
    let features_ms = time(&|| unified.features(image).map(drop).map_err(Into::into))?;
    let checked_ms = time(&|| {
        unified
            .features_and_psnr(image)
            .map(drop)
            .map_err(Into::into)
    })?;
    println!(
        "one 64x64 image on this CPU: features {features_ms:.2} ms, features and PSNR \
         {checked_ms:.2} ms (+{:.2} ms)",
        checked_ms - features_ms
    );
    let report = serde_json::json!({
        "latency_ms": {
            "what": "one image, CPU, mean of 200 calls: UnifiedModel::features vs features_and_psnr",
            "features": features_ms,
            "features_and_psnr": checked_ms,
        },
        "command": "cargo run --release -p vqrae-eval --example image_ood",
        "model": model,
        "model_sha256": vqrae_data::fs::sha256_model(&model)?,
        "margin_db": MARGIN,
        "seed": SEED,
        "calibration": cal,
    });
    vqrae_data::fs::write_atomic(
        &out,
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
