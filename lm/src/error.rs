//! The crate's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A file helper of `vqrae_data::fs` failed (atomic write); names the path.
    #[error(transparent)]
    Data(#[from] vqrae_data::DataError),
    /// The text tokenizer failed (loading, training, encoding).
    #[error("text tokenizer: {0}")]
    Tokenizer(String),
    /// A configuration or argument is out of range (sizes, sampling parameters, ids).
    #[error("invalid config: {0}")]
    Config(String),
    /// A GGUF file is not one this crate can load, or is malformed, truncated or inconsistent
    /// (the message names the tensor or metadata key where there is one).
    #[error("GGUF {path}: {msg}")]
    Gguf { path: PathBuf, msg: String },
    /// An adapter file (`lora::Adapters`) is unreadable, malformed, or for another base.
    #[error("adapters {path}: {msg}")]
    Adapters { path: PathBuf, msg: String },
    /// A chat template failed to compile or render, or a conversation cannot be encoded with it.
    #[error("chat template: {0}")]
    Chat(String),
}

impl LmError {
    /// Wraps a candle error with what was being done.
    pub fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Candle {
            context: context.into(),
            source,
        }
    }
}

impl From<candle_core::Error> for LmError {
    fn from(source: candle_core::Error) -> Self {
        Self::candle("tensor op", source)
    }
}

pub type Result<T> = std::result::Result<T, LmError>;
