//! One measured run: `concurrency` workers (tokio tasks) on the shared keep-alive client take
//! the next request number until `requests` are done (a closed loop: each worker sends as soon
//! as its previous request is answered), and the server's batch counters are read around it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use super::client::Client;
use super::report::{percentile, RunResult};
use super::requests::{check, BenchPath, Bodies};

/// One run's parameters.
#[derive(Clone, Copy)]
pub(crate) struct Level {
    pub(crate) path: BenchPath,
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    /// Seeds of this run's requests start here, so no two runs repeat a generation.
    pub(crate) seed_base: usize,
}

/// What one worker saw: latencies of served requests, and its failures with when they ended
/// (so the report's first error is the earliest one of all workers).
#[derive(Default)]
struct Served {
    latencies_ms: Vec<f64>,
    errors: Vec<(Instant, String)>,
}

/// Counters of the server's /metrics: (generation batches, images generated).
pub(crate) async fn batch_counters(client: &Client) -> Option<(f64, f64)> {
    let (status, body) = client.get("/metrics").await.ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some((
        get("vqrae_generation_batches_total")?,
        get("vqrae_images_generated_total")?,
    ))
}

/// Sends requests numbered from the shared counter until `level.requests` are taken.
async fn worker(
    client: Client,
    bodies: Arc<Bodies>,
    level: Level,
    next: Arc<AtomicUsize>,
) -> Served {
    let mut served = Served::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= level.requests {
            return served;
        }
        let body = bodies.body(level.path, level.seed_base + i);
        let t = Instant::now();
        let r = client.post(level.path.route(), body).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let verdict = match r {
            Ok((status, resp)) => check(level.path, status, &resp),
            Err(e) => Err(format!("{e:#}")),
        };
        match verdict {
            Ok(()) => served.latencies_ms.push(ms),
            Err(e) => served.errors.push((Instant::now(), e)),
        }
    }
}

pub(crate) async fn run_level(
    client: &Client,
    bodies: &Arc<Bodies>,
    level: Level,
) -> Result<RunResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let before = batch_counters(client).await;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..level.concurrency {
        workers.spawn(worker(
            client.clone(),
            Arc::clone(bodies),
            level,
            Arc::clone(&next),
        ));
    }
    let mut all = Served::default();
    while let Some(done) = workers.join_next().await {
        let served = done.context("a load worker failed")?;
        all.latencies_ms.extend(served.latencies_ms);
        all.errors.extend(served.errors);
    }
    let wall_s = started.elapsed().as_secs_f64();
    let after = batch_counters(client).await;
    let mean_batch = match (level.path, before, after) {
        (BenchPath::Generate, Some((b0, i0)), Some((b1, i1))) if b1 > b0 => {
            Some((i1 - i0) / (b1 - b0))
        }
        _ => None,
    };
    Ok(summarize(level, all, wall_s, mean_batch))
}

/// The run's throughput and latency percentiles.
fn summarize(level: Level, mut all: Served, wall_s: f64, mean_batch: Option<f64>) -> RunResult {
    let lat = &mut all.latencies_ms;
    lat.sort_by(f64::total_cmp);
    all.errors.sort_by_key(|(at, _)| *at);
    let ok = lat.len();
    RunResult {
        path: level.path,
        concurrency: level.concurrency,
        requests: level.requests,
        ok,
        errors: all.errors.len(),
        wall_s,
        rps: ok as f64 / wall_s,
        mean_ms: lat.iter().sum::<f64>() / ok.max(1) as f64,
        p50_ms: percentile(lat, 50.0),
        p90_ms: percentile(lat, 90.0),
        p99_ms: percentile(lat, 99.0),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        mean_batch,
        first_error: all.errors.into_iter().next().map(|(_, e)| e),
    }
}
