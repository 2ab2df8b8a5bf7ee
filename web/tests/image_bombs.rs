//! Small uploads that once cost gigabytes (issue 22, items 1 and 2): each is refused with a 400
//! `image_too_large` in OpenAI's error shape, through `/v1/images/tokenize` and chat's
//! `image_url`, under the default limits, and the server answers an ordinary image after them.

mod common;

use anyhow::Result;
use common::{data_url, toy_image, TestServer};
use serde_json::{json, Value};
use vqrae_data::hostile_images::{gif_with_frame, png, PNG_GREY, PNG_RGB};
use vqrae_web::codec::base64;

fn ask_body(url: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "what color is the shape?"}
        ]}],
        "max_tokens": 4
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_images_are_refused_with_400_by_tokenize_and_chat() -> Result<()> {
    let server = TestServer::start(common::test_config()).await?;
    let c = &server.client;
    let cases = [
        // Inside the 16-Mpixel limit; the resize once asked for 16 GiB and 4 GiB.
        (
            "16777216x1 PNG",
            png(16_777_216, 1, PNG_GREY, 8),
            "16777216x1",
        ),
        ("4194304x4 PNG", png(4_194_304, 4, PNG_GREY, 8), "4194304x4"),
        // The header says 64x64; the frame is 11000x11000 (484 MB once decoded).
        (
            "GIF frame past its screen",
            gif_with_frame((64, 64), (11_000, 11_000)),
            "64x64",
        ),
        // 96 MiB in the decoder: more than the 64 MiB of 8-bit RGBA at the pixel limit.
        (
            "4096x4096 16-bit PNG",
            png(4096, 4096, PNG_RGB, 16),
            "4096x4096",
        ),
    ];
    for (name, bytes, dims) in &cases {
        let b64 = base64(bytes);
        let e = c
            .post("/v1/images/tokenize", &json!({"image": b64}))
            .await?
            .expect_error(400);
        assert_eq!(e["code"], "image_too_large", "{name}: {e}");
        assert_eq!(e["type"], "invalid_request_error", "{name}: {e}");
        assert_eq!(e["param"], "image", "{name}: {e}");
        let msg = e["message"].as_str().unwrap_or_default();
        assert!(msg.contains(dims), "{name}: {msg}");

        let url = format!("data:image/png;base64,{b64}");
        let e = c
            .post("/v1/chat/completions", &ask_body(&url))
            .await?
            .expect_error(400);
        assert_eq!(e["code"], "image_too_large", "{name}: {e}");
        assert_eq!(e["param"], "messages[0].content[0].image_url.url");
    }
    // Still serving.
    let ok = c
        .post(
            "/v1/images/tokenize",
            &json!({"image": data_url(&toy_image(1))}),
        )
        .await?;
    assert_eq!(ok.status, 200, "{}", ok.text());
    server.stop().await
}
