//! `bench init` on the repository's default model, then every row once: the bench directory's
//! files and each row's JSON line (the fields `scripts/perf/table.py` reads).

use std::path::Path;

use candle_core::Device;
use clap::Parser;
use serde_json::Value;

use super::{init, row_line, BenchCommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn command(args: &[&str]) -> BenchCommand {
    let argv = std::iter::once("bench").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap().command
}

#[test]
fn init_and_every_row_once() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/vqrae-easyvqa");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let out_s = out.to_str().unwrap();
    let BenchCommand::Init(a) = command(&[
        "init",
        "--preset",
        "default",
        "--out",
        out_s,
        "--model",
        model.to_str().unwrap(),
        "--lora-base",
        "tiny",
    ]) else {
        panic!("not init")
    };
    init(a, &Device::Cpu).unwrap();
    for f in [
        "bench.json",
        "inputs.safetensors",
        "expected.safetensors",
        "lora-base/config.json",
        "lora-base/model.safetensors",
        "lora-base/adapters-init.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // the LoRA check: two steps that lower the loss, with nonzero gradients
    let expected =
        candle_core::safetensors::load(out.join("expected.safetensors"), &Device::Cpu).unwrap();
    let losses = expected["lora_losses"].to_vec1::<f32>().unwrap();
    let norms = expected["lora_grad_norms"].to_vec1::<f32>().unwrap();
    assert!(
        losses.iter().all(|l| l.is_finite()) && losses[2] < losses[1] && losses[1] < losses[0],
        "{losses:?}"
    );
    assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0), "{norms:?}");
    let info: Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(
        (&info["preset"], &info["prompt_len"]),
        (&"default".into(), &18.into())
    );
    let image_tokens = info["image_tokens"].as_u64().unwrap();

    let rows = [
        ("tok-encode", "images/s"),
        ("tok-decode", "images/s"),
        ("lm-prefill", "tokens/s"),
        ("lm-decode", "tokens/s"),
        ("lm-step-profile", "tokens/s"),
        ("train-tok", "samples/s"),
        ("train-lm", "samples/s"),
        ("train-lora", "samples/s"),
    ];
    for (row, unit) in rows {
        let BenchCommand::Run(a) = command(&[
            "run", "--dir", out_s, "--row", row, "--batch", "2", "--iters", "1",
        ]) else {
            panic!("not run")
        };
        let line = row_line(a, &Device::Cpu).unwrap();
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.retain(|k| *k != "step_seconds");
        keys.sort_unstable();
        let fields = [
            "batch",
            "device",
            "dtype",
            "impl",
            "iters",
            "peak_rss_mib",
            "per_sec",
            "row",
            "seconds_per_iter",
            "threads",
            "unit",
        ];
        assert_eq!(keys, fields, "{line}");
        assert_eq!(line["row"], row.replace('-', "_"), "{line}");
        assert_eq!(
            (&line["impl"], &line["unit"]),
            (&"vqrae-rs".into(), &unit.into())
        );
        assert_eq!((&line["batch"], &line["iters"]), (&2.into(), &1.into()));
        assert_eq!(
            (&line["device"], &line["dtype"]),
            (&"cpu".into(), &"f32".into())
        );
        assert!(line["per_sec"].as_f64().unwrap() > 0.0, "{line}");
        assert!(line["seconds_per_iter"].as_f64().unwrap() > 0.0, "{line}");
        let steps = line
            .get("step_seconds")
            .and_then(Value::as_array)
            .map(Vec::len);
        let expected_steps = (row == "lm-step-profile").then_some(image_tokens as usize);
        assert_eq!(steps, expected_steps, "{line}");
    }

    let BenchCommand::Run(a) =
        command(&["run", "--dir", out_s, "--row", "tok-encode", "--batch", "0"])
    else {
        panic!("not run")
    };
    let err = row_line(a, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("--batch"), "{err:#}");
}
