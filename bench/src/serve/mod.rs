//! `vqrae bench-serve`: a load benchmark of a running `vqrae serve`. For each path (text to
//! image, a question about an image) and each concurrency, `concurrency` clients on keep-alive
//! connections send `--requests` requests between them as fast as they are answered; the report
//! gives requests/s and latency percentiles, and for generation the mean batch the server ran
//! (from its /metrics). With `--baseline` (the JSON of an earlier run, e.g. the same server with
//! batching off) it adds the throughput gain over that run.
//!
//! The clients are tokio tasks sharing hyper's connection pool, on a runtime [`run`] builds: at
//! these request rates (milliseconds to seconds each) they cost nothing next to the model.
//!
//! - [`client`]: the target URL and the HTTP client;
//! - [`requests`]: the paths, their request bodies and what counts as served;
//! - [`load`]: one measured run (a path at a concurrency);
//! - [`report`]: the results, their JSON and table.

mod client;
mod load;
mod report;
mod requests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, ensure, Context, Result};
use clap::Args;
use serde_json::Value;

use client::{Client, Target};
use load::{run_level, Level};
use report::{table, Report};
use requests::{check, image_data_url, BenchPath, Bodies};

#[derive(Args)]
pub struct BenchServeArgs {
    /// The server's base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients, a comma-separated list; each is one run.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Requests per run (per path and concurrency); at least the concurrency.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Unmeasured requests before each path's first run (loads caches, spins up threads).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// The paths to load, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "generate,chat")]
    paths: Vec<BenchPath>,
    /// Text-to-image prompt.
    #[arg(long, default_value = "a red circle")]
    prompt: String,
    /// Image the questions are about [default: a drawn red circle, 64 px].
    #[arg(long)]
    image: Option<PathBuf>,
    /// The question asked about it.
    #[arg(long, default_value = "what color is the shape?")]
    question: String,
    /// Answer length cap (`max_tokens`) of chat requests [default: the server's].
    #[arg(long)]
    max_tokens: Option<usize>,
    /// A name for this run in the report, e.g. "max_batch 16".
    #[arg(long, default_value = "")]
    label: String,
    /// Bearer token, if the server wants one.
    #[arg(long, env = "VQRAE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Wait up to this many seconds for the server to come up (it may be loading its model).
    #[arg(long, default_value_t = 0)]
    wait_s: u64,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The JSON of an earlier run to compare with (gain = this run's requests/s over its).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// Runs the benchmark, prints the table (and writes `--json`); an error if any request failed.
pub fn run(a: BenchServeArgs) -> Result<()> {
    ensure!(
        !a.concurrency.is_empty() && a.concurrency.iter().all(|&c| c >= 1),
        "--concurrency needs positive numbers"
    );
    ensure!(a.requests >= 1, "--requests must be at least 1");
    let baseline = a.baseline.as_deref().map(read_report).transpose()?;
    let target = Target::parse(&a.url, a.api_key.clone(), Duration::from_secs(a.timeout_s))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let report = runtime.block_on(bench(&a, Client::new(target)))?;
    if !report.label.is_empty() {
        println!("{}\n", report.label);
    }
    print!("{}", table(&report, baseline.as_ref()));
    if let Some(p) = &a.json {
        vqrae_data::fs::write_atomic(p, &serde_json::to_vec_pretty(&report)?)?;
    }
    let errors: usize = report.results.iter().map(|r| r.errors).sum();
    ensure!(errors == 0, "{errors} request(s) failed (see above)");
    Ok(())
}

/// A report written by `--json` (read back for `--baseline`).
fn read_report(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a bench-serve report", path.display()))
}

/// The served model's id, once the server answers `GET /v1/models` (retried until `--wait-s`
/// has passed: the server may still be loading its model).
async fn wait_for_model(a: &BenchServeArgs, client: &Client) -> Result<String> {
    let up_by = Instant::now() + Duration::from_secs(a.wait_s);
    let (status, body) = loop {
        match client.get("/v1/models").await {
            Ok(r) => break r,
            Err(_) if Instant::now() < up_by => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => {
                return Err(e).with_context(|| format!("is `vqrae serve` running at {}?", a.url))
            }
        }
    };
    ensure!(
        status == 200,
        "GET /v1/models: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let models: Value = serde_json::from_slice(&body)?;
    Ok(models["data"][0]["id"].as_str().unwrap_or("").to_string())
}

/// Every path at every concurrency, after each path's unmeasured warm-up requests.
async fn bench(a: &BenchServeArgs, client: Client) -> Result<Report> {
    let model = wait_for_model(a, &client).await?;
    let bodies = Arc::new(Bodies {
        prompt: a.prompt.clone(),
        image: image_data_url(a.image.as_deref())?,
        question: a.question.clone(),
        max_tokens: a.max_tokens,
    });
    eprintln!(
        "bench-serve: {} (model {model}), {} requests per run",
        a.url, a.requests
    );
    let mut results = Vec::new();
    let mut seed_base = 0;
    for &path in &a.paths {
        for i in 0..a.warmup {
            let (status, body) = client.post(path.route(), bodies.body(path, i)).await?;
            check(path, status, &body).map_err(|e| anyhow!("warm-up {path:?} request: {e}"))?;
        }
        for &concurrency in &a.concurrency {
            let requests = a.requests.max(concurrency);
            let level = Level {
                path,
                concurrency,
                requests,
                seed_base,
            };
            let r = run_level(&client, &bodies, level).await?;
            seed_base += requests;
            eprintln!(
                "  {path:?} x{concurrency}: {:.2} req/s, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, {} errors{}",
                r.rps,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.errors,
                r.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
            results.push(r);
        }
    }
    Ok(Report {
        label: a.label.clone(),
        url: a.url.clone(),
        model,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        requests: a.requests,
        results,
    })
}
