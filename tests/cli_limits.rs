//! The command line's bounds and guards: counts and sizes out of range are clear errors before
//! any work, a run directory takes one trainer at a time, and a broken model file is named.

mod common;

use std::path::Path;

use common::{fails_with, ok, repo, s, vqrae};

const MODEL: &str = "models/vqrae-easyvqa";

#[test]
fn generate_caps_the_count_and_batches_large_ones() {
    for n in ["0", "10001", "1000000"] {
        fails_with(
            &[
                "generate",
                "--model",
                MODEL,
                "a red circle",
                "-n",
                n,
                "-o",
                "/nonexistent/x",
            ],
            "1 to 10000 images",
        );
    }
    // more than one batch of 32: every file is written, and the grid keeps the first 64 at most
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("imgs");
    ok(&[
        "generate",
        "--model",
        MODEL,
        "a blue square",
        "-n",
        "33",
        "--seed",
        "3",
        "-o",
        s(&out),
    ]);
    assert!(out.join("32.png").is_file() && !out.join("33.png").exists());
    // the first image is the one a call of one image draws
    let one = tmp.path().join("one");
    ok(&[
        "generate",
        "--model",
        MODEL,
        "a blue square",
        "-n",
        "1",
        "--seed",
        "3",
        "-o",
        s(&one),
    ]);
    let read = |p: &Path| std::fs::read(p).expect("png");
    assert_eq!(read(&out.join("0.png")), read(&one.join("0.png")));
}

#[test]
fn sizes_are_bounded_and_whole_patches() {
    let enc = repo().join("tokenizer/tests/fixtures/dinov2_tiny");
    let img = repo().join("tokenizer/tests/fixtures/dinov2_tiny/config.json");
    for (res, why) in [("100000", "1024 px"), ("63", "multiple of 4")] {
        fails_with(
            &[
                "features",
                "--encoder",
                s(&enc),
                "--resolution",
                res,
                s(&img),
                "-o",
                "x.safetensors",
            ],
            why,
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("c.toml");
    let text = std::fs::read_to_string(repo().join("configs/tiny.toml")).expect("tiny.toml");
    std::fs::write(&cfg, text.replacen("image_size = 32", "image_size = 30", 1)).expect("write");
    fails_with(
        &["init", "--config", s(&cfg), "-o", s(&tmp.path().join("m"))],
        "image_size 30 is not a whole number of the encoder's 8-pixel patches",
    );
    assert!(!tmp.path().join("m").exists());
}

#[test]
fn a_second_trainer_on_a_run_fails_naming_the_directory_and_the_holder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    // this test process is the "other trainer"
    let _held = vqrae_train::lock::RunLock::acquire(&run).expect("lock");
    let pid = format!("pid {}", std::process::id());
    let train_cfg = repo().join("configs/train/stage1.toml");
    let lm_cfg = repo().join("configs/lm/tiny.toml");
    for args in [
        vec![
            "train-tokenizer",
            "--config",
            "configs/tiny.toml",
            "--train",
            s(&train_cfg),
            "--run",
            s(&run),
        ],
        vec![
            "train-lm",
            "--config",
            s(&lm_cfg),
            "--tokenizer",
            MODEL,
            "--run",
            s(&run),
        ],
    ] {
        let out = vqrae(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran beside another trainer");
        assert!(stderr.contains("in use by another trainer"), "{stderr}");
        assert!(
            stderr.contains(s(&run)) && stderr.contains(&pid),
            "{stderr}"
        );
    }
}

#[test]
fn serve_names_the_broken_file_on_its_first_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for file in [
        "lm/model.safetensors",
        "projector.safetensors",
        "tokenizer/config.json",
    ] {
        let dir = tmp.path().join(file.replace('/', "-"));
        vqrae_data::fs::copy_dir(&repo().join(MODEL), &dir).expect("copy");
        let path = dir.join(file);
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        let out = vqrae(&["serve", "--model", s(&dir), "--port", "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "served a broken {file}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.contains(s(&path)), "{file}: {stderr}");
    }
}
