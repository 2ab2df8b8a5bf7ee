//! The one error type of this crate. Every variant carries enough context (a path, a line
//! number, the offending value) to act on the message without a debugger.

use std::path::PathBuf;

/// Errors from reading, parsing or writing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data set is not installed where it was looked for.
    #[error("{what} not found at {path} (run `vqrae data setup` or scripts/setup-data.sh, or set VQRAE_DATA to the data root)")]
    MissingDataset { what: &'static str, path: PathBuf },

    /// Bytes that are not an image of a supported format.
    #[error("{source_name}: not an image in a supported format (png, jpeg, gif, bmp, webp)")]
    NotAnImage { source_name: String },

    /// An image that is too large to decode safely (decompression bombs).
    #[error("{source_name}: image is {width}x{height}, more than the {max} pixels allowed")]
    ImageTooLarge {
        source_name: String,
        width: u32,
        height: u32,
        max: u64,
    },

    /// An image refused before (or while) decoding for its shape or its decoding cost: a side
    /// longer than allowed, too elongated, a decoded buffer larger than allowed, or a decoder
    /// asked to allocate more than its header announced (a GIF frame beyond its screen).
    #[error("{source_name}: image is {width}x{height}: {why}")]
    ImageRefused {
        source_name: String,
        width: u32,
        height: u32,
        why: String,
    },

    /// An image that could not be decoded or encoded (corrupt, truncated, unsupported variant).
    #[error("{source_name}: {source}")]
    Image {
        source_name: String,
        #[source]
        source: image::ImageError,
    },

    /// JSON that does not parse or does not have the expected shape.
    #[error("{path}:{line}: {message}")]
    Json {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        message: String,
    },

    /// A TOML file that does not parse or does not have the expected shape. Boxed: the parse
    /// error is large, and this type is carried inside every other crate's error.
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },

    /// An IDX (MNIST-style) file that is malformed.
    #[error("{source_name}: bad IDX data: {message}")]
    Idx {
        source_name: String,
        message: String,
    },

    /// A data set whose files disagree with each other or with the documented layout.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },

    /// A value (split name, colour name, configuration field) outside what is accepted.
    #[error("invalid {what} {value:?}: expected {expected}")]
    Parse {
        what: &'static str,
        value: String,
        expected: String,
    },

    /// An index past the end of a data set.
    #[error("index {index} out of range for {what} of length {len}")]
    OutOfRange {
        what: &'static str,
        index: usize,
        len: usize,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_context() {
        let e = DataError::Json {
            path: "a/b.jsonl".into(),
            line: 7,
            message: "unknown field `foo`".into(),
        };
        assert_eq!(e.to_string(), "a/b.jsonl:7: unknown field `foo`");
        let e = DataError::MissingDataset {
            what: "easy-VQA",
            path: "/x/easy-vqa".into(),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("/x/easy-vqa") && msg.contains("scripts/setup-data.sh"),
            "{msg}"
        );
        let e = DataError::io("/nope", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("/nope: "), "{e}");
    }
}
