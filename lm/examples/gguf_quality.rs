//! What quantization costs in quality: the GGUF's quantized blocks (`QMatMul`, as
//! `vqrae chat --quantized` runs them) against the same weights dequantized to f32 (the
//! default, equal to transformers' reading within 1e-4: lm/tests/smollm2_reference.rs).
//!
//! `cargo run --release -p vqrae-lm --example gguf_quality -- [path.gguf] [--json out.json]
//! [--kernel-only]` (default: the installed SmolLM2-135M-Instruct Q4_1). The quantized form runs
//! as served (`QuantizedRows::DequantizeBatches`: inputs of several rows multiply dequantized
//! copies of the blocks), or with `--kernel-only` through candle's quantized kernel for every
//! input (llama.cpp's numerics). Measures, for both forms:
//! - perplexity of `lm/tests/fixtures/smollm2/heldout.txt` in the reference's chunking
//!   (512-token chunks, each from position 0), beside the reference's;
//! - |logit difference| between the two forms at every position of the fixture's five prompts
//!   (max, mean, at the last positions) and how often their top-1 ids agree;
//! - the greedy continuations of the five fixture prompts (24 tokens, as the reference) and the
//!   greedy replies to eight chat prompts (the fixture's three and five fixed ones), and how
//!   many are identical between the forms (and to the reference).
//!
//! Prints one JSON object (also written to `--json`), with the command, the model's sha256 and
//! the git commit it was measured at.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::{json, Value};
use vqrae_lm::chat::ChatMessage;
use vqrae_lm::converse::{ChatModel, WeightForm};
use vqrae_lm::fuse::QuantizedRows;
use vqrae_lm::generate_text::{generate, GenerateOptions};
use vqrae_lm::score::chunked_perplexity;
use vqrae_lm::SamplingConfig;

/// The fixed chat prompts beside the fixture's three (France, three colours, the sea).
const FIXED: [&str; 5] = [
    "What is 12 plus 7?",
    "Translate 'good morning' to French.",
    "Who wrote Romeo and Juliet?",
    "How many days are in a week?",
    "Give one tip for sleeping well.",
];
/// Longest chat reply.
const REPLY_TOKENS: usize = 64;

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Prompt>,
    heldout: Heldout,
    generation: Generation,
}

#[derive(Deserialize)]
struct Prompt {
    name: String,
    messages: Option<Vec<ChatMessage>>,
    input_ids: Vec<u32>,
    greedy: Greedy,
}

#[derive(Deserialize)]
struct Greedy {
    new_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Heldout {
    input_ids: Vec<u32>,
    chunk_tokens: usize,
    perplexity: f64,
}

#[derive(Deserialize)]
struct Generation {
    max_new_tokens: usize,
    eos_token_id: u32,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Logits `(T, V)` at every position of `ids`.
fn all_logits(m: &ChatModel, ids: &[u32]) -> Result<Tensor> {
    let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let hidden = m
        .model
        .forward_hidden(&m.model.embed(&input)?, None, false)?;
    Ok(m.model.logits(&hidden.squeeze(0)?)?)
}

/// Logit differences between the forms over the fixture prompts.
fn logit_diffs(q: &ChatModel, f: &ChatModel, r: &Reference) -> Result<Value> {
    let (mut max, mut sum, mut count) = (0f32, 0f64, 0usize);
    let (mut last_max, mut last_sum) = (0f32, 0f64);
    let (mut agree, mut positions) = (0usize, 0usize);
    let mut per_prompt = Vec::new();
    for p in &r.prompts {
        let (lq, lf) = (all_logits(q, &p.input_ids)?, all_logits(f, &p.input_ids)?);
        let d = (&lq - &lf)?.abs()?;
        let m = d.max_all()?.to_scalar::<f32>()?;
        let t = p.input_ids.len();
        let last = d.get(t - 1)?.max_all()?.to_scalar::<f32>()?;
        let (aq, af) = (
            lq.argmax(1)?.to_vec1::<u32>()?,
            lf.argmax(1)?.to_vec1::<u32>()?,
        );
        let same = aq.iter().zip(&af).filter(|(a, b)| a == b).count();
        max = max.max(m);
        sum += d.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        count += d.elem_count();
        last_max = last_max.max(last);
        last_sum += d
            .get(t - 1)?
            .to_dtype(DType::F64)?
            .mean_all()?
            .to_scalar::<f64>()?;
        agree += same;
        positions += t;
        per_prompt.push(json!({
            "prompt": p.name, "tokens": t, "max_abs": m, "last_position_max_abs": last,
            "top1_agreement": same as f64 / t as f64,
        }));
    }
    Ok(json!({
        "max_abs": max,
        "mean_abs": sum / count as f64,
        "last_position_max_abs": last_max,
        "last_position_mean_abs": last_sum / r.prompts.len() as f64,
        "top1_agreement": agree as f64 / positions as f64,
        "positions": positions,
        "per_prompt": per_prompt,
    }))
}

/// The fixture prompts' greedy continuations of both forms, as the reference generated them.
fn continuations(q: &ChatModel, f: &ChatModel, r: &Reference) -> Result<Value> {
    let g = &r.generation;
    let opts = GenerateOptions::greedy(g.max_new_tokens, vec![g.eos_token_id]);
    let mut rows = Vec::new();
    let (mut same, mut f_ref, mut q_ref) = (0, 0, 0);
    for p in &r.prompts {
        let run = |m: &ChatModel| -> Result<(Vec<u32>, String)> {
            let out = generate(
                &m.model,
                std::slice::from_ref(&p.input_ids),
                &opts,
                |_, _| {},
            )?;
            let mut ids = out[0].ids.clone();
            let text = m.tok.decode(&ids)?;
            if out[0].stopped {
                ids.push(g.eos_token_id);
            }
            Ok((ids, text))
        };
        let ((iq, tq), (i_f, tf)) = (run(q)?, run(f)?);
        same += usize::from(iq == i_f);
        f_ref += usize::from(i_f == p.greedy.new_ids);
        q_ref += usize::from(iq == p.greedy.new_ids);
        let first = iq.iter().zip(&i_f).position(|(a, b)| a != b);
        rows.push(json!({
            "prompt": p.name, "f32": tf, "quantized": tq, "identical": iq == i_f,
            "first_difference_at": first,
        }));
    }
    Ok(json!({
        "max_new_tokens": g.max_new_tokens,
        "identical_quantized_vs_f32": same,
        "identical_f32_vs_reference": f_ref,
        "identical_quantized_vs_reference": q_ref,
        "of": r.prompts.len(),
        "prompts": rows,
    }))
}

/// Greedy chat replies of both forms to the fixture's chat prompts and [`FIXED`].
fn chat_replies(q: &ChatModel, f: &ChatModel, r: &Reference) -> Result<Value> {
    let mut conversations: Vec<Vec<ChatMessage>> = r
        .prompts
        .iter()
        .filter_map(|p| p.messages.clone())
        .collect();
    conversations.extend(FIXED.iter().map(|t| vec![ChatMessage::user(*t)]));
    let greedy = SamplingConfig::greedy();
    let mut rows = Vec::new();
    let mut same = 0;
    for conv in &conversations {
        let rq = q.chat().reply(conv, &greedy, REPLY_TOKENS)?;
        let rf = f.chat().reply(conv, &greedy, REPLY_TOKENS)?;
        same += usize::from(rq.ids == rf.ids);
        let user = conv.last().map(|m| m.content.as_str()).unwrap_or_default();
        rows.push(json!({
            "user": user, "f32": rf.text, "quantized": rq.text, "identical": rq.ids == rf.ids,
            "f32_stopped": rf.stopped, "quantized_stopped": rq.stopped,
        }));
    }
    Ok(json!({
        "max_new_tokens": REPLY_TOKENS,
        "identical": same,
        "of": conversations.len(),
        "replies": rows,
    }))
}

/// Runs `f`, telling stderr how long it took.
fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = std::time::Instant::now();
    let out = f()?;
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
    Ok(out)
}

fn report(path: &Path, rows: QuantizedRows, command: String) -> Result<Value> {
    let text = std::fs::read_to_string(fixture_dir().join("reference.json"))?;
    let r: Reference = serde_json::from_str(&text).context("reference.json")?;
    let mut q = ChatModel::from_gguf(path, WeightForm::Quantized, &Device::Cpu)?;
    q.model.set_quantized_rows(rows);
    let f = ChatModel::from_gguf(path, WeightForm::Dequantized(DType::F32), &Device::Cpu)?;
    let heldout = std::fs::read_to_string(fixture_dir().join("heldout.txt"))?;
    let ids = f.tok.encode(&heldout)?;
    anyhow::ensure!(
        ids == r.heldout.input_ids,
        "heldout.txt tokenizes unlike the fixture"
    );
    let chunk = r.heldout.chunk_tokens;
    let (pq, pf) = timed("perplexity", || {
        Ok((
            chunked_perplexity(&q.model, &ids, chunk)?,
            chunked_perplexity(&f.model, &ids, chunk)?,
        ))
    })?;
    let sha = vqrae_data::fs::sha256_file(path)?;
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Ok(json!({
        "command": command,
        "model": {
            "file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "size": std::fs::metadata(path)?.len(),
            "sha256": sha,
        },
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": dirty,
        "machine": {
            "device": "cpu",
            "threads": candle_core::utils::get_num_threads(),
        },
        "quantized_rows": format!("{rows:?}"),
        "perplexity_heldout": {
            "text": "lm/tests/fixtures/smollm2/heldout.txt",
            "chunking": format!("{chunk}-token chunks, each from position 0"),
            "f32": pf,
            "quantized": pq,
            "reference_transformers_f32": r.heldout.perplexity,
            "quantized_over_f32": pq.perplexity / pf.perplexity,
        },
        "logits_quantized_vs_f32": timed("logits", || logit_diffs(&q, &f, &r))?,
        "fixture_continuations": timed("continuations", || continuations(&q, &f, &r))?,
        "chat_replies": timed("chat replies", || chat_replies(&q, &f, &r))?,
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut json_out = None;
    let mut path = None;
    let mut rows = QuantizedRows::DequantizeBatches;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--kernel-only" {
            rows = QuantizedRows::Kernel;
        } else if a == "--json" {
            json_out = Some(PathBuf::from(it.next().context("--json needs a path")?));
        } else {
            path = Some(PathBuf::from(a));
        }
    }
    let path = path.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let command = format!(
        "cargo run --release -p vqrae-lm --example gguf_quality -- {}",
        args.join(" ")
    );
    let text = serde_json::to_string_pretty(&report(&path, rows, command.trim_end().to_owned())?)?;
    println!("{text}");
    if let Some(out) = json_out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, text + "\n").with_context(|| out.display().to_string())?;
    }
    Ok(())
}
