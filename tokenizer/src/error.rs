use std::path::PathBuf;

/// Errors of the tokenizer crate. Every variant that concerns a file names it, so a user sees
/// which checkpoint or image was bad, not only what went wrong inside candle.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] vqrae_data::error::DataError),
    #[error(transparent)]
    Train(#[from] vqrae_train::TrainError),
    /// An error of candle without more context (shape errors deep in a forward pass).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// Adds a sentence of context to a candle error, in the style of `anyhow::Context`.
pub trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| TokenizerError::Candle {
            context: context(),
            source: plain(source),
        })
    }
}

/// candle attaches a captured backtrace to some errors (shape mismatches); users need the
/// message, not the stack of the loader.
pub fn plain(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => plain(*inner),
        candle_core::Error::Context { context, inner } => candle_core::Error::Context {
            context,
            inner: Box::new(plain(*inner)),
        },
        e => e,
    }
}
