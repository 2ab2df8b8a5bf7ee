//! Serving a LLaVA model trained to draw (`llava.json` with a `generation` table and the VQRAE
//! tokenizer in its directory; `vqrae_test_support::tiny_generating_llava`): it says so in
//! `/v1/models`, the OpenAPI document and the page, draws through the same
//! `/v1/images/generations` as a unified model (n, seeds, guidance, negative prompts, batching,
//! streamed previews), tokenizes through its tokenizer, still chats, and refuses the quantized
//! base it cannot draw with.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use candle_core::{DType, Device};
use common::{data_url, metric, toy_image, Client, Resp, TestServer};
use image::RgbImage;
use serde_json::{json, Value};
use tempfile::TempDir;
use vqrae_unified::llava::model::read_model_config;
use vqrae_web::{ServeConfig, ServedModel};

/// The tiny tokenizer's images: 32 px, a 4 x 4 grid of 64 codes.
const SIDE: u32 = 32;
const ROWS: usize = 4;
const GREY: [u8; 3] = [128, 128, 128];

/// A tiny generating LLaVA model of its own (about two seconds to build), removed with the
/// returned folder.
struct Drawing {
    _root: TempDir,
    cfg: ServeConfig,
}

fn drawing_model() -> Result<Drawing> {
    let root = tempfile::Builder::new()
        .prefix("vqrae-web-llava-draws-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let (inputs, dir) = vqrae_test_support::tiny_generating_llava(root.path(), 3)?;
    let cfg = ServeConfig {
        model: dir,
        models_root: inputs.models_root.clone(),
        model_id: "tiny-draws".into(),
        port: 0,
        ..ServeConfig::default()
    };
    Ok(Drawing { _root: root, cfg })
}

/// Builds a drawing model and serves it; the model's folder lives as long as the server.
async fn start() -> Result<(TestServer, Drawing, Arc<AtomicUsize>)> {
    let started = Arc::new(AtomicUsize::new(0));
    let (drawing, model) = tokio::task::spawn_blocking(|| -> Result<_> {
        let d = drawing_model()?;
        let m = common::load_served(&d.cfg)?;
        Ok((d, m))
    })
    .await??;
    let server = TestServer::start_served(
        drawing.cfg.clone(),
        model,
        common::busy_route(started.clone()),
    )
    .await?;
    Ok((server, drawing, started))
}

fn decode_png(b64: &Value) -> Result<RgbImage> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().context("b64_json is a string")?)?;
    Ok(image::load_from_memory(&bytes)?.to_rgb8())
}

async fn generate(c: &Client, body: &Value) -> Result<Resp> {
    c.post("/v1/images/generations", body).await
}

/// The b64_json of each image of a plain request, after checking the response.
async fn images(c: &Client, body: &Value) -> Result<Vec<Value>> {
    let r = generate(c, body).await?;
    ensure!(r.status == 200, "{}", r.text());
    ensure!(r.header("x-vqrae-warning").is_none(), "no card, no warning");
    let data = r.json()["data"].as_array().cloned().unwrap_or_default();
    for item in &data {
        let img = decode_png(&item["b64_json"])?;
        ensure!(img.dimensions() == (SIDE, SIDE), "{:?}", img.dimensions());
    }
    Ok(data.iter().map(|i| i["b64_json"].clone()).collect())
}

/// Tokenizing goes through the tokenizer the model draws with, at its side; and the model
/// still chats, text alone or about an image (its image rows are never drawn there).
async fn tokenizes_and_still_chats(c: &Client) -> Result<()> {
    let img = data_url(&toy_image(1));
    let r = c
        .post("/v1/images/tokenize", &json!({"image": img}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(
        (&t["image_size"], &t["grid"], &t["codebook_size"]),
        (&json!(SIDE), &json!([ROWS, ROWS]), &json!(64))
    );
    assert_eq!(t["codes"].as_array().map(Vec::len), Some(ROWS));
    let r = c
        .post("/v1/images/reconstructions", &json!({"image": img}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let back = decode_png(&r.json()["data"][0]["b64_json"])?;
    assert_eq!(back.dimensions(), (SIDE, SIDE));

    let r = c
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let question = json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": img}},
        {"type": "text", "text": "what colour is it?"},
    ]});
    let r = c
        .post(
            "/v1/chat/completions",
            &json!({"messages": [question], "max_tokens": 4}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llava_model_that_draws_says_so_and_serves_what_it_documents() -> Result<()> {
    let (server, drawing, _) = start().await?;
    let c = &server.client;
    let m = c.get("/v1/models").await?.json()["data"][0].clone();
    assert_eq!(m["kind"], "llava");
    assert_eq!(
        m["capabilities"],
        json!({"chat": true, "image_questions": true, "image_generation": true,
               "image_tokenization": true})
    );
    // it reads questions' images at the encoder's side and draws at the tokenizer's
    assert_eq!(m["image_size"], 16);
    assert_eq!(m["generation"]["image_size"], SIDE);
    assert_eq!(m["generation"]["grid"], json!([ROWS, ROWS]));
    assert_eq!(m["generation"]["codebook_size"], 64);
    let recorded = read_model_config(&drawing.cfg.model)?
        .generation
        .context("the tiny model records its generation")?;
    assert_eq!(m["defaults"]["guidance_scale"], recorded.guidance);
    assert_eq!(m["weights"], "f32");

    // an image kept for response_format "url": what /files/images/{file} serves
    let r = generate(
        c,
        &json!({"prompt": "a red circle", "response_format": "url"}),
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
    // no card: nothing warns
    assert!(schemas.get("Warnings").is_none());
    let gen = &schemas["ImageGenerationRequest"]["properties"];
    assert_eq!(gen["size"]["enum"][0], "32x32");
    assert_eq!(gen["guidance_scale"]["default"], recorded.guidance);
    assert_eq!(gen["partial_images"]["maximum"], 4);
    let about = spec["info"]["description"].as_str().unwrap_or_default();
    assert!(
        about.contains("draws") && !about.contains("does not draw"),
        "{about}"
    );
    assert!(schemas["Model"]["properties"].get("generation").is_some());
    // the page is the same file for every model; it shows the drawing form by the
    // capabilities, and the drawn size from `generation`
    let html = c.get("/").await?.text();
    for needle in [
        "caps.image_generation",
        "m.generation",
        "id=\"gen-section\"",
    ] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }

    tokenizes_and_still_chats(c).await?;
    assert_eq!(
        c.get("/health").await?.json()["kind"],
        "llava",
        "the health check names the kind"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_are_seeded_batched_and_validated() -> Result<()> {
    let (server, _drawing, started) = start().await?;
    let c = &server.client;
    // no model card: any prompt is drawn
    let body = json!({"prompt": "a purple dragon on the moon", "n": 2, "seed": 5});
    let first = images(c, &body).await?;
    assert_eq!(first.len(), 2);
    let r = generate(c, &body).await?;
    let seeds: Vec<Value> = r.json()["data"]
        .as_array()
        .map(|d| d.iter().map(|i| i["seed"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(seeds, [json!(5), json!(6)], "image i uses seed + i");
    assert_eq!(
        images(c, &body).await?,
        first,
        "the same seed, the same images"
    );
    assert_ne!(first[0], first[1], "seeds 5 and 6 draw different images");
    // image 1 of seed 5 is image 0 of seed 6
    let alone = images(
        c,
        &json!({"prompt": "a purple dragon on the moon", "seed": 6}),
    )
    .await?;
    assert_eq!(alone[0], first[1]);
    // the sampling extensions are taken
    let other = images(
        c,
        &json!({"prompt": "a red circle", "seed": 5, "guidance_scale": 1.0, "temperature": 0.7,
                "top_k": 8, "top_p": 0.9, "negative_prompt": "a blue square", "size": "32x32"}),
    )
    .await?;
    assert_eq!(other.len(), 1);
    // the model's one size, and the server's limits
    let e = generate(c, &json!({"prompt": "a red circle", "size": "16x16"}))
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "size");
    let e = generate(c, &json!({"prompt": "a red circle", "n": 9}))
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "n");
    let e = generate(c, &json!({"prompt": "a red circle", "guidance_scale": 51}))
        .await?
        .expect_error(400);
    assert_eq!(e["param"], "guidance_scale");

    // requests that wait together share one forward and draw what each draws alone
    let before = metric(
        &c.get("/metrics").await?.text(),
        "vqrae_generation_batches_total",
    );
    let busy = common::occupy_worker(c, &started).await;
    let tasks: Vec<_> = [
        json!({"prompt": "a purple dragon on the moon", "seed": 6}),
        json!({"prompt": "a red circle", "seed": 9}),
    ]
    .into_iter()
    .map(|b| {
        let c = c.clone();
        tokio::spawn(async move { images(&c, &b).await })
    })
    .collect();
    let mut batched = Vec::new();
    for t in tasks {
        batched.push(t.await??);
    }
    assert_eq!(busy.await??.status, 200);
    let after = metric(
        &c.get("/metrics").await?.text(),
        "vqrae_generation_batches_total",
    );
    assert_eq!(after - before, 1.0, "one shared forward");
    assert_eq!(batched[0], alone, "batched as drawn alone");
    server.stop().await
}

/// The grey rows at the bottom of a partial image, in pixel rows.
fn grey_rows(img: &RgbImage) -> u32 {
    (0..img.height())
        .rev()
        .take_while(|&y| (0..img.width()).all(|x| img.get_pixel(x, y).0 == GREY))
        .count() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_generation_sends_partials_then_the_plain_images() -> Result<()> {
    let (server, _drawing, _) = start().await?;
    let c = &server.client;
    let body = json!({"prompt": "a green circle", "seed": 3, "n": 2});
    let want = images(c, &body).await?;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["partial_images"] = json!(2);
    let r = generate(c, &streamed).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream")));
    let text = r.text();
    let mut names = Vec::new();
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            names.push(n.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(d)?);
        }
    }
    let partial = "image_generation.partial_image";
    let completed = "image_generation.completed";
    assert_eq!(
        names,
        [partial, partial, partial, partial, completed, completed]
    );
    for (k, d) in data.iter().enumerate() {
        assert_eq!(d["size"], "32x32");
        let image = d["image_index"].as_u64().context("image_index")? as usize;
        let img = decode_png(&d["b64_json"])?;
        if k < 4 {
            // partial i of 2 shows ceil((i + 1) 4 / 3) of the 4 code rows, grey below
            let index = d["partial_image_index"].as_u64().context("index")? as u32;
            let shown = ((index + 1) * ROWS as u32).div_ceil(3);
            assert_eq!(grey_rows(&img), (ROWS as u32 - shown) * SIDE / ROWS as u32);
        } else {
            assert_eq!(
                d["b64_json"], want[image],
                "image {image}: as the plain request"
            );
            assert_eq!(d["usage"]["output_tokens"], 16);
            assert!(d["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0, "{d}");
        }
    }
    // an error before sampling is a plain JSON error
    let e = generate(
        c,
        &json!({"prompt": "a green circle", "stream": true, "partial_images": 5}),
    )
    .await?
    .expect_error(400);
    assert_eq!(e["param"], "partial_images");
    server.stop().await
}

/// A drawing model's base runs dequantized: `--quantized` is refused at load, saying why, and
/// the default loads it in f32.
#[test]
fn the_quantized_base_is_refused_with_a_reason() -> Result<()> {
    let drawing = drawing_model()?;
    let dev = Device::Cpu;
    let cfg = &drawing.cfg;
    let err = ServedModel::load(&cfg.model, &cfg.models_root, Some(true), &dev, DType::F32)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("dequantized"), "{err}");
    let m = ServedModel::load(&cfg.model, &cfg.models_root, None, &dev, DType::F32)?;
    assert!(matches!(&m, ServedModel::Llava(l) if !l.quantized && l.image.is_some()));
    Ok(())
}
