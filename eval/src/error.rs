//! The crate's error type.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
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
    /// A data set (or the subset asked for) holds no image whose colour and shape are known.
    #[error("{0} has no labelled images")]
    NoLabelledImages(String),
    /// A question refers to an image its data set does not hold.
    #[error("question about unknown image {0}")]
    UnknownImage(usize),
    #[error(transparent)]
    Data(#[from] vqrae_data::DataError),
    /// Boxed: the tokenizer's error is large and would bloat every `Result` of this crate.
    #[error(transparent)]
    Tokenizer(Box<vqrae_tokenizer::TokenizerError>),
    #[error(transparent)]
    Lm(Box<vqrae_lm::LmError>),
    #[error(transparent)]
    Understand(Box<vqrae_understand::error::UnderstandError>),
    #[error(transparent)]
    Train(#[from] vqrae_train::TrainError),
    #[error(transparent)]
    Generate(Box<vqrae_generate::GenerateError>),
    #[error(transparent)]
    Unified(Box<vqrae_unified::UnifiedError>),
}

impl EvalError {
    /// The `map_err` of an I/O call on `path`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Candle {
            context: context.into(),
            source,
        }
    }
}

impl From<vqrae_tokenizer::TokenizerError> for EvalError {
    fn from(e: vqrae_tokenizer::TokenizerError) -> Self {
        Self::Tokenizer(Box::new(e))
    }
}

impl From<vqrae_lm::LmError> for EvalError {
    fn from(e: vqrae_lm::LmError) -> Self {
        Self::Lm(Box::new(e))
    }
}

impl From<vqrae_understand::error::UnderstandError> for EvalError {
    fn from(e: vqrae_understand::error::UnderstandError) -> Self {
        Self::Understand(Box::new(e))
    }
}

impl From<vqrae_generate::GenerateError> for EvalError {
    fn from(e: vqrae_generate::GenerateError) -> Self {
        Self::Generate(Box::new(e))
    }
}

impl From<vqrae_unified::UnifiedError> for EvalError {
    fn from(e: vqrae_unified::UnifiedError) -> Self {
        Self::Unified(Box::new(e))
    }
}

impl From<candle_core::Error> for EvalError {
    fn from(source: candle_core::Error) -> Self {
        Self::candle("tensor op", source)
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;
