//! The model worker: one thread owns the model and a bounded queue of jobs.
//!
//! Either kind of model that draws (a unified model, a LLaVA model trained to generate) draws
//! through the same path ([`ServedModel::generate_with`]).
//!
//! Generation requests are batched: the worker takes the first one, then waits up to
//! `max_wait_ms` for more whose sampling settings match (a batch shares one
//! [`GenerationConfig`]; every image keeps its own seed), up to `max_batch` images, and runs one
//! forward for all of them. Other jobs (answers, tokenizing) are closures run one at a time.
//!
//! A LLaVA model's chat requests ([`ChatJob`]) are batched the same way: those that agree on
//! their kind (text or image), sampling settings and token budget share one batched decode
//! ([`crate::llava_chat`]), each streamed to its own request.
//!
//! A streamed generation ([`Engine::generate_streamed`]) is batched the same way; the worker
//! sends it [`Preview`]s while the batch samples: partial images decoded at the row boundaries
//! it asked for. Only a batch holding a streamed request looks at its codes between steps, so
//! the plain path runs as before.
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
use tokio::sync::{mpsc as tokio_mpsc, oneshot};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_tokenizer::Vqrae;
use vqrae_unified::model::UnifiedModel;
use vqrae_unified::UnifiedError;

use crate::config::BatchConfig;
use crate::error::{ApiError, ServeError};
use crate::llava_chat::{self, ChatJob};
use crate::metrics::Metrics;
use crate::served::{not_unified, ServedModel};

/// A job that runs on the model worker with the model borrowed.
pub(crate) type ModelFn = Box<dyn FnOnce(&ServedModel) + Send + 'static>;

type GenReply = oneshot::Sender<Result<Vec<RgbImage>, ApiError>>;

struct GenJob {
    requests: Vec<ImageRequest>,
    cfg: GenerationConfig,
    reply: GenReply,
    /// Some for a streamed request.
    previews: Option<Previews>,
}

/// What the worker sends a streamed generation while its codes are sampled.
#[derive(Debug)]
pub(crate) enum Preview {
    /// The first code of every image is drawn (the prompt fit the context): `prompt_tokens`
    /// is the prompt's length in text tokens.
    Started { prompt_tokens: usize },
    /// Partial image `index` of each of the request's images: the rows sampled so far, the
    /// rest grey ([`partial_images`]).
    Partial { index: usize, images: Vec<RgbImage> },
}

/// When a streamed generation wants its partial images, and where they go.
pub(crate) struct Previews {
    /// Codes sampled per image after which partial `i` is decoded (`steps[i]`, ascending).
    pub(crate) steps: Vec<usize>,
    pub(crate) tx: tokio_mpsc::UnboundedSender<Preview>,
}

/// Grey (the middle of the pixel range) where a partial image has no codes yet.
const BLANK: [u8; 3] = [128, 128, 128];

enum Job {
    Generate(GenJob),
    Chat(ChatJob),
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

pub(crate) fn worker_failed() -> ApiError {
    ApiError::internal("The model worker failed on this request (see the server log).")
}

impl Engine {
    /// Starts the worker thread, which owns `model`.
    pub(crate) fn start(
        model: ServedModel,
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
            previews: None,
        }))?;
        rx.await.map_err(|_| worker_failed())?
    }

    /// Queues a streamed generation (refused at once when the queue is full): `previews`
    /// receives [`Preview`]s as the codes are sampled, the receiver returned the final images,
    /// the same as [`Engine::generate`] gives for the same requests.
    pub(crate) fn generate_streamed(
        &self,
        requests: Vec<ImageRequest>,
        cfg: GenerationConfig,
        previews: Previews,
    ) -> Result<oneshot::Receiver<Result<Vec<RgbImage>, ApiError>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Job::Generate(GenJob {
            requests,
            cfg,
            reply,
            previews: Some(previews),
        }))?;
        Ok(rx)
    }

    /// Queues a LLaVA chat request; its pieces go down the job's channel. Refused at once
    /// when the queue is full.
    pub(crate) fn chat(&self, job: ChatJob) -> Result<(), ApiError> {
        self.enqueue(Job::Chat(job))
    }

    /// Queues `f` to run on the model worker; the receiver gets its result (or is dropped if
    /// `f` panics). Refused at once when the queue is full.
    pub(crate) fn submit_served<R, F>(&self, f: F) -> Result<oneshot::Receiver<R>, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&ServedModel) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Call(Box::new(move |m| {
            let _ = tx.send(f(m));
        })))?;
        Ok(rx)
    }

    /// [`Self::submit_served`] for a unified model's job (on a LLaVA model the receiver is
    /// dropped: the handlers of such jobs refuse a LLaVA model before they queue).
    pub(crate) fn submit<R, F>(&self, f: F) -> Result<oneshot::Receiver<R>, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&UnifiedModel) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Call(Box::new(move |m| {
            if let ServedModel::Unified(m) = m {
                let _ = tx.send(f(m));
            }
        })))?;
        Ok(rx)
    }

    /// Runs `f` on the model worker with the unified model and waits for it; a LLaVA model
    /// answers a 400 instead.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&UnifiedModel) -> Result<R, ApiError> + Send + 'static,
    {
        self.submit_served(move |m| match m {
            ServedModel::Unified(m) => f(m),
            ServedModel::Llava(_) => Err(not_unified("the served model", "serve this route")),
        })?
        .await
        .map_err(|_| worker_failed())?
    }

    /// Runs `f` on the model worker with the served model's VQRAE tokenizer (a unified
    /// model's, or the one a LLaVA model draws through) and waits for it; a model without one
    /// answers a 400 (`what`: what the route would do).
    pub(crate) async fn call_tokenizer<R, F>(&self, what: &'static str, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Vqrae) -> Result<R, ApiError> + Send + 'static,
    {
        self.submit_served(move |m| match m.image_tokenizer() {
            Some(t) => f(t),
            None => Err(not_unified("the served model", what)),
        })?
        .await
        .map_err(|_| worker_failed())?
    }
}

fn run(model: ServedModel, rx: Receiver<Job>, cfg: &BatchConfig, metrics: &Metrics) {
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
                let fits = |j: &Job, group: &[GenJob], rows: usize| {
                    matches!(j, Job::Generate(g)
                        if g.cfg == group[0].cfg && rows + g.requests.len() <= cfg.max_batch)
                };
                let take = |j: Job| match j {
                    Job::Generate(g) => Some(g),
                    _ => None,
                };
                let rows = |g: &GenJob| g.requests.len();
                let gather = Gather {
                    rx: &rx,
                    max_batch: cfg.max_batch,
                    max_wait,
                };
                let group = gather.run(vec![first], &mut held, rows, fits, take);
                for _ in &group {
                    metrics.queue_leave();
                }
                if model.capabilities().image_generation {
                    run_generate(&model, group, metrics);
                } else {
                    let e = not_unified("the served model", "draw images");
                    for g in group {
                        let _ = g.reply.send(Err(e.clone()));
                    }
                }
            }
            Job::Chat(first) => {
                let fits = |j: &Job, group: &[ChatJob], rows: usize| matches!(j, Job::Chat(c) if c.batches_with(&group[0]) && rows < cfg.max_batch);
                let take = |j: Job| match j {
                    Job::Chat(c) => Some(c),
                    _ => None,
                };
                let gather = Gather {
                    rx: &rx,
                    max_batch: cfg.max_batch,
                    max_wait,
                };
                let group = gather.run(vec![first], &mut held, |_| 1, fits, take);
                for _ in &group {
                    metrics.queue_leave();
                }
                llava_chat::run_batch(&model, group, metrics);
            }
        }
    }
    tracing::info!("model worker stopped");
}

/// How a batch gathers its jobs: from those held back first, then from the queue for up to
/// `max_wait`, until `max_batch` rows.
struct Gather<'a> {
    rx: &'a Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
}

impl Gather<'_> {
    /// Grows `group` with the jobs `fits` accepts (given the group and its rows so far), as
    /// `take` unwraps them; a job that does not fit waits in `held` for a later turn.
    fn run<T>(
        &self,
        mut group: Vec<T>,
        held: &mut VecDeque<Job>,
        rows: impl Fn(&T) -> usize,
        fits: impl Fn(&Job, &[T], usize) -> bool,
        take: impl Fn(Job) -> Option<T>,
    ) -> Vec<T> {
        let mut n: usize = group.iter().map(&rows).sum();
        let mut i = 0;
        while i < held.len() && n < self.max_batch {
            if fits(&held[i], &group, n) {
                if let Some(t) = held.remove(i).and_then(&take) {
                    n += rows(&t);
                    group.push(t);
                }
            } else {
                i += 1;
            }
        }
        let deadline = Instant::now() + self.max_wait;
        while n < self.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(job) if fits(&job, &group, n) => {
                    if let Some(t) = take(job) {
                        n += rows(&t);
                        group.push(t);
                    }
                }
                Ok(other) => held.push_back(other),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        group
    }
}

/// One batched forward for a group of requests with equal settings, on a model that draws.
fn run_generate(model: &ServedModel, group: Vec<GenJob>, metrics: &Metrics) {
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
    let streamed = group.iter().any(|g| g.previews.is_some());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        model
            .generate_with(&all, &cfg, |codes| {
                if streamed {
                    send_previews(model, &group, codes);
                }
            })
            .map_err(ApiError::from_model)
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

/// After a sampling step of a batch: tells each streamed request in `group` that sampling has
/// begun (after the first step) and sends the partial images it asked for at this step.
/// `codes` holds the batch's codes so far, the group's requests in order.
fn send_previews(model: &ServedModel, group: &[GenJob], codes: &[Vec<u32>]) {
    let step = codes.first().map_or(0, Vec::len);
    let mut offset = 0;
    for g in group {
        let n = g.requests.len();
        let mine = codes.get(offset..offset + n).unwrap_or_default();
        offset += n;
        let Some(p) = &g.previews else { continue };
        if p.tx.is_closed() {
            continue; // the client went away: its final image is still made, as batched
        }
        if step == 1 {
            let prompt_tokens = g
                .requests
                .first()
                .and_then(|r| model.text().encode(&r.caption).ok())
                .map_or(0, |t| t.len());
            let _ = p.tx.send(Preview::Started { prompt_tokens });
        }
        let Some(index) = p.steps.iter().position(|&s| s == step) else {
            continue;
        };
        match partial_images(model, mine) {
            Ok(images) => {
                let _ = p.tx.send(Preview::Partial { index, images });
            }
            // a preview is a courtesy: the final image still comes
            Err(e) => tracing::warn!(error = %e, "decoding a partial image failed; skipped"),
        }
    }
}

/// Partial images of code grids sampled so far (row-major, every grid equally long): the
/// decoder sees each grid completed with its own first code (top-left; the background in the
/// shipped data), and every pixel row of a grid row not sampled yet is painted [`BLANK`]. So a
/// preview shows the finished rows as the decoder will draw them, given what is still to
/// come, and grey below: the image fills in from the top. A partially sampled row counts as
/// not sampled.
fn partial_images(model: &ServedModel, codes: &[Vec<u32>]) -> Result<Vec<RgbImage>, UnifiedError> {
    let (Some((rows, cols)), Some(tokenizer)) = (model.drawn_grid(), model.image_tokenizer())
    else {
        return Err(UnifiedError::Config(
            "the served model does not draw".into(),
        ));
    };
    let total = rows * cols;
    let full: Vec<Vec<u32>> = codes
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let fill = c.first().copied().unwrap_or(0);
            c.resize(total, fill);
            c
        })
        .collect();
    let done_rows = codes.first().map_or(0, |c| c.len() / cols.max(1)).min(rows);
    let mut images = tokenizer.decode_codes(&full)?;
    for img in &mut images {
        let h = img.height() as usize;
        let from = (h * done_rows / rows.max(1)) as u32;
        for y in from..img.height() {
            for x in 0..img.width() {
                img.put_pixel(x, y, image::Rgb(BLANK));
            }
        }
    }
    Ok(images)
}
