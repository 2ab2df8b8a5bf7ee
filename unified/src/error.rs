//! The crate's error type.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnifiedError {
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
    /// A configuration value or argument is out of range.
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] vqrae_data::DataError),
    /// Boxed: the tokenizer's error is large and would bloat every `Result` of this crate.
    #[error(transparent)]
    Tokenizer(Box<vqrae_tokenizer::TokenizerError>),
    #[error(transparent)]
    Lm(Box<vqrae_lm::LmError>),
    #[error(transparent)]
    Understand(Box<vqrae_understand::error::UnderstandError>),
    /// Boxed, as the tokenizer's: the trainer's error is large.
    #[error(transparent)]
    Train(Box<vqrae_train::TrainError>),
    #[error(transparent)]
    Generate(Box<vqrae_generate::GenerateError>),
}

impl UnifiedError {
    /// The `map_err` of an I/O call on `path`.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Candle {
            context: context.into(),
            source,
        }
    }
}

impl From<vqrae_tokenizer::TokenizerError> for UnifiedError {
    fn from(e: vqrae_tokenizer::TokenizerError) -> Self {
        Self::Tokenizer(Box::new(e))
    }
}

impl From<vqrae_lm::LmError> for UnifiedError {
    fn from(e: vqrae_lm::LmError) -> Self {
        Self::Lm(Box::new(e))
    }
}

impl From<vqrae_understand::error::UnderstandError> for UnifiedError {
    fn from(e: vqrae_understand::error::UnderstandError) -> Self {
        Self::Understand(Box::new(e))
    }
}

impl From<vqrae_train::TrainError> for UnifiedError {
    fn from(e: vqrae_train::TrainError) -> Self {
        Self::Train(Box::new(e))
    }
}

impl From<vqrae_generate::GenerateError> for UnifiedError {
    fn from(e: vqrae_generate::GenerateError) -> Self {
        Self::Generate(Box::new(e))
    }
}

impl From<candle_core::Error> for UnifiedError {
    fn from(source: candle_core::Error) -> Self {
        Self::candle("tensor op", source)
    }
}

pub type Result<T> = std::result::Result<T, UnifiedError>;
