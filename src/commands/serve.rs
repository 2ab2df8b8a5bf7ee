//! `vqrae serve`: the HTTP API (crate vqrae-web) on one model, unified or LLaVA.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use candle_core::Device;
use clap::Args;
use vqrae_web::config::{OodPolicy, ServeConfig, API_KEY_ENV};
use vqrae_web::ServedModel;

use crate::commands::default_dtype;

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
    /// Run a LLaVA model's GGUF base quantized [default: as its llava.json says].
    #[arg(long, conflicts_with = "f32")]
    quantized: bool,
    /// Run a LLaVA model's GGUF base dequantized to f32 (adapters merged).
    #[arg(long)]
    f32: bool,
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
    let mut cfg = match &a.config {
        Some(path) => ServeConfig::from_toml_file(path)?,
        None => ServeConfig::default(),
    };
    if let Some(v) = a.model {
        cfg.model = v;
    }
    if let Some(v) = a.model_id {
        cfg.model_id = v;
    }
    cfg.models_root = a.models_root.unwrap_or(cfg.models_root);
    cfg.quantized = (a.quantized || a.f32)
        .then_some(a.quantized)
        .or(cfg.quantized);
    if let Some(v) = a.host {
        cfg.host = v;
    }
    if let Some(v) = a.port {
        cfg.port = v;
    }
    if let Some(v) = a.api_key {
        cfg.api_key = Some(v);
    }
    if let Some(v) = a.public_url {
        cfg.public_url = v;
    }
    if let Some(v) = a.max_batch {
        cfg.batch.max_batch = v;
    }
    if let Some(v) = a.max_wait_ms {
        cfg.batch.max_wait_ms = v;
    }
    if let Some(v) = a.queue_capacity {
        cfg.batch.queue_capacity = v;
    }
    if let Some(v) = a.max_body_bytes {
        cfg.limits.max_body_bytes = v;
    }
    if let Some(v) = a.max_image_pixels {
        cfg.limits.max_image_pixels = v;
    }
    if let Some(v) = a.header_read_timeout {
        cfg.timeouts.header_read_secs = v;
    }
    if let Some(v) = a.idle_timeout {
        cfg.timeouts.idle_secs = v;
    }
    if let Some(v) = a.shutdown_timeout {
        cfg.timeouts.shutdown_secs = v;
    }
    if let Some(v) = a.ood {
        cfg.ood = v;
    }
    cfg.validate()?;
    Ok(cfg)
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
