//! `vqrae serve`: the HTTP API (crate vqrae-web) on one model, unified or LLaVA.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use candle_core::Device;
use clap::Args;
use vqrae_web::config::{OodPolicy, ServeConfig, ServeOverrides, API_KEY_ENV};
use vqrae_web::ServedModel;

use super::args::WeightFormArgs;
use super::default_dtype;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config (see configs/serve.toml); the flags below override its fields. Without it,
    /// every field has its default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model directory, unified.json or llava.json [default: models/vqrae-easyvqa].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where a LLaVA model's base GGUF and encoder are installed [default: .data/models].
    #[arg(long)]
    models_root: Option<PathBuf>,
    #[command(flatten)]
    form: WeightFormArgs,
    /// The id clients name the model by [default: the model directory's name].
    #[arg(long)]
    model_id: Option<String>,
    /// Address to bind [default: 127.0.0.1, this machine only; 0.0.0.0 serves a network].
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port [default: 8080; 0 picks a free one].
    #[arg(long)]
    port: Option<u16>,
    /// Turns on bearer-token auth: /v1/* and /metrics then need
    /// `Authorization: Bearer <key>` (401 without it).
    #[arg(long, env = API_KEY_ENV, hide_env_values = true)]
    api_key: Option<String>,
    /// Base of `response_format: "url"` image URLs, e.g. https://vqrae.example.org
    /// [default: http://<the request's Host>].
    #[arg(long)]
    public_url: Option<String>,
    /// Most images in one batched generation forward [default: 16].
    #[arg(long)]
    max_batch: Option<usize>,
    /// How long a generation batch waits for more requests, ms [default: 10].
    #[arg(long)]
    max_wait_ms: Option<u64>,
    /// Most requests waiting for the model; past it 503 with Retry-After [default: 64].
    #[arg(long)]
    queue_capacity: Option<usize>,
    /// Largest request body, bytes [default: 8 MiB].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Largest uploaded image, pixels (width x height) [default: 4096 x 4096].
    #[arg(long)]
    max_image_pixels: Option<u64>,
    /// Seconds a request's headers may take from their first byte (from the connection's
    /// opening, for its first request); past it the connection closes [default: 10].
    #[arg(long)]
    header_read_timeout: Option<f64>,
    /// Seconds a keep-alive connection with nothing in flight stays open [default: 60].
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Seconds the requests in flight get to finish after SIGTERM or Ctrl-C; connections
    /// still open then are closed and the server exits [default: 30].
    #[arg(long)]
    shutdown_timeout: Option<f64>,
    /// Prompts and questions outside the model card: `refuse` (400) or `warn` [default: refuse].
    #[arg(long)]
    ood: Option<OodPolicy>,
}

fn config(a: ServeArgs) -> Result<ServeConfig> {
    let cfg = match &a.config {
        Some(path) => ServeConfig::from_toml_file(path)?,
        None => ServeConfig::default(),
    };
    let overrides = ServeOverrides {
        model: a.model,
        models_root: a.models_root,
        quantized: a.form.choice(),
        model_id: a.model_id,
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        public_url: a.public_url,
        max_batch: a.max_batch,
        max_wait_ms: a.max_wait_ms,
        queue_capacity: a.queue_capacity,
        max_body_bytes: a.max_body_bytes,
        max_image_pixels: a.max_image_pixels,
        header_read_secs: a.header_read_timeout,
        idle_secs: a.idle_timeout,
        shutdown_secs: a.shutdown_timeout,
        ood: a.ood,
    };
    Ok(cfg.with_overrides(overrides)?)
}

pub fn run(a: ServeArgs, device: &Device) -> Result<()> {
    let cfg = config(a)?;
    // the first line names the file that failed, not only the directory
    let model = ServedModel::for_config(&cfg, device, default_dtype(device)).map_err(|e| {
        anyhow!(
            "loading the model from {}: {e} (a directory written by `vqrae train-lm` or a LLaVA \
             run; pass --model to serve another)",
            cfg.model.display()
        )
    })?;
    vqrae_web::run(cfg, model)?;
    Ok(())
}
