//! What a hostile or careless client meets: user text that tries to forge log lines, a flood
//! of 503s, idle, silent and trickling connections, shutdown while they hang on, and requests
//! hyper refuses before the router sees them (a 100 KB URI) answered in OpenAI's error shape.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use common::{busy_route, concurrent_generations, data_url, occupy_worker, toy_image, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vqrae_web::config::Timeouts;
use vqrae_web::ServeConfig;

// ---- the log, captured ----

/// Everything this test binary logs (one global subscriber: the server logs from the
/// runtime's threads), without colour codes, down to DEBUG for the server's own targets.
fn captured_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("vqrae_web=debug,tower_http=debug")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    let log = captured_log()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    String::from_utf8_lossy(&log).into_owned()
}

// ---- servers and raw connections ----

fn config_with(timeouts: Timeouts) -> ServeConfig {
    ServeConfig {
        timeouts,
        ..common::test_config()
    }
}

fn timeouts(header_read_secs: f64, idle_secs: f64, shutdown_secs: f64) -> Timeouts {
    Timeouts {
        header_read_secs,
        idle_secs,
        shutdown_secs,
    }
}

/// Reads one response (head and a `content-length` body) from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await??;
        if n == 0 {
            bail!(
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await??;
        if n == 0 {
            bail!("closed in the middle of a body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((status, head, body))
}

/// Waits until the server closes `s` (EOF or a reset), discarding what it sends; how long
/// that took. Fails after `limit`.
async fn wait_closed(s: &mut TcpStream, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut chunk)).await {
            Err(_) => bail!("the connection is still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A client that sends `head`, then one more byte of a never-ending header every 100 ms, for
/// up to 30 s or until the server closes the connection.
fn trickle(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    head: &'static [u8],
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if w.write_all(head).await.is_err() {
            return;
        }
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b"a").await.is_err() {
                return;
            }
        }
    })
}

async fn get_health(s: &mut TcpStream) -> Result<u16> {
    s.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await?;
    Ok(read_response(s).await?.0)
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_text_cannot_forge_log_lines() -> Result<()> {
    captured_log();
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let forged = "a red circle\n2026-01-01T00:00:00Z  INFO FORGED line\r\x1b[31mred\x07\0";

    // a prompt, a question and a model name: logged as the request is served or refused
    c.post("/v1/images/generations", &json!({"prompt": forged}))
        .await?;
    let ask = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&toy_image(0))}},
        {"type": "text", "text": forged}
    ]}], "max_tokens": 2});
    c.post("/v1/chat/completions", &ask).await?;
    c.post(
        "/v1/images/generations",
        &json!({"prompt": "a red circle", "model": forged}),
    )
    .await?
    .expect_error(404);
    let long_id = "x".repeat(4000);
    c.send(
        hyper::Method::GET,
        "/health",
        Vec::new(),
        &[("x-request-id", &long_id)],
    )
    .await?;
    server.stop().await?;

    let log = log_text();
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "a forged log line:\n{line}"
        );
        assert!(line.len() < 3000, "an uncut line of {} bytes", line.len());
    }
    for c in ['\x1b', '\x07', '\0', '\r'] {
        assert!(!log.contains(c), "{c:?} reached the log raw");
    }
    assert!(
        log.contains("\\n2026-01-01T00:00:00Z  INFO FORGED line\\r\\u{1b}[31mred\\u{7}\\u{0}"),
        "the user text is not in the log, escaped:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_a_warning_summarised_not_an_error_per_request() -> Result<()> {
    captured_log();
    let mut cfg = common::test_config();
    cfg.batch.queue_capacity = 1;
    let started = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start_with(cfg, busy_route(started.clone())).await?;
    let c = server.client.clone();

    let busy = occupy_worker(&c, &started).await;
    let answers = concurrent_generations(&c, 8).await?;
    let refused = answers.iter().filter(|r| r.status == 503).count();
    busy.await??;
    server.stop().await?;
    assert!(refused >= 6, "only {refused} refused");

    let log = log_text();
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("queue is full"))
        .collect();
    assert!(
        !summaries.is_empty(),
        "no line about the full queue:\n{log}"
    );
    assert!(
        summaries.iter().all(|l| l.contains(" WARN ")),
        "{summaries:#?}"
    );
    assert!(
        summaries.len() < refused,
        "{refused} refusals gave {} lines: not summarised",
        summaries.len()
    );
    for line in log.lines().filter(|l| l.contains(" ERROR ")) {
        assert!(!line.contains("503"), "a 503 logged as an error:\n{line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_are_closed_keep_alive_still_works() -> Result<()> {
    let server = TestServer::start(config_with(timeouts(0.5, 2.0, 5.0))).await?;

    // keep-alive: a second request on the connection, well within the idle timeout but
    // past the header-read one, is served; then the quiet connection is closed
    let mut s = TcpStream::connect(server.addr).await?;
    assert_eq!(get_health(&mut s).await?, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get_health(&mut s).await?, 200);
    let took = wait_closed(&mut s, Duration::from_secs(15)).await?;
    eprintln!("idle connection closed after {took:?} (idle timeout 2 s)");

    // a connection that never says anything: its first request is due within the
    // header-read timeout
    let mut silent = TcpStream::connect(server.addr).await?;
    let took = wait_closed(&mut silent, Duration::from_secs(15)).await?;
    eprintln!("silent connection closed after {took:?} (header-read timeout 0.5 s)");

    // the server serves on
    assert_eq!(server.client.get("/health").await?.status, 200);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_header_is_cut_at_the_header_read_timeout() -> Result<()> {
    let server = TestServer::start(config_with(timeouts(0.5, 60.0, 5.0))).await?;

    // on a fresh connection
    let (mut r, w) = TcpStream::connect(server.addr).await?.into_split();
    let writer = trickle(w, b"GET /health HTTP/1.1\r\nhost: test\r\nx-slow: ");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), r.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a trickling client held its connection 15 s");
    writer.abort();

    // on a kept-alive connection: the header clock starts at the next head's first byte,
    // however long the idle timeout
    let mut s = TcpStream::connect(server.addr).await?;
    assert_eq!(get_health(&mut s).await?, 200);
    let (mut r, w) = s.into_split();
    let writer = trickle(w, b"GET /health HTTP/1.1\r\nx-slow: ");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), r.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a trickling keep-alive client held its connection 15 s"
    );
    writer.abort();

    assert_eq!(server.client.get("/health").await?.status, 200);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_quiet_connections_and_keeps_its_deadline() -> Result<()> {
    // header-read and idle timeouts far away: only shutdown closes these connections
    let mut server = TestServer::start(config_with(timeouts(60.0, 60.0, 1.0))).await?;
    let addr: SocketAddr = server.addr;

    // a header trickler, a silent connection, and a request whose body never finishes
    let (mut header_r, header_w) = TcpStream::connect(addr).await?.into_split();
    let header_writer = trickle(header_w, b"GET /health HTTP/1.1\r\nx-slow: ");
    let mut silent = TcpStream::connect(addr).await?;
    let (mut body_r, body_w) = TcpStream::connect(addr).await?.into_split();
    let body_writer = trickle(
        body_w,
        b"POST /v1/images/generations HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
          content-length: 100000\r\n\r\n{\"prompt\": \"",
    );
    assert_eq!(server.client.get("/health").await?.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.trigger_shutdown();
    let stopping = Instant::now();
    server.stop().await?;
    eprintln!(
        "stopped {:?} after the shutdown signal (deadline 1 s)",
        stopping.elapsed()
    );
    for r in [&mut header_r, &mut body_r] {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut buf))
            .await
            .context("a connection outlived the server")?
            .ok();
    }
    wait_closed(&mut silent, Duration::from_secs(5)).await?;
    header_writer.abort();
    body_writer.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_stream_completes_during_graceful_shutdown() -> Result<()> {
    let started = Arc::new(AtomicUsize::new(0));
    let mut server =
        TestServer::start_with(common::test_config(), busy_route(started.clone())).await?;
    let c = server.client.clone();

    // the stream waits behind a busy worker while shutdown begins
    let busy = occupy_worker(&c, &started).await;
    let body = json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(&toy_image(2))}},
            {"type": "text", "text": "what color is the shape?"}
        ]}],
        "max_tokens": 4,
        "stream": true
    });
    let stream = {
        let c = c.clone();
        tokio::spawn(async move { c.post("/v1/chat/completions", &body).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h: Value = c.get("/health").await?.json();
        if h["queue_depth"].as_u64() == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the stream never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.trigger_shutdown();
    assert_eq!(busy.await??.status, 200);
    let r = stream.await??;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().trim_end().ends_with("data: [DONE]"),
        "{}",
        r.text()
    );
    server.stop().await
}

/// An unfinished head of exactly hyper's read buffer (8 KiB + 400 KiB): hyper answers 431 having
/// read every byte, so the answer is not lost to a reset (unread bytes at close send one).
fn headers_filling_hypers_buffer() -> Vec<u8> {
    const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;
    let mut head = b"GET / HTTP/1.1\r\nhost: test\r\nx-big: ".to_vec();
    head.resize(HYPER_MAX_BUF, b'b');
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_get_openai_shaped_errors() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let cases: [(Vec<u8>, u16, &str); 3] = [
        (
            format!(
                "GET /{} HTTP/1.1\r\nhost: test\r\n\r\n",
                "a".repeat(100_000)
            )
            .into_bytes(),
            414,
            "uri_too_long",
        ),
        (headers_filling_hypers_buffer(), 431, "headers_too_large"),
        (
            b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
    ];
    for (request, status, code) in cases {
        let mut s = TcpStream::connect(server.addr).await?;
        // the server may answer before it has read everything: ignore a reset while writing
        let _ = s.write_all(&request).await;
        let (got, head, body) = read_response(&mut s).await?;
        assert_eq!(got, status, "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: Value = serde_json::from_slice(&body)?;
        assert_eq!(v["error"]["code"], code, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].is_string() && v["error"].get("param").is_some());
    }
    // a long path the router does see is JSON as ever
    let r = server
        .client
        .get(&format!("/{}", "a".repeat(10_000)))
        .await?;
    r.expect_error(404);
    std::io::stderr().flush().ok();
    server.stop().await
}
