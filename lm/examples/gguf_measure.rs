//! What quantized inference costs and saves on this CPU: GGUF load time and resident memory,
//! and decode tokens/s at batch 1 and 16, for the quantized model (`QMatMul` projections; as
//! loaded, several-row inputs multiply dequantized copies of the blocks, and as
//! `quantized-kernel`, candle's quantized kernel for every input) and the dequantized f32 one
//! (fused for inference, as served).
//!
//! `cargo run --release -p vqrae-lm --example gguf_measure -- [path.gguf]` (default: the
//! installed SmolLM2-135M-Instruct Q4_1). Each form is measured in a child process of its own
//! (the same binary with `--form`), so that one form's freed memory does not count against the
//! other's resident set. Prints one JSON object.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use serde_json::{json, Value};
use vqrae_lm::fuse::QuantizedRows;
use vqrae_lm::gguf::GgufFile;
use vqrae_lm::Llama;

const PROMPT: [u32; 18] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11, 3365, 411, 314, 5713, 2, 198, 1, 4093, 198,
];
const STEPS: usize = 64;
const REPEATS: usize = 3;

/// Resident memory of this process in bytes (`VmRSS` of /proc/self/status).
fn rss() -> Result<u64> {
    vqrae_data::memory::rss_bytes().context("no VmRSS in /proc/self/status")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Seconds of a prefill of `PROMPT` in `batch` rows and of `STEPS` greedy steps after it.
fn decode(model: &Llama, batch: usize) -> Result<(f64, f64)> {
    let dev = model.device();
    let ids: Vec<u32> = (0..batch).flat_map(|_| PROMPT).collect();
    let ids = Tensor::from_vec(ids, (batch, PROMPT.len()), dev)?;
    let mut cache = model.new_cache(batch, PROMPT.len() + STEPS, vec![0; batch])?;
    let start = Instant::now();
    let hidden = model.forward_hidden(&model.embed(&ids)?, Some(&mut cache), false)?;
    let mut next = model
        .logits(&hidden.i((.., PROMPT.len() - 1..))?)?
        .argmax(2)?;
    let prefill = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..STEPS {
        let logits = model.forward(&model.embed(&next)?, Some(&mut cache), false)?;
        next = logits.argmax(2)?;
    }
    Ok((prefill, start.elapsed().as_secs_f64()))
}

/// One form measured in this process.
fn measure(path: &PathBuf, form: &str) -> Result<Value> {
    let before = rss()?;
    let start = Instant::now();
    let gguf = GgufFile::open(path)?;
    let mut model = match form {
        "quantized" => gguf.load_quantized(&Device::Cpu)?,
        "quantized-kernel" => {
            let mut m = gguf.load_quantized(&Device::Cpu)?;
            m.set_quantized_rows(QuantizedRows::Kernel);
            m
        }
        "f32" => gguf.load_dequantized(&Device::Cpu, DType::F32)?,
        other => bail!("unknown form {other}"),
    };
    let load_s = start.elapsed().as_secs_f64();
    let loaded = rss()?;
    model.fuse_for_inference()?;
    let fused = rss()?;
    let mut out = json!({
        "load_s": load_s,
        "rss_load_mib": (loaded.saturating_sub(before)) as f64 / (1 << 20) as f64,
        "rss_fused_mib": (fused.saturating_sub(before)) as f64 / (1 << 20) as f64,
    });
    decode(&model, 1)?; // warm-up: thread pools, repacked weights
    for batch in [1usize, 16] {
        let runs = (0..REPEATS)
            .map(|_| decode(&model, batch))
            .collect::<Result<Vec<_>>>()?;
        let prefill = median(runs.iter().map(|r| r.0).collect());
        let steps = median(runs.iter().map(|r| r.1).collect());
        out[format!("batch{batch}")] = json!({
            "prefill_s": prefill,
            "decode_tokens_per_s": (batch * STEPS) as f64 / steps,
            "step_ms": steps / STEPS as f64 * 1e3,
        });
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../.data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if let Some(i) = args.iter().position(|a| a == "--form") {
        let form = args.get(i + 1).context("--form needs a value")?;
        println!("{}", measure(&path, form)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut forms = serde_json::Map::new();
    for form in ["quantized", "quantized-kernel", "f32"] {
        let out = Command::new(&exe)
            .arg(&path)
            .args(["--form", form])
            .output()?;
        if !out.status.success() {
            bail!("{form}: {}", String::from_utf8_lossy(&out.stderr));
        }
        forms.insert(form.into(), serde_json::from_slice(&out.stdout)?);
    }
    let report = json!({
        "file": path.display().to_string(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "prompt_tokens": PROMPT.len(),
        "greedy_steps": STEPS,
        "repeats_median_of": REPEATS,
        "forms": forms,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
