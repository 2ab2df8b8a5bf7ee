//! The real server on a free port with a tiny model: every endpoint, the error shapes,
//! streaming, auth, the queue limit, batching, panics and graceful shutdown.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use common::{
    busy_route, concurrent_generations, data_url, metric, occupy_worker, png, toy_image, Client,
    TestServer,
};
use hyper::Method;
use image::RgbImage;
use serde_json::{json, Value};
use vqrae_web::{ApiError, AppState};

fn decode_png(b64: &str) -> RgbImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("b64_json is base64");
    image::load_from_memory(&bytes)
        .expect("b64_json is an image")
        .to_rgb8()
}

/// Routes for tests: keep the model worker busy, panic in a handler, panic in the model.
/// `/test/busy` counts in `started` when the worker takes it up.
fn test_routes(started: Arc<AtomicUsize>) -> Router<AppState> {
    async fn handler_panic() -> &'static str {
        panic!("injected handler panic")
    }
    async fn model_panic(State(state): State<AppState>) -> Result<&'static str, ApiError> {
        state
            .call_model(|_| -> Result<(), ApiError> { panic!("injected model panic") })
            .await?;
        Ok("unreachable")
    }
    busy_route(started)
        .route("/test/panic", post(handler_panic))
        .route("/test/model-panic", post(model_panic))
}

/// Polls until `done()` or panics after 20 s.
async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `n` requests wait in the model's queue.
async fn wait_queued(client: &Client, n: u64) {
    wait_for(&format!("{n} requests queued"), async || {
        let h = client.get("/health").await;
        h.is_ok_and(|h| h.json()["queue_depth"].as_u64() == Some(n))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_generations_give_pngs_urls_and_repeatable_seeds() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;

    let r = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red circle", "n": 2, "seed": 7, "size": "32x32"}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["created"].as_u64().is_some());
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["revised_prompt"], "a red circle");
    assert_eq!(data[0]["seed"], 7);
    assert_eq!(data[1]["seed"], 8);
    let first = decode_png(data[0]["b64_json"].as_str().expect("b64_json"));
    assert_eq!(first.dimensions(), (32, 32));

    // the same seed (and settings) gives the same image, alone or with others
    let again = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red circle", "seed": 7}),
        )
        .await?
        .json();
    assert_eq!(again["data"][0]["b64_json"], data[0]["b64_json"]);

    // response_format url: served from the server's own store
    let r = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a blue rectangle", "response_format": "url", "guidance_scale": 1.0,
                    "temperature": 0.5, "top_k": 8, "top_p": 0.9, "negative_prompt": "a red circle",
                    "model": "tiny"}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["data"][0]["url"]
        .as_str()
        .expect("url")
        .to_string();
    let path = url
        .strip_prefix(&format!("http://{}", server.addr))
        .expect("a URL on this server");
    let img = c.get(path).await?;
    assert_eq!(img.status, 200);
    assert_eq!(img.header("content-type"), Some("image/png"));
    assert_eq!(
        image::load_from_memory(&img.body)?.to_rgb8().dimensions(),
        (32, 32)
    );
    c.get("/files/images/0123.png").await?.expect_error(404);

    refuses_bad_generation_requests(c).await?;
    server.stop().await
}

/// Bad values: 400 in OpenAI's shape naming the parameter; a prompt past the context; an
/// unknown model 404.
async fn refuses_bad_generation_requests(c: &Client) -> Result<()> {
    let bad = [
        (
            json!({"prompt": "a red circle", "size": "1024x1024"}),
            "size",
        ),
        (json!({"prompt": "a red circle", "n": 0}), "n"),
        (json!({"prompt": "a red circle", "n": 9}), "n"),
        (
            json!({"prompt": "a red circle", "temperature": -1.0}),
            "temperature",
        ),
        (
            json!({"prompt": "a red circle", "guidance_scale": -2}),
            "guidance_scale",
        ),
        (json!({"prompt": "a red circle", "top_p": 0}), "top_p"),
        (json!({"prompt": "a red circle", "top_k": 0}), "top_k"),
        (
            json!({"prompt": "a red circle", "response_format": "gif"}),
            "response_format",
        ),
        (json!({"prompt": "   "}), "prompt"),
        (json!({"prompt": "x".repeat(1001)}), "prompt"),
    ];
    for (body, param) in bad {
        let e = c
            .post("/v1/images/generations", &body)
            .await?
            .expect_error(400);
        assert_eq!(e["param"], param, "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    // numbers JSON cannot carry, negative integers, missing fields, broken JSON
    for raw in [
        r#"{"prompt": "a red circle", "temperature": NaN}"#,
        r#"{"prompt": "a red circle", "n": -1}"#,
        r#"{"prompt": "a red circle", "seed": -5}"#,
        r#"{"n": 1}"#,
        r#"{"prompt": "a red"#,
    ] {
        c.post_raw("/v1/images/generations", raw.as_bytes().to_vec())
            .await?
            .expect_error(400);
    }
    // a prompt past the model's context (in tokens, under the character limit)
    let long = "a red circle ".repeat(40);
    let e = c
        .post("/v1/images/generations", &json!({"prompt": long}))
        .await?
        .expect_error(400);
    assert!(
        e["message"].as_str().unwrap_or("").contains("context"),
        "{e}"
    );
    let e = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red circle", "model": "dall-e-3"}),
        )
        .await?
        .expect_error(404);
    assert_eq!(e["code"], "model_not_found");
    Ok(())
}

fn ask_body(image: &str, question: &str) -> Value {
    json!({
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "text", "text": question}
            ]}
        ],
        "max_tokens": 4
    })
}

/// `data:` payloads of a server-sent event stream.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| {
            let lines: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_answer_about_an_image_and_stream() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let image = data_url(&toy_image(1));

    let r = c
        .post(
            "/v1/chat/completions",
            &ask_body(&image, "what color is the shape?"),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny");
    assert!(v["id"].as_str().is_some_and(|s| s.starts_with("chatcmpl-")));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let answer = choice["message"]["content"].as_str().expect("content");
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap_or("")));
    let completion = v["usage"]["completion_tokens"].as_u64().expect("usage");
    assert!((1..=4).contains(&completion) || answer.is_empty(), "{v}");
    assert_eq!(
        v["usage"]["total_tokens"].as_u64(),
        Some(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) + completion)
    );

    // a plain string content for the question, the image in an earlier message
    let body = json!({"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "what color is the shape?"}
    ], "max_tokens": 4});
    let again = c.post("/v1/chat/completions", &body).await?;
    assert_eq!(again.status, 200, "{}", again.text());
    // greedy by default: the same answer
    assert_eq!(again.json()["choices"][0]["message"]["content"], answer);

    // streaming: chunks in OpenAI's format, their deltas add up to the answer, then [DONE]
    let mut body = ask_body(&image, "what color is the shape?");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = c.post("/v1/chat/completions", &body).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream")));
    assert!(
        r.frames >= 2,
        "a stream comes in pieces: {} frame(s)",
        r.frames
    );
    let events = sse_data(&r.text());
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    assert!(chunks.len() >= 3, "{chunks:?}");
    for ch in &chunks {
        assert_eq!(ch["object"], "chat.completion.chunk");
        assert_eq!(ch["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|ch| ch["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.trim(), answer);
    let finish = chunks
        .iter()
        .filter_map(|ch| ch["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish.len(), 1, "{chunks:?}");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], completion);

    let metrics = c.get("/metrics").await?.text();
    assert!(metric(&metrics, "vqrae_tokens_generated_total") >= 3.0 * completion as f64);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_refused_from_urls_files_bombs_and_big_bodies() -> Result<()> {
    let mut cfg = common::test_config();
    cfg.limits.max_image_pixels = 64 * 64;
    cfg.limits.max_body_bytes = 64 * 1024;
    let server = TestServer::start(cfg).await?;
    let c = &server.client;
    let q = "what color is the shape?";

    for url in [
        "https://example.com/cat.png",
        "http://127.0.0.1:1/x.png",
        "file:///etc/passwd",
    ] {
        let e = c
            .post("/v1/chat/completions", &ask_body(url, q))
            .await?
            .expect_error(400);
        assert_eq!(e["code"], "remote_url_not_allowed", "{url}: {e}");
        assert_eq!(e["param"], "messages[1].content[0].image_url.url");
    }
    // an image whose header claims more pixels than allowed is refused before decoding
    let big = data_url(&RgbImage::new(100, 100));
    let e = c
        .post("/v1/chat/completions", &ask_body(&big, q))
        .await?
        .expect_error(400);
    assert_eq!(e["code"], "image_too_large");
    let e = c
        .post("/v1/images/tokenize", &json!({"image": big}))
        .await?
        .expect_error(400);
    assert_eq!(e["code"], "image_too_large");
    // not an image; no image at all; two images in one message
    let e = c
        .post(
            "/v1/chat/completions",
            &ask_body("data:image/png;base64,aGVsbG8=", q),
        )
        .await?
        .expect_error(400);
    assert_eq!(e["code"], "invalid_image");
    c.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": q}]}),
    )
    .await?
    .expect_error(400);
    let img = data_url(&toy_image(0));
    c.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": img}},
            {"type": "image_url", "image_url": {"url": img}},
            {"type": "text", "text": q}]}]}),
    )
    .await?
    .expect_error(400);
    let e = c
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {}}]}]}),
        )
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "messages[0].content[0]");
    let mut body = ask_body(&img, q);
    body["max_tokens"] = json!(1000);
    c.post("/v1/chat/completions", &body)
        .await?
        .expect_error(400);
    body["max_tokens"] = json!(4);
    body["n"] = json!(2);
    c.post("/v1/chat/completions", &body)
        .await?
        .expect_error(400);
    body["n"] = json!(1);
    body["temperature"] = json!(-0.5);
    c.post("/v1/chat/completions", &body)
        .await?
        .expect_error(400);

    // a body past the limit: 413, in OpenAI's shape too
    let huge = json!({"prompt": "x".repeat(100 * 1024)});
    let e = c
        .post("/v1/images/generations", &huge)
        .await?
        .expect_error(413);
    assert_eq!(e["code"], "body_too_large");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_and_reconstruct_an_image() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let img = toy_image(4);

    let r = c
        .post("/v1/images/tokenize", &json!({"image": data_url(&img)}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["grid"], json!([4, 4]));
    assert_eq!(v["image_size"], 32);
    assert_eq!(v["features_shape"], json!([16, 32]));
    let codes = v["codes"].as_array().expect("codes");
    assert_eq!(codes.len(), 4);
    let size = v["codebook_size"].as_u64().expect("codebook_size");
    for row in codes {
        let row = row.as_array().expect("a row");
        assert_eq!(row.len(), 4);
        assert!(row.iter().all(|c| c.as_u64().is_some_and(|c| c < size)));
    }
    assert!(v.get("features").is_none());

    // bare base64, with the features
    let bare = vqrae_web::codec::base64(&png(&img));
    let f = c
        .post(
            "/v1/images/tokenize",
            &json!({"image": bare, "include_features": true}),
        )
        .await?
        .json();
    assert_eq!(
        f["codes"], v["codes"],
        "the same image gives the same codes"
    );
    let feats = f["features"].as_array().expect("features");
    assert_eq!(feats.len(), 16);
    assert_eq!(feats[0].as_array().map(Vec::len), Some(32));

    let r = c
        .post(
            "/v1/images/reconstructions",
            &json!({"image": data_url(&img)}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = decode_png(r.json()["data"][0]["b64_json"].as_str().expect("b64_json"));
    assert_eq!(out.dimensions(), (32, 32));
    let r = c
        .post(
            "/v1/images/reconstructions",
            &json!({"image": data_url(&img), "response_format": "url"}),
        )
        .await?;
    assert!(r.json()["data"][0]["url"].as_str().is_some());
    c.post(
        "/v1/images/reconstructions",
        &json!({"image": "https://example.com/a.png"}),
    )
    .await?
    .expect_error(400);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_metrics_openapi_page_and_unknown_routes() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;

    let v = c.get("/v1/models").await?.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(c.get("/v1/models/tiny").await?.json()["id"], "tiny");
    let e = c.get("/v1/models/gpt-4").await?.expect_error(404);
    assert_eq!(e["code"], "model_not_found");

    let h = c.get("/health").await?;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    // every response carries a request id; a client's own is kept
    assert!(h.header("x-request-id").is_some_and(|s| !s.is_empty()));
    let mine = c
        .send(
            Method::GET,
            "/health",
            Vec::new(),
            &[("x-request-id", "abc-123")],
        )
        .await?;
    assert_eq!(mine.header("x-request-id"), Some("abc-123"));

    let page = c.get("/").await?;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let html = page.text();
    assert!(html.contains("/v1/images/generations") && html.contains("/v1/chat/completions"));

    let spec = c.get("/openapi.json").await?.json();
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|s| s.starts_with("3.")));
    for path in [
        "/v1/images/generations",
        "/v1/chat/completions",
        "/v1/images/tokenize",
        "/v1/images/reconstructions",
        "/v1/models",
        "/health",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} missing");
    }

    let e = c.get("/v2/nothing").await?.expect_error(404);
    assert!(e["message"].as_str().unwrap_or("").contains("/v2/nothing"));
    let e = c
        .send(Method::GET, "/v1/images/generations", Vec::new(), &[])
        .await?
        .expect_error(405);
    assert_eq!(e["code"], "method_not_allowed");
    let e = c
        .send(Method::POST, "/v1/images/generations", b"{}".to_vec(), &[])
        .await?
        .expect_error(415);
    assert_eq!(e["type"], "invalid_request_error");

    let m = c.get("/metrics").await?;
    assert!(m
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    let text = m.text();
    for name in [
        "vqrae_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2",
        "vqrae_http_request_duration_seconds_bucket{route=\"/v1/models\",le=\"+Inf\"} 1",
        "vqrae_queue_depth 0",
        "vqrae_images_generated_total 0",
        "vqrae_tokens_generated_total 0",
        "vqrae_generation_batch_size_count 0",
        "route=\"unmatched\",status=\"404\"",
    ] {
        assert!(text.contains(name), "{name} not in\n{text}");
    }
    server.stop().await
}

/// The OpenAPI document describes what this server serves, no more and no less: every route it
/// lists answers (not 404 / 405), it lists every route the unified model serves, its `$ref`s
/// resolve; `/v1/models` says what the model can do, and the page reads that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_the_page_follow_the_unified_models_capabilities() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let m = c.get("/v1/models").await?.json()["data"][0].clone();
    assert_eq!(m["kind"], "unified");
    assert_eq!(
        m["capabilities"],
        json!({"chat": false, "image_questions": true, "image_generation": true,
               "image_tokenization": true})
    );
    assert_eq!(
        c.get("/v1/models/tiny").await?.json()["capabilities"],
        m["capabilities"]
    );

    // a stored image, for /files/images/{file}
    let r = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a blue rectangle", "response_format": "url"}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["data"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let file = url.rsplit('/').next().unwrap_or_default().to_string();
    let spec = c.get("/openapi.json").await?.json();
    let mut paths =
        common::call_every_documented_route(c, &spec, &[("id", "default"), ("file", &file)])
            .await?;
    paths.sort();
    assert_eq!(paths, common::EVERY_ROUTE);
    common::refs_resolve(&spec)?;
    let schemas = &spec["components"]["schemas"];
    assert!(
        schemas["ChatCompletion"]["properties"]["choices"]["items"]["properties"]["message"]
            ["properties"]
            .get("reasoning_content")
            .is_some()
    );
    assert_eq!(
        schemas["Model"]["properties"]["kind"]["enum"],
        json!(["unified", "llava"])
    );
    assert!(schemas["Model"]["properties"]["capabilities"]["properties"]
        .get("image_generation")
        .is_some());
    assert!(
        schemas["ChatCompletionRequest"]["properties"]["messages"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("required"))
    );

    // the page decides its panels from the capabilities
    let html = c.get("/").await?.text();
    for needle in [
        "m.capabilities",
        "caps.image_generation",
        "caps.chat",
        "id=\"gen-section\"",
    ] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_the_api() -> Result<()> {
    let mut cfg = common::test_config();
    cfg.api_key = Some("sekrit".into());
    let server = TestServer::start(cfg).await?;
    let anon = &server.client;
    let wrong = anon.with_key("nope");
    let right = anon.with_key("sekrit");
    let gen = json!({"prompt": "a red circle"});

    for c in [anon, &wrong] {
        let r = c.post("/v1/images/generations", &gen).await?;
        let e = r.expect_error(401);
        assert_eq!(e["code"], "invalid_api_key");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        c.get("/v1/models").await?.expect_error(401);
        c.get("/metrics").await?.expect_error(401);
    }
    assert_eq!(
        right.post("/v1/images/generations", &gen).await?.status,
        200
    );
    assert_eq!(right.get("/metrics").await?.status, 200);
    // open: the page, health and the API description
    for path in ["/", "/health", "/openapi.json"] {
        assert_eq!(anon.get(path).await?.status, 200, "{path}");
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() -> Result<()> {
    let mut cfg = common::test_config();
    cfg.batch.queue_capacity = 2;
    cfg.batch.retry_after_secs = 3;
    let started = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start_with(cfg, test_routes(started.clone())).await?;
    let c = server.client.clone();

    // the worker is busy, so requests wait in the queue; two fit, the rest are refused at once
    let busy = occupy_worker(&c, &started).await;
    let mut ok = 0;
    let mut refused = 0;
    for r in concurrent_generations(&c, 8).await? {
        match r.status {
            200 => ok += 1,
            503 => {
                let e = r.expect_error(503);
                assert_eq!(e["code"], "queue_full");
                assert_eq!(r.header("retry-after"), Some("3"));
                refused += 1;
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(busy.await??.status, 200);
    assert_eq!(ok, 2, "the queue holds two");
    assert_eq!(refused, 6);
    let metrics = c.get("/metrics").await?.text();
    assert_eq!(metric(&metrics, "vqrae_queue_rejected_total"), 6.0);
    assert_eq!(metric(&metrics, "vqrae_queue_depth"), 0.0);
    // streaming requests are refused the same way, before the stream starts
    let busy = occupy_worker(&c, &started).await;
    let mut body = ask_body(&data_url(&toy_image(0)), "what color is the shape?");
    body["stream"] = json!(true);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let body = body.clone();
        streams.push(tokio::spawn(async move {
            c.post("/v1/chat/completions", &body).await
        }));
    }
    let mut statuses = Vec::new();
    for s in streams {
        statuses.push(s.await??.status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 503, 503]);
    busy.await??;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generations_share_batched_forwards() -> Result<()> {
    let mut cfg = common::test_config();
    cfg.batch.max_batch = 16;
    cfg.batch.max_wait_ms = 50;
    let started = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start_with(cfg, test_routes(started.clone())).await?;
    let c = server.client.clone();

    // a reference image, alone in its forward
    let alone = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a green rectangle", "seed": 0}),
        )
        .await?
        .json();

    let before = c.get("/metrics").await?.text();
    let batches_before = metric(&before, "vqrae_generation_batches_total");
    // N requests arrive while the worker is busy, so they all wait together; one has a prompt
    // past the context, which must fail alone
    let busy = occupy_worker(&c, &started).await;
    let n = 6;
    let mut tasks = Vec::new();
    for i in 0..n {
        let c = c.clone();
        let prompt = if i == n - 1 {
            "a red circle ".repeat(40)
        } else {
            "a blue circle".to_string()
        };
        tasks.push(tokio::spawn(async move {
            c.post(
                "/v1/images/generations",
                &json!({"prompt": prompt, "seed": 3 + i as u64}),
            )
            .await
        }));
    }
    wait_queued(&c, n as u64).await;
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    busy.await??;
    for r in &results[..n - 1] {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    results[n - 1].expect_error(400);

    let after = c.get("/metrics").await?.text();
    let batches = metric(&after, "vqrae_generation_batches_total") - batches_before;
    // one shared forward (failing on the long prompt), then each request on its own: at
    // least one forward served more than one image
    let multi = after
        .lines()
        .find_map(|l| {
            l.strip_prefix("vqrae_generation_batch_size_bucket{le=\"1\"} ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .expect("batch size buckets");
    let count = metric(&after, "vqrae_generation_batch_size_count");
    assert!(
        count - multi >= 1.0,
        "no forward served more than one image:\n{after}"
    );
    assert_eq!(
        batches,
        1.0 + n as f64,
        "one shared forward, then each of the {n} requests on its own"
    );

    // without a bad prompt: N concurrent requests in fewer than N forwards
    let batches_before = metric(&after, "vqrae_generation_batches_total");
    let busy = occupy_worker(&c, &started).await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.post(
                "/v1/images/generations",
                &json!({"prompt": "a green rectangle", "seed": i}),
            )
            .await
        }));
    }
    wait_queued(&c, n as u64).await;
    let mut results = Vec::new();
    for t in tasks {
        let r = t.await??;
        assert_eq!(r.status, 200, "{}", r.text());
        results.push(r.json());
    }
    busy.await??;
    // a request's image does not depend on the batch it shared
    assert_eq!(
        results[0]["data"][0]["b64_json"],
        alone["data"][0]["b64_json"]
    );
    let end = c.get("/metrics").await?.text();
    let batches = metric(&end, "vqrae_generation_batches_total") - batches_before;
    assert!(
        batches < n as f64,
        "{n} concurrent requests took {batches} forwards"
    );
    assert_eq!(batches, 1.0, "they all waited together: one forward");
    assert_eq!(
        metric(&end, "vqrae_images_generated_total"),
        1.0 + (n - 1) as f64 + n as f64
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_give_500_and_the_server_keeps_serving() -> Result<()> {
    let started = Arc::new(AtomicUsize::new(0));
    let server =
        TestServer::start_with(common::test_config(), test_routes(started.clone())).await?;
    let c = &server.client;

    let e = c.post("/test/panic", &json!({})).await?.expect_error(500);
    assert_eq!(e["type"], "server_error");
    assert!(!e["message"].as_str().unwrap_or("").contains("injected"));
    assert_eq!(c.get("/health").await?.status, 200);

    // a panic on the model worker: that request fails, the worker lives on
    c.post("/test/model-panic", &json!({}))
        .await?
        .expect_error(500);
    let r = c
        .post("/v1/images/generations", &json!({"prompt": "a red circle"}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = c.get("/metrics").await?.text();
    assert_eq!(metric(&metrics, "vqrae_panics_total"), 2.0);
    assert!(metrics.contains("route=\"/test/panic\",status=\"500\"} 1"));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() -> Result<()> {
    let started = Arc::new(AtomicUsize::new(0));
    let mut server =
        TestServer::start_with(common::test_config(), test_routes(started.clone())).await?;
    let c = server.client.clone();
    let addr = server.addr;

    let busy = occupy_worker(&c, &started).await;
    let queued = {
        let c = c.clone();
        tokio::spawn(async move {
            c.post("/v1/images/generations", &json!({"prompt": "a red circle"}))
                .await
        })
    };
    wait_queued(&c, 1).await;
    server.trigger_shutdown();
    assert_eq!(busy.await??.status, 200);
    let r = queued.await??;
    assert_eq!(r.status, 200, "{}", r.text());
    server.stop().await?;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting connections after shutdown"
    );
    Ok(())
}
