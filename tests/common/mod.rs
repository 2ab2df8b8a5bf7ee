//! Helpers shared by the end-to-end tests of the `vqrae` binary (each test file compiles this
//! module on its own, so not every file uses every helper).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$VQRAE_DATA` or the repository's `.data` (installed by `scripts/setup-data.sh`).
pub fn data_root() -> PathBuf {
    std::env::var_os("VQRAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".data"))
}

/// Runs the binary from the repository root on the installed data, quietly.
pub fn vqrae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vqrae"))
        .args(args)
        .env("VQRAE_DATA", data_root())
        .env("RUST_LOG", "warn")
        .current_dir(repo())
        .output()
        .expect("running vqrae")
}

/// Runs a command that must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = vqrae(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vqrae {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail with a message (not a panic) containing `needle`.
pub fn fails_with(args: &[&str], needle: &str) {
    let out = vqrae(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vqrae {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "vqrae {args:?} panicked:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "vqrae {args:?}: expected {needle:?} in:\n{stderr}"
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
