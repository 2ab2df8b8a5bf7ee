//! End-to-end tests of the `vqrae` binary on the real installed data (run `vqrae data setup`
//! or `scripts/setup-data.sh` first; the test command does).

mod common;

use std::path::{Path, PathBuf};

use common::{data_root, fails_with, ok, repo, s, vqrae};

fn easy_vqa_image(split: &str, id: usize) -> String {
    let p = data_root().join(format!("easy-vqa/{split}/images/{id}.png"));
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-data.sh",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

#[test]
fn data_setup_is_idempotent_on_an_installed_root() {
    let out = vqrae(&["data", "setup"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("easy-vqa 4000/1000 images"), "{stdout}");
    assert!(!stderr.contains("unbound"), "{stderr}");
}

#[test]
fn data_show_summarises_the_real_data_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("grid.png");
    let out = ok(&["data", "show", "-n", "4", "-o", s(&grid)]);
    assert!(
        out.contains("easy-VQA train: 4000 images, 38575 questions"),
        "{out}"
    );
    assert!(
        out.contains("easy-VQA test: 1000 images, 9673 questions"),
        "{out}"
    );
    assert!(
        out.contains("Fashion-MNIST train: 60000 images 28x28"),
        "{out}"
    );
    assert!(out.contains("Fashion-MNIST test: 10000 images"), "{out}");
    assert!(grid.exists());
    let out = ok(&[
        "data",
        "show",
        "--scenes",
        "3",
        "--seed",
        "4",
        "-n",
        "3",
        "-o",
        s(&grid),
    ]);
    assert_eq!(out.matches("scene ").count(), 3, "{out}");
}

#[test]
fn init_tokenize_reconstruct_on_a_real_image() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tok");
    ok(&[
        "init",
        "--config",
        "configs/tiny.toml",
        "--seed",
        "3",
        "-o",
        s(&model),
    ]);
    let img = easy_vqa_image("test", 0);
    let out = ok(&["tokenize", "--model", s(&model), &img]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["grid"], serde_json::json!([4, 4]));
    assert_eq!(v["feature_shape"], serde_json::json!([16, 32]));
    let codes = v["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 4);
    assert!(codes
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .all(|c| c.as_u64().unwrap() < 64));
    // same model, same image: same codes
    assert_eq!(out, ok(&["tokenize", "--model", s(&model), &img]));
    let png = tmp.path().join("rec.png");
    ok(&["reconstruct", "--model", s(&model), &img, "-o", s(&png)]);
    let rec = image::open(&png).unwrap();
    assert_eq!((rec.width(), rec.height()), (32, 32));
}

#[test]
fn tokenize_and_reconstruct_take_the_shipped_unified_model_directory() {
    // the README's examples: a unified model directory means its tokenizer/, and the shipped
    // model is the default
    let tmp = tempfile::tempdir().unwrap();
    let img = "examples/red-triangle.png";
    let out = ok(&["tokenize", "--model", "models/vqrae-easyvqa", img]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["grid"], serde_json::json!([8, 8]));
    assert_eq!(out, ok(&["tokenize", img]), "the default model");
    assert_eq!(
        out,
        ok(&["tokenize", "--model", "models/vqrae-easyvqa/tokenizer", img])
    );
    let png = tmp.path().join("rec.png");
    ok(&[
        "reconstruct",
        "--model",
        "models/vqrae-easyvqa",
        img,
        "-o",
        s(&png),
    ]);
    let rec = image::open(&png).unwrap();
    assert_eq!((rec.width(), rec.height()), (64, 64));
    fails_with(
        &[
            "features",
            "--encoder",
            s(&tmp.path().join("none")),
            img,
            "-o",
            s(&png),
        ],
        "scripts/convert-dinov2.sh",
    );
}

#[test]
fn features_of_a_hugging_face_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = repo().join("tokenizer/tests/fixtures/siglip_tiny");
    let out_file = tmp.path().join("f.safetensors");
    let img = easy_vqa_image("train", 1);
    let out = ok(&[
        "features",
        "--encoder",
        s(&enc),
        &img,
        &img,
        "-o",
        s(&out_file),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // SigLIP preprocessing: resize to 16x16, 4x4 patches of width 32
    assert_eq!(v["features"], serde_json::json!([2, 16, 32]));
    let t = candle_core::safetensors::load(&out_file, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["features"].dims(), &[2, 16, 32]);
    // DINOv2 at an explicit resolution: 64 px / patch 4 = 16x16 tokens after the class token
    let enc = repo().join("tokenizer/tests/fixtures/dinov2_tiny");
    let out = ok(&[
        "features",
        "--encoder",
        s(&enc),
        "--resolution",
        "64",
        &img,
        "-o",
        s(&out_file),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["features"], serde_json::json!([1, 256, 32]));
    assert_eq!(v["grid"], serde_json::json!([16, 16]));
}

#[test]
fn tokenize_refuses_hostile_images_with_a_message() {
    // issue 22: a 67108864 x 1 PNG (inside the 64-Mpixel file limit) once asked the resize for
    // 64 GiB and aborted; a GIF whose frame is larger than its screen was decoded whole
    use vqrae_data::hostile_images::{gif_with_frame, png, PNG_GREY};
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tok");
    ok(&["init", "--config", "configs/tiny.toml", "-o", s(&model)]);
    let wide = tmp.path().join("wide.png");
    std::fs::write(&wide, png(67_108_864, 1, PNG_GREY, 8)).unwrap();
    fails_with(&["tokenize", "--model", s(&model), s(&wide)], "67108864x1");
    let gif = tmp.path().join("liar.gif");
    std::fs::write(&gif, gif_with_frame((64, 64), (11_000, 11_000))).unwrap();
    fails_with(
        &["tokenize", "--model", s(&model), s(&gif)],
        "more than its header announces",
    );
    // as elongated as allowed (64:1) and 1024 times wider than the model's 32 px: tokenized,
    // resized in memory that follows the output
    let strip = tmp.path().join("strip.png");
    std::fs::write(&strip, png(32_768, 512, PNG_GREY, 8)).unwrap();
    let out = ok(&["tokenize", "--model", s(&model), s(&strip)]);
    assert!(out.contains("\"grid\""), "{out}");
}

#[test]
fn bad_input_is_an_error_message_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tok");
    ok(&["init", "--config", "configs/tiny.toml", "-o", s(&model)]);
    fails_with(
        &["tokenize", "--model", s(&model), "/nonexistent/x.png"],
        "/nonexistent/x.png",
    );
    let corrupt = tmp.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    fails_with(
        &[
            "reconstruct",
            "--model",
            s(&model),
            s(&corrupt),
            "-o",
            "x.png",
        ],
        "corrupt.png",
    );
    fails_with(
        &[
            "tokenize",
            "--model",
            s(&tmp.path().join("nope")),
            s(&corrupt),
        ],
        "nope",
    );
    let cfg = tmp.path().join("bad.toml");
    let text = std::fs::read_to_string(repo().join("configs/tiny.toml")).unwrap();
    std::fs::write(&cfg, text.replace("beta = 0.25", "beta = 0.25\nbeat = 1.0")).unwrap();
    fails_with(&["init", "--config", s(&cfg), "-o", s(&model)], "beat");
    fails_with(&["--device", "tpu", "data", "show"], "unknown device");
    fails_with(
        &[
            "features",
            "--encoder",
            s(tmp.path()),
            &easy_vqa_image("test", 1),
            "-o",
            "x.safetensors",
        ],
        "config.json",
    );
}

#[test]
fn help_explains_every_command() {
    let out = ok(&["--help"]);
    for cmd in [
        "data",
        "features",
        "init",
        "tokenize",
        "reconstruct",
        "probe",
        "pretrain-encoder",
        "train-tokenizer",
        "eval-tokenizer",
        "plot",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    assert!(ok(&["features", "--help"]).contains("--resolution"));
}

#[test]
fn pretrain_train_two_stages_and_evaluate_on_real_images() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = pretrain_tiny_encoder(tmp.path());
    let (run1, run2) = train_two_stages(tmp.path(), &enc);
    evaluate_and_probe(tmp.path(), &enc, &run2);
    plot_both_runs(tmp.path(), &run1, &run2);
    quantizer_overrides_need_a_fresh_model(tmp.path(), &run1);
}

/// `pretrain-encoder` on 64 easy-VQA images; the encoder directory.
fn pretrain_tiny_encoder(tmp: &Path) -> PathBuf {
    let p = |name: &str| tmp.join(name);
    std::fs::write(
        p("pre.toml"),
        "steps = 6\nbatch_size = 8\ncolour_weight = 1.0\n[lr]\npeak_lr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 2\ntotal_steps = 6\n",
    )
    .unwrap();
    let enc = p("enc");
    let out = ok(&[
        "pretrain-encoder",
        "--encoder",
        "configs/encoder/tiny.toml",
        "--train",
        s(&p("pre.toml")),
        "--limit",
        "64",
        "-o",
        s(&enc),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("a JSON report");
    let hash = vqrae_data::fs::sha256_model(&enc).expect("hashing the encoder");
    assert_eq!(report["out_sha256"], hash.as_str());
    enc
}

/// Stage 1 on easy-VQA + scenes from the pretrained encoder, then stage 2 from its model;
/// writes `s1.toml` / `s2.toml` beside the runs.
fn train_two_stages(tmp: &Path, enc: &Path) -> (PathBuf, PathBuf) {
    let p = |name: &str| tmp.join(name);
    let stage = |n: u8| {
        format!(
            "stage = {n}\nsteps = 4\nbatch_size = 8\ncheckpoint_every = 2\nlog_every = 1\n\
             [decoder_lr]\npeak_lr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 1\ntotal_steps = 4\n"
        )
    };
    std::fs::write(p("s1.toml"), stage(1)).unwrap();
    std::fs::write(p("s2.toml"), stage(2)).unwrap();
    let run1 = p("run1");
    let out = ok(&[
        "train-tokenizer",
        "--config",
        "configs/tiny.toml",
        "--encoder",
        s(enc),
        "--train",
        s(&p("s1.toml")),
        // a seeded subset of easy-VQA and the procedural scenes together
        "--dataset",
        "easy-vqa-scenes",
        "--limit",
        "64",
        "--run",
        s(&run1),
    ]);
    assert!(out.contains("\"steps\":4"), "{out}");
    let run2 = p("run2");
    ok(&[
        "train-tokenizer",
        "--init",
        s(&run1.join("model")),
        "--train",
        s(&p("s2.toml")),
        "--limit",
        "64",
        "--run",
        s(&run2),
    ]);
    (run1, run2)
}

fn evaluate_and_probe(tmp: &Path, enc: &Path, run2: &Path) {
    let p = |name: &str| tmp.join(name);
    let grid = p("grid.png");
    let out = ok(&[
        "eval-tokenizer",
        "--model",
        s(&run2.join("model")),
        "--reference",
        s(enc),
        "--limit",
        "32",
        "--grid",
        s(&grid),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = &v["report"];
    assert_eq!(r["images"], 32);
    for key in [
        "psnr",
        "ssim",
        "utilisation",
        "perplexity",
        "feature_cosine",
    ] {
        assert!(r[key].as_f64().is_some(), "{key} missing in {r}");
    }
    assert!(grid.exists());
    let probe = |encoder: &Path| {
        ok(&[
            "probe",
            "--encoder",
            s(encoder),
            "--dataset",
            "easy-vqa",
            "--resolution",
            "32",
            "--test-limit",
            "50",
            "--features",
            "pretrained",
        ])
    };
    // the trained encoder loads like any encoder directory, and so does the encoder of a
    // tokenizer checkpoint (after stage 2: the trained one)
    probe(enc);
    probe(&run2.join("model"));
}

fn plot_both_runs(tmp: &Path, run1: &Path, run2: &Path) {
    let curves = tmp.join("curves.png");
    ok(&[
        "plot",
        "--run",
        s(run1),
        "--run",
        s(run2),
        "--keys",
        "loss,l2,distill",
        "-o",
        s(&curves),
    ]);
    assert!(std::fs::metadata(&curves).unwrap().len() > 1000);
    fails_with(
        &["plot", "--run", s(run1), "--keys", "nope", "-o", s(&curves)],
        "nope",
    );
}

/// The sweep overrides change a fresh model's quantizer, and only a fresh one's.
fn quantizer_overrides_need_a_fresh_model(tmp: &Path, run1: &Path) {
    let p = |name: &str| tmp.join(name);
    let run3 = p("run3");
    ok(&[
        "train-tokenizer",
        "--config",
        "configs/tiny.toml",
        "--train",
        s(&p("s1.toml")),
        "--limit",
        "16",
        "--run",
        s(&run3),
        "--codebook-dim",
        "12",
        "--codebook-size",
        "40",
        "--quantizer",
        "vq",
    ]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run3.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["quantizer"]["dim"], 12);
    assert_eq!(cfg["quantizer"]["codebook_size"], 40);
    assert_eq!(cfg["quantizer"]["kind"], "vq");
    fails_with(
        &[
            "train-tokenizer",
            "--init",
            s(&run1.join("model")),
            "--train",
            s(&p("s2.toml")),
            "--run",
            s(&p("run4")),
            "--codebook-dim",
            "8",
        ],
        "fresh model",
    );
    fails_with(
        &[
            "train-tokenizer",
            "--train",
            s(&p("s1.toml")),
            "--run",
            s(run1),
        ],
        "--config",
    );
}

#[test]
fn the_scaling_tokenizer_reconstructs_held_out_scenes() {
    // the committed tokenizer of the scaling sweep on 32 of the held-out procedural scenes
    let out = ok(&[
        "eval-tokenizer",
        "--model",
        "models/tokenizer-easyvqa-scenes",
        "--dataset",
        "scenes",
        "--limit",
        "32",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("eval JSON");
    assert_eq!(v["dataset"], "procedural scenes");
    assert_eq!(v["report"]["images"], 32);
    // 17.5 dB on all 1,000; a plain white image scores ~13 dB on them
    let psnr = v["report"]["psnr"].as_f64().unwrap_or(f64::NAN);
    assert!(psnr > 15.0, "PSNR {psnr}");
}
