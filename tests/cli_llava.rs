//! `vqrae train-llava` and `vqrae eval-llava` end to end on tiny files (test-support's tiny GGUF
//! chat LM and DINOv2 fixture under a data root of their own, a mini easy-VQA,
//! `configs/llava/tiny.toml`): a run trains, saves its model directory and resumes as finished;
//! the evaluation scores it f32 and quantized, beside the shipped unified model, with the text
//! ability of the adapted model and its base; bad input is a clear error.

mod common;

use std::path::Path;

use common::{fails_with, ok, s};
use serde_json::Value;
use vqrae_test_support::{tiny_llava_data, TINY_BASE, TINY_ENCODER};

fn train_args<'a>(config: &'a str, run: &'a Path, data: &'a Path) -> Vec<&'a str> {
    vec![
        "train-llava",
        "--config",
        config,
        "--run",
        s(run),
        "--data",
        s(data),
        "--base",
        TINY_BASE,
        "--encoder",
        TINY_ENCODER,
    ]
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn train_llava_then_eval_llava_on_tiny_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_llava_data(&data, 4).unwrap();
    let run = tmp.path().join("run");
    let summary = json(&ok(&train_args("configs/llava/tiny.toml", &run, &data)));
    assert_eq!(summary["steps"], 5);
    assert!(summary["resumed_from"].is_null());
    assert!(run.join("model/llava.json").is_file());
    // a finished run resumes as finished
    let again = json(&ok(&train_args("configs/llava/tiny.toml", &run, &data)));
    assert_eq!(again["resumed_from"], 5);

    let model = run.join("model");
    let report_file = tmp.path().join("eval/report.json");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval-llava",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--scenes",
            "2",
            "--batch",
            "5",
            "--json",
            s(&report_file),
        ];
        args.extend_from_slice(extra);
        let printed = json(&ok(&args));
        let written = json(&std::fs::read_to_string(&report_file).unwrap());
        assert_eq!(printed, written);
        written
    };
    let r = eval(&["--f32", "--baseline", "models/vqrae-easyvqa"]);
    assert_eq!(r["quantized"], false);
    assert_eq!(r["easy_vqa_test"]["questions"], 12);
    assert_eq!(r["easy_vqa_test"]["score"]["overall"]["asked"], 12);
    let scene_questions = r["scenes_test"]["questions"].as_u64().unwrap();
    assert!(scene_questions > 0);
    assert_eq!(r["scenes_test"]["scenes"], 2);
    assert_eq!(
        r["baseline"]["scenes"]["overall"]["asked"].as_u64(),
        Some(scene_questions)
    );
    let text = &r["text_ability"];
    for who in ["adapted", "base"] {
        assert_eq!(text[who]["replies"].as_array().map(Vec::len), Some(5));
        let ppl = text[who]["heldout_perplexity"]["perplexity"]
            .as_f64()
            .unwrap();
        assert!(ppl.is_finite() && ppl > 1.0, "{who}: {ppl}");
    }
    // the tiny base answers one word and stops
    assert_eq!(text["base"]["replies"][0]["reply"], "o");
    assert_eq!(text["base"]["replies"][0]["stopped"], true);
    let commit = &r["commit"];
    assert!(
        commit.is_null() || commit.as_str().is_some_and(|c| c.len() == 40),
        "{commit}"
    );
    assert!(r["command"].as_str().unwrap().contains("eval-llava"));

    let q = eval(&["--quantized", "--easy-vqa", "4"]);
    assert_eq!(q["quantized"], true);
    assert_eq!(q["easy_vqa_test"]["questions"], 4);
    assert!(q["baseline"].is_null());
}

#[test]
fn llava_commands_refuse_bad_input_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    // nothing installed: the missing base is named, with what installs it
    std::fs::create_dir_all(&data).unwrap();
    let args = train_args("configs/llava/tiny.toml", &run, &data);
    fails_with(&args, TINY_BASE);
    fails_with(&args, "is not installed");
    assert!(!run.exists());
    // a config that trains nothing is refused before any work, naming the file
    let cfg = tmp.path().join("nothing.toml");
    let tiny = std::fs::read_to_string(common::repo().join("configs/llava/tiny.toml")).unwrap();
    let nothing = tiny.replace(
        "projector_lr = { peak_lr = 1e-2, min_lr = 1e-3, warmup_steps = 1, total_steps = 2 }\n",
        "",
    );
    assert_ne!(nothing, tiny);
    std::fs::write(&cfg, nothing).unwrap();
    fails_with(&train_args(s(&cfg), &run, &data), "trains nothing");
    fails_with(&train_args(s(&cfg), &run, &data), "nothing.toml");
    assert!(!run.exists());
    // eval: no model directory; both weight forms at once
    fails_with(
        &[
            "eval-llava",
            "--model",
            s(&tmp.path().join("none")),
            "--data",
            s(&data),
        ],
        "llava.json",
    );
    fails_with(
        &["eval-llava", "--model", "m", "--quantized", "--f32"],
        "cannot be used with",
    );
}

#[test]
fn help_lists_the_llava_commands() {
    let out = ok(&["--help"]);
    assert!(out.contains("train-llava") && out.contains("eval-llava"));
    let eval = ok(&["eval-llava", "--help"]);
    for flag in [
        "--model",
        "--quantized",
        "--f32",
        "--easy-vqa",
        "--scenes",
        "--batch",
        "--baseline",
        "--json",
    ] {
        assert!(eval.contains(flag), "{flag} missing from eval-llava --help");
    }
    assert!(ok(&["train-llava", "--help"]).contains("--config"));
}
