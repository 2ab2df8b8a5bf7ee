//! `POST /v1/chat/completions` on a LLaVA model: the same request, limits, errors and
//! streaming as the unified model's, answered by a pretrained chat LM.
//!
//! - **Without an image** the whole conversation (system, user and assistant turns; a
//!   `developer` turn is a system turn) goes through the LM's chat template and the assistant
//!   replies, as the base model chats.
//! - **With an image** (an `image_url` part in a user message; the last one counts) the last
//!   user message is the question, answered in a sentence from the image's encoder features;
//!   earlier turns are not read (the model was trained on single questions).
//!
//! The answer is the message's `content` (no `reasoning_content`: a sentence is its own
//! conclusion). Requests are queued as [`ChatJob`]s, which the worker batches.

use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc;
use vqrae_lm::chat::ChatMessage;
use vqrae_lm::SamplingConfig;

use super::{
    budget, check_request, check_role, no_user_message, one_image_per_message, parts, stream_from,
    ChatRequest, Piece, Reply,
};
use crate::batcher::worker_failed;
use crate::error::ApiError;
use crate::llava_chat::{ChatInput, ChatJob};
use crate::routes::check_text;
use crate::state::{unix_now, AppState};

/// What a request asks, validated.
struct Parsed {
    input: Input,
    max_tokens: usize,
    sampling: SamplingConfig,
    /// The last user message (the question of an image, the log's line).
    question: String,
}

enum Input {
    Text(Vec<ChatMessage>),
    Image {
        url: String,
        param: String,
        question: String,
    },
}

fn parse(state: &AppState, req: &ChatRequest) -> Result<Parsed, ApiError> {
    check_request(state, req)?;
    let limits = &state.cfg.limits;
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut question: Option<(usize, String)> = None;
    let mut image: Option<(String, String)> = None;
    for (i, m) in req.messages.iter().enumerate() {
        check_role(&m.role, i)?;
        let (texts, images) = parts(&m.content, i)?;
        let text = texts.join(" ");
        if !text.trim().is_empty() {
            // every turn is bounded as a question is; the context is checked in tokens later
            check_text(
                &text,
                &format!("messages[{i}].content"),
                limits.max_prompt_chars,
            )?;
        }
        if m.role == "user" {
            if images.len() > 1 {
                return Err(one_image_per_message(i));
            }
            if let Some(img) = images.into_iter().next() {
                image = Some(img);
            }
            question = Some((i, text.clone()));
        }
        let role = match m.role.as_str() {
            "developer" => "system",
            other => other,
        };
        messages.push(ChatMessage::new(role, text));
    }
    let Some((qi, text)) = question else {
        return Err(no_user_message());
    };
    let question = check_text(
        &text,
        &format!("messages[{qi}].content"),
        limits.max_prompt_chars,
    )?
    .to_string();
    let (max_tokens, sampling) = budget(state, req)?;
    let input = match image {
        Some((url, param)) => Input::Image {
            url,
            param,
            question: question.clone(),
        },
        None => Input::Text(messages),
    };
    Ok(Parsed {
        input,
        max_tokens,
        sampling,
        question,
    })
}

pub(super) async fn completions(state: &AppState, req: ChatRequest) -> Result<Response, ApiError> {
    let p = parse(state, &req)?;
    let stream = req.stream.unwrap_or(false);
    let (input, with_image) = match p.input {
        Input::Text(messages) => (ChatInput::Text(messages), false),
        Input::Image {
            url,
            param,
            question,
        } => {
            let image = state.decoders.load(url, param, false).await?;
            (ChatInput::Image { image, question }, true)
        }
    };
    tracing::info!(
        question = %crate::logging::for_log(&p.question),
        image = with_image,
        stream,
        "ask"
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Piece>();
    state.engine.chat(ChatJob {
        input,
        max_tokens: p.max_tokens,
        sampling: p.sampling,
        tx,
    })?;
    let reply = Reply {
        id: format!("chatcmpl-{:024x}", rand::random::<u128>() >> 32),
        created: unix_now(),
        model_id: state.model.id.clone(),
        reasoned: false,
        warnings: Vec::new(),
    };
    if stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        return stream_from(reply, include_usage, rx).await;
    }
    loop {
        match rx.recv().await {
            Some(Piece::Done(f)) => return Ok(Json(reply.completion(&f)).into_response()),
            Some(Piece::Failed(e)) => return Err(e),
            Some(Piece::Checked(_) | Piece::Delta(_)) => {}
            None => return Err(worker_failed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Finished, Reply};

    #[test]
    fn a_sentence_is_the_content() {
        let r = Reply {
            id: "chatcmpl-1".into(),
            created: 0,
            model_id: "m".into(),
            reasoned: false,
            warnings: Vec::new(),
        };
        let done = Finished {
            text: "The circle is red.".into(),
            finish_reason: "stop",
            prompt_tokens: 3,
            completion_tokens: 5,
        };
        let body = r.completion(&done);
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "The circle is red."
        );
        assert!(body["choices"][0]["message"]
            .get("reasoning_content")
            .is_none());
        assert_eq!(body["usage"]["total_tokens"], serde_json::json!(8));
    }
}
