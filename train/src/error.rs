//! The crate's error type.

use std::path::PathBuf;

/// Errors of the training machinery. Variants about files name the file; variants about
/// tensors name the tensor.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
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
    /// A configuration value is out of range (learning rate, betas, clipping norm, ...).
    #[error("invalid config: {0}")]
    Config(String),
    /// The same variable (by name or by identity) is in two parameter groups.
    #[error("variable {name} appears twice in the optimizer's parameter groups")]
    DuplicateVar { name: String },
    /// The global gradient norm is NaN or infinite: training stops rather than corrupt weights.
    #[error("gradient norm is not finite ({norm}); stopping instead of applying the update")]
    NonFiniteGradNorm { norm: f64 },
    /// A saved state does not fit the model or optimizer it is loaded into.
    #[error("state {what}: tensor {name}: {msg}")]
    StateMismatch {
        what: String,
        name: String,
        msg: String,
    },
    /// A checkpoint directory is unusable.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// A checkpoint's tensor holds NaN or infinity (its header was intact, so it loaded):
    /// resuming from it would stop at the first step with a non-finite gradient.
    #[error("checkpoint {path}: tensor {name} holds NaN or infinite values")]
    NonFinite { path: PathBuf, name: String },
    /// Another trainer holds the run directory's lock ([`crate::lock::RunLock`]).
    #[error(
        "run directory {dir} is in use by another trainer ({holder}); wait for it to finish or \
         stop it, or train in another directory"
    )]
    RunLocked { dir: PathBuf, holder: String },
    /// A file helper of `vqrae_data::fs` failed (atomic write, TOML read); names the path.
    #[error(transparent)]
    Data(#[from] vqrae_data::DataError),
    /// A metrics log line or record is malformed.
    #[error("metrics log {path}: {msg}")]
    Metrics { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// Wraps a candle error with a sentence of context.
    pub fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        TrainError::Candle {
            context: context.into(),
            source: plain(source),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }

    pub(crate) fn json(path: impl Into<PathBuf>) -> impl FnOnce(serde_json::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Json { path, source }
    }
}

/// Adds context to a candle result, in the style of `anyhow::Context`.
pub(crate) trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| TrainError::candle(context(), source))
    }
}

/// candle attaches a captured backtrace to some errors; a user needs the message.
fn plain(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => plain(*inner),
        other => other,
    }
}
