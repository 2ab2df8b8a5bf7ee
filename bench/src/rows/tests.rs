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

/// gguf-decode on a tiny quantized GGUF written here (the row needs no `bench init`): the
/// fields of every row plus its sizes, and its errors (no file, past the context) as errors.
#[test]
fn gguf_decode_on_a_tiny_file() {
    use candle_core::DType;
    use vqrae_lm::gguf::{write_llama_gguf, GgufWriteOptions};
    use vqrae_lm::Llama;

    // widths of whole Q4_1 / Q8_0 blocks (32), a context of 32 positions
    let cfg = vqrae_test_support::llava::tiny_llava_lm_config(32);
    let map = vqrae_train::init::SeededVarMap::new(3);
    let lm = Llama::new(&cfg, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let opts = GgufWriteOptions::like_smollm2();
    write_llama_gguf(&gguf, &cfg, &lm.tensors(), &opts).unwrap();
    let (dir_s, gguf_s) = (dir.path().to_str().unwrap(), gguf.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--dir",
            dir_s,
            "--row",
            "gguf-decode",
            "--iters",
            "1",
        ];
        args.extend_from_slice(extra);
        let BenchCommand::Run(a) = command(&args) else {
            panic!("not run")
        };
        row_line(a, &Device::Cpu)
    };

    let line = run(&["--gguf", gguf_s, "--batch", "3", "--pp", "5", "--tg", "4"]).unwrap();
    let mut keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    let fields = [
        "batch",
        "device",
        "dtype",
        "gguf",
        "impl",
        "iters",
        "peak_rss_mib",
        "per_sec",
        "pp",
        "row",
        "seconds_per_iter",
        "tg",
        "threads",
        "unit",
    ];
    assert_eq!(keys, fields, "{line}");
    assert_eq!(
        (&line["row"], &line["unit"], &line["dtype"], &line["gguf"]),
        (
            &"gguf_decode".into(),
            &"tokens/s".into(),
            &"q4_1".into(),
            &"tiny.gguf".into()
        )
    );
    assert_eq!(
        (&line["batch"], &line["pp"], &line["tg"], &line["iters"]),
        (&3.into(), &5.into(), &4.into(), &1.into())
    );
    let (per_sec, secs) = (
        line["per_sec"].as_f64().unwrap(),
        line["seconds_per_iter"].as_f64().unwrap(),
    );
    assert!((per_sec * secs - 12.0).abs() < 1e-6, "{line}");

    // past the context (32), no file, no sizes: errors that say so
    let err = run(&["--gguf", gguf_s, "--pp", "30", "--tg", "4"]).unwrap_err();
    assert!(format!("{err:#}").contains("context"), "{err:#}");
    let missing = dir.path().join("none.gguf");
    let err = run(&["--gguf", missing.to_str().unwrap()]).unwrap_err();
    assert!(format!("{err:#}").contains("no such file"), "{err:#}");
    let err = run(&["--gguf", gguf_s, "--pp", "0"]).unwrap_err();
    assert!(format!("{err:#}").contains("--pp"), "{err:#}");
}
