//! End-to-end test of `train-referee` and `eval-referee` on a tiny config and a few real
//! easy-VQA images (run `vqrae data setup` or `scripts/setup-data.sh` first).

mod common;

use std::path::Path;

use common::{ok, s, vqrae};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("reading JSON")).expect("JSON")
}

#[test]
fn train_and_evaluate_a_tiny_referee_on_real_images() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    std::fs::write(
        p("referee.toml"),
        "[model]\nimage_size = 32\nchannels = [4, 8, 8, 16]\npool = \"mean_max\"\n\
         [train]\nsteps = 12\nbatch_size = 16\nlr = 3e-3\nseed = 1\nnoise_std = 0.1\n\
         flips = true\nmax_shift = 2\n",
    )
    .unwrap();
    let referee = p("referee");
    let out = ok(&[
        "train-referee",
        "--config",
        s(&p("referee.toml")),
        "-o",
        s(&referee),
        "--json",
        s(&p("train.json")),
        "--limit",
        "64",
        "--test-limit",
        "32",
        "--min-accuracy",
        "0",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report, json(&p("train.json")));
    assert_eq!(report["train_images"], 64);
    assert_eq!(report["test"]["images"], 32);
    assert!(report["train_seconds"].as_f64().unwrap() > 0.0);
    for key in ["color", "shape", "both"] {
        let acc = report["test"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{key} = {acc}");
    }
    // a subset of the test split never qualifies a referee to judge
    assert_eq!(report["qualified"], false);
    assert!(referee.join("model.safetensors").exists());
    let q = json(&referee.join("qualification.json"));
    assert_eq!(q["report"], report["test"]);
    let hash = |dir: &Path| vqrae_data::fs::sha256_model(dir).expect("a model hash");
    assert_eq!(report["out_sha256"], hash(&referee).as_str());

    // real images and the reconstructions of an (untrained) tokenizer
    let tok = p("tok");
    ok(&["init", "--config", "configs/tiny.toml", "-o", s(&tok)]);
    let errors = p("errors.png");
    let out = ok(&[
        "eval-referee",
        "--referee",
        s(&referee),
        "--tokenizer",
        s(&tok),
        "--limit",
        "24",
        "--json",
        s(&p("eval.json")),
        "--errors",
        s(&errors),
    ]);
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval, json(&p("eval.json")));
    assert_eq!(eval["referee_sha256"], hash(&referee).as_str());
    assert_eq!(eval["tokenizer_sha256"], hash(&tok).as_str());
    assert_eq!(eval["split"], "test");
    assert_eq!(eval["images"], 24);
    assert_eq!(eval["qualified"], false);
    for part in ["real", "reconstructed"] {
        assert_eq!(eval[part]["images"], 24, "{part}");
        assert_eq!(
            eval[part]["by_shape"].as_array().unwrap().len(),
            3,
            "{part}"
        );
        let per_colour: u64 = eval[part]["by_color"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["images"].as_u64().unwrap())
            .sum();
        assert_eq!(per_colour, 24, "{part}");
    }
    let wrong = eval["real_errors"].as_array().unwrap().len();
    let both = eval["real"]["both"].as_f64().unwrap();
    assert_eq!(wrong, (24.0 * (1.0 - both)).round() as usize);
    assert_eq!(errors.exists(), wrong > 0);

    // below the required accuracy: saved, but the command fails and says why
    let out = vqrae(&[
        "train-referee",
        "--config",
        s(&p("referee.toml")),
        "-o",
        s(&p("referee2")),
        "--limit",
        "32",
        "--test-limit",
        "16",
        "--min-accuracy",
        "1.01",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("may not judge"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(p("referee2").join("model.safetensors").exists());

    let help = ok(&["--help"]);
    assert!(help.contains("train-referee") && help.contains("eval-referee"));
}
