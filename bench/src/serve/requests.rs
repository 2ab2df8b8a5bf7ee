//! What `bench-serve` sends (the two paths' routes and JSON bodies) and what it counts as
//! served.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::ValueEnum;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BenchPath {
    /// POST /v1/images/generations, one image per request (n = 1), a new seed each.
    Generate,
    /// POST /v1/chat/completions with an image and a question (not streamed).
    Chat,
}

impl BenchPath {
    pub(crate) fn route(self) -> &'static str {
        match self {
            Self::Generate => "/v1/images/generations",
            Self::Chat => "/v1/chat/completions",
        }
    }

    /// The name in the report's table (as on the command line).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Chat => "chat",
        }
    }
}

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

/// The image of the chat requests as a data URL: the file at `path`, or the drawn default.
pub(crate) fn image_data_url(path: Option<&Path>) -> Result<String> {
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

/// The fixed parts of the request bodies; [`Bodies::body`] adds the per-request seed.
pub(crate) struct Bodies {
    pub(crate) prompt: String,
    /// A data URL.
    pub(crate) image: String,
    pub(crate) question: String,
    pub(crate) max_tokens: Option<usize>,
}

impl Bodies {
    /// The request body of the `i`-th request of a path.
    pub(crate) fn body(&self, path: BenchPath, i: usize) -> Vec<u8> {
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

/// A response the benchmark counts as served: 200 and the path's answer field present.
pub(crate) fn check(path: BenchPath, status: u16, body: &[u8]) -> Result<(), String> {
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
