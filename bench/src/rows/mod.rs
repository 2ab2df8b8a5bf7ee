//! `bench init` / `bench run`: the hot paths timed one row per process (so each row's peak
//! resident memory is its own), on the same weights and inputs that the PyTorch reference
//! (`scripts/perf/reference.py`) loads, at the default model's config or a paper-like one.
//! `scripts/bench.sh` runs the whole set for both and writes docs/PERFORMANCE.md's table.
//!
//! - [`init`](mod@init): writing a bench directory;
//! - `timing`: the timing method, the CUDA profiler window, peak memory;
//! - `inference` / `training`: one function per row, each returning what it [`Measured`];
//! - `gguf`: the gguf-decode row (a GGUF quantized, against llama.cpp rather than PyTorch);
//! - `lora`: the train-lora row's base, adapters and optimizer, and the check `init` records.

mod gguf;
mod inference;
mod init;
mod lora;
#[cfg(test)]
mod tests;
mod timing;
mod training;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use init::Preset;
pub use init::{init, InitArgs};
use timing::{peak_rss_mib, Budget, Timing};

/// Prompt length of the LM rows: `<bos>`, 16 caption tokens, `<boi>`.
const PROMPT: usize = 18;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write a bench directory: tokenizer + LM weights, fixed inputs and their Rust outputs.
    Init(InitArgs),
    /// Time one row in this process and print it as one JSON line.
    Run(RunArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Row {
    /// Encode + quantize `batch` images: images/s.
    TokEncode,
    /// Decode `batch` code grids: images/s.
    TokDecode,
    /// One forward over `batch` sequences of prompt + one image's codes, the last position's
    /// logits: tokens/s.
    LmPrefill,
    /// A full image's codes for `batch` images with the KV cache (batch 1: no guidance; more:
    /// classifier-free guidance on 2 x batch rows): generated image tokens/s.
    LmDecode,
    /// The cached decoding step alone, timed at every position of one image (`batch` rows):
    /// flat when the cache works. Prints each step's seconds; no PyTorch counterpart.
    LmStepProfile,
    /// Tokenizer stage 1, one optimizer step on `batch` images: samples/s.
    TrainTok,
    /// LM, one optimizer step on `batch` sequences: samples/s.
    TrainLm,
    /// LoRA on a frozen SmolLM2-135M-size LM (rank 16 on all seven projections), one optimizer
    /// step of the adapters on `batch` sequences: samples/s.
    TrainLora,
    /// A GGUF (SmolLM2-135M-Instruct Q4_1) run quantized: `batch` rows of `--pp` prompt
    /// tokens prefilled, then `--tg` greedy cached steps timed: generated tokens/s across the
    /// batch (llama-batched-bench's S_TG). Needs no `bench init` data but the GGUF.
    GgufDecode,
}

impl Row {
    /// Times this row.
    fn measure(self, bench: &mut Bench) -> Result<Measured> {
        match self {
            Row::TokEncode => inference::tok_encode(bench),
            Row::TokDecode => inference::tok_decode(bench),
            Row::LmPrefill => inference::lm_prefill(bench),
            Row::LmDecode => inference::lm_decode(bench),
            Row::LmStepProfile => inference::lm_step_profile(bench),
            Row::TrainTok => training::train_tok(bench),
            Row::TrainLm => training::train_lm(bench),
            Row::TrainLora => training::train_lora(bench),
            Row::GgufDecode => bail!("gguf-decode is run by `row_line` without a bench"),
        }
    }

    /// Training runs in f32; inference in the device's serving dtype (bf16 on a GPU).
    fn dtype(self, device: &Device) -> DType {
        match self {
            Row::TrainTok | Row::TrainLm | Row::TrainLora => DType::F32,
            _ => vqrae_train::device::default_dtype(device),
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_enum)]
    row: Row,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed iterations (0: as many as fit in `--seconds`, at least 3).
    #[arg(long, default_value_t = 0)]
    iters: usize,
    /// Seconds of timed calls to aim for when `--iters` is 0 (a GPU's timings are steady
    /// enough for 1).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Open the CUDA profiler's window (cuProfilerStart/Stop) around the timed calls only, for
    /// `ncu --profile-from-start off` (scripts/gpu-profile.sh); use with `--iters 1`.
    #[arg(long)]
    profile: bool,
    /// gguf-decode: the GGUF file (default: `DIR/smollm2.gguf`, linked by `bench init`, else
    /// SmolLM2 under the data root).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// gguf-decode: prompt tokens per row, prefilled untimed (llama-batched-bench's -npp).
    #[arg(long, default_value_t = 128)]
    pp: usize,
    /// gguf-decode: decoding steps timed, one token per row each (llama-batched-bench's -ntg).
    #[arg(long, default_value_t = 128)]
    tg: usize,
}

/// What `bench init` records for both implementations.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BenchInfo {
    pub(crate) preset: Preset,
    pub(crate) image_tokens: usize,
    pub(crate) code_start: u32,
    pub(crate) code_end: u32,
    pub(crate) text_vocab: usize,
    pub(crate) vocab_size: usize,
    pub(crate) prompt_len: usize,
    /// Parameters of the LM (all, and without the embedding and output head) and of the
    /// tokenizer: what the FLOP and bandwidth figures of the report are computed from.
    pub(crate) lm_params: usize,
    pub(crate) lm_non_embedding_params: usize,
    pub(crate) tokenizer_params: usize,
}

impl BenchInfo {
    /// Prompt + one image's codes: the LM rows' sequence length.
    pub(crate) fn seq(&self) -> usize {
        PROMPT + self.image_tokens
    }
}

/// What every row function gets: the bench directory, the device, how to time, and the
/// random numbers of its inputs (seeded the same for every row).
pub(crate) struct Bench<'a> {
    pub(crate) info: BenchInfo,
    pub(crate) dir: PathBuf,
    pub(crate) device: &'a Device,
    /// The row's dtype ([`Row::dtype`]).
    pub(crate) dtype: DType,
    pub(crate) timing: Timing,
    pub(crate) batch: usize,
    pub(crate) rng: ChaCha8Rng,
}

impl Bench<'_> {
    pub(crate) fn tok_dir(&self) -> PathBuf {
        self.dir.join("tokenizer")
    }

    pub(crate) fn lm_dir(&self) -> PathBuf {
        self.dir.join("lm")
    }

    /// Prompt + one image's codes: the LM rows' sequence length.
    pub(crate) fn seq(&self) -> usize {
        self.info.seq()
    }

    /// A `(rows, cols)` u32 tensor of ids drawn uniformly from `range`.
    pub(crate) fn random_tensor(
        &mut self,
        (rows, cols): (usize, usize),
        range: std::ops::Range<u32>,
    ) -> Result<Tensor> {
        let ids = self.random_ids(rows * cols, range);
        Ok(Tensor::from_vec(ids, (rows, cols), self.device)?)
    }

    pub(crate) fn random_ids(&mut self, n: usize, range: std::ops::Range<u32>) -> Vec<u32> {
        (0..n).map(|_| self.rng.gen_range(range.clone())).collect()
    }
}

/// One row's result: `per_iter` units of work per timed call, and fields the row adds to its
/// JSON line.
pub(crate) struct Measured {
    pub(crate) unit: &'static str,
    pub(crate) per_iter: usize,
    pub(crate) iters: usize,
    pub(crate) secs: f64,
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl Measured {
    /// From [`timing::time`]'s `(iters, seconds per call)`.
    pub(crate) fn new(unit: &'static str, per_iter: usize, (iters, secs): (usize, f64)) -> Self {
        Self {
            unit,
            per_iter,
            iters,
            secs,
            extra: serde_json::Map::new(),
        }
    }
}

/// The bench directory's `bench.json`, checked for consistency.
fn read_info(dir: &std::path::Path) -> Result<BenchInfo> {
    let info: BenchInfo = serde_json::from_str(
        &std::fs::read_to_string(dir.join("bench.json"))
            .with_context(|| format!("{}: run `vqrae bench init` first", dir.display()))?,
    )?;
    if info.code_start >= info.code_end
        || info.text_vocab <= 3
        || info.image_tokens == 0
        || info.code_end as usize > info.vocab_size
    {
        bail!(
            "{}: inconsistent bench.json (codes {}..{}, text vocabulary {}, vocabulary {}, \
             {} image tokens): run `vqrae bench init` again",
            dir.display(),
            info.code_start,
            info.code_end,
            info.text_vocab,
            info.vocab_size,
            info.image_tokens
        );
    }
    Ok(info)
}

/// Times `a.row` and prints it as one JSON line.
pub fn run(a: RunArgs, device: &Device) -> Result<()> {
    println!("{}", row_line(a, device)?);
    Ok(())
}

/// Times `a.row`: the JSON line `run` prints (the PyTorch reference prints the same fields).
fn row_line(a: RunArgs, device: &Device) -> Result<serde_json::Value> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let budget = match a.iters {
        0 if a.seconds > 0.0 && a.seconds.is_finite() => Budget::Seconds(a.seconds),
        0 => bail!("--seconds must be a positive number, not {}", a.seconds),
        n => Budget::Iters(n),
    };
    let timing = Timing {
        budget,
        profile: a.profile,
    };
    let (m, dtype) = if a.row == Row::GgufDecode {
        let data_root = vqrae_data::default_root();
        let row = gguf::GgufDecode {
            gguf: a.gguf.as_deref(),
            dir: &a.dir,
            data_root: &data_root,
            batch: a.batch,
            pp: a.pp,
            tg: a.tg,
        };
        gguf::gguf_decode(&row, device, timing)?
    } else {
        let mut bench = Bench {
            info: read_info(&a.dir)?,
            dir: a.dir.clone(),
            device,
            dtype: a.row.dtype(device),
            timing,
            batch: a.batch,
            rng: ChaCha8Rng::seed_from_u64(11),
        };
        let m = a.row.measure(&mut bench)?;
        (m, format!("{:?}", bench.dtype).to_lowercase())
    };
    let mut line = json!({
        "impl": "vqrae-rs",
        "row": a.row,
        "batch": a.batch,
        "unit": m.unit,
        "per_sec": m.per_iter as f64 / m.secs,
        "seconds_per_iter": m.secs,
        "iters": m.iters,
        "peak_rss_mib": peak_rss_mib(),
        "device": if device.is_cuda() { "cuda" } else { "cpu" },
        "dtype": dtype,
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
    });
    if let Some(o) = line.as_object_mut() {
        o.extend(m.extra);
    }
    Ok(line)
}
