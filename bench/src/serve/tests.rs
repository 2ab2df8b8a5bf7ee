//! `bench-serve` against a tiny in-process HTTP server (axum on 127.0.0.1:0) that answers
//! like `vqrae serve` without a model, so the client, the load loop and the report are tested
//! end to end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};

use super::client::{Client, Target};
use super::report::{percentile, table, Report};
use super::{run, BenchServeArgs};

/// What the fake server saw and how it answers.
#[derive(Default)]
struct Fake {
    /// Chat requests fail with 500 when set.
    chat_fails: bool,
    connections: AtomicUsize,
    images: AtomicUsize,
    seeds: Mutex<Vec<u64>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Bearer k")
}

async fn models(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "no key").into_response();
    }
    Json(json!({"data": [{"id": "fake"}]})).into_response()
}

async fn generate(State(fake): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    assert_eq!(body["prompt"], "a red circle");
    assert_eq!(body["n"], 1);
    let Some(seed) = body["seed"].as_u64() else {
        return (StatusCode::BAD_REQUEST, "no seed").into_response();
    };
    fake.seeds.lock().unwrap().push(seed);
    fake.images.fetch_add(1, Ordering::SeqCst);
    Json(json!({"data": [{"b64_json": "AAAA"}]})).into_response()
}

async fn chat(State(fake): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    let content = &body["messages"][0]["content"];
    let url = content[0]["image_url"]["url"].as_str().unwrap_or("");
    assert!(url.starts_with("data:image/png;base64,"), "{url}");
    assert_eq!(content[1]["text"], "what color is the shape?");
    assert_eq!(body["max_tokens"], 3);
    if fake.chat_fails {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    Json(json!({"choices": [{"message": {"content": "red"}}]})).into_response()
}

/// Two images per batch, as a batching server would report them.
async fn metrics(State(fake): State<Arc<Fake>>) -> String {
    let images = fake.images.load(Ordering::SeqCst);
    format!(
        "# TYPE vqrae_generation_batches_total counter\n\
         vqrae_generation_batches_total {}\nvqrae_images_generated_total {images}\n",
        images.div_ceil(2)
    )
}

/// Serves `fake` on a free port of 127.0.0.1 until the runtime ends.
async fn start(fake: Arc<Fake>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::clone(&fake);
    let listener = listener.tap_io(move |_| {
        seen.connections.fetch_add(1, Ordering::SeqCst);
    });
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/images/generations", post(generate))
        .route("/v1/chat/completions", post(chat))
        .route("/metrics", get(metrics))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/close",
            get(|| async { ([(header::CONNECTION, "close")], "bye") }),
        )
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchServeArgs,
}

fn args(list: &[&str]) -> BenchServeArgs {
    let argv = std::iter::once("bench-serve").chain(list.iter().copied());
    Cli::try_parse_from(argv).unwrap().args
}

fn read_report(path: &std::path::Path) -> Report {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn urls_and_percentiles() {
    let t = Target::parse("http://127.0.0.1:8080/", None, Duration::from_secs(1)).unwrap();
    assert_eq!(
        (t.authority.as_str(), t.prefix.as_str()),
        ("127.0.0.1:8080", "")
    );
    assert_eq!(
        t.uri("/v1/models").unwrap().to_string(),
        "http://127.0.0.1:8080/v1/models"
    );
    let t = Target::parse("http://example.org/api", None, Duration::from_secs(1)).unwrap();
    assert_eq!(
        (t.authority.as_str(), t.prefix.as_str()),
        ("example.org:80", "/api")
    );
    assert_eq!(
        t.uri("/metrics").unwrap().to_string(),
        "http://example.org:80/api/metrics"
    );
    assert!(Target::parse("https://x", None, Duration::from_secs(1)).is_err());
    assert!(Target::parse("http:///x", None, Duration::from_secs(1)).is_err());
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), 50.0);
    assert_eq!(percentile(&v, 90.0), 90.0);
    assert_eq!(percentile(&v, 99.0), 99.0);
    assert_eq!(percentile(&[3.0], 99.0), 3.0);
}

#[test]
fn loads_a_server_over_reused_connections_and_writes_the_report() {
    let server = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(Fake::default());
    let addr = server.block_on(start(Arc::clone(&fake)));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sub/report.json");
    let url = format!("http://{addr}/");
    run(args(&[
        "--url",
        &url,
        "--concurrency",
        "1,2",
        "--requests",
        "4",
        "--max-tokens",
        "3",
        "--api-key",
        "k",
        "--label",
        "test",
        "--json",
        json.to_str().unwrap(),
    ]))
    .unwrap();

    let report = read_report(&json);
    assert_eq!(
        (report.model.as_str(), report.label.as_str()),
        ("fake", "test")
    );
    assert_eq!((report.url.as_str(), report.requests), (url.as_str(), 4));
    let rows: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.path.name(), r.concurrency, r.ok, r.errors, r.mean_batch))
        .collect();
    assert_eq!(
        rows,
        [
            ("generate", 1, 4, 0, Some(2.0)),
            ("generate", 2, 4, 0, Some(2.0)),
            ("chat", 1, 4, 0, None),
            ("chat", 2, 4, 0, None),
        ]
    );
    for r in &report.results {
        assert!(
            r.rps > 0.0 && r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms,
            "{r:?}"
        );
        assert!(r.first_error.is_none());
    }
    // the warm-up's seeds, then a new seed for every measured request
    let mut seeds = fake.seeds.lock().unwrap().clone();
    seeds.sort_unstable();
    let mut expected = vec![1000, 1001];
    expected.extend(1000..1008);
    expected.sort_unstable();
    assert_eq!(seeds, expected);
    // keep-alive: 2 clients at most at once, over 30-odd requests
    let connections = fake.connections.load(Ordering::SeqCst);
    assert!((1..=3).contains(&connections), "{connections} connections");

    let with_baseline = table(&report, Some(&report));
    assert!(
        with_baseline.contains("| req/s baseline | gain |"),
        "{with_baseline}"
    );
    assert!(with_baseline.contains("| 1.00x |"), "{with_baseline}");
}

#[test]
fn failed_requests_are_reported_and_fail_the_run() {
    let server = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(Fake {
        chat_fails: true,
        ..Fake::default()
    });
    let addr = server.block_on(start(fake));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let err = run(args(&[
        "--url",
        &format!("http://{addr}"),
        "--paths",
        "chat",
        "--warmup",
        "0",
        "--concurrency",
        "2",
        "--requests",
        "3",
        "--max-tokens",
        "3",
        "--api-key",
        "k",
        "--json",
        json.to_str().unwrap(),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("3 request(s) failed"), "{err:#}");
    // NaN percentiles (nothing served) are written as null
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r = &report["results"][0];
    assert_eq!(
        (&r["ok"], &r["errors"], &r["p50_ms"]),
        (&json!(0), &json!(3), &Value::Null)
    );
    assert_eq!(r["first_error"], "500: boom");

    // no key: the server's refusal is the error
    let err = run(args(&["--url", &format!("http://{addr}")])).unwrap_err();
    assert!(format!("{err:#}").contains("401: no key"), "{err:#}");
}

#[tokio::test]
async fn client_times_out_follows_closed_connections_and_names_unreachable_servers() {
    let fake = Arc::new(Fake::default());
    let addr = start(Arc::clone(&fake)).await;
    let url = format!("http://{addr}");
    let client = Client::new(Target::parse(&url, None, Duration::from_millis(200)).unwrap());

    let err = client.get("/slow").await.unwrap_err();
    assert!(
        err.to_string().contains("no answer within 0.2 s"),
        "{err:#}"
    );

    let before = fake.connections.load(Ordering::SeqCst);
    for _ in 0..3 {
        let (status, body) = client.get("/close").await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"bye"[..]));
    }
    // the server closed each one: a new connection per request
    assert_eq!(fake.connections.load(Ordering::SeqCst) - before, 3);

    let (status, _) = client.get("/v1/models").await.unwrap();
    assert_eq!(status, 401);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let client = Client::new(
        Target::parse(&format!("http://{gone}"), None, Duration::from_secs(5)).unwrap(),
    );
    let err = client.get("/v1/models").await.unwrap_err();
    assert!(err.to_string().contains(&gone.to_string()), "{err:#}");
}
