//! The training curves of run directories to PNG (`vqrae plot`): one panel per metric, one line
//! per run, each run labelled by its directory's name.

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::metrics::MetricsLog;
use crate::plot::{plot_panels, series};

/// Plots `keys` of the runs' logs into `out`, `width` pixels wide. A run is a directory holding
/// `metrics.jsonl`, or a metrics file itself. Fails when no log has any of the keys.
pub fn plot_runs(runs: &[PathBuf], keys: &[String], out: &Path, width: u32) -> Result<()> {
    let mut logs = Vec::new();
    for path in runs {
        let file = if path.is_dir() {
            path.join("metrics.jsonl")
        } else {
            path.clone()
        };
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        logs.push((label, MetricsLog::read(&file)?));
    }
    let panels: Vec<_> = keys
        .iter()
        .map(|k| {
            let lines: Vec<_> = logs.iter().map(|(l, r)| series(r, k, l)).collect();
            (k.clone(), lines)
        })
        .collect();
    if panels
        .iter()
        .all(|(_, s)| s.iter().all(|s| s.points.is_empty()))
    {
        return Err(TrainError::Config(format!(
            "none of {keys:?} is in the logs"
        )));
    }
    plot_panels(&panels, out, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_plotted_by_key_and_unknown_keys_are_an_error() -> Result<()> {
        let dir = tempfile::tempdir().map_err(TrainError::io("tempdir"))?;
        let run = dir.path().join("run-a");
        let mut log = MetricsLog::open(&run.join("metrics.jsonl"), None)?;
        for step in 1..=5u64 {
            log.log(step, &serde_json::json!({ "loss": 1.0 / step as f64 }))?;
        }
        drop(log);
        let file = dir.path().join("b.jsonl");
        std::fs::copy(run.join("metrics.jsonl"), &file).map_err(TrainError::io(&file))?;
        let out = dir.path().join("curves.png");
        let keys = ["loss".to_string(), "l2".to_string()];
        plot_runs(&[run.clone(), file], &keys, &out, 400)?;
        let png = std::fs::read(&out).map_err(TrainError::io(&out))?;
        assert_eq!(&png[..4], b"\x89PNG");
        let err = plot_runs(&[run], &["nope".to_string()], &out, 400);
        assert!(err.is_err_and(|e| e.to_string().contains("nope")));
        Ok(())
    }
}
