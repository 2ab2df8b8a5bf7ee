//! Test support: the shared tiny unified model (`vqrae-test-support`), a real server on a free
//! port, and a small HTTP client on hyper.

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use candle_core::{DType, Device};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use image::RgbImage;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vqrae_unified::model::UnifiedModel;
use vqrae_web::{ApiError, AppState, ServeConfig, ServeError, ServedModel, Server};

pub use vqrae_test_support::toy_image;

/// The tiny model's directory, built once per test binary under cargo's test scratch folder
/// (earlier runs' folders are removed).
pub fn model_dir() -> &'static Path {
    vqrae_test_support::shared_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), "vqrae-web-tiny-")
}

pub fn load_model() -> Result<UnifiedModel> {
    Ok(UnifiedModel::load(model_dir(), &Device::Cpu, DType::F32)?)
}

/// A config for tests: the tiny model, a free port on 127.0.0.1.
pub fn test_config() -> ServeConfig {
    let mut cfg = ServeConfig {
        model: model_dir().to_path_buf(),
        port: 0,
        ..ServeConfig::default()
    };
    cfg.model_id = "tiny".into();
    cfg
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    pub async fn start(cfg: ServeConfig) -> Result<Self> {
        Self::start_with(cfg, Router::new()).await
    }

    pub async fn start_with(cfg: ServeConfig, extra: Router<AppState>) -> Result<Self> {
        let model = tokio::task::spawn_blocking(load_model).await??;
        Self::start_served(cfg, model.into(), extra).await
    }

    /// Serves `model` (unified or LLaVA) with `cfg` and `extra` routes.
    pub async fn start_served(
        cfg: ServeConfig,
        model: ServedModel,
        extra: Router<AppState>,
    ) -> Result<Self> {
        let server = Server::bind_with(cfg, model, extra).await?;
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            client: Client::new(addr),
            shutdown: Some(tx),
            task,
        })
    }

    /// Asks for a graceful shutdown (as SIGTERM does) without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down gracefully and waits for the server to stop.
    pub async fn stop(mut self) -> Result<()> {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("the server did not stop within 60 s")???;
        Ok(())
    }
}

/// A response, body read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// How many body frames arrived (a stream sends many).
    pub frames: usize,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts OpenAI's error shape and the status; returns the `error` object.
    pub fn expect_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].is_string(), "no message: {v}");
        assert!(e["type"].is_string(), "no type: {v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        e
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    pub key: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            key: None,
        }
    }

    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<Resp> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let resp = tokio::time::timeout(Duration::from_secs(120), self.inner.request(req))
            .await
            .map_err(|_| anyhow!("{path}: no response within 120 s"))??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                frames += 1;
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Resp {
            status,
            headers,
            body: bytes,
            frames,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send(Method::GET, path, Vec::new(), &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Resp> {
        self.post_raw(path, serde_json::to_vec(body)?).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Resp> {
        self.send(
            Method::POST,
            path,
            body,
            &[("content-type", "application/json")],
        )
        .await
    }
}

/// PNG bytes of an image.
pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out
}

pub fn data_url(img: &RgbImage) -> String {
    format!(
        "data:image/png;base64,{}",
        vqrae_web::codec::base64(&png(img))
    )
}

/// The value of an unlabelled metric in a Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not in:\n{text}"))
}

/// Every route the server documents when its model does everything (draws, tokenizes, chats,
/// answers), sorted: what `call_every_documented_route` must reach for such a model.
pub const EVERY_ROUTE: [&str; 11] = [
    "/",
    "/files/images/{file}",
    "/health",
    "/metrics",
    "/openapi.json",
    "/v1/chat/completions",
    "/v1/images/generations",
    "/v1/images/reconstructions",
    "/v1/images/tokenize",
    "/v1/models",
    "/v1/models/{id}",
];

/// The model `cfg` names, loaded as `vqrae serve` loads it (f32 on the CPU).
pub fn load_served(cfg: &vqrae_web::ServeConfig) -> anyhow::Result<vqrae_web::ServedModel> {
    Ok(vqrae_web::ServedModel::load(
        &cfg.model,
        &cfg.models_root,
        cfg.quantized,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )?)
}

/// `/test/busy` holds the model worker (either kind of model) for 800 ms and counts in
/// `started` when it begins: tests use it to fill the queue, or to make requests sent meanwhile
/// share one batch.
pub fn busy_route(started: Arc<AtomicUsize>) -> Router<AppState> {
    let busy = move |State(state): State<AppState>| {
        let started = started.clone();
        async move {
            state
                .call_served_model(move |_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(800));
                    Ok(())
                })
                .await?;
            Ok::<_, ApiError>("done")
        }
    };
    Router::new().route("/test/busy", post(busy))
}

/// Starts `/test/busy` and waits (at most 20 s) until the model worker has taken it up, and so
/// holds nothing else for 800 ms.
pub async fn occupy_worker(client: &Client, started: &AtomicUsize) -> JoinHandle<Result<Resp>> {
    let before = started.load(Ordering::SeqCst);
    let c = client.clone();
    let busy = tokio::spawn(async move { c.post("/test/busy", &serde_json::json!({})).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while started.load(Ordering::SeqCst) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never took up /test/busy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    busy
}

/// `n` generation requests ("a green circle", seeds 0..n) sent at once; their answers in order.
pub async fn concurrent_generations(client: &Client, n: u64) -> Result<Vec<Resp>> {
    let tasks: Vec<_> = (0..n)
        .map(|seed| {
            let c = client.clone();
            tokio::spawn(async move {
                c.post(
                    "/v1/images/generations",
                    &serde_json::json!({"prompt": "a green circle", "seed": seed}),
                )
                .await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Calls every operation an OpenAPI document lists, as a client reading it would: path
/// parameters from `params` (name -> value), a POST with an empty JSON object (a 4xx for a
/// missing field is an answer). Each must answer something other than 404 or 405: the server
/// serves every route its document promises. Returns the paths.
pub async fn call_every_documented_route(
    c: &Client,
    spec: &Value,
    params: &[(&str, &str)],
) -> Result<Vec<String>> {
    let paths = spec["paths"]
        .as_object()
        .ok_or_else(|| anyhow!("the document has no paths: {spec}"))?;
    for (path, ops) in paths {
        let mut url = path.clone();
        for (name, value) in params {
            url = url.replace(&format!("{{{name}}}"), value);
        }
        anyhow::ensure!(!url.contains('{'), "{path}: no value for its parameter");
        let ops = ops
            .as_object()
            .ok_or_else(|| anyhow!("{path}: not an object"))?;
        for op in ops.keys() {
            let r = match op.as_str() {
                "get" => c.get(&url).await?,
                "post" => c.post(&url, &serde_json::json!({})).await?,
                other => anyhow::bail!("{path}: an operation this helper does not call: {other}"),
            };
            anyhow::ensure!(
                r.status != 404 && r.status != 405,
                "{op} {url} is documented but answers {}: {}",
                r.status,
                r.text()
            );
        }
    }
    Ok(paths.keys().cloned().collect())
}

/// Every `$ref` in an OpenAPI document names a schema it defines, and every schema it defines
/// is referred to (a route left out takes its bodies with it).
pub fn refs_resolve(spec: &Value) -> Result<()> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(spec, &mut refs);
    let schemas = spec["components"]["schemas"]
        .as_object()
        .ok_or_else(|| anyhow!("no components.schemas"))?;
    for r in &refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| anyhow!("a $ref outside the schemas: {r}"))?;
        anyhow::ensure!(schemas.contains_key(name), "{r} is not defined");
    }
    for name in schemas.keys() {
        let r = format!("#/components/schemas/{name}");
        anyhow::ensure!(refs.contains(&r), "the schema {name} is never referred to");
    }
    Ok(())
}
