//! `bench init` / `bench run`: the hot paths timed one row per process (so each row's peak
//! resident memory is its own), on the same weights and inputs that the PyTorch reference
//! (`scripts/perf/reference.py`) loads, at the default model's config or a paper-like one.
//! `scripts/bench.sh` runs the whole set for both and writes docs/PERFORMANCE.md's table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vqrae_generate::sample::{GenerationConfig, T2i};
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_lm::{Llama, LlamaConfig, SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::train::{frozen_encoder, step_losses, TrainConfig};
use vqrae_tokenizer::{Vqrae, VqraeConfig};
use vqrae_train::init::SeededVarMap;
use vqrae_train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

/// Prompt length of the LM rows: `<bos>`, 16 caption tokens, `<boi>`.
const PROMPT: usize = 18;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write a bench directory: tokenizer + LM weights, fixed inputs and their Rust outputs.
    Init(InitArgs),
    /// Time one row in this process and print it as one JSON line.
    Run(RunArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The default model's weights (models/vqrae-easyvqa).
    Default,
    /// configs/paper.toml's tokenizer (SigLIP-B/16 at 256 px, codebook 16384 x 1536, ViT-B
    /// decoder) and a ~110M-parameter LM, random weights.
    Paper,
}

#[derive(Args)]
pub struct InitArgs {
    #[arg(long, value_enum)]
    preset: Preset,
    /// The bench directory to write.
    #[arg(short, long)]
    out: PathBuf,
    /// The unified model the default preset copies.
    #[arg(long, default_value = "models/vqrae-easyvqa")]
    model: PathBuf,
    /// The tokenizer config of the paper preset.
    #[arg(long, default_value = "configs/paper.toml")]
    paper_config: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Row {
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
}

/// What `bench init` records for both implementations.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchInfo {
    pub preset: Preset,
    pub image_tokens: usize,
    pub code_start: u32,
    pub code_end: u32,
    pub text_vocab: usize,
    pub vocab_size: usize,
    pub prompt_len: usize,
    /// Parameters of the LM (all, and without the embedding and output head) and of the
    /// tokenizer: what the FLOP and bandwidth figures of the report are computed from.
    pub lm_params: usize,
    pub lm_non_embedding_params: usize,
    pub tokenizer_params: usize,
}

fn paper_lm(vocab_size: usize, context: usize) -> Result<LlamaConfig> {
    let cfg: LlamaConfig = serde_json::from_value(json!({
        "vocab_size": vocab_size, "hidden_size": 768, "intermediate_size": 2048,
        "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
        "max_position_embeddings": context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false,
    }))?;
    cfg.validate()?;
    Ok(cfg)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))
            .with_context(|| format!("copying {}", e.path().display()))?;
    }
    Ok(())
}

pub fn init(a: InitArgs, device: &Device) -> Result<()> {
    let tok_dir = a.out.join("tokenizer");
    let lm_dir = a.out.join("lm");
    match a.preset {
        Preset::Default => {
            copy_dir(&a.model.join("tokenizer"), &tok_dir)?;
            copy_dir(&a.model.join("lm"), &lm_dir)?;
        }
        Preset::Paper => {
            let cfg = VqraeConfig::from_toml_file(&a.paper_config)?;
            let (model, vars) = Vqrae::init(&cfg, None, 0, device)?;
            model.save(&tok_dir, &vars)?;
            // a text vocabulary of caption-like words; its size hardly matters next to 16,384 codes
            let words = [
                "a red circle",
                "a blue square on the left",
                "two green triangles above",
                "a yellow shape",
                "three gray rectangles right of a black circle",
            ];
            let text = TextTokenizer::train_bpe(words, 300)?;
            let vocab = UnifiedVocab::new(text.vocab_size(), cfg.quantizer.codebook_size)?;
            let (gh, gw) = cfg.grid();
            let context = (PROMPT + gh * gw + 1).div_ceil(64) * 64;
            let lm_cfg = paper_lm(vocab.size(), context)?;
            let map = SeededVarMap::new(1);
            let lm = Llama::new(&lm_cfg, map.var_builder(DType::F32, device))?;
            lm.save(&lm_dir)?;
            text.save(lm_dir.join("tokenizer.json"))?;
        }
    }
    let model = Vqrae::load(&tok_dir, device, DType::F32)?;
    let text = TextTokenizer::from_file(lm_dir.join("tokenizer.json"))?;
    let lm = Llama::load(&lm_dir, device, DType::F32)?;
    let codebook = model.config().quantizer.codebook_size;
    let vocab = UnifiedVocab::new(text.vocab_size(), codebook)?;
    let (gh, gw) = model.config().grid();
    let info = BenchInfo {
        preset: a.preset,
        image_tokens: gh * gw,
        code_start: vocab.code_range().start,
        code_end: vocab.code_range().end,
        text_vocab: text.vocab_size(),
        vocab_size: vocab.size(),
        prompt_len: PROMPT,
        lm_params: lm.config().params(),
        lm_non_embedding_params: lm.config().non_embedding_params(),
        tokenizer_params: candle_core::safetensors::load(
            tok_dir.join("model.safetensors"),
            device,
        )?
        .values()
        .map(|t| t.elem_count())
        .sum(),
    };
    if lm.config().vocab_size != info.vocab_size {
        bail!(
            "the LM's vocabulary ({}) is not text + codes + 3 ({})",
            lm.config().vocab_size,
            info.vocab_size
        );
    }

    // fixed inputs, and what this implementation makes of them
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let size = model.config().image_size;
    let pixels = Tensor::from_vec(
        (0..2 * 3 * size * size)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
        (2, 3, size, size),
        device,
    )?;
    let codes = Tensor::from_vec(
        (0..2 * info.image_tokens)
            .map(|_| rng.gen_range(0..codebook as u32))
            .collect::<Vec<_>>(),
        (2, info.image_tokens),
        device,
    )?;
    let t = PROMPT + info.image_tokens;
    let ids = Tensor::from_vec(
        (0..t)
            .map(|_| rng.gen_range(0..info.vocab_size as u32))
            .collect::<Vec<_>>(),
        (1, t),
        device,
    )?;
    let enc = model.encode(&pixels)?;
    let decoded = model.decode(&codes, (gh, gw))?;
    let logits = lm.logits(&lm.forward_hidden(&lm.embed(&ids)?, None, false)?)?;
    let save = |name: &str, map: HashMap<String, Tensor>| -> Result<()> {
        let p = a.out.join(name);
        candle_core::safetensors::save(&map, &p).with_context(|| format!("writing {}", p.display()))
    };
    save(
        "inputs.safetensors",
        HashMap::from([
            ("pixels".into(), pixels),
            ("codes".into(), codes),
            ("ids".into(), ids),
        ]),
    )?;
    save(
        "expected.safetensors",
        HashMap::from([
            ("features".into(), enc.features),
            ("codes".into(), enc.codes),
            ("decoded".into(), decoded),
            ("logits".into(), logits),
        ]),
    )?;
    let p = a.out.join("bench.json");
    std::fs::write(&p, serde_json::to_string_pretty(&info)? + "\n")
        .with_context(|| format!("writing {}", p.display()))?;
    println!("bench directory {} ({:?})", a.out.display(), a.preset);
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// How many timed calls `time` makes: a fixed count, or as many as fit in a time budget.
#[derive(Clone, Copy)]
enum Budget {
    Iters(usize),
    Seconds(f64),
}

#[derive(Clone, Copy)]
struct Timing {
    budget: Budget,
    /// Only the timed calls inside the CUDA profiler's window.
    profile: bool,
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
fn time(
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

/// The LM as the server loads it: fused q/k/v and gate/up projections.
fn inference_lm(dir: &Path, device: &Device, dtype: DType) -> Result<Llama> {
    let mut lm = Llama::load(dir, device, dtype)?;
    lm.fuse_for_inference()?;
    Ok(lm)
}

/// A `(rows, cols)` u32 tensor of ids drawn uniformly from `range`.
fn random_tensor(
    rng: &mut ChaCha8Rng,
    (rows, cols): (usize, usize),
    range: std::ops::Range<u32>,
    device: &Device,
) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        random_ids(rng, rows * cols, range),
        (rows, cols),
        device,
    )?)
}

fn random_ids(rng: &mut ChaCha8Rng, n: usize, range: std::ops::Range<u32>) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(range.clone())).collect()
}

pub fn run(a: RunArgs, device: &Device) -> Result<()> {
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
    let info: BenchInfo = serde_json::from_str(
        &std::fs::read_to_string(a.dir.join("bench.json"))
            .with_context(|| format!("{}: run `vqrae bench init` first", a.dir.display()))?,
    )?;
    if info.code_start >= info.code_end
        || info.text_vocab <= 3
        || info.image_tokens == 0
        || info.code_end as usize > info.vocab_size
    {
        bail!(
            "{}: inconsistent bench.json (codes {}..{}, text vocabulary {}, vocabulary {}, \
             {} image tokens): run `vqrae bench init` again",
            a.dir.display(),
            info.code_start,
            info.code_end,
            info.text_vocab,
            info.vocab_size,
            info.image_tokens
        );
    }
    let b = a.batch;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let tok_dir = a.dir.join("tokenizer");
    let lm_dir = a.dir.join("lm");
    let seq = PROMPT + info.image_tokens;
    // inference in the device's serving dtype (bf16 on a GPU), training in f32
    let dtype = vqrae_train::device::default_dtype(device);
    let mut extra = serde_json::Map::new();
    let (unit, per_iter, (iters, secs)) = match a.row {
        Row::TokEncode | Row::TokDecode => {
            let model = Vqrae::load(&tok_dir, device, dtype)?;
            let s = model.config().image_size;
            if a.row == Row::TokEncode {
                let x = Tensor::randn(0f32, 1.0, (b, 3, s, s), device)?.to_dtype(dtype)?;
                let t = time(device, timing, || {
                    model.encode(&x)?.codes.to_vec2::<u32>()?;
                    Ok(())
                })?;
                ("images/s", b, t)
            } else {
                let grid = model.config().grid();
                let n = model.config().quantizer.codebook_size as u32;
                let codes = random_tensor(&mut rng, (b, info.image_tokens), 0..n, device)?;
                let t = time(device, timing, || {
                    model
                        .decode(&codes, grid)?
                        .flatten_all()?
                        .max(0)?
                        .to_dtype(DType::F32)?
                        .to_scalar::<f32>()?;
                    Ok(())
                })?;
                ("images/s", b, t)
            }
        }
        Row::LmPrefill => {
            let lm = inference_lm(&lm_dir, device, dtype)?;
            let ids = random_tensor(&mut rng, (b, seq), 0..info.code_end, device)?;
            let t = time(device, timing, || {
                let h = lm.forward_hidden(&lm.embed(&ids)?, None, false)?;
                lm.logits(&h.narrow(1, seq - 1, 1)?.squeeze(1)?)?
                    .to_dtype(DType::F32)?
                    .to_vec2::<f32>()?;
                Ok(())
            })?;
            ("tokens/s", b * seq, t)
        }
        Row::LmDecode => {
            let lm = inference_lm(&lm_dir, device, dtype)?;
            let text = TextTokenizer::from_file(lm_dir.join("tokenizer.json"))?;
            let vocab =
                UnifiedVocab::new(info.text_vocab, (info.code_end - info.code_start) as usize)?;
            let t2i = T2i {
                lm: &lm,
                text: &text,
                vocab: &vocab,
                image_tokens: info.image_tokens,
            };
            let guided = b > 1;
            let prompt = |rng: &mut ChaCha8Rng, caption: bool| {
                let mut p = vec![text.bos_id()];
                if caption {
                    p.extend(random_ids(rng, PROMPT - 2, 3..info.text_vocab as u32));
                }
                p.push(vocab.boi());
                p
            };
            let mut prompts: Vec<Vec<u32>> = (0..b).map(|_| prompt(&mut rng, true)).collect();
            if guided {
                prompts.extend((0..b).map(|_| prompt(&mut rng, false)));
            }
            let seeds: Vec<u64> = (0..b as u64).collect();
            let gen = GenerationConfig {
                guidance: if guided { 2.0 } else { 1.0 },
                sampling: SamplingConfig::default(),
            };
            let t = time(device, timing, || {
                t2i.sample_from_prompts(&prompts, &seeds, &gen)?;
                Ok(())
            })?;
            ("tokens/s", b * info.image_tokens, t)
        }
        Row::LmStepProfile => {
            let lm = inference_lm(&lm_dir, device, dtype)?;
            let ids = random_tensor(&mut rng, (b, PROMPT), 0..info.code_end, device)?;
            let mut steps = vec![0.0; info.image_tokens];
            let mut profile = || -> Result<()> {
                let mut cache = lm.new_cache(b, seq + 1, vec![0; b])?;
                lm.forward_hidden(&lm.embed(&ids)?, Some(&mut cache), false)?;
                let next = Tensor::from_vec(vec![info.code_start; b], (b, 1), device)?;
                for s in steps.iter_mut() {
                    let t = Instant::now();
                    let h = lm.forward_hidden(&lm.embed(&next)?, Some(&mut cache), false)?;
                    lm.logits(&h.squeeze(1)?)?
                        .to_dtype(DType::F32)?
                        .to_vec2::<f32>()?;
                    *s += t.elapsed().as_secs_f64();
                }
                Ok(())
            };
            let t = time(device, timing, &mut profile)?;
            // the two untimed calls added to the sums too: average over all calls
            let calls = (t.0 + 2) as f64;
            extra.insert(
                "step_seconds".into(),
                steps.iter().map(|s| s / calls).collect::<Vec<_>>().into(),
            );
            ("tokens/s", b * info.image_tokens, t)
        }
        Row::TrainTok => {
            let (model, vars) = Vqrae::init_from_checkpoint(&tok_dir, 0, device)?;
            let teacher = frozen_encoder(&model, &vars, device)?;
            let s = model.config().image_size;
            let x = Tensor::randn(0f32, 1.0, (b, 3, s, s), device)?;
            // stage 1 caches the frozen encoder's features once, before training
            let target = teacher.patch_tokens(&x, false)?.detach();
            let frozen = model.frozen_names();
            let mut trainable: Vec<(String, candle_core::Var)> =
                vqrae_train::checkpoint::var_map_vars(&vars.varmap)?
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("encoder.") && !frozen.contains(k))
                    .collect();
            trainable.sort_by(|x, y| x.0.cmp(&y.0));
            let mut opt = AdamW::new(
                vec![ParamGroup::new(
                    "decoder",
                    trainable,
                    LrSchedule::constant(1e-4),
                )],
                AdamWConfig::default(),
            )?;
            let cfg = TrainConfig::default();
            let t = time(device, timing, || {
                let (total, _, _) = step_losses(&model, &teacher, &x, &target, &cfg)?;
                let mut grads = total.backward()?;
                clip_grad_norm(&mut grads, opt.vars().iter(), cfg.grad_clip)?;
                opt.step(&grads)?;
                Ok(())
            })?;
            ("samples/s", b, t)
        }
        Row::TrainLm => {
            let cfg: LlamaConfig = serde_json::from_str(
                &std::fs::read_to_string(lm_dir.join("config.json"))
                    .with_context(|| format!("reading {}", lm_dir.display()))?,
            )?;
            let map = SeededVarMap::new(2);
            let lm = Llama::new(&cfg, map.var_builder(DType::F32, device))?;
            let mut vars: Vec<(String, candle_core::Var)> =
                vqrae_train::checkpoint::var_map_vars(&map.varmap)?
                    .into_iter()
                    .collect();
            vars.sort_by(|x, y| x.0.cmp(&y.0));
            // the joint trainer's settings (configs/lm/joint-easyvqa.toml)
            let mut opt = AdamW::new(
                vec![ParamGroup::new("lm", vars, LrSchedule::constant(1e-4))],
                AdamWConfig {
                    weight_decay: 0.01,
                    ..AdamWConfig::default()
                },
            )?;
            let examples: Vec<Example> = (0..b)
                .map(|_| Example {
                    ids: random_ids(&mut rng, seq, 0..info.code_end),
                    loss_from: 1,
                })
                .collect();
            let batch = TrainBatch::new(&examples, 0, device)?;
            let t = time(device, timing, || {
                let h = lm.forward_hidden(&lm.embed(&batch.ids)?, None, true)?;
                let mut grads = batch.loss(&lm, &h)?.backward()?;
                clip_grad_norm(&mut grads, opt.vars().iter(), 1.0)?;
                opt.step(&grads)?;
                Ok(())
            })?;
            ("samples/s", b, t)
        }
    };
    let row_dtype = match a.row {
        Row::TrainTok | Row::TrainLm => DType::F32,
        _ => dtype,
    };
    let mut line = json!({
        "impl": "vqrae-rs",
        "row": a.row,
        "batch": b,
        "unit": unit,
        "per_sec": per_iter as f64 / secs,
        "seconds_per_iter": secs,
        "iters": iters,
        "peak_rss_mib": peak_rss_mib(),
        "device": if device.is_cuda() { "cuda" } else { "cpu" },
        "dtype": format!("{row_dtype:?}").to_lowercase(),
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
    });
    if let Some(o) = line.as_object_mut() {
        o.extend(extra);
    }
    println!("{line}");
    Ok(())
}
