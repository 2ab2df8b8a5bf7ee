//! What every handler shares: the config, the model's facts, the model worker, the metrics and
//! the image store.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use axum::response::Response;
use vqrae_unified::card::{ModelCard, OutOfDistribution};
use vqrae_unified::model::UnifiedModel;

use crate::batcher::{Engine, Worker};
use crate::codec::Decoders;
use crate::config::{OodPolicy, ServeConfig};
use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use crate::served::{not_unified, Capabilities, LlavaInfo, ServedModel};
use crate::store::ImageStore;

/// Facts about the served model that handlers need without touching it.
#[derive(Clone, Debug)]
pub(crate) struct ModelInfo {
    pub(crate) id: String,
    /// Unix seconds: when the model directory was written.
    pub(crate) created: u64,
    /// Square image side, pixels, an uploaded image is read at (for a LLaVA model its
    /// encoder's input side).
    pub(crate) image_size: usize,
    /// Square side, pixels, of the images the model draws and tokenizes (the only `size`
    /// generation takes): its VQRAE tokenizer's; `image_size` for a model that does not draw.
    pub(crate) draw_size: usize,
    /// Token grid (rows, cols) of a drawn image; `(0, 0)` for a model that does not draw.
    pub(crate) grid: (usize, usize),
    /// The LM's context, tokens.
    pub(crate) context: usize,
    pub(crate) codebook_size: usize,
    /// Guidance scale when a request does not say: the card's measured one, else
    /// [`vqrae_generate::sample::DEFAULT_GUIDANCE`].
    pub(crate) guidance: f64,
    /// What the model knows; `None`: no card, nothing is checked.
    pub(crate) card: Option<ModelCard>,
    /// Some for a LLaVA model (a pretrained chat LM, which may also draw); `None`: a unified
    /// model.
    pub(crate) llava: Option<LlavaInfo>,
    /// What the model does (routes, page panels and the OpenAPI document follow it).
    pub(crate) capabilities: Capabilities,
}

/// The name any request may give the served model by (a common client habit), besides its id.
pub(crate) const MODEL_ALIAS: &str = "default";

/// The header of a response that carries `warnings` (its value names the kind, the JSON body
/// says more).
pub(crate) const WARNING_HEADER: &str = "x-vqrae-warning";
/// The kind of warning (and the 400's `code`) for input outside the model card.
pub(crate) const OOD_CODE: &str = "out_of_distribution";

/// Marks a response that carries warnings with [`WARNING_HEADER`].
pub(crate) fn mark_warned(resp: &mut Response, warnings: &[String]) {
    if !warnings.is_empty() {
        resp.headers_mut()
            .insert(WARNING_HEADER, HeaderValue::from_static(OOD_CODE));
    }
}

impl ModelInfo {
    fn of(model: &ServedModel, id: String, created: u64) -> Self {
        match model {
            ServedModel::Unified(m) => Self {
                id,
                created,
                image_size: m.tokenizer.config().image_size,
                draw_size: m.tokenizer.config().image_size,
                grid: m.cfg.grid,
                context: m.lm.config().max_position_embeddings,
                codebook_size: m.cfg.vocab.codes,
                guidance: m.default_guidance(),
                card: m.card.clone(),
                llava: None,
                capabilities: model.capabilities(),
            },
            ServedModel::Llava(m) => {
                let read = m.cfg.resolution as usize;
                let tokenizer = model.image_tokenizer().map(|t| t.config());
                let capabilities = model.capabilities();
                Self {
                    id,
                    created,
                    image_size: read,
                    draw_size: tokenizer.map_or(read, |t| t.image_size),
                    grid: model.drawn_grid().unwrap_or((0, 0)),
                    context: m.lm.config().max_position_embeddings,
                    codebook_size: tokenizer.map_or(0, |t| t.quantizer.codebook_size),
                    // no card: the guidance the generation phase recorded
                    guidance: m
                        .cfg
                        .generation
                        .as_ref()
                        .map_or(vqrae_generate::sample::DEFAULT_GUIDANCE, |g| g.guidance),
                    card: None,
                    llava: Some(LlavaInfo::of(m, capabilities)),
                    capabilities,
                }
            }
        }
    }

    /// `"64x64"`: the side the model draws at.
    pub(crate) fn size(&self) -> String {
        format!("{0}x{0}", self.draw_size)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub(crate) cfg: Arc<ServeConfig>,
    pub(crate) model: Arc<ModelInfo>,
    pub(crate) engine: Engine,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Arc<ImageStore>,
    /// Decodes uploaded images, a few at a time.
    pub(crate) decoders: Arc<Decoders>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AppState {
    /// Validates `cfg` and starts the model worker, which takes `model`.
    pub(crate) fn new(cfg: ServeConfig, model: ServedModel) -> Result<(Self, Worker), ServeError> {
        cfg.validate()?;
        let created = std::fs::metadata(cfg.model.join(model.config_file()))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or_else(unix_now);
        let info = ModelInfo::of(&model, cfg.resolved_model_id(), created);
        let metrics = Arc::new(Metrics::new(cfg.batch.queue_capacity));
        let (engine, worker) = Engine::start(model, &cfg.batch, metrics.clone())?;
        let store = Arc::new(ImageStore::new(&cfg.images));
        let decoders = Arc::new(Decoders::new(
            &cfg.limits,
            cfg.batch.retry_after_secs,
            info.image_size,
        ));
        Ok((
            Self {
                cfg: Arc::new(cfg),
                model: Arc::new(info),
                engine,
                metrics,
                store,
                decoders,
            },
            worker,
        ))
    }

    /// Runs `f` on the model worker, in the queue with every other model call: the way extra
    /// routes ([`crate::Server::bind_with`]) reach the model. A LLaVA model answers a 400.
    pub async fn call_model<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&UnifiedModel) -> Result<R, ApiError> + Send + 'static,
    {
        self.engine.call(f).await
    }

    /// [`AppState::call_model`] with the served model as it is, unified or LLaVA.
    pub async fn call_served_model<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&ServedModel) -> Result<R, ApiError> + Send + 'static,
    {
        self.engine
            .submit_served(f)?
            .await
            .map_err(|_| crate::batcher::worker_failed())?
    }

    /// A 400 for a route (`what` it would do) that the served model lacks the capability for
    /// (`capable` false: a LLaVA model trained without generation).
    pub(crate) fn require(&self, capable: bool, what: &str) -> Result<(), ApiError> {
        if capable {
            Ok(())
        } else {
            Err(not_unified(&format!("`{}`", self.model.id), what))
        }
    }

    /// A request's `model`, if given, must be the served one or [`MODEL_ALIAS`].
    pub(crate) fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested.map(str::trim) {
            None | Some("") => Ok(()),
            Some(id) if id == self.model.id || id == MODEL_ALIAS => Ok(()),
            Some(id) => Err(ApiError::model_not_found(id, &self.model.id)),
        }
    }

    /// A text-to-image prompt against the model card: `Ok(None)` when the model knows its words
    /// (or has no card), `Ok(Some(warning))` when it does not and the server answers anyway
    /// (`ood = "warn"`), else a 400 on `param` that says what the model knows.
    pub(crate) fn check_caption(
        &self,
        prompt: &str,
        param: &str,
    ) -> Result<Option<String>, ApiError> {
        match &self.model.card {
            Some(card) => self.judge(card.check_caption(prompt), param),
            None => Ok(None),
        }
    }

    /// A question against the model card's question forms, as [`AppState::check_caption`].
    pub(crate) fn check_question(
        &self,
        question: &str,
        param: &str,
    ) -> Result<Option<String>, ApiError> {
        match &self.model.card {
            Some(card) => self.judge(card.check_question(question), param),
            None => Ok(None),
        }
    }

    fn judge(
        &self,
        verdict: Result<(), OutOfDistribution>,
        param: &str,
    ) -> Result<Option<String>, ApiError> {
        judge(self.cfg.ood, verdict, param)
    }
}

/// A verdict of the model card under `policy`: `Ok(None)` when in distribution, else a 400 on
/// `param` that says what the model knows (`refuse`) or the warning to answer with (`warn`).
/// Free of [`AppState`] so that the model worker can judge what only the model measures (an
/// image's reconstruction).
pub(crate) fn judge(
    policy: OodPolicy,
    verdict: Result<(), OutOfDistribution>,
    param: &str,
) -> Result<Option<String>, ApiError> {
    let Err(ood) = verdict else {
        return Ok(None);
    };
    match policy {
        OodPolicy::Refuse => Err(ApiError::invalid(
            param,
            format!("Out of distribution: {ood} GET /v1/models shows the model card."),
        )
        .code(OOD_CODE)),
        OodPolicy::Warn => Ok(Some(format!(
            "Out of distribution, answered anyway (the server runs with ood = \"warn\"): {ood}"
        ))),
    }
}
