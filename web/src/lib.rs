//! vqrae-web: the HTTP API over one model and a small web page. The model is a unified VQRAE
//! model (text-to-image and visual question answering) or a LLaVA model (a pretrained chat LM
//! with an image encoder: text chat and questions about images, answered in sentences; it
//! draws too when it was trained to generate); [`ServedModel::load`] tells them apart by the
//! directory's `llava.json`.
//!
//! ```text
//! POST /v1/images/generations     prompt -> images (OpenAI's API + seed, guidance_scale, ...)
//! POST /v1/chat/completions       image + question -> answer (OpenAI's API, SSE streaming)
//! POST /v1/images/tokenize        image -> codes grid and feature shape
//! POST /v1/images/reconstructions image -> codes -> image
//! GET  /v1/models  /health  /metrics  /openapi.json  /
//! ```
//!
//! Requests reach the model through [`batcher::Engine`]: one worker thread owns the model and a
//! bounded queue; concurrent generation requests with equal settings share one batched forward.
//! Past the queue's capacity requests get 503 with Retry-After. Every error has OpenAI's shape.
//! Connections are served on hyper with header-read and idle timeouts and a shutdown deadline
//! (`ServeConfig::timeouts`); user text is escaped before it reaches the log.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use vqrae_web::ServeConfig;
//! let cfg = ServeConfig::default(); // 127.0.0.1:8080, models/vqrae-easyvqa
//! let model = vqrae_unified::model::UnifiedModel::load(
//!     &cfg.model, &candle_core::Device::Cpu, candle_core::DType::F32)?;
//! vqrae_web::run(cfg, model)?; // until SIGTERM or Ctrl-C
//! # Ok(()) }
//! ```

mod auth;
mod batcher;
pub mod codec;
pub mod config;
mod connection;
mod error;
mod llava_chat;
mod logging;
mod metrics;
mod openapi;
mod routes;
mod served;
mod state;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use batcher::Worker;
pub use config::ServeConfig;
use config::Timeouts;
pub use error::{ApiError, ServeError};
pub use served::ServedModel;
pub use state::AppState;

/// How long shutdown waits for the model worker at least, even past the shutdown deadline (once
/// every connection has closed it has nothing left to answer and stops at once).
const WORKER_STOP: Duration = Duration::from_secs(1);

/// A bound, not yet serving server.
pub struct Server {
    listener: TcpListener,
    router: Router,
    worker: Worker,
    addr: SocketAddr,
    timeouts: Timeouts,
}

impl Server {
    /// Binds `cfg.host:cfg.port` (port 0: a free one) and starts the model worker.
    pub async fn bind(cfg: ServeConfig, model: impl Into<ServedModel>) -> Result<Self, ServeError> {
        Self::bind_with(cfg, model, Router::new()).await
    }

    /// [`Server::bind`] with `extra` routes behind the same auth, limits, metrics and panic
    /// handling as the API (tests use it to inject failures).
    pub async fn bind_with(
        cfg: ServeConfig,
        model: impl Into<ServedModel>,
        extra: Router<AppState>,
    ) -> Result<Self, ServeError> {
        let want = cfg.addr();
        let listener = TcpListener::bind(want)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("binding {want}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Io {
            what: "reading the bound address".into(),
            source,
        })?;
        let model = model.into();
        let kind = match &model {
            ServedModel::Unified(_) => "images".to_string(),
            ServedModel::Llava(m) => format!(
                "a LLaVA chat model{}, {} weights",
                if m.t2i().is_some() { " that draws" } else { "" },
                if m.quantized { "quantized" } else { "f32" }
            ),
        };
        let (state, worker) = AppState::new(cfg, model)?;
        tracing::info!(
            "serving {} ({} {kind}) on http://{addr} (auth {}; queue of {}, batches of up to {} rows)",
            state.model.id,
            state.model.size(),
            if state.cfg.api_key.is_some() { "on" } else { "off" },
            state.cfg.batch.queue_capacity,
            state.cfg.batch.max_batch,
        );
        let timeouts = state.cfg.timeouts;
        let router = routes::router(state, extra);
        Ok(Self {
            listener,
            router,
            worker,
            addr,
            timeouts,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting connections, finishes the
    /// requests in flight (streams included) for at most the shutdown deadline
    /// (`timeouts.shutdown_secs`), closes the connections still open then, lets the model
    /// worker stop, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            listener,
            router,
            worker,
            addr: _,
            timeouts,
        } = self;
        let deadline = connection::serve(listener, router, timeouts, shutdown).await;
        // the router and its handles on the model are gone: the worker drains and stops
        let join = tokio::task::spawn_blocking(move || worker.join());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left.max(WORKER_STOP), join).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ServeError::Worker),
            Err(_) => tracing::warn!("the model worker did not stop in time; leaving it"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves `model` with `cfg` until SIGTERM or Ctrl-C, on a runtime of its own (the blocking
/// entry point of `vqrae serve`).
pub fn run(cfg: ServeConfig, model: impl Into<ServedModel>) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vqrae-http")
        .build()
        .map_err(|source| ServeError::Io {
            what: "starting the async runtime".into(),
            source,
        })?;
    let model = model.into();
    let result = rt.block_on(async move {
        let server = Server::bind(cfg, model).await?;
        server.run(shutdown_signal()).await
    });
    // a model worker left running past the deadline must not hold the process: dropping the
    // runtime would wait for the blocking task that joins it
    rt.shutdown_background();
    result
}
