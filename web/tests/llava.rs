//! Serving a LLaVA model directory (`llava.json`): a tiny one the tests write
//! (`vqrae_test_support::tiny_llava_model`: a GGUF LM with a ChatML template, the tiny DINOv2
//! fixture, adapters and projector) served in-process. Text-only chat, image questions,
//! streaming, batching, the context limit, the routes such a model refuses, and both weight
//! forms.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::{ensure, Result};
use candle_core::{DType, Device};
use common::{data_url, toy_image, Client, Resp, TestServer};
use serde_json::{json, Value};
use vqrae_test_support::{shared_tiny_llava, TinyLlava};
use vqrae_unified::llava::model::LlavaModel;
use vqrae_web::{ServeConfig, ServedModel};

fn tiny() -> &'static TinyLlava {
    shared_tiny_llava(Path::new(env!("CARGO_TARGET_TMPDIR")), "vqrae-web-llava-")
}

fn config() -> ServeConfig {
    let t = tiny();
    ServeConfig {
        model: t.dir.clone(),
        models_root: t.models_root.clone(),
        model_id: "tiny-llava".into(),
        port: 0,
        ..ServeConfig::default()
    }
}

async fn start(cfg: ServeConfig) -> Result<(TestServer, Arc<AtomicUsize>)> {
    let started = Arc::new(AtomicUsize::new(0));
    let model = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || common::load_served(&cfg)).await??
    };
    let server = TestServer::start_served(cfg, model, common::busy_route(started.clone())).await?;
    Ok((server, started))
}

async fn chat(c: &Client, body: Value) -> Result<Resp> {
    c.post("/v1/chat/completions", &body).await
}

fn content(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn image_question(question: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&toy_image(1))}},
        {"type": "text", "text": question},
    ]})
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(r: &Resp) -> Vec<String> {
    r.text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

/// The streamed chunks' `delta.content`s joined, after checking the stream's frame: a role
/// chunk first, a finish reason, `[DONE]` last.
fn streamed_text(r: &Resp) -> Result<(String, Vec<Value>)> {
    assert_eq!(r.status, 200, "{}", r.text());
    let data = sse_data(r);
    ensure!(
        data.last().map(String::as_str) == Some("[DONE]"),
        "{data:?}"
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d))
        .collect::<Result<_, _>>()?;
    ensure!(chunks[0]["choices"][0]["delta"]["role"] == "assistant");
    ensure!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "tiny-llava"));
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<String>();
    ensure!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
    Ok((text, chunks))
}

#[tokio::test]
async fn text_and_image_chat_are_answered_streamed_or_not() -> Result<()> {
    let (server, _) = start(config()).await?;
    let c = &server.client;
    // a conversation: system turn, history, the question; no image
    let conversation = json!([
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
        {"role": "user", "content": "what is a circle?"},
    ]);
    let r = chat(c, json!({"messages": conversation, "max_tokens": 8})).await?;
    let text = content(&r);
    assert!(!text.is_empty(), "{}", r.text());
    let body = r.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "tiny-llava");
    assert!(body["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    // the tiny model never draws an end of turn: the budget ends it
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 8);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 20);
    // the same, streamed: the pieces add up to the answer
    let r = chat(
        c,
        json!({"messages": conversation, "max_tokens": 8, "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await?;
    let (streamed, chunks) = streamed_text(&r)?;
    assert_eq!(streamed, text);
    let usage = chunks.iter().find(|c| c.get("usage").is_some());
    assert_eq!(
        usage.map(|u| u["usage"]["completion_tokens"].clone()),
        Some(json!(8))
    );

    // a question about an image: a sentence
    let r = chat(
        c,
        json!({"messages": [image_question("what colour is the shape?")]}),
    )
    .await?;
    let answer = content(&r);
    assert!(!answer.is_empty(), "{}", r.text());
    let body = r.json();
    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(prompt_tokens > tiny().image_tokens as u64, "{body}");
    let r = chat(
        c,
        json!({"messages": [image_question("what colour is the shape?")], "stream": true}),
    )
    .await?;
    let (streamed, _) = streamed_text(&r)?;
    assert_eq!(streamed.trim(), answer);
    server.stop().await
}

#[tokio::test]
async fn limits_and_errors_keep_their_shape() -> Result<()> {
    let (server, _) = start(config()).await?;
    let c = &server.client;
    // past the context (256 tokens; 900 characters are under the character limit): a 400
    // naming the context, for text and for an image question
    let long = "a b ".repeat(225);
    let r = chat(c, json!({"messages": [{"role": "user", "content": long}]})).await?;
    let e = r.expect_error(400);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("context") && msg.contains("256"), "{msg}");
    let r = chat(c, json!({"messages": [image_question(&long)]})).await?;
    let e = r.expect_error(400);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("context"),
        "{e}"
    );
    // the server's own limits, as for the unified model
    let r = chat(
        c,
        json!({"messages": [{"role": "user", "content": "x".repeat(1001)}]}),
    )
    .await?;
    assert_eq!(r.expect_error(400)["code"], "string_above_max_length");
    let r = chat(
        c,
        json!({"messages": [{"role": "system", "content": "hi"}]}),
    )
    .await?;
    assert!(r.expect_error(400)["message"]
        .as_str()
        .unwrap_or_default()
        .contains("no user message"));
    let r = chat(c, json!({"messages": [{"role": "robot", "content": "hi"}]})).await?;
    assert_eq!(r.expect_error(400)["param"], "messages[0].role");
    let r = chat(
        c,
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    )
    .await?;
    assert_eq!(r.expect_error(400)["param"], "max_tokens");
    let r = chat(
        c,
        json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await?;
    assert_eq!(r.expect_error(404)["code"], "model_not_found");
    let two = json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&toy_image(0))}},
        {"type": "image_url", "image_url": {"url": data_url(&toy_image(1))}},
        {"type": "text", "text": "which?"},
    ]});
    assert_eq!(chat(c, json!({"messages": [two]})).await?.status, 400);
    // streamed, an error before the answer starts is a plain JSON error
    let r = chat(
        c,
        json!({"messages": [{"role": "user", "content": long}], "stream": true}),
    )
    .await?;
    r.expect_error(400);
    server.stop().await
}

#[tokio::test]
async fn routes_of_a_drawing_model_are_refused_and_the_model_says_what_it_is() -> Result<()> {
    let (server, _) = start(config()).await?;
    let c = &server.client;
    let r = c
        .post("/v1/images/generations", &json!({"prompt": "a red circle"}))
        .await?;
    let e = r.expect_error(400);
    assert_eq!(e["code"], "unsupported_by_model");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not draw"),
        "{e}"
    );
    let r = c
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red circle", "stream": true}),
        )
        .await?;
    assert_eq!(r.expect_error(400)["code"], "unsupported_by_model");
    let img = data_url(&toy_image(0));
    for route in ["/v1/images/tokenize", "/v1/images/reconstructions"] {
        let r = c.post(route, &json!({"image": img})).await?;
        assert_eq!(
            r.expect_error(400)["code"],
            "unsupported_by_model",
            "{route}"
        );
    }
    let m = c.get("/v1/models").await?.json();
    let m = &m["data"][0];
    assert_eq!(m["id"], "tiny-llava");
    assert_eq!(m["kind"], "llava");
    assert_eq!(m["weights"], "f32");
    assert_eq!(m["context_length"], 256);
    assert_eq!(m["image_tokens"], 16);
    assert_eq!(m["capabilities"]["chat"], true);
    assert_eq!(m["capabilities"]["image_generation"], false);
    assert_eq!(m["base"]["path"], "tiny/base.gguf");
    assert_eq!(
        c.get("/v1/models/tiny-llava").await?.json()["kind"],
        "llava"
    );
    let h = c.get("/health").await?.json();
    assert_eq!(
        (h["status"].as_str(), h["kind"].as_str()),
        (Some("ok"), Some("llava"))
    );
    server.stop().await
}

/// The OpenAPI document of a LLaVA server describes what it serves: every route it lists
/// answers, the drawing and tokenizing routes (400 here) and their bodies are absent, and the
/// chat schema says text-only chat is allowed, with the limits this model enforces.
#[tokio::test]
async fn openapi_and_the_page_follow_what_a_llava_model_serves() -> Result<()> {
    let (server, _) = start(config()).await?;
    let c = &server.client;
    let m = c.get("/v1/models").await?.json()["data"][0].clone();
    assert_eq!(
        m["capabilities"],
        json!({"chat": true, "image_questions": true, "image_generation": false,
               "image_tokenization": false})
    );
    let spec = c.get("/openapi.json").await?.json();
    let mut paths = common::call_every_documented_route(c, &spec, &[("id", "default")]).await?;
    paths.sort();
    assert_eq!(
        paths,
        [
            "/",
            "/health",
            "/metrics",
            "/openapi.json",
            "/v1/chat/completions",
            "/v1/models",
            "/v1/models/{id}",
        ]
    );
    // the routes left out are the ones this model refuses
    for route in [
        "/v1/images/generations",
        "/v1/images/tokenize",
        "/v1/images/reconstructions",
    ] {
        assert!(spec["paths"].get(route).is_none(), "{route}");
        let r = c.post(route, &json!({})).await?;
        assert_eq!(r.status, 400, "{route}: {}", r.text());
    }
    common::refs_resolve(&spec)?;
    let schemas = &spec["components"]["schemas"];
    for gone in [
        "ImageGenerationRequest",
        "ImagesResponse",
        "TokenizeRequest",
        "Warnings",
    ] {
        assert!(schemas.get(gone).is_none(), "{gone} is still described");
    }
    assert!(spec["info"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("does not draw")));
    let messages = &schemas["ChatCompletionRequest"]["properties"]["messages"];
    let about = messages["description"].as_str().unwrap_or_default();
    assert!(
        about.contains("Without an image") && about.contains("256 tokens"),
        "{about}"
    );
    assert_eq!(messages["maxItems"], 64);
    let parts = &schemas["ChatMessage"]["properties"]["content"]["oneOf"];
    assert_eq!(parts[0]["maxLength"], 1000);
    let url = parts[1]["items"]["oneOf"][1]["properties"]["image_url"]["properties"]["url"]
        ["description"]
        .as_str()
        .unwrap_or_default();
    let side = m["resolution"].as_u64().unwrap_or(0);
    assert!(url.contains(&format!("squashed to {side}x{side}")), "{url}");
    let message = &schemas["ChatCompletion"]["properties"]["choices"]["items"]["properties"]
        ["message"]["properties"];
    assert!(message.get("reasoning_content").is_none(), "{message}");
    assert!(schemas["ChatCompletion"]["properties"]
        .get("warnings")
        .is_none());
    for field in ["weights", "base", "image_tokens", "capabilities"] {
        assert!(
            schemas["Model"]["properties"].get(field).is_some(),
            "{field}"
        );
    }
    // what the document promises holds: a text-only chat is answered
    let r = chat(
        c,
        json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}),
    )
    .await?;
    assert!(!content(&r).is_empty());
    // the page is the same file for both kinds; it reads the capabilities to adapt
    let html = c.get("/").await?.text();
    for needle in ["m.capabilities", "caps.image_generation", "caps.chat"] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    server.stop().await
}

#[tokio::test]
async fn concurrent_chats_share_batches_and_a_bad_one_fails_alone() -> Result<()> {
    let (server, started) = start(config()).await?;
    let c = &server.client;
    let long = "a b ".repeat(225);
    // the worker held: everything below waits in the queue and is gathered into batches
    let busy = common::occupy_worker(c, &started).await;
    let bodies = vec![
        json!({"messages": [{"role": "user", "content": "hello"}]}),
        json!({"messages": [{"role": "user", "content": long}]}),
        json!({"messages": [{"role": "user", "content": "how are you?"}], "stream": true}),
        json!({"messages": [image_question("what shape is it?")]}),
        json!({"messages": [image_question("is it red?")], "stream": true}),
        json!({"messages": [{"role": "user", "content": "hello"}]}),
    ];
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let c = c.clone();
            tokio::spawn(async move { chat(&c, b).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    assert_eq!(busy.await??.status, 200);
    let statuses: Vec<u16> = out.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 400, 200, 200, 200, 200],
        "{}",
        out[1].text()
    );
    assert!(!content(&out[0]).is_empty());
    assert_eq!(content(&out[0]), content(&out[5]));
    assert!(!streamed_text(&out[2])?.0.is_empty());
    assert!(!content(&out[3]).is_empty());
    assert!(!streamed_text(&out[4])?.0.trim().is_empty());
    server.stop().await
}

#[tokio::test]
async fn quantized_and_f32_weights_both_serve() -> Result<()> {
    let t = tiny();
    let dev = Device::Cpu;
    for q in [true, false] {
        let m = LlavaModel::load(&t.dir, &t.models_root, Some(q), &dev)?;
        assert_eq!(m.quantized, q);
        let answers = m.ask(
            &[toy_image(2)],
            &["what colour is it?"],
            4,
            &vqrae_lm::SamplingConfig::greedy(),
        )?;
        assert!(!answers[0].is_empty());
    }
    // the directory's default is f32; --quantized overrides it
    let (server, _) = start(ServeConfig {
        quantized: Some(true),
        ..config()
    })
    .await?;
    let c = &server.client;
    assert_eq!(
        c.get("/v1/models").await?.json()["data"][0]["weights"],
        "quantized"
    );
    let r = chat(
        c,
        json!({"messages": [{"role": "user", "content": "hello"}]}),
    )
    .await?;
    assert!(!content(&r).is_empty());
    let r = chat(c, json!({"messages": [image_question("what is it?")]})).await?;
    assert!(!content(&r).is_empty());
    server.stop().await?;
    // quantized or f32 means nothing for a unified model: refused, not ignored
    let unified = common::model_dir();
    let err = ServedModel::load(unified, &t.models_root, Some(true), &dev, DType::F32)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unified model"), "{err}");
    assert!(matches!(
        ServedModel::load(unified, &t.models_root, None, &dev, DType::F32)?,
        ServedModel::Unified(_)
    ));
    // a LLaVA model whose base is missing from the models root says how to install it
    let err = ServedModel::load(&t.dir, Path::new("/nonexistent"), None, &dev, DType::F32)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("not installed"), "{err}");
    Ok(())
}
