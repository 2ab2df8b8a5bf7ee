//! `vqrae plot`: a run's (or several runs') training curves to PNG.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vqrae_train::metrics::MetricsLog;
use vqrae_train::plot::{plot_panels, series};

#[derive(Args)]
pub struct PlotArgs {
    /// Run directory (holding `metrics.jsonl`) or a metrics file; repeat to overlay runs.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Metrics to plot, one panel each.
    #[arg(long, value_delimiter = ',', default_value = "loss")]
    keys: Vec<String>,
    /// Output PNG.
    #[arg(short, long)]
    out: PathBuf,
    #[arg(long, default_value_t = 900)]
    width: u32,
}

pub fn run(a: PlotArgs) -> Result<()> {
    let mut logs = Vec::new();
    for path in &a.run {
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
    let panels: Vec<_> = a
        .keys
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
        bail!("none of {:?} is in the logs", a.keys);
    }
    plot_panels(&panels, &a.out, a.width)?;
    println!("{}", a.out.display());
    Ok(())
}
