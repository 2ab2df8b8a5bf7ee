//! The chat request as OpenAI's API sends it, and the checks both kinds of model apply to it:
//! the model named, the number of messages, `n`, roles, content parts, the token budget and
//! the sampling settings.

use serde::Deserialize;
use serde_json::Value;
use vqrae_lm::SamplingConfig;

use crate::error::ApiError;
use crate::routes::sampling;
use crate::state::AppState;

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    pub(crate) model: Option<String>,
    pub(crate) messages: Vec<Message>,
    #[serde(default)]
    pub(crate) max_tokens: Option<usize>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<usize>,
    /// Default 0: greedy, the model's best answer.
    #[serde(default)]
    pub(crate) temperature: Option<f64>,
    #[serde(default)]
    pub(crate) top_p: Option<f64>,
    /// An extension.
    #[serde(default)]
    pub(crate) top_k: Option<usize>,
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(crate) n: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Message {
    pub(crate) role: String,
    /// A string, or an array of `{"type": "text"}` / `{"type": "image_url"}` parts.
    #[serde(default)]
    pub(crate) content: Value,
}

/// The checks of a request as a whole: the model, the number of messages, `n`.
pub(super) fn check_request(state: &AppState, req: &ChatRequest) -> Result<(), ApiError> {
    state.check_model(req.model.as_deref())?;
    let limits = &state.cfg.limits;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    if req.messages.len() > limits.max_messages {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "{} messages; the limit is {}",
                req.messages.len(),
                limits.max_messages
            ),
        ));
    }
    if let Some(n) = req.n {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("this server gives one answer per request (n = 1), got n = {n}"),
            ));
        }
    }
    Ok(())
}

/// A role OpenAI's API knows, or a 400 on `messages[i].role`.
pub(super) fn check_role(role: &str, i: usize) -> Result<(), ApiError> {
    match role {
        "system" | "developer" | "user" | "assistant" | "tool" => Ok(()),
        other => Err(ApiError::invalid(
            &format!("messages[{i}].role"),
            format!("unknown role {other:?}"),
        )),
    }
}

/// The 400 of a user message with more than one image.
pub(super) fn one_image_per_message(i: usize) -> ApiError {
    ApiError::invalid(
        &format!("messages[{i}].content"),
        "one image per message: this model answers a question about one image",
    )
}

/// The 400 of a conversation without a user message.
pub(super) fn no_user_message() -> ApiError {
    ApiError::invalid(
        "messages",
        "no user message: ask a question in a message with role \"user\"",
    )
}

/// The answer's token budget and sampling settings (greedy unless a temperature is given).
pub(super) fn budget(
    state: &AppState,
    req: &ChatRequest,
) -> Result<(usize, SamplingConfig), ApiError> {
    let limits = &state.cfg.limits;
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(limits.default_max_tokens);
    if max_tokens == 0 || max_tokens > limits.max_tokens {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "max_tokens must be between 1 and {}, got {max_tokens}",
                limits.max_tokens
            ),
        ));
    }
    let temperature = req.temperature.unwrap_or(0.0);
    let seed = req.seed.unwrap_or_else(|| {
        if temperature == 0.0 {
            0
        } else {
            rand::random::<u64>()
        }
    });
    let sampling = sampling(temperature, req.top_k, req.top_p, seed)?;
    Ok((max_tokens, sampling))
}

/// The texts and the image URLs (with their param path) of one message's content.
pub(super) type Parts = (Vec<String>, Vec<(String, String)>);

pub(super) fn parts(content: &Value, i: usize) -> Result<Parts, ApiError> {
    let param = format!("messages[{i}].content");
    match content {
        Value::Null => Ok((Vec::new(), Vec::new())),
        Value::String(s) => Ok((vec![s.clone()], Vec::new())),
        Value::Array(items) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for (j, part) in items.iter().enumerate() {
                let p = format!("{param}[{j}]");
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "text" => {
                        let Some(t) = part.get("text").and_then(Value::as_str) else {
                            return Err(ApiError::invalid(&p, "a text part needs a string `text`"));
                        };
                        texts.push(t.to_string());
                    }
                    "image_url" => {
                        let url = match part.get("image_url") {
                            Some(Value::String(u)) => Some(u.as_str()),
                            Some(obj) => obj.get("url").and_then(Value::as_str),
                            None => None,
                        };
                        let Some(url) = url else {
                            return Err(ApiError::invalid(
                                &p,
                                "an image_url part needs {\"image_url\": {\"url\": \"data:image/png;base64,...\"}}",
                            ));
                        };
                        images.push((url.to_string(), format!("{p}.image_url.url")));
                    }
                    other => {
                        return Err(ApiError::invalid(
                            &p,
                            format!(
                                "content parts of type {other:?} are not supported (use \"text\" and \"image_url\")"
                            ),
                        ))
                    }
                }
            }
            Ok((texts, images))
        }
        _ => Err(ApiError::invalid(
            &param,
            "content must be a string or an array of parts",
        )),
    }
}
