//! `vqrae bench-serve`: a load benchmark of a running `vqrae serve`. For each path (text to
//! image, a question about an image) and each concurrency, `concurrency` clients on keep-alive
//! connections send `--requests` requests between them as fast as they are answered; the report
//! gives requests/s and latency percentiles, and for generation the mean batch the server ran
//! (from its /metrics). With `--baseline` (the JSON of an earlier run, e.g. the same server with
//! batching off) it adds the throughput gain over that run.
//!
//! The client is plain HTTP/1.1 on std threads (one per connection): at these request rates
//! (milliseconds to seconds each) it costs nothing next to the model.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchPath {
    /// POST /v1/images/generations, one image per request (n = 1), a new seed each.
    Generate,
    /// POST /v1/chat/completions with an image and a question (not streamed).
    Chat,
}

impl BenchPath {
    fn route(self) -> &'static str {
        match self {
            Self::Generate => "/v1/images/generations",
            Self::Chat => "/v1/chat/completions",
        }
    }
}

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

/// One run: one path at one concurrency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub path: BenchPath,
    pub concurrency: usize,
    pub requests: usize,
    pub ok: usize,
    pub errors: usize,
    pub wall_s: f64,
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Generation: images per batched forward the server ran during this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_batch: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub model: String,
    pub unix_time: u64,
    pub requests: usize,
    pub results: Vec<RunResult>,
}

// ---- a minimal HTTP/1.1 client ----

#[derive(Clone)]
struct Target {
    /// host:port, for connecting and the Host header.
    authority: String,
    /// Path prefix of the base URL, without the trailing slash.
    prefix: String,
    key: Option<String>,
    timeout: Duration,
}

impl Target {
    fn parse(url: &str, key: Option<String>, timeout: Duration) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow!("--url {url:?}: only plain http:// URLs (run it next to the server)")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        ensure!(!authority.is_empty(), "--url {url:?} names no host");
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            prefix: prefix.to_string(),
            key,
            timeout,
        })
    }
}

/// One keep-alive connection (reopened when the server closes it).
struct Conn {
    target: Target,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(target: Target) -> Self {
        Self {
            target,
            stream: None,
        }
    }

    /// `(status, body)`; retries once on a fresh connection if a reused one was closed.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, body) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, body)
            }
            Err(e) => Err(e),
        }
    }

    fn try_request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.target.authority)
                .with_context(|| format!("connecting to {}", self.target.authority))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.target.timeout))?;
            self.stream = Some(BufReader::new(s));
        }
        let Some(reader) = self.stream.as_mut() else {
            bail!("no connection");
        };
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nAccept: */*\r\n",
            self.target.prefix,
            self.target.authority,
            body.len()
        );
        if let Some(k) = &self.target.key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        head.push_str("\r\n");
        let s = reader.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;

        let mut line = String::new();
        ensure!(reader.read_line(&mut line)? > 0, "connection closed");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            ensure!(
                reader.read_line(&mut line)? > 0,
                "connection closed in the headers"
            );
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                match name.as_str() {
                    "content-length" => length = value.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
                if size == 0 {
                    // trailers until the blank line
                    loop {
                        line.clear();
                        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = out.len();
                out.resize(start + size, 0);
                reader.read_exact(&mut out[start..])?;
                line.clear();
                reader.read_line(&mut line)?;
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            reader.read_exact(&mut out)?;
        } else {
            reader.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok((status, out))
    }
}

// ---- the benchmark ----

/// A 64 px easy-VQA-like image: a red disc on white.
fn default_image() -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as i32 - 30, y as i32 - 34);
        Rgb(if dx * dx + dy * dy < 18 * 18 {
            [220, 30, 30]
        } else {
            [255, 255, 255]
        })
    })
}

fn image_data_url(path: Option<&PathBuf>) -> Result<String> {
    let png = match path {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut out = Vec::new();
            default_image()
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)?;
            out
        }
    };
    let mime = match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "image/png",
    };
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    ))
}

/// The request body of the `i`-th request of a path.
struct Bodies {
    prompt: String,
    image: String,
    question: String,
    max_tokens: Option<usize>,
}

impl Bodies {
    fn body(&self, path: BenchPath, i: usize) -> Vec<u8> {
        let v = match path {
            BenchPath::Generate => json!({
                "prompt": self.prompt,
                "n": 1,
                "seed": 1000 + i as u64,
            }),
            BenchPath::Chat => {
                let mut v = json!({"messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": self.image}},
                    {"type": "text", "text": self.question},
                ]}]});
                if let Some(n) = self.max_tokens {
                    v["max_tokens"] = json!(n);
                }
                v
            }
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// A response the benchmark counts as served.
fn check(path: BenchPath, status: u16, body: &[u8]) -> Result<(), String> {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status != 200 {
        return Err(format!("{status}: {}", text()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| format!("not JSON: {}", text()))?;
    let ok = match path {
        BenchPath::Generate => v["data"][0]["b64_json"].is_string(),
        BenchPath::Chat => v["choices"][0]["message"]["content"].is_string(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected body: {}", text()))
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counters of the server's /metrics: (generation batches, images generated).
fn batch_counters(target: &Target) -> Option<(f64, f64)> {
    let (status, body) = Conn::new(target.clone())
        .request("GET", "/metrics", b"")
        .ok()?;
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

fn run_level(
    target: &Target,
    bodies: &Bodies,
    path: BenchPath,
    concurrency: usize,
    requests: usize,
    seed_base: usize,
) -> Result<RunResult> {
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(requests));
    let errors = Mutex::new(Vec::<String>::new());
    let before = batch_counters(target);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                let mut conn = Conn::new(target.clone());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let body = bodies.body(path, seed_base + i);
                    let t = Instant::now();
                    let r = conn.request("POST", path.route(), &body);
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    let verdict = match r {
                        Ok((status, resp)) => check(path, status, &resp),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    match verdict {
                        Ok(()) => latencies.lock().unwrap_or_else(|p| p.into_inner()).push(ms),
                        Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(e),
                    }
                }
            });
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    let after = batch_counters(target);
    let mut lat = latencies.into_inner().unwrap_or_else(|p| p.into_inner());
    lat.sort_by(f64::total_cmp);
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let mean_batch = match (path, before, after) {
        (BenchPath::Generate, Some((b0, i0)), Some((b1, i1))) if b1 > b0 => {
            Some((i1 - i0) / (b1 - b0))
        }
        _ => None,
    };
    let ok = lat.len();
    Ok(RunResult {
        path,
        concurrency,
        requests,
        ok,
        errors: errors.len(),
        wall_s,
        rps: ok as f64 / wall_s,
        mean_ms: lat.iter().sum::<f64>() / ok.max(1) as f64,
        p50_ms: percentile(&lat, 50.0),
        p90_ms: percentile(&lat, 90.0),
        p99_ms: percentile(&lat, 99.0),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        mean_batch,
        first_error: errors.first().cloned(),
    })
}

fn table(report: &Report, baseline: Option<&Report>) -> String {
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
        let path = match r.path {
            BenchPath::Generate => "generate",
            BenchPath::Chat => "chat",
        };
        out.push_str(&format!(
            "| {path} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {} |",
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

pub fn run(a: BenchServeArgs) -> Result<()> {
    ensure!(
        !a.concurrency.is_empty() && a.concurrency.iter().all(|&c| c >= 1),
        "--concurrency needs positive numbers"
    );
    ensure!(a.requests >= 1, "--requests must be at least 1");
    let baseline: Option<Report> = match &a.baseline {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{} is not a bench-serve report", p.display()))?,
        ),
        None => None,
    };
    let target = Target::parse(&a.url, a.api_key.clone(), Duration::from_secs(a.timeout_s))?;
    let up_by = Instant::now() + Duration::from_secs(a.wait_s);
    let (status, body) = loop {
        match Conn::new(target.clone()).request("GET", "/v1/models", b"") {
            Ok(r) => break r,
            Err(_) if Instant::now() < up_by => std::thread::sleep(Duration::from_millis(200)),
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
    let model = models["data"][0]["id"].as_str().unwrap_or("").to_string();
    let bodies = Bodies {
        prompt: a.prompt.clone(),
        image: image_data_url(a.image.as_ref())?,
        question: a.question.clone(),
        max_tokens: a.max_tokens,
    };
    eprintln!(
        "bench-serve: {} (model {model}), {} requests per run",
        a.url, a.requests
    );

    let mut results = Vec::new();
    let mut seed = 0;
    for &path in &a.paths {
        let mut conn = Conn::new(target.clone());
        for i in 0..a.warmup {
            let (status, body) = conn.request("POST", path.route(), &bodies.body(path, i))?;
            check(path, status, &body).map_err(|e| anyhow!("warm-up {path:?} request: {e}"))?;
        }
        for &c in &a.concurrency {
            let n = a.requests.max(c);
            let r = run_level(&target, &bodies, path, c, n, seed)?;
            seed += n;
            eprintln!(
                "  {path:?} x{c}: {:.2} req/s, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, {} errors{}",
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
    let report = Report {
        label: a.label.clone(),
        url: a.url.clone(),
        model,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        requests: a.requests,
        results,
    };
    if !report.label.is_empty() {
        println!("{}\n", report.label);
    }
    print!("{}", table(&report, baseline.as_ref()));
    if let Some(p) = &a.json {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let errors: usize = report.results.iter().map(|r| r.errors).sum();
    ensure!(errors == 0, "{errors} request(s) failed (see above)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_percentiles() {
        let t = Target::parse("http://127.0.0.1:8080/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1:8080", "")
        );
        let t = Target::parse("http://example.org/api", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("example.org:80", "/api")
        );
        assert!(Target::parse("https://x", None, Duration::from_secs(1)).is_err());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 90.0), 90.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }
}
