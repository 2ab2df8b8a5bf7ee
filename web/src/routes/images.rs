//! `POST /v1/images/generations`: OpenAI's image generation, with the sampling extensions
//! `seed`, `guidance_scale`, `temperature`, `top_k`, `top_p` and `negative_prompt`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};

use crate::codec;
use crate::error::{ApiError, ApiJson};
use crate::routes::{check_range, check_text, sampling, ImageData, ImagesResponse, ResponseFormat};
use crate::state::{mark_warned, unix_now, AppState};

mod stream;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(crate) struct GenerationRequest {
    pub(crate) prompt: String,
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Images to generate, 1..=8 (`limits.max_images`); default 1.
    #[serde(default)]
    pub(crate) n: Option<usize>,
    /// `"WxH"`: only the model's own size (or `"auto"`).
    #[serde(default)]
    pub(crate) size: Option<String>,
    /// `b64_json` (default) or `url`.
    #[serde(default)]
    pub(crate) response_format: Option<String>,
    /// Seed of the first image; image `i` uses `seed + i`. Default: random.
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) guidance_scale: Option<f64>,
    #[serde(default)]
    pub(crate) temperature: Option<f64>,
    #[serde(default)]
    pub(crate) top_k: Option<usize>,
    #[serde(default)]
    pub(crate) top_p: Option<f64>,
    #[serde(default)]
    pub(crate) negative_prompt: Option<String>,
    /// Server-sent events: partial images as the codes arrive, then the final image
    /// (`stream.rs`).
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    /// Partial images a stream sends before the final one.
    #[serde(default)]
    pub(crate) partial_images: Option<usize>,
}

/// The validated batch-ready form of a request.
struct Plan {
    requests: Vec<ImageRequest>,
    cfg: GenerationConfig,
    format: ResponseFormat,
    prompt: String,
    /// What the client should know about its request (a prompt outside the model card under
    /// `ood = "warn"`); sent as `warnings` and the `x-vqrae-warning` header.
    warnings: Vec<String>,
}

fn plan(state: &AppState, req: GenerationRequest) -> Result<Plan, ApiError> {
    state.check_model(req.model.as_deref())?;
    state.require(state.model.capabilities.image_generation, "draw images")?;
    let limits = &state.cfg.limits;
    let prompt = check_text(&req.prompt, "prompt", limits.max_prompt_chars)?.to_string();
    let warnings: Vec<String> = state
        .check_caption(&prompt, "prompt")?
        .into_iter()
        .collect();
    let n = req.n.unwrap_or(1);
    if n == 0 || n > limits.max_images {
        return Err(ApiError::invalid(
            "n",
            format!("n must be between 1 and {}, got {n}", limits.max_images),
        ));
    }
    let size = state.model.size();
    match req.size.as_deref().map(str::trim) {
        None | Some("auto") => {}
        Some(s) if s == size => {}
        Some(s) => {
            return Err(ApiError::invalid(
                "size",
                format!("This model draws {size} images only; size {s:?} is not available"),
            ))
        }
    }
    let format = ResponseFormat::parse(req.response_format.as_deref())?;
    // the model card's measured default (or the built-in one): `state.model.guidance`
    let guidance = req.guidance_scale.unwrap_or(state.model.guidance);
    check_range("guidance_scale", guidance, 0.0, 50.0)?;
    // every image has its own seed (in its ImageRequest); this one is unused, and kept
    // equal so that requests differing only in seeds share batches
    let sampling = sampling(req.temperature.unwrap_or(1.0), req.top_k, req.top_p, 0)?;
    let negative = match req.negative_prompt.as_deref() {
        Some(s) if !s.trim().is_empty() => {
            Some(check_text(s, "negative_prompt", limits.max_prompt_chars)?.to_string())
        }
        _ => None,
    };
    let seed = req.seed.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let requests = (0..n as u64)
        .map(|i| ImageRequest {
            caption: prompt.clone(),
            negative: negative.clone(),
            seed: seed.wrapping_add(i),
        })
        .collect();
    Ok(Plan {
        requests,
        cfg: GenerationConfig { guidance, sampling },
        format,
        prompt,
        warnings,
    })
}

pub(crate) async fn generations(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<GenerationRequest>,
) -> Result<Response, ApiError> {
    let (streamed, partial_images) = (req.stream.unwrap_or(false), req.partial_images);
    let plan = plan(&state, req)?;
    let seeds: Vec<u64> = plan.requests.iter().map(|r| r.seed).collect();
    tracing::info!(
        prompt = %crate::logging::for_log(&plan.prompt),
        n = seeds.len(),
        seed = seeds.first().copied().unwrap_or(0),
        "generate"
    );
    let warnings = plan.warnings.clone();
    if streamed {
        let mut resp = stream::respond(&state, plan, partial_images).await?;
        mark_warned(&mut resp, &warnings);
        return Ok(resp);
    }
    let images = state.engine.generate(plan.requests, plan.cfg).await?;
    let mut data = Vec::with_capacity(images.len());
    for (img, seed) in images.iter().zip(seeds) {
        let png = codec::png(img)?;
        let mut item = ImageData::new(&state, &headers, plan.format, png);
        item.revised_prompt = Some(plan.prompt.clone());
        item.seed = Some(seed);
        data.push(item);
    }
    let mut body = serde_json::to_value(ImagesResponse {
        created: unix_now(),
        data,
    })
    .map_err(|e| ApiError::internal(format!("writing the response: {e}")))?;
    if !warnings.is_empty() {
        body["warnings"] = serde_json::json!(warnings);
    }
    let mut resp = Json(body).into_response();
    mark_warned(&mut resp, &warnings);
    Ok(resp)
}
