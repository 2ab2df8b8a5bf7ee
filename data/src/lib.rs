//! Data for vqrae-rs: everything that turns files on disk into images, tensors, captions and
//! question/answer pairs, with no network access at run time.
//!
//! - [`easy_vqa`]: the easy-VQA data set (64x64 shapes, questions, derived captions).
//! - [`fashion_mnist`]: Fashion-MNIST from its IDX files (28x28 grey, 10 classes).
//! - [`scenes`]: a seeded procedural scene generator with exact ground truth, captions with
//!   counts/colours/relations, and per-skill questions.
//! - [`labelled`]: the data sets as images with label columns (pretraining, probes, tokenizer
//!   training and evaluation).
//! - [`captioned`]: real captioned images, [`emoji`] (Noto emoji and their names) and
//!   [`tuxpaint`] (Tux Paint's stamps and their descriptions), with a fixed held-out split;
//!   installed by `scripts/setup-captioned.sh`.
//! - [`folder`] and [`jsonl`]: data a user brings (an image folder; caption / QA records).
//! - [`image_io`]: safe image loading (size, shape and allocation limits, checked before
//!   decoding and enforced by the decoder), atomic saving, resizing in output-sized memory,
//!   grids; [`tensor`]: images <-> normalised candle tensors.
//! - [`fs`]: atomic file writes and directory copies, TOML reading, for every crate.
//! - [`batch`]: seeded shuffles and an epoch sampler that can resume mid-epoch.
//!
//! - [`setup`] and [`overview`]: installing the data sets and summarising what is installed.
//!
//! Data sets are installed by `scripts/setup-data.sh` into a data root ([`default_root`]).

pub mod batch;
pub mod captioned;
pub mod easy_vqa;
pub mod emoji;
pub mod error;
pub mod fashion_mnist;
pub mod folder;
pub mod fs;
pub mod hostile_images;
pub mod image_io;
pub mod jsonl;
pub mod labelled;
pub mod memory;
pub mod overview;
pub(crate) mod resample;
pub mod scenes;
pub mod setup;
pub mod tensor;
pub mod tuxpaint;

pub use error::{DataError, Result};

use std::path::PathBuf;

/// Name of the environment variable that overrides the data root.
pub(crate) const DATA_ENV: &str = "VQRAE_DATA";

/// The data root: `$VQRAE_DATA` if set (and not empty), else `./.data`, which is where
/// `scripts/setup-data.sh` installs when run from the repository.
pub fn default_root() -> PathBuf {
    match std::env::var_os(DATA_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(".data"),
    }
}

/// Test helper: the data root for tests that use the real installed data, failing with a
/// message that says how to install it when it is absent.
#[cfg(test)]
pub(crate) fn test_root() -> PathBuf {
    let root = match std::env::var_os(DATA_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data"),
    };
    assert!(
        root.join("easy-vqa/answers.txt").is_file()
            && root
                .join("fashion-mnist/train-labels-idx1-ubyte.gz")
                .is_file(),
        "test data not found under {}: run scripts/setup-data.sh first (or set {DATA_ENV})",
        root.display()
    );
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_follows_the_environment() {
        // Read-only: tests run in parallel, so the variable is not changed here.
        let want = match std::env::var_os(DATA_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(".data"),
        };
        assert_eq!(default_root(), want);
    }
}
