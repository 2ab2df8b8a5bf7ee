//! The crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum UnderstandError {
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// A question, prompt or batch that does not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Lm(#[from] vqrae_lm::LmError),
}

impl From<candle_core::Error> for UnderstandError {
    fn from(source: candle_core::Error) -> Self {
        Self::Candle {
            context: "tensor op".into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, UnderstandError>;
