//! The model worker: one thread owns the model and a bounded queue of jobs.
//!
//! Generation requests are batched: the worker takes the first one, then waits up to
//! `max_wait_ms` for more whose sampling settings match (a batch shares one
//! [`GenerationConfig`]; every image keeps its own seed), up to `max_batch` images, and runs one
//! forward for all of them. Other jobs (answers, tokenizing) are closures run one at a time.
//!
//! The queue holds at most `queue_capacity` waiting requests; past it [`Engine`] refuses at once
//! (503 with Retry-After) instead of growing. A panic in the model is caught: the requests of
//! that job get a 500 and the worker goes on.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::oneshot;
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_unified::model::UnifiedModel;

use crate::config::BatchConfig;
use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;

/// A job that runs on the model worker with the model borrowed.
pub(crate) type ModelFn = Box<dyn FnOnce(&UnifiedModel) + Send + 'static>;

type GenReply = oneshot::Sender<Result<Vec<RgbImage>, ApiError>>;

struct GenJob {
    requests: Vec<ImageRequest>,
    cfg: GenerationConfig,
    reply: GenReply,
}

enum Job {
    Generate(GenJob),
    Call(ModelFn),
}

/// The handle requests use to reach the model. Cheap to clone; the worker stops once every
/// clone is dropped and the queue is empty.
#[derive(Clone)]
pub(crate) struct Engine {
    tx: SyncSender<Job>,
    retry_after: u64,
    metrics: Arc<Metrics>,
}

/// The model worker thread.
pub(crate) struct Worker {
    handle: JoinHandle<()>,
}

impl Worker {
    /// Waits for the worker to finish the queued jobs (after every [`Engine`] is dropped).
    pub(crate) fn join(self) -> Result<(), ServeError> {
        self.handle.join().map_err(|_| ServeError::Worker)
    }
}

fn worker_failed() -> ApiError {
    ApiError::internal("The model worker failed on this request (see the server log).")
}

impl Engine {
    /// Starts the worker thread, which owns `model`.
    pub(crate) fn start(
        model: UnifiedModel,
        cfg: &BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Worker), ServeError> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity);
        let worker_cfg = cfg.clone();
        let worker_metrics = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("vqrae-model".into())
            .spawn(move || run(model, rx, &worker_cfg, &worker_metrics))
            .map_err(|source| ServeError::Io {
                what: "starting the model worker thread".into(),
                source,
            })?;
        Ok((
            Self {
                tx,
                retry_after: cfg.retry_after_secs,
                metrics,
            },
            Worker { handle },
        ))
    }

    fn enqueue(&self, job: Job) -> Result<(), ApiError> {
        if !self.metrics.queue_try_enter() {
            self.metrics.rejected();
            return Err(ApiError::overloaded(self.retry_after));
        }
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.queue_leave();
                self.metrics.rejected();
                Err(ApiError::overloaded(self.retry_after))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_leave();
                let mut e = ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "The model worker has stopped (the server is shutting down).",
                );
                e.retry_after = Some(self.retry_after.max(1));
                Err(e)
            }
        }
    }

    /// Generates one image per request, batched with other requests of the same settings.
    pub(crate) async fn generate(
        &self,
        requests: Vec<ImageRequest>,
        cfg: GenerationConfig,
    ) -> Result<Vec<RgbImage>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Job::Generate(GenJob {
            requests,
            cfg,
            reply,
        }))?;
        rx.await.map_err(|_| worker_failed())?
    }

    /// Queues `f` to run on the model worker; the receiver gets its result (or is dropped if
    /// `f` panics). Refused at once when the queue is full.
    pub(crate) fn submit<R, F>(&self, f: F) -> Result<oneshot::Receiver<R>, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&UnifiedModel) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Call(Box::new(move |m| {
            let _ = tx.send(f(m));
        })))?;
        Ok(rx)
    }

    /// Runs `f` on the model worker and waits for it.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&UnifiedModel) -> Result<R, ApiError> + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| worker_failed())?
    }
}

fn run(model: UnifiedModel, rx: Receiver<Job>, cfg: &BatchConfig, metrics: &Metrics) {
    let max_wait = Duration::from_millis(cfg.max_wait_ms);
    // jobs taken off the channel while a batch gathered, that did not fit it; still counted
    // in the queue depth, so the queue's bound holds for them too
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        let job = match held.pop_front() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => break, // every Engine is gone and the queue is empty
            },
        };
        match job {
            Job::Call(f) => {
                metrics.queue_leave();
                if catch_unwind(AssertUnwindSafe(|| f(&model))).is_err() {
                    metrics.panicked();
                    tracing::error!("a model job panicked; its request gets a 500");
                }
            }
            Job::Generate(first) => {
                let mut group = vec![first];
                let mut rows = group[0].requests.len();
                let fits = |g: &GenJob, group: &[GenJob], rows: usize| {
                    g.cfg == group[0].cfg && rows + g.requests.len() <= cfg.max_batch
                };
                let mut i = 0;
                while i < held.len() && rows < cfg.max_batch {
                    match &held[i] {
                        Job::Generate(g) if fits(g, &group, rows) => {
                            if let Some(Job::Generate(g)) = held.remove(i) {
                                rows += g.requests.len();
                                group.push(g);
                            }
                        }
                        _ => i += 1,
                    }
                }
                let deadline = Instant::now() + max_wait;
                while rows < cfg.max_batch {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(Job::Generate(g)) if fits(&g, &group, rows) => {
                            rows += g.requests.len();
                            group.push(g);
                        }
                        Ok(other) => held.push_back(other),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
                for _ in &group {
                    metrics.queue_leave();
                }
                run_generate(&model, group, metrics);
            }
        }
    }
    tracing::info!("model worker stopped");
}

/// One batched forward for a group of requests with equal settings.
fn run_generate(model: &UnifiedModel, group: Vec<GenJob>, metrics: &Metrics) {
    // a client that went away does not need its images
    let group: Vec<GenJob> = group.into_iter().filter(|g| !g.reply.is_closed()).collect();
    let Some(first) = group.first() else {
        return;
    };
    let cfg = first.cfg.clone();
    let all: Vec<ImageRequest> = group
        .iter()
        .flat_map(|g| g.requests.iter().cloned())
        .collect();
    metrics.batch(all.len(), group.len());
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        model.generate(&all, &cfg).map_err(ApiError::from_model)
    }));
    match outcome {
        Ok(Ok(images)) if images.len() == all.len() => {
            tracing::debug!(
                images = all.len(),
                requests = group.len(),
                ms = started.elapsed().as_millis() as u64,
                "generation batch"
            );
            metrics.images(images.len());
            let mut images = images.into_iter();
            for g in group {
                let mine: Vec<RgbImage> = images.by_ref().take(g.requests.len()).collect();
                let _ = g.reply.send(Ok(mine));
            }
        }
        Ok(Ok(images)) => {
            let e = ApiError::internal(format!(
                "the model returned {} images for {} requests",
                images.len(),
                all.len()
            ));
            for g in group {
                let _ = g.reply.send(Err(e.clone()));
            }
        }
        Ok(Err(e)) => {
            if e.status.is_client_error() && group.len() > 1 {
                // one request's bad prompt must not fail the others: each on its own
                for g in group {
                    run_generate(model, vec![g], metrics);
                }
            } else {
                for g in group {
                    let _ = g.reply.send(Err(e.clone()));
                }
            }
        }
        Err(_) => {
            metrics.panicked();
            tracing::error!(
                requests = group.len(),
                "the model panicked in a generation batch"
            );
            for g in group {
                let _ = g.reply.send(Err(worker_failed()));
            }
        }
    }
}
