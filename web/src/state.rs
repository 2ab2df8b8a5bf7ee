//! What every handler shares: the config, the model's facts, the model worker, the metrics and
//! the image store.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vqrae_unified::model::{UnifiedModel, UNIFIED_FILE};

use crate::batcher::{Engine, Worker};
use crate::config::ServeConfig;
use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use crate::store::ImageStore;

/// Facts about the served model that handlers need without touching it.
#[derive(Clone, Debug)]
pub(crate) struct ModelInfo {
    pub(crate) id: String,
    /// Unix seconds: when the model directory was written.
    pub(crate) created: u64,
    /// Square image side, pixels (the only `size` generation takes).
    pub(crate) image_size: usize,
    /// Token grid (rows, cols) of an image.
    pub(crate) grid: (usize, usize),
    /// The LM's context, tokens.
    pub(crate) context: usize,
    pub(crate) codebook_size: usize,
}

impl ModelInfo {
    /// `"64x64"`.
    pub(crate) fn size(&self) -> String {
        format!("{0}x{0}", self.image_size)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub(crate) cfg: Arc<ServeConfig>,
    pub(crate) model: Arc<ModelInfo>,
    pub(crate) engine: Engine,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Arc<ImageStore>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AppState {
    /// Validates `cfg` and starts the model worker, which takes `model`.
    pub(crate) fn new(cfg: ServeConfig, model: UnifiedModel) -> Result<(Self, Worker), ServeError> {
        cfg.validate()?;
        let created = std::fs::metadata(cfg.model.join(UNIFIED_FILE))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or_else(unix_now);
        let tcfg = model.tokenizer.config();
        let info = ModelInfo {
            id: cfg.resolved_model_id(),
            created,
            image_size: tcfg.image_size,
            grid: model.cfg.grid,
            context: model.lm.config().max_position_embeddings,
            codebook_size: model.cfg.vocab.codes,
        };
        let metrics = Arc::new(Metrics::new(cfg.batch.queue_capacity));
        let (engine, worker) = Engine::start(model, &cfg.batch, metrics.clone())?;
        let store = Arc::new(ImageStore::new(&cfg.images));
        Ok((
            Self {
                cfg: Arc::new(cfg),
                model: Arc::new(info),
                engine,
                metrics,
                store,
            },
            worker,
        ))
    }

    /// A request's `model`, if given, must be the served one.
    /// Runs `f` on the model worker, in the queue with every other model call: the way extra
    /// routes ([`crate::Server::bind_with`]) reach the model.
    pub async fn call_model<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&UnifiedModel) -> Result<R, ApiError> + Send + 'static,
    {
        self.engine.call(f).await
    }

    pub(crate) fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested.map(str::trim) {
            None | Some("") => Ok(()),
            Some(id) if id == self.model.id => Ok(()),
            Some(id) => Err(ApiError::model_not_found(id, &self.model.id)),
        }
    }
}
