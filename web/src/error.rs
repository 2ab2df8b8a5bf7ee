//! Errors: [`ApiError`] is every error a client sees, in OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}`; [`ServeError`] is what stops the server
//! from starting.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use vqrae_generate::GenerateError;
use vqrae_lm::LmError;
use vqrae_understand::error::UnderstandError;
use vqrae_unified::UnifiedError;

use crate::logging::{self, for_log};

/// An error response. `kind` is OpenAI's `type` (`invalid_request_error`, `server_error`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<&'static str>,
    /// Seconds, sent as `Retry-After`.
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: a value the server cannot use.
    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).param(param)
    }

    /// 400 about the request as a whole.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
    }

    pub(crate) fn model_not_found(id: &str, served: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{id}` does not exist; this server serves `{served}`."),
        )
        .param("model")
        .code("model_not_found")
    }

    /// 503 with Retry-After: the model's queue is full.
    pub(crate) fn overloaded(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The server is busy: the model's queue is full. Retry after the Retry-After seconds.",
        )
        .code("queue_full");
        e.retry_after = Some(retry_after.max(1));
        e
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub(crate) fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    /// A model error: the client's fault (a prompt past the context, a bad sampling value) is
    /// a 400, anything else a 500 whose details go to the log, not to the client.
    pub(crate) fn from_model(e: UnifiedError) -> Self {
        if let Some(msg) = user_error(&e) {
            return Self::bad_request(msg);
        }
        tracing::error!(error = %for_log(&e.to_string()), "model error");
        Self::internal(format!("The model failed on this request: {e}"))
    }
}

fn user_error(e: &UnifiedError) -> Option<String> {
    match e {
        UnifiedError::Config(m) => Some(m.clone()),
        UnifiedError::Lm(lm) => match lm.as_ref() {
            LmError::Config(m) => Some(m.clone()),
            _ => None,
        },
        UnifiedError::Generate(g) => match g.as_ref() {
            GenerateError::Config(m) => Some(m.clone()),
            GenerateError::Lm(lm) => match lm.as_ref() {
                LmError::Config(m) => Some(m.clone()),
                _ => None,
            },
            _ => None,
        },
        UnifiedError::Understand(u) => match u.as_ref() {
            UnderstandError::Input(m) => Some(m.clone()),
            UnderstandError::Lm(LmError::Config(m)) => Some(m.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl From<UnifiedError> for ApiError {
    fn from(e: UnifiedError) -> Self {
        Self::from_model(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.as_u16();
        let message = for_log(&self.message);
        if self.status == StatusCode::SERVICE_UNAVAILABLE && self.code == Some("queue_full") {
            // back-pressure, not a failure: summarised, at most a line a second
            logging::queue_full_refused();
        } else if self.status.is_server_error() {
            tracing::warn!(status, %message, "error response");
        } else {
            tracing::debug!(status, %message, "error response");
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s: 400 for bad JSON or a field of the wrong
/// type (a negative `n`, a `NaN`), 413 past the body limit, 415 without a JSON content type.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let message = r.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "invalid_request_error",
            format!("The request body is too large: {message}"),
        )
        .code("body_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, "invalid_request_error", message)
        }
        // axum answers 422 for well-formed JSON of the wrong shape; OpenAI answers 400
        _ => ApiError::bad_request(message).code("invalid_json"),
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid serve config: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the model worker thread panicked")]
    Worker,
}
