//! Streamed image generation (`"stream": true`, `"partial_images": N`) over real HTTP, the
//! event stream parsed as a browser's EventSource would: the events, their order and count,
//! the partial images (codes so far, the rest grey), the final image bit for bit the one the
//! same request gets without `stream`, and errors before the stream as plain JSON.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use common::{busy_route, metric, Client, Resp, TestServer};
use image::RgbImage;
use serde_json::{json, Value};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::SamplingConfig;

const PARTIAL: &str = "image_generation.partial_image";
const COMPLETED: &str = "image_generation.completed";
/// The grey of rows a partial image has no codes for yet.
const BLANK: [u8; 3] = [128, 128, 128];
/// The tiny model's grid: 4 rows of 4 codes, 32 px images.
const ROWS: u32 = 4;

/// One server-sent event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    data: Value,
}

/// An event stream parsed by the rules of the SSE spec: `field: value` lines (one optional
/// space after the colon), `data` lines joined by newlines, comment lines (`:`, the keep-alive)
/// skipped, an event dispatched at a blank line; CRLF, CR or LF line ends.
fn parse_sse(text: &str) -> Result<Vec<SseEvent>> {
    let mut events = Vec::new();
    let (mut event, mut data): (String, Vec<&str>) = (String::new(), Vec::new());
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in text.split('\n') {
        if line.is_empty() {
            if !data.is_empty() {
                let joined = data.join("\n");
                let data: Value = serde_json::from_str(&joined)
                    .with_context(|| format!("event data is not JSON: {joined}"))?;
                let name = if event.is_empty() { "message" } else { &event };
                events.push(SseEvent {
                    event: name.to_string(),
                    data,
                });
            }
            event.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "data" => data.push(value),
            _ => {} // id, retry: none sent
        }
    }
    ensure!(
        event.is_empty() && data.is_empty(),
        "the stream ends inside an event"
    );
    Ok(events)
}

/// A streamed response's events, after checking it is one.
fn events_of(r: &Resp) -> Result<Vec<SseEvent>> {
    ensure!(r.status == 200, "status {}: {}", r.status, r.text());
    let kind = r.header("content-type").unwrap_or("");
    ensure!(
        kind.starts_with("text/event-stream"),
        "content-type {kind:?}"
    );
    parse_sse(&r.text())
}

fn decode_png(b64: &Value) -> RgbImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().expect("b64_json is a string"))
        .expect("b64_json is base64");
    image::load_from_memory(&bytes)
        .expect("b64_json is an image")
        .to_rgb8()
}

/// The first pixel row that is grey to the end, in every pixel (the image's height if none).
fn blank_from(img: &RgbImage) -> u32 {
    let mut from = img.height();
    for y in (0..img.height()).rev() {
        if (0..img.width()).all(|x| img.get_pixel(x, y).0 == BLANK) {
            from = y;
        } else {
            break;
        }
    }
    from
}

async fn generate(c: &Client, body: &Value) -> Result<Resp> {
    c.post("/v1/images/generations", body).await
}

/// The b64_json of each image of a plain (not streamed) request.
async fn plain_images(c: &Client, body: &Value) -> Result<Vec<Value>> {
    let r = generate(c, body).await?;
    ensure!(r.status == 200, "{}", r.text());
    Ok(r.json()["data"]
        .as_array()
        .map(|d| d.iter().map(|i| i["b64_json"].clone()).collect())
        .unwrap_or_default())
}

fn with_stream(body: &Value, partial_images: u64) -> Value {
    let mut b = body.clone();
    b["stream"] = json!(true);
    b["partial_images"] = json!(partial_images);
    b
}

/// Checks one streamed response of `n` images with `partials` partial images each, against
/// the plain images `want`: partials first, in index order, each index for images 0..n; then
/// one completed event per image, equal to its plain image.
fn check_stream(events: &[SseEvent], n: usize, partials: usize, want: &[Value]) -> Result<()> {
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let mut expect = vec![PARTIAL; n * partials];
    expect.extend(vec![COMPLETED; n]);
    ensure!(names == expect, "events {names:?}, want {expect:?}");
    for (k, e) in events.iter().enumerate() {
        let d = &e.data;
        ensure!(d["type"] == e.event.as_str(), "type of {d}");
        ensure!(d["size"] == "32x32" && d["output_format"] == "png", "{d}");
        ensure!(d["created_at"].as_u64().is_some_and(|t| t > 0), "{d}");
        let image = d["image_index"].as_u64().context("image_index")? as usize;
        ensure!(image == k % n, "event {k}: image_index {image}");
        let img = decode_png(&d["b64_json"]);
        ensure!(img.dimensions() == (32, 32), "{:?}", img.dimensions());
        if e.event == PARTIAL {
            let index = d["partial_image_index"].as_u64().context("index")? as usize;
            ensure!(index == k / n, "event {k}: partial_image_index {index}");
            // partial i shows ceil((i + 1) R / (N + 1)) rows of codes, grey below
            let shown = ((index as u32 + 1) * ROWS).div_ceil(partials.min(4) as u32 + 1);
            ensure!(
                blank_from(&img) == shown * 32 / ROWS,
                "partial {index} of image {image}: grey from row {}, want {}",
                blank_from(&img),
                shown * 32 / ROWS
            );
        } else {
            ensure!(d.get("partial_image_index").is_none(), "{d}");
            ensure!(
                d["b64_json"] == want[image],
                "the streamed final image {image} differs from the plain one"
            );
            let usage = &d["usage"];
            ensure!(usage["output_tokens"] == 16, "usage {usage}");
            let input = usage["input_tokens"].as_u64().unwrap_or(0);
            ensure!(
                input > 0 && usage["total_tokens"] == input + 16,
                "usage {usage}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_generation_sends_partials_then_the_plain_image() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let body = json!({"prompt": "a red circle", "seed": 7, "guidance_scale": 2.0});
    let want = plain_images(c, &body).await?;

    // 3 partials: after rows 1, 2 and 3 of 4
    let events = events_of(&generate(c, &with_stream(&body, 3)).await?)?;
    check_stream(&events, 1, 3, &want)?;
    assert_eq!(events[0].data["seed"], 7);

    // none asked for (OpenAI's default): the final image alone
    let mut plain_stream = body.clone();
    plain_stream["stream"] = json!(true);
    let events = events_of(&generate(c, &plain_stream).await?)?;
    check_stream(&events, 1, 0, &want)?;

    // as many as rows, two images: the last partial of each is its whole grid, decoded as
    // the final image is
    let body2 = json!({"prompt": "a blue rectangle", "seed": 11, "n": 2});
    let want2 = plain_images(c, &body2).await?;
    let events = events_of(&generate(c, &with_stream(&body2, 4)).await?)?;
    check_stream(&events, 2, 4, &want2)?;
    for j in 0..2 {
        let last = decode_png(&events[6 + j].data["b64_json"]);
        assert_eq!(last, decode_png(&want2[j]), "image {j}: the full partial");
        let first = decode_png(&events[j].data["b64_json"]);
        assert_ne!(
            first, last,
            "image {j}: the first partial shows one row of four"
        );
    }
    assert_eq!(events[9].data["seed"], 12, "image 1 uses seed + 1");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_the_stream_are_plain_json() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let ok = json!({"prompt": "a red circle", "stream": true});
    let bad = |patch: Value| {
        let mut b = ok.clone();
        for (k, v) in patch.as_object().into_iter().flatten() {
            b[k] = v.clone();
        }
        b
    };
    // 0..=max(3, rows): 5 is past the tiny model's 4 rows
    let e = generate(c, &bad(json!({"partial_images": 5})))
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "partial_images");
    for body in [
        bad(json!({"partial_images": -1})),
        bad(json!({"partial_images": "two"})),
        bad(json!({"stream": "yes"})),
    ] {
        generate(c, &body).await?.expect_error(400);
    }
    let e = generate(c, &bad(json!({"response_format": "url"})))
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "response_format");
    let e = generate(c, &bad(json!({"prompt": "  "})))
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "prompt");
    generate(c, &bad(json!({"model": "dall-e-3"})))
        .await?
        .expect_error(404);
    // refused by the model itself (the prompt is past the context): still before the stream
    let e = generate(
        c,
        &bad(json!({"prompt": "a red circle ".repeat(40), "partial_images": 2})),
    )
    .await?
    .expect_error(400);
    assert!(
        e["message"].as_str().unwrap_or("").contains("context"),
        "{e}"
    );
    // without stream, partial_images is not looked at (as before)
    let r = generate(c, &json!({"prompt": "a red circle", "partial_images": 2})).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    // the API document has the fields, with this model's bound
    let spec = c.get("/openapi.json").await?.json();
    let props = &spec["components"]["schemas"]["ImageGenerationRequest"]["properties"];
    assert_eq!(props["stream"]["type"], "boolean");
    assert_eq!(props["partial_images"]["maximum"], 4);
    let stream = &spec["paths"]["/v1/images/generations"]["post"]["responses"]["200"]["content"];
    assert!(stream.get("text/event-stream").is_some(), "{stream}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_plain_requests_share_a_batch() -> Result<()> {
    let mut cfg = common::test_config();
    cfg.batch.max_batch = 16;
    cfg.batch.max_wait_ms = 50;
    let started = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start_with(cfg, busy_route(started.clone())).await?;
    let c = server.client.clone();
    let bodies = [
        json!({"prompt": "a green circle", "seed": 1}),
        json!({"prompt": "a red rectangle", "seed": 2, "n": 2}),
        json!({"prompt": "a blue circle", "seed": 4}),
    ];
    let mut want = Vec::new();
    for b in &bodies {
        want.push(plain_images(&c, b).await?);
    }
    let batches_before = metric(
        &c.get("/metrics").await?.text(),
        "vqrae_generation_batches_total",
    );

    // the worker is busy while a plain request and two streamed ones arrive: one forward
    let busy = {
        let c = c.clone();
        tokio::spawn(async move { c.post("/test/busy", &json!({})).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the worker is idle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = [
        bodies[0].clone(),
        with_stream(&bodies[1], 3),
        with_stream(&bodies[2], 1),
    ];
    let mut tasks = Vec::new();
    for b in sent {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { generate(&c, &b).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    busy.await??;
    let after = metric(
        &c.get("/metrics").await?.text(),
        "vqrae_generation_batches_total",
    );
    assert_eq!(after - batches_before, 1.0, "one shared forward");
    assert_eq!(out[0].json()["data"][0]["b64_json"], want[0][0]);
    check_stream(&events_of(&out[1])?, 2, 3, &want[1])?;
    check_stream(&events_of(&out[2])?, 1, 1, &want[2])?;
    server.stop().await
}

/// The sampler's callback sees every step's codes so far and changes nothing.
#[test]
fn the_code_callback_sees_each_step_and_changes_nothing() -> Result<()> {
    let model = common::load_model()?;
    let t2i = model.t2i();
    let requests = ImageRequest::grid(&["a red circle".to_string()], 3..5);
    let cfg = GenerationConfig {
        guidance: 2.0,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        },
    };
    let plain = t2i.sample_codes(&requests, &cfg)?;
    let mut seen: Vec<Vec<Vec<u32>>> = Vec::new();
    let with = t2i.sample_codes_with(&requests, &cfg, |codes| seen.push(codes.to_vec()))?;
    assert_eq!(with, plain);
    assert_eq!(seen.len(), model.cfg.image_tokens, "one call per step");
    for (step, codes) in seen.iter().enumerate() {
        assert_eq!(codes.len(), requests.len());
        for (c, full) in codes.iter().zip(&plain) {
            assert_eq!(c[..], full[..step + 1], "step {step}: the codes so far");
        }
    }
    Ok(())
}

#[test]
fn the_sse_parser_follows_the_spec() -> Result<()> {
    let text = ": keep-alive\n\nevent: a\ndata: {\"x\":\ndata: 1}\n\r\ndata:{\"y\":2}\r\n\r\n";
    let events = parse_sse(text)?;
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].event.as_str(), &events[0].data),
        ("a", &json!({"x": 1}))
    );
    assert_eq!(
        (events[1].event.as_str(), &events[1].data),
        ("message", &json!({"y": 2}))
    );
    assert!(parse_sse("data: {}").is_err(), "an unfinished event");
    Ok(())
}
