//! `vqrae scale --smoke`: the whole sweep pipeline (codes cached once, a family of sizes, the
//! fits, the held-out prediction, the report) on the installed easy-VQA data and the procedural
//! scenes, in seconds.

mod common;

use common::{fails_with, ok, repo, s};

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn smoke_sweep_writes_fits_plots_and_a_report_and_reruns_from_its_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("sweep");
    let args = [
        "scale",
        "--config",
        "configs/scaling/easyvqa-scenes.toml",
        "--smoke",
        "--out",
        s(&out),
    ];
    ok(&args);
    let report: serde_json::Value =
        serde_json::from_str(&read(&out.join("report.json"))).expect("report.json");
    for fit in ["fit_n", "fit_c"] {
        for k in ["a", "alpha", "l_inf", "r2"] {
            let v = report[fit][k].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "{fit}.{k} = {v}");
        }
    }
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "the smoke family");
    for r in runs {
        let curve = r["curve"].as_array().expect("curve");
        assert!(curve.len() >= 2, "a validation curve per run");
        // the loss is measured on held-out images and must have moved from its start
        let first = curve[0]["val_loss"].as_f64().unwrap_or(f64::NAN);
        let last = r["val_loss"].as_f64().unwrap_or(f64::NAN);
        assert!(last < first, "{}: {first} -> {last}", r["name"]);
        assert!(r["quality"]["both"].as_f64().is_some(), "referee score");
        let scenes = &r["scenes"];
        assert_eq!(scenes["images"], 4, "4 scene prompts, 1 image each");
        for skill in ["count", "color", "position", "all"] {
            let v = scenes[skill].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&v), "scene {skill} rate {v}");
        }
    }
    assert_eq!(report["scene_prompts"], 4);
    // the tokenizer the runs learned is recorded by content beside its path
    let tokenizer = repo().join(report["tokenizer"].as_str().expect("a tokenizer path"));
    let hash = vqrae_data::fs::sha256_model(&tokenizer).expect("hashing the tokenizer");
    assert_eq!(report["tokenizer_sha256"], hash.as_str());
    assert!(runs.iter().all(|r| r["tokenizer_sha256"] == hash.as_str()));
    assert!(report["scene_ceiling"]["all"].as_f64().is_some());
    let p = &report["prediction"];
    assert!(p["from_n"].as_f64().is_some_and(f64::is_finite));
    assert_eq!(p["measured"], report["held_out"]["val_loss"]);

    let csv = read(&out.join("runs.csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("group,name,"));
    assert!(lines[0].contains("scene_all"));
    assert_eq!(lines.len(), 1 + 3 + 1, "header, family, held-out size");
    assert!(read(&out.join("report.md")).contains("L(N) ="));
    for png in [
        "loss-vs-n.png",
        "loss-vs-c.png",
        "curves.png",
        "quality-vs-n.png",
    ] {
        let bytes = std::fs::read(out.join(png)).expect(png);
        assert_eq!(&bytes[..4], b"\x89PNG", "{png}");
    }

    // a rerun reuses every finished run and reports the same figures
    ok(&args);
    let again: serde_json::Value =
        serde_json::from_str(&read(&out.join("report.json"))).expect("report.json");
    assert_eq!(again["runs"], report["runs"]);
    assert_eq!(again["fit_n"], report["fit_n"]);
}

#[test]
fn bad_sweep_configs_fail_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = read(&repo().join("configs/scaling/easyvqa-scenes.toml"));
    let case = |name: &str, from: &str, to: &str, needle: &str| {
        assert!(base.contains(from), "the default config has {from:?}");
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, base.replacen(from, to, 1)).expect("writing config");
        let out = dir.path().join(name);
        fails_with(
            &["scale", "--config", s(&path), "--smoke", "--out", s(&out)],
            needle,
        );
    };
    case(
        "zero",
        "budget_tokens = 20_000",
        "budget_tokens = 0",
        "zero steps",
    );
    case(
        "heads",
        "num_attention_heads = 3",
        "num_attention_heads = 5",
        "size d48-l3",
    );
    case(
        "data",
        "tokenizer = \"models/tokenizer-easyvqa-scenes\"",
        "tokenizer = \"models/no-such-tokenizer\"",
        "no-such-tokenizer",
    );
    case("scenes", "scenes = 4000", "scenes = 0", "data.scenes = 0");
}
