//! The model card through the API, on the shipped model (which has one) and the tiny test model
//! (which has none): `/v1/models` serves it and the defaults it sets; prompts and questions
//! outside it are refused with a 400 that says what the model knows, or answered with a warning
//! under `ood = "warn"`; yes/no answers come as a conclusion with its reasoning, in JSON and in
//! server-sent events; `"model": "default"` names the served model.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use candle_core::{DType, Device};
use common::{data_url, Client, Resp, TestServer};
use image::{Rgb, RgbImage};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vqrae_unified::model::UnifiedModel;
use vqrae_web::config::OodPolicy;
use vqrae_web::{ServeConfig, ServeError, Server};

fn shipped_dir() -> PathBuf {
    vqrae_test_support::repo().join("models/vqrae-easyvqa")
}

/// A server on the shipped model (with its card).
struct Shipped {
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Shipped {
    async fn start(ood: OodPolicy) -> Result<Self> {
        let cfg = ServeConfig {
            model: shipped_dir(),
            port: 0,
            ood,
            ..ServeConfig::default()
        };
        let dir = cfg.model.clone();
        let model =
            tokio::task::spawn_blocking(move || UnifiedModel::load(&dir, &Device::Cpu, DType::F32))
                .await??;
        let server = Server::bind_with(cfg, model, Router::new()).await?;
        let addr: SocketAddr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            client: Client::new(addr),
            stop: Some(tx),
            task,
        })
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("the server did not stop within 60 s")???;
        Ok(())
    }
}

/// A 64x64 easy-VQA-like image: one shape of an exact palette colour on white.
fn red_circle() -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as f32 - 30.5, y as f32 - 33.5);
        if dx * dx + dy * dy <= 18.0 * 18.0 {
            Rgb([255, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    })
}

/// A shipped sample image (an easy-VQA test image).
fn example(name: &str) -> Result<RgbImage> {
    Ok(vqrae_data::image_io::load_rgb(
        &vqrae_test_support::repo().join("examples").join(name),
    )?)
}

/// Noise, 64x64, from a fixed seed (xorshift).
fn noise() -> RgbImage {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    RgbImage::from_fn(64, 64, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [r, g, b, ..] = state.to_le_bytes();
        Rgb([r, g, b])
    })
}

/// A greyscale photo-like image: smooth waves of several frequencies, 200x150.
fn grey_photo() -> RgbImage {
    RgbImage::from_fn(200, 150, |x, y| {
        let (x, y) = (x as f64, y as f64);
        let v = 120.0
            + 70.0 * (x / 17.0).sin() * (y / 23.0).cos()
            + 40.0 * ((x + 2.0 * y) / 6.0).sin()
            + 20.0 * ((x * y).sqrt() / 3.0).cos();
        let l = v.clamp(0.0, 255.0) as u8;
        Rgb([l, l, l])
    })
}

fn ask(image: &RgbImage, question: &str) -> Value {
    json!({"model": "default", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(image)}},
        {"type": "text", "text": question}
    ]}]})
}

/// `data:` payloads of a server-sent event stream, parsed (`[DONE]` left out).
fn sse_chunks(r: &Resp) -> Vec<Value> {
    r.text()
        .split("\n\n")
        .flat_map(|event| event.lines().filter_map(|l| l.strip_prefix("data:")))
        .map(str::trim)
        .filter(|d| *d != "[DONE]" && !d.is_empty())
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect()
}

fn message(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_models_serves_the_card_and_its_defaults() -> Result<()> {
    let server = Shipped::start(OodPolicy::Refuse).await?;
    let c = &server.client;
    let list = c.get("/v1/models").await?.json();
    let m = &list["data"][0];
    assert_eq!(m["id"], "vqrae-easyvqa");
    assert_eq!(m["defaults"]["guidance_scale"], 2.0);
    assert_eq!(m["defaults"]["source"], "card");
    assert_eq!(m["out_of_distribution"], "refuse");
    let card = &m["card"];
    assert_eq!(card["image_size"], 64);
    assert_eq!(card["captions"]["colors"][0], "red");
    assert!(card["captions"]["examples"]
        .as_array()
        .is_some_and(|e| e.iter().any(|p| p == "a blue rectangle")));
    let kinds: Vec<&str> = card["questions"]
        .as_array()
        .expect("question kinds")
        .iter()
        .filter_map(|q| q["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["color", "shape", "yes/no"]);
    assert_eq!(
        card["defaults"]["guidance"]["report"],
        "docs/results/lm/t2i-fresh-seeds.json"
    );
    // the one model, by its id and by the alias; another name stays a 404
    assert_eq!(c.get("/v1/models/vqrae-easyvqa").await?.json(), *m);
    assert_eq!(c.get("/v1/models/default").await?.json(), *m);
    c.get("/v1/models/gpt-4o").await?.expect_error(404);
    // the OpenAPI document's default is the card's
    let spec = c.get("/openapi.json").await?.json();
    let g =
        &spec["components"]["schemas"]["ImageGenerationRequest"]["properties"]["guidance_scale"];
    assert_eq!(g["default"], 2.0);
    server.stop().await?;

    // the tiny model has no card: the built-in default, nothing checked
    let tiny = TestServer::start(common::test_config()).await?;
    let m = tiny.client.get("/v1/models").await?.json()["data"][0].clone();
    assert_eq!(m["card"], Value::Null);
    assert_eq!(m["defaults"]["source"], "built-in");
    assert_eq!(
        m["defaults"]["guidance_scale"],
        vqrae_generate::sample::DEFAULT_GUIDANCE
    );
    let r = tiny
        .client
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a cat", "seed": 1, "model": "default"}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("warnings").is_none());
    tiny.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_distribution_input_is_refused_with_what_the_model_knows() -> Result<()> {
    let server = Shipped::start(OodPolicy::Refuse).await?;
    let c = &server.client;
    for prompt in ["a cat", "a purple hexagon", "hello", "a blue rectangle."] {
        let r = c
            .post("/v1/images/generations", &json!({"prompt": prompt}))
            .await?;
        let e = r.expect_error(400);
        assert_eq!(e["param"], "prompt", "{e}");
        assert_eq!(e["code"], "out_of_distribution", "{e}");
        let msg = e["message"].as_str().unwrap_or("");
        for needle in ["red", "triangle", "a blue rectangle", "/v1/models"] {
            assert!(msg.contains(needle), "{prompt:?}: {msg}");
        }
    }
    let img = red_circle();
    for q in [
        "how many shapes are there?",
        "hello",
        "what is the purple shape?",
    ] {
        let e = c
            .post("/v1/chat/completions", &ask(&img, q))
            .await?
            .expect_error(400);
        assert_eq!(e["param"], "messages", "{e}");
        assert_eq!(e["code"], "out_of_distribution", "{e}");
        let msg = e["message"].as_str().unwrap_or("");
        assert!(msg.contains("what color is the shape?"), "{msg}");
    }
    // inside the card: answered, no warning
    let r = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red circle left of a blue square", "seed": 3}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("warnings").is_none() && r.header("x-vqrae-warning").is_none());
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ood_warn_it_is_answered_with_a_warning() -> Result<()> {
    let server = Shipped::start(OodPolicy::Warn).await?;
    let c = &server.client;
    let r = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a cat", "seed": 1}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vqrae-warning"), Some("out_of_distribution"));
    let v = r.json();
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
    let w = v["warnings"][0].as_str().expect("a warning");
    assert!(w.contains("\"cat\"") && w.contains("rectangle"), "{w}");

    let img = red_circle();
    let r = c
        .post(
            "/v1/chat/completions",
            &ask(&img, "how many shapes are there?"),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vqrae-warning"), Some("out_of_distribution"));
    assert!(r.json()["warnings"][0]
        .as_str()
        .is_some_and(|w| w.contains("how many shapes")));
    // streamed: the header, and the warnings in the first chunk
    let mut body = ask(&img, "hello");
    body["stream"] = json!(true);
    let r = c.post("/v1/chat/completions", &body).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vqrae-warning"), Some("out_of_distribution"));
    let chunks = sse_chunks(&r);
    assert!(chunks[0]["warnings"][0].is_string(), "{:?}", chunks[0]);
    // in distribution: nothing
    let r = c
        .post(
            "/v1/chat/completions",
            &ask(&img, "what color is the shape?"),
        )
        .await?;
    assert!(r.json().get("warnings").is_none() && r.header("x-vqrae-warning").is_none());
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_no_answers_are_a_conclusion_with_its_reasoning() -> Result<()> {
    let server = Shipped::start(OodPolicy::Refuse).await?;
    let c = &server.client;
    let img = red_circle();
    let m = message(
        &c.post("/v1/chat/completions", &ask(&img, "is there a blue shape?"))
            .await?,
    );
    assert_eq!(m["content"], "no", "{m}");
    assert_eq!(m["reasoning_content"], "red, so no", "{m}");
    let m = message(
        &c.post(
            "/v1/chat/completions",
            &ask(&img, "does the image contain a circle?"),
        )
        .await?,
    );
    assert_eq!(m["content"], "yes", "{m}");
    assert_eq!(m["reasoning_content"], "circle, so yes", "{m}");
    // other questions: the answer is the content, no reasoning
    let m = message(
        &c.post(
            "/v1/chat/completions",
            &ask(&img, "what color is the shape?"),
        )
        .await?,
    );
    assert_eq!(m["content"], "red", "{m}");
    assert!(m.get("reasoning_content").is_none(), "{m}");

    // streamed: the reasoning's pieces first, then the conclusion as content
    let mut body = ask(&img, "is there a blue shape?");
    body["stream"] = json!(true);
    let r = c.post("/v1/chat/completions", &body).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let deltas: Vec<Value> = sse_chunks(&r)
        .iter()
        .map(|ch| ch["choices"][0]["delta"].clone())
        .collect();
    let reasoning: String = deltas
        .iter()
        .filter_map(|d| d["reasoning_content"].as_str())
        .collect();
    let content: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(reasoning, "red, so no", "{deltas:?}");
    assert_eq!(content, "no", "{deltas:?}");
    let last_reasoning = deltas
        .iter()
        .rposition(|d| d.get("reasoning_content").is_some());
    let first_content = deltas
        .iter()
        .position(|d| d["content"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(last_reasoning < first_content, "{deltas:?}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_names_the_served_model_on_every_route() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let img = data_url(&common::toy_image(0));
    for model in ["default", "tiny"] {
        let r = c
            .post(
                "/v1/images/generations",
                &json!({"prompt": "a red circle", "model": model, "seed": 1}),
            )
            .await?;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let mut body = ask(&common::toy_image(0), "what color is the shape?");
        body["model"] = json!(model);
        body["max_tokens"] = json!(2);
        let r = c.post("/v1/chat/completions", &body).await?;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert_eq!(r.json()["model"], "tiny", "the served id, not the alias");
        for path in ["/v1/images/tokenize", "/v1/images/reconstructions"] {
            let r = c.post(path, &json!({"image": img, "model": model})).await?;
            assert_eq!(r.status, 200, "{path} {model}: {}", r.text());
        }
    }
    for path in ["/v1/images/tokenize", "/v1/images/reconstructions"] {
        let e = c
            .post(path, &json!({"image": img, "model": "Default"}))
            .await?
            .expect_error(404);
        assert_eq!(e["code"], "model_not_found");
    }
    let e = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red circle", "model": "gpt-image-1"}),
        )
        .await?
        .expect_error(404);
    assert_eq!(e["param"], "model");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_the_tokenizer_cannot_represent_are_refused_or_warned() -> Result<()> {
    let server = Shipped::start(OodPolicy::Refuse).await?;
    let c = &server.client;
    for (what, img) in [("noise", noise()), ("grey photo", grey_photo())] {
        for stream in [false, true] {
            let mut body = ask(&img, "what color is the shape?");
            body["stream"] = json!(stream);
            let e = c
                .post("/v1/chat/completions", &body)
                .await?
                .expect_error(400);
            assert_eq!(e["param"], "messages", "{what}: {e}");
            assert_eq!(e["code"], "out_of_distribution", "{what}: {e}");
            let msg = e["message"].as_str().unwrap_or("");
            for needle in ["does not look like", "dB PSNR", "20.5 dB", "64x64"] {
                assert!(msg.contains(needle), "{what}: {msg}");
            }
        }
    }
    // a real easy-VQA test image is answered, without a warning
    let r = c
        .post(
            "/v1/chat/completions",
            &ask(&example("red-triangle.png")?, "what color is the shape?"),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("warnings").is_none() && r.header("x-vqrae-warning").is_none());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "red");
    server.stop().await?;

    let server = Shipped::start(OodPolicy::Warn).await?;
    let c = &server.client;
    let r = c
        .post(
            "/v1/chat/completions",
            &ask(&noise(), "what color is the shape?"),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vqrae-warning"), Some("out_of_distribution"));
    let v = r.json();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    let w = v["warnings"][0].as_str().expect("a warning");
    assert!(
        w.contains("answered anyway") && w.contains("does not look like"),
        "{w}"
    );
    // an out-of-distribution question about one: both warnings
    let r = c
        .post("/v1/chat/completions", &ask(&grey_photo(), "hello"))
        .await?;
    assert_eq!(r.json()["warnings"].as_array().map(Vec::len), Some(2));
    // streamed: the header, and the warning in the first chunk
    let mut body = ask(&noise(), "what color is the shape?");
    body["stream"] = json!(true);
    let r = c.post("/v1/chat/completions", &body).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vqrae-warning"), Some("out_of_distribution"));
    let chunks = sse_chunks(&r);
    assert!(
        chunks[0]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("does not look like")),
        "{:?}",
        chunks[0]
    );
    assert_eq!(
        chunks
            .last()
            .map(|c| c["choices"][0]["finish_reason"].is_string()),
        Some(true)
    );
    server.stop().await
}
