//! `vqrae chat` end to end: on a tiny chat model written here as a GGUF (tokenizer and chat
//! template in its metadata; the LM's chat tests use the same file, by path), and on the real
//! SmolLM2-135M-Instruct (`scripts/setup-smollm2.sh`, or `$VQRAE_SMOLLM2_GGUF`; the test fails,
//! saying so, when it is absent).

mod common;
#[path = "../lm/tests/tiny_chat/mod.rs"]
mod tiny_chat;

use std::path::{Path, PathBuf};

use common::{fails_with, ok, s, vqrae};

fn tiny_gguf(dir: &Path, quantized: bool) -> PathBuf {
    let cfg = tiny_chat::config(64);
    let path = dir.join(if quantized {
        "tiny-q.gguf"
    } else {
        "tiny.gguf"
    });
    let weights = tiny_chat::weights(&cfg, 7).expect("tiny weights");
    tiny_chat::write(&path, &cfg, &weights, quantized).expect("writing the tiny GGUF");
    path
}

#[test]
fn chat_replies_with_a_tiny_gguf_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tiny_gguf(tmp.path(), false);
    let args = |extra: &[&'static str]| {
        let mut v = vec!["chat", "--gguf", s(&gguf)];
        v.extend_from_slice(extra);
        v
    };
    // greedy by default: the same reply twice; the reply ends with a newline
    let first = ok(&args(&["--max-new-tokens", "8", "hello"]));
    assert!(first.ends_with('\n') && first.len() > 1, "{first:?}");
    assert_eq!(ok(&args(&["--max-new-tokens", "8", "hello"])), first);
    // the flags of the shared sampling group and --system are taken
    let sampled = args(&[
        "--temperature",
        "0.8",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--seed",
        "5",
        "--system",
        "be brief",
        "--max-new-tokens",
        "8",
        "hello",
    ]);
    assert_eq!(ok(&sampled), ok(&sampled));
    let q = tiny_gguf(tmp.path(), true);
    ok(&[
        "chat",
        "--quantized",
        "--gguf",
        s(&q),
        "--max-new-tokens",
        "4",
        "hi",
    ]);

    // past the context of 64: both numbers named, no panic
    fails_with(
        &args(&["--max-new-tokens", "60", "hello"]),
        "max_new_tokens is 60",
    );
    fails_with(
        &args(&["--max-new-tokens", "60", "hello"]),
        "context of 64 tokens",
    );
    fails_with(&args(&["--temperature=-1", "hello"]), "temperature");
    fails_with(&["chat", "--gguf", "Cargo.toml", "hi"], "not a GGUF file");
    fails_with(&["chat", "--gguf", "no/such.gguf", "hi"], "no/such.gguf");
    let out = vqrae(&["chat", "hi"]);
    assert!(!out.status.success());
}

#[test]
fn chat_knows_the_capital_of_france_with_smollm2() {
    let gguf = match std::env::var_os("VQRAE_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => common::repo().join(".data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        gguf.is_file(),
        "{} is missing: run scripts/setup-smollm2.sh (or set VQRAE_SMOLLM2_GGUF)",
        gguf.display()
    );
    let out = ok(&["chat", "--gguf", s(&gguf), "What is the capital of France?"]);
    assert_eq!(out, "The capital of France is Paris.\n");
}
