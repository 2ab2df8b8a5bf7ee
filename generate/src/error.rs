//! The crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// A configuration value or argument is out of range.
    #[error("invalid config: {0}")]
    Config(String),
    /// Boxed: the tokenizer's error is large and would bloat every `Result` of this crate.
    #[error(transparent)]
    Tokenizer(Box<vqrae_tokenizer::TokenizerError>),
    #[error(transparent)]
    Lm(Box<vqrae_lm::LmError>),
}

impl GenerateError {
    pub fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Candle {
            context: context.into(),
            source,
        }
    }
}

impl From<vqrae_tokenizer::TokenizerError> for GenerateError {
    fn from(e: vqrae_tokenizer::TokenizerError) -> Self {
        Self::Tokenizer(Box::new(e))
    }
}

impl From<vqrae_lm::LmError> for GenerateError {
    fn from(e: vqrae_lm::LmError) -> Self {
        Self::Lm(Box::new(e))
    }
}

impl From<candle_core::Error> for GenerateError {
    fn from(source: candle_core::Error) -> Self {
        Self::candle("tensor op", source)
    }
}

pub type Result<T> = std::result::Result<T, GenerateError>;
