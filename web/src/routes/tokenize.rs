//! `POST /v1/images/tokenize` (an image to its codes grid and feature shape) and
//! `POST /v1/images/reconstructions` (an image through codes and back to pixels), through the
//! served model's VQRAE tokenizer: a unified model's, or the one a LLaVA model draws with.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_unified::UnifiedError;

use crate::codec;
use crate::error::{ApiError, ApiJson};
use crate::routes::{ImageData, ImagesResponse, ResponseFormat};
use crate::state::{unix_now, AppState};

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TokenizeRequest {
    /// `data:image/png;base64,...` or bare base64.
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Also return the continuous features (`N x d` floats).
    #[serde(default)]
    pub(crate) include_features: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TokenizeResponse {
    pub(crate) object: &'static str,
    pub(crate) model: String,
    /// The side the image was resized to.
    pub(crate) image_size: usize,
    /// `[rows, cols]`.
    pub(crate) grid: [usize; 2],
    /// Row-major, `rows x cols` codebook indices.
    pub(crate) codes: Vec<Vec<u32>>,
    pub(crate) codebook_size: usize,
    /// `[N, d]`: tokens and feature width of the continuous path.
    pub(crate) features_shape: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) features: Option<Vec<Vec<f32>>>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ReconstructionRequest {
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) response_format: Option<String>,
}

/// The uploaded image at the tokenizer's side (for a LLaVA model not its encoder's).
async fn load(state: &AppState, source: String) -> Result<RgbImage, ApiError> {
    let side = u32::try_from(state.model.draw_size).unwrap_or(u32::MAX);
    state
        .decoders
        .load_at(source, "image".into(), true, side)
        .await
}

struct Tokens {
    grid: (usize, usize),
    codes: Vec<u32>,
    shape: [usize; 2],
    features: Option<Vec<Vec<f32>>>,
}

fn model_err(e: impl Into<UnifiedError>) -> ApiError {
    ApiError::from_model(e.into())
}

pub(crate) async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    state.check_model(req.model.as_deref())?;
    const WHAT: &str = "tokenize images into VQRAE codes";
    state.require(state.model.capabilities.image_tokenization, WHAT)?;
    let img = load(&state, req.image).await?;
    let include = req.include_features;
    let t = state
        .engine
        .call_tokenizer(WHAT, move |tokenizer| {
            let input = tokenizer.images_to_input(&[img]).map_err(model_err)?;
            let enc = tokenizer.encode(&input).map_err(model_err)?;
            let codes = enc
                .codes
                .to_vec2::<u32>()
                .map_err(model_err)?
                .into_iter()
                .next()
                .unwrap_or_default();
            let (_, n, d) = enc.features.dims3().map_err(model_err)?;
            let features = if include {
                let f = enc
                    .features
                    .squeeze(0)
                    .and_then(|f| f.to_dtype(candle_core::DType::F32))
                    .and_then(|f| f.to_vec2::<f32>())
                    .map_err(model_err)?;
                Some(f)
            } else {
                None
            };
            Ok(Tokens {
                grid: enc.grid,
                codes,
                shape: [n, d],
                features,
            })
        })
        .await?;
    let (rows, cols) = t.grid;
    if rows * cols != t.codes.len() || cols == 0 {
        return Err(ApiError::internal(format!(
            "the tokenizer gave {} codes for a {rows}x{cols} grid",
            t.codes.len()
        )));
    }
    Ok(Json(TokenizeResponse {
        object: "image.tokens",
        model: state.model.id.clone(),
        image_size: state.model.draw_size,
        grid: [rows, cols],
        codes: t.codes.chunks(cols).map(<[u32]>::to_vec).collect(),
        codebook_size: state.model.codebook_size,
        features_shape: t.shape,
        features: t.features,
    }))
}

pub(crate) async fn reconstructions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReconstructionRequest>,
) -> Result<Json<ImagesResponse>, ApiError> {
    state.check_model(req.model.as_deref())?;
    const WHAT: &str = "reconstruct images through VQRAE codes";
    state.require(state.model.capabilities.image_tokenization, WHAT)?;
    let format = ResponseFormat::parse(req.response_format.as_deref())?;
    let img = load(&state, req.image).await?;
    let out = state
        .engine
        .call_tokenizer(WHAT, move |tokenizer| {
            let input = tokenizer.images_to_input(&[img]).map_err(model_err)?;
            let pixels = tokenizer.reconstruct(&input).map_err(model_err)?;
            let images = tokenizer.output_to_images(&pixels).map_err(model_err)?;
            images
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("the tokenizer returned no image"))
        })
        .await?;
    let png = codec::png(&out)?;
    Ok(Json(ImagesResponse {
        created: unix_now(),
        data: vec![ImageData::new(&state, &headers, format, png)],
    }))
}
