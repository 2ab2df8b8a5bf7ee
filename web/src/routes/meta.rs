//! The page, health, models, metrics, the OpenAPI document, stored image files, and the 404.

use axum::extract::{Path, State};
use axum::http::{header, Method, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::openapi;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../../static/index.html");

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub(crate) async fn health(State(state): State<AppState>) -> Json<Value> {
    let mut body = json!({
        "status": "ok",
        "model": state.model.id,
        "queue_depth": state.metrics.queue_depth(),
        "queue_capacity": state.cfg.batch.queue_capacity,
    });
    if let Some(l) = &state.model.llava {
        body["kind"] = l.about["kind"].clone();
        body["weights"] = l.about["weights"].clone();
    }
    Json(body)
}

fn model_object(state: &AppState) -> Value {
    if let Some(l) = &state.model.llava {
        let mut m = json!({
            "id": state.model.id,
            "object": "model",
            "created": state.model.created,
            "owned_by": "vqrae",
            "context_length": state.model.context,
            "image_size": state.model.image_size,
            "card": null,
        });
        if let (Some(m), Some(about)) = (m.as_object_mut(), l.about.as_object()) {
            m.extend(about.clone());
        }
        return m;
    }
    json!({
        "id": state.model.id,
        "object": "model",
        "created": state.model.created,
        "owned_by": "vqrae",
        "kind": "unified",
        "capabilities": state.model.capabilities,
        "image_size": state.model.image_size,
        "grid": [state.model.grid.0, state.model.grid.1],
        "context_length": state.model.context,
        "defaults": {
            "guidance_scale": state.model.guidance,
            "source": if state.model.card.is_some() { "card" } else { "built-in" },
        },
        "out_of_distribution": state.cfg.ood.as_str(),
        "card": state.model.card,
    })
}

pub(crate) async fn models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&state)]}))
}

pub(crate) async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.check_model(Some(&id))?;
    Ok(Json(model_object(&state)))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub(crate) async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(openapi::spec(&state))
}

/// `GET /files/images/<id>.png`: a generated image kept for `response_format: "url"`.
pub(crate) async fn image_file(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let gone = || ApiError::not_found("No such image (image URLs expire after a while).");
    let id = file.strip_suffix(".png").ok_or_else(gone)?;
    let png = state.store.get(id).ok_or_else(gone)?;
    let max_age = state.store.ttl().as_secs();
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (header::CACHE_CONTROL, format!("private, max-age={max_age}")),
        ],
        png,
    )
        .into_response())
}

pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "Unknown route {method} {}; see /openapi.json",
        uri.path()
    ))
}
