//! The results of `bench-serve`: one [`RunResult`] per path and concurrency, the JSON
//! [`Report`] (also what `--baseline` reads back), and the markdown table printed.

use serde::{Deserialize, Serialize};

use super::requests::BenchPath;

/// One run: one path at one concurrency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunResult {
    pub(crate) path: BenchPath,
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) wall_s: f64,
    pub(crate) rps: f64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Generation: images per batched forward the server ran during this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mean_batch: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) url: String,
    pub(crate) model: String,
    pub(crate) unix_time: u64,
    pub(crate) requests: usize,
    pub(crate) results: Vec<RunResult>,
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The markdown table of a report; with a baseline, its requests/s and the gain over it.
pub(crate) fn table(report: &Report, baseline: Option<&Report>) -> String {
    let mut out = String::new();
    out.push_str(
        "| path | concurrency | requests | errors | req/s | p50 ms | p90 ms | p99 ms | mean batch |",
    );
    if baseline.is_some() {
        out.push_str(" req/s baseline | gain |");
    }
    out.push('\n');
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    if baseline.is_some() {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for r in &report.results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {} |",
            r.path.name(),
            r.concurrency,
            r.requests,
            r.errors,
            r.rps,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.mean_batch.map_or("-".into(), |b| format!("{b:.1}")),
        ));
        if let Some(base) = baseline {
            let other = base
                .results
                .iter()
                .find(|b| b.path == r.path && b.concurrency == r.concurrency);
            match other {
                Some(b) => out.push_str(&format!(" {:.2} | {:.2}x |", b.rps, r.rps / b.rps)),
                None => out.push_str(" - | - |"),
            }
        }
        out.push('\n');
    }
    out
}
