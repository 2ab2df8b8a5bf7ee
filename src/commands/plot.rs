//! `vqrae plot`: a run's (or several runs') training curves to PNG (the procedure is
//! [`vqrae_train::run_curves::plot_runs`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

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
    vqrae_train::run_curves::plot_runs(&a.run, &a.keys, &a.out, a.width)?;
    println!("{}", a.out.display());
    Ok(())
}
