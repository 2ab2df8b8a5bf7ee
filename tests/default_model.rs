//! Smoke test of the shipped default model (`models/vqrae-easyvqa`) through the CLI, on the real
//! easy-VQA test split: it answers questions and generates images well above chance, and bad
//! input is a clear error. The full figures come from `scripts/lm-experiments.sh`.

mod common;

use common::{ok, s, vqrae};

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = vqrae(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vqrae {args:?} failed:\n{stderr}");
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

const MODEL: &str = "models/vqrae-easyvqa";

#[test]
fn default_model_answers_above_chance() {
    // chance on this mix (3/4 yes/no, 1/8 colour, 1/8 shape) is about 0.46
    let report = json_of(&["eval-vqa", "--model", MODEL, "--limit", "96"]);
    let acc = report["accuracy"].as_f64().expect("accuracy");
    assert!(acc > 0.8, "VQA accuracy {acc} on 96 test questions");
    assert_eq!(report["model"], MODEL);
    let hash = vqrae_data::fs::sha256_model(&common::repo().join(MODEL)).expect("hashing");
    assert_eq!(report["model_sha256"], hash.as_str());
}

#[test]
fn default_model_generates_what_it_is_asked_above_chance() {
    // 24 colour-shape captions: chance that the referee reads both right is 1/24
    let report = json_of(&[
        "eval-t2i",
        "--model",
        MODEL,
        "--referee",
        "models/referee-easyvqa",
        "--guidance",
        "3",
        "-n",
        "2",
        "--scenes",
        "4",
    ]);
    let both = report["by_guidance"]["3"]["both"]
        .as_f64()
        .expect("rate at guidance 3");
    assert!(both > 0.3, "referee-judged rate {both} at CFG 3");
    // held-out scenes judged per skill, beside the judge on the tokenizer's reconstructions
    let scenes = &report["scenes"];
    assert_eq!(scenes["by_guidance"]["3"]["images"], 8, "{scenes}");
    assert_eq!(scenes["ceiling"]["images"], 4, "{scenes}");
    for skill in ["count", "color", "position", "all"] {
        let rate = scenes["by_guidance"]["3"][skill].as_f64().expect("a rate");
        assert!((0.0..=1.0).contains(&rate), "{skill}: {rate}");
    }
}

#[test]
fn the_guidance_flag_and_its_older_spelling_draw_the_same_images() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let draw = |flag: &str, out: &str| {
        let dir = tmp.path().join(out);
        ok(&[
            "generate",
            "a blue rectangle",
            "-n",
            "1",
            flag,
            "2",
            "--seed",
            "5",
            "-o",
            s(&dir),
        ]);
        std::fs::read(dir.join("0.png")).expect("0.png")
    };
    assert_eq!(draw("--guidance", "a"), draw("--cfg", "b"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope.png");
    let out = vqrae(&[
        "ask",
        "--model",
        MODEL,
        missing.to_str().expect("utf-8"),
        "what color is the shape?",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("nope.png"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for (prompt, needle) in [("", "empty"), (&"a red circle ".repeat(50)[..], "context")] {
        let out = vqrae(&[
            "generate",
            "--model",
            MODEL,
            prompt,
            "-o",
            tmp.path().to_str().expect("utf-8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(needle), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn ask_warns_about_an_image_the_model_cannot_see_and_answers() {
    // the sample sheet: 48 generated images in one picture, 15.7 dB through the tokenizer
    let warned = vqrae(&[
        "ask",
        "docs/results/lm/samples-cfg2.png",
        "what color is the shape?",
    ]);
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("out of distribution") && stderr.contains("does not look like"),
        "{stderr}"
    );
    assert!(!warned.stdout.is_empty());
    let plain = vqrae(&[
        "ask",
        "examples/red-triangle.png",
        "what color is the shape?",
    ]);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        plain.status.success() && !stderr.contains("out of distribution"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "red");
}
