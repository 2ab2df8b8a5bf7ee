//! Scores a LLaVA model directory on held-out visual questions: the easy-VQA test split and the
//! procedural scenes' test split (every question of each scene), answers read as sentences.
//! With `--baseline DIR`, the shipped from-scratch unified model answers the same scene
//! questions (new to it too) for comparison.
//!
//! `cargo run --release -p vqrae-unified --example eval_llava -- MODEL_DIR OUT.json
//!  [--quantized] [--easy-vqa N] [--scenes N] [--batch N] [--data DIR] [--baseline DIR]`
//! (`--easy-vqa 0`: the whole split, the default; `--scenes`: test scenes, default 300).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::json;
use vqrae_data::easy_vqa::Split;
use vqrae_lm::SamplingConfig;
use vqrae_unified::llava::data::VqaSet;
use vqrae_unified::llava::eval::score;
use vqrae_unified::llava::model::{LlavaModel, ADAPTERS_FILE};
use vqrae_unified::UnifiedModel;

struct Args {
    model: PathBuf,
    out: PathBuf,
    quantized: Option<bool>,
    easy_vqa: usize,
    scenes: usize,
    batch: usize,
    data: PathBuf,
    baseline: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (Some(model), Some(out)) = (it.next(), it.next()) else {
        bail!("usage: eval_llava MODEL_DIR OUT.json [--quantized] [--easy-vqa N] [--scenes N] [--batch N] [--data DIR] [--baseline DIR]");
    };
    let mut a = Args {
        model: model.into(),
        out: out.into(),
        quantized: None,
        easy_vqa: 0,
        scenes: 300,
        batch: 16,
        data: ".data".into(),
        baseline: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--quantized" => a.quantized = Some(true),
            "--f32" => a.quantized = Some(false),
            "--easy-vqa" => a.easy_vqa = value()?.parse()?,
            "--scenes" => a.scenes = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--data" => a.data = value()?.into(),
            "--baseline" => a.baseline = Some(value()?.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let dev = Device::Cpu;
    let started = Instant::now();
    let model = LlavaModel::load(&a.model, &a.data.join("models"), a.quantized, &dev)?;
    let greedy = SamplingConfig::greedy();
    let progress = |what: &'static str| {
        move |done: usize, n: usize| {
            if done % 320 < 16 || done == n {
                eprintln!(
                    "{what}: {done}/{n} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    };
    let scenes = VqaSet::scenes(Split::Test, a.scenes);
    let easy = VqaSet::easy_vqa(&a.data.join("easy-vqa"), Split::Test, 0)?;
    let ask = |im: &[image::RgbImage], q: &[&str]| model.ask(im, q, 24, &greedy);
    let scene_score = score(&scenes, 0, a.batch, ask, progress("scenes"))?;
    let easy_score = score(&easy, a.easy_vqa, a.batch, ask, progress("easy-vqa"))?;
    let baseline = match &a.baseline {
        Some(dir) => {
            let m = UnifiedModel::load(dir, &dev, DType::F32)?;
            let ask = |im: &[image::RgbImage], q: &[&str]| m.ask(im, q, 8, &greedy);
            Some(json!({
                "model": dir,
                "scenes": score(&scenes, 0, 64, ask, progress("baseline scenes"))?,
            }))
        }
        None => None,
    };
    let report = json!({
        "model": a.model,
        "adapters_sha256": vqrae_data::fs::sha256_file(&a.model.join(ADAPTERS_FILE))?,
        "base": model.cfg.base,
        "encoder": model.cfg.encoder,
        "quantized": model.quantized,
        "easy_vqa_test": { "questions": if a.easy_vqa == 0 { easy.items.len() } else { a.easy_vqa.min(easy.items.len()) }, "score": easy_score },
        "scenes_test": { "scenes": a.scenes, "questions": scenes.items.len(), "score": scene_score },
        "baseline": baseline,
        "seconds": started.elapsed().as_secs_f64(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "commit": std::env::var("VQRAE_COMMIT").ok(),
    });
    let text = serde_json::to_string_pretty(&report)?;
    vqrae_data::fs::write_atomic(&a.out, (text.clone() + "\n").as_bytes())?;
    println!("{text}");
    Ok(())
}
