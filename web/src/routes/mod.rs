//! The router: routes, auth, metrics, request ids, logs, body limits, panics caught, and every
//! error in OpenAI's shape.

pub(crate) mod chat;
pub(crate) mod images;
pub(crate) mod meta;
pub(crate) mod tokenize;

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response as HttpResponse, StatusCode};
use axum::middleware::{from_fn_with_state, map_response, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use vqrae_lm::SamplingConfig;

use crate::auth;
use crate::codec;
use crate::error::ApiError;
use crate::logging::for_log;
use crate::metrics::Metrics;
use crate::state::AppState;

/// The whole application. `extra` routes (tests, embedding programs) sit behind the same auth,
/// metrics, panic catching and error shaping as the API.
pub(crate) fn router(state: AppState, extra: Router<AppState>) -> Router {
    let limit = state.cfg.limits.max_body_bytes;
    let protected = Router::new()
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/images/tokenize", post(tokenize::tokenize))
        .route(
            "/v1/images/reconstructions",
            post(tokenize::reconstructions),
        )
        .route("/v1/models", get(meta::models))
        .route("/v1/models/{id}", get(meta::model))
        .route("/metrics", get(meta::metrics))
        .merge(extra)
        .route_layer(from_fn_with_state(state.clone(), auth::require_key));
    let open = Router::new()
        .route("/", get(meta::index))
        .route("/health", get(meta::health))
        .route("/openapi.json", get(meta::openapi))
        .route("/files/images/{file}", get(meta::image_file));
    let metrics = state.metrics.clone();
    open.merge(protected)
        .fallback(meta::not_found)
        // innermost first: a panic becomes a 500 that the metrics still count
        .layer(CatchPanicLayer::custom(move |p| {
            panic_response(&metrics, p)
        }))
        .layer(from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<Body>| {
                            let id = req
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            tracing::info_span!(
                                "request",
                                id = %for_log(id),
                                method = %for_log(req.method().as_str()),
                                path = %for_log(req.uri().path()),
                            )
                        })
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::INFO))
                        .on_failure(on_failure),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(map_response(openai_error_shape)),
        )
        .with_state(state)
}

/// 5xx responses and failed bodies at ERROR, as tower-http does, but not a 503: a full queue
/// is back-pressure, summarised at WARN (`logging::queue_full_refused`).
fn on_failure(class: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span) {
    if matches!(class, ServerErrorsFailureClass::StatusCode(s) if s == StatusCode::SERVICE_UNAVAILABLE)
    {
        return;
    }
    let latency_ms = latency.as_millis() as u64;
    tracing::error!(classification = %for_log(&class.to_string()), latency_ms, "response failed");
}

/// Request ids `<random prefix>-<counter>`, unless the client sent its own `x-request-id`.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            prefix: format!("{:08x}", rand::random::<u32>()).into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

fn panic_response(metrics: &Metrics, panic: Box<dyn Any + Send + 'static>) -> Response {
    metrics.panicked();
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = %for_log(what), "a handler panicked; answering 500");
    ApiError::internal("The server hit an internal error handling this request.").into_response()
}

/// Counts every request by route and status, with its latency.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    struct InFlight<'a>(&'a Metrics);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.request_finished();
        }
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let started = Instant::now();
    state.metrics.request_started();
    let _guard = InFlight(&state.metrics);
    let resp = next.run(req).await;
    state
        .metrics
        .request(method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// Error responses that did not come from [`ApiError`] (a body past the limit, a method not
/// allowed) get OpenAI's error shape too.
async fn openai_error_shape(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_string());
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let mut e = ApiError::new(status, kind, text);
    e.code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Some("body_too_large"),
        StatusCode::METHOD_NOT_ALLOWED => Some("method_not_allowed"),
        _ => None,
    };
    let bytes = serde_json::to_vec(&e.body()).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    HttpResponse::from_parts(parts, Body::from(bytes))
}

// ---- shared by the handlers ----

/// A prompt or question: trimmed, not empty, at most `max_chars` characters.
pub(crate) fn check_text<'a>(
    s: &'a str,
    param: &str,
    max_chars: usize,
) -> Result<&'a str, ApiError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("{param} must not be empty"),
        ));
    }
    let n = t.chars().count();
    if n > max_chars {
        return Err(ApiError::invalid(
            param,
            format!("{param} is {n} characters long; the limit is {max_chars}"),
        )
        .code("string_above_max_length"));
    }
    Ok(t)
}

/// `lo <= v <= hi` (NaN fails).
pub(crate) fn check_range(param: &str, v: f64, lo: f64, hi: f64) -> Result<(), ApiError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            format!("{param} must be a number in [{lo}, {hi}], got {v}"),
        ))
    }
}

/// The sampling settings of a request: the server caps the temperature, the LM's own check
/// ([`SamplingConfig::check`]) judges the rest, so the API and the CLI refuse the same values.
pub(crate) fn sampling(
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: u64,
) -> Result<SamplingConfig, ApiError> {
    check_range("temperature", temperature, 0.0, 10.0)?;
    let cfg = SamplingConfig {
        temperature,
        top_k,
        top_p,
        seed,
    };
    match cfg.check() {
        Some(bad) => Err(ApiError::invalid(bad.param, bad.message)),
        None => Ok(cfg),
    }
}

/// `response_format` of image responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseFormat {
    B64Json,
    Url,
}

impl ResponseFormat {
    pub(crate) fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s.map(str::trim) {
            None | Some("b64_json") => Ok(Self::B64Json),
            Some("url") => Ok(Self::Url),
            Some(other) => Err(ApiError::invalid(
                "response_format",
                format!("response_format must be \"b64_json\" or \"url\", got {other:?}"),
            )),
        }
    }
}

/// OpenAI's images response.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ImagesResponse {
    pub(crate) created: u64,
    pub(crate) data: Vec<ImageData>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) revised_prompt: Option<String>,
    /// The seed that drew this image (an extension: the same request with it gives the same
    /// image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<u64>,
}

impl ImageData {
    /// A PNG as base64, or kept in the image store and given as a URL.
    pub(crate) fn new(
        state: &AppState,
        headers: &HeaderMap,
        format: ResponseFormat,
        png: Vec<u8>,
    ) -> Self {
        match format {
            ResponseFormat::B64Json => Self {
                b64_json: Some(codec::base64(&png)),
                ..Self::default()
            },
            ResponseFormat::Url => {
                let id = state.store.put(png);
                Self {
                    url: Some(format!(
                        "{}/files/images/{id}.png",
                        base_url(state, headers)
                    )),
                    ..Self::default()
                }
            }
        }
    }
}

/// `public_url`, or `http://` + the request's Host header.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if !state.cfg.public_url.is_empty() {
        return state.cfg.public_url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| state.cfg.addr().to_string());
    format!("http://{host}")
}
