//! `POST /v1/chat/completions`: questions about an image, answered through the continuous path
//! (encoder features -> projector -> LM). OpenAI's request and response, including
//! `stream: true` (server-sent `chat.completion.chunk`s ending with `data: [DONE]`).
//!
//! The model answers one question about one image: the question is the text of the last user
//! message, the image the last `image_url` part in the conversation (a `data:` URL).
//!
//! A yes/no question is answered with reasons ("red, so no": the image's own colour or shape,
//! then the conclusion); the message's `content` is the conclusion ("no") and its
//! `reasoning_content` the whole answer, where OpenAI-compatible servers (vLLM, DeepSeek) put
//! reasoning. Streamed, the answer's pieces come as `delta.reasoning_content` and the conclusion
//! as one `delta.content` after them. Other questions' answers are the `content`, as they are.
//! A question outside the model card's forms is refused (400 on `messages`) or, under
//! `ood = "warn"`, answered with `warnings`; so is an image that the model's own tokenizer
//! reconstructs below the card's `images.min_reconstruction_psnr` (judged on the model worker
//! from the encoding the answer uses: the check adds one decode). A streamed answer waits for
//! that verdict before its response starts, so a refused image is a plain 400 there too.
//!
//! A LLaVA model ([`llava`]) also chats without an image, and answers in sentences.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use candle_core::Tensor;
use futures_util::stream;
use image::RgbImage;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vqrae_data::easy_vqa::QuestionKind;
use vqrae_lm::SamplingConfig;
use vqrae_understand::reasoning::conclusion;
use vqrae_unified::model::UnifiedModel;
use vqrae_unified::UnifiedError;

use crate::config::OodPolicy;
use crate::error::{ApiError, ApiJson};
use crate::routes::check_text;
use crate::state::{judge, mark_warned, unix_now, AppState};

mod llava;
mod request;

pub(crate) use request::ChatRequest;
use request::{budget, check_request, check_role, no_user_message, one_image_per_message, parts};

/// One question about one image, and how to answer it.
struct Question {
    image_url: String,
    image_param: String,
    question: String,
    max_tokens: usize,
    sampling: SamplingConfig,
    /// A yes/no question: its answer is reasoned, its conclusion the content.
    reasoned: bool,
    /// A question outside the model card, answered under `ood = "warn"`.
    warnings: Vec<String>,
}

fn parse(state: &AppState, req: &ChatRequest) -> Result<Question, ApiError> {
    check_request(state, req)?;
    let limits = &state.cfg.limits;
    let mut question: Option<(usize, String)> = None;
    let mut image: Option<(String, String)> = None;
    for (i, m) in req.messages.iter().enumerate() {
        check_role(&m.role, i)?;
        let (texts, images) = parts(&m.content, i)?;
        if m.role != "user" {
            continue;
        }
        if images.len() > 1 {
            return Err(one_image_per_message(i));
        }
        if let Some(img) = images.into_iter().next() {
            image = Some(img);
        }
        question = Some((i, texts.join(" ")));
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
    let warnings: Vec<String> = state
        .check_question(&question, "messages")?
        .into_iter()
        .collect();
    let Some((image_url, image_param)) = image else {
        return Err(ApiError::invalid(
            "messages",
            "this model answers questions about an image: add a part \
             {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/png;base64,...\"}}",
        ));
    };
    let (max_tokens, sampling) = budget(state, req)?;
    let reasoned = QuestionKind::of(&question) == QuestionKind::YesNo;
    Ok(Question {
        image_url,
        image_param,
        question,
        max_tokens,
        sampling,
        reasoned,
        warnings,
    })
}

/// The image of a question, decoded off the async threads.
async fn load_image(state: &AppState, q: &Question) -> Result<RgbImage, ApiError> {
    let (url, param) = (q.image_url.clone(), q.image_param.clone());
    state.decoders.load(url, param, false).await
}

/// Turns the decoded answer-so-far into the new pieces a stream sends. The whole answer is
/// decoded each time (a token's text can depend on its neighbours), and a character whose
/// bytes have not all arrived (decoded as U+FFFD) is held back.
#[derive(Default)]
pub(crate) struct Deltas {
    emitted: String,
}

impl Deltas {
    pub(crate) fn next(&mut self, text: &str) -> Option<String> {
        let text = text.trim_start();
        if text.ends_with(char::REPLACEMENT_CHARACTER) {
            return None;
        }
        let delta = text.strip_prefix(self.emitted.as_str())?;
        if delta.is_empty() {
            return None;
        }
        let delta = delta.to_string();
        self.emitted = text.to_string();
        Some(delta)
    }

    /// What the final answer has beyond what was sent.
    pub(crate) fn finish(&mut self, answer: &str) -> Option<String> {
        let rest = answer.strip_prefix(self.emitted.as_str())?;
        if rest.is_empty() {
            return None;
        }
        let rest = rest.to_string();
        self.emitted = answer.to_string();
        Some(rest)
    }
}

/// What a finished answer reports.
pub(crate) struct Finished {
    pub(crate) text: String,
    pub(crate) finish_reason: &'static str,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
}

/// The image's features and its verdict under the model card's image check (`ood`): a 400
/// (`refuse`), a warning (`warn`), or `None` when it passes or the card checks no image. Only
/// the model can measure how well it reconstructs an image, so this runs on the worker, from
/// the encoding the answer uses.
fn see(
    model: &UnifiedModel,
    image: RgbImage,
    ood: OodPolicy,
) -> Result<(Tensor, Option<String>), ApiError> {
    let Some(card) = model.card.as_ref().filter(|c| c.images.is_some()) else {
        return Ok((model.features(&[image])?, None));
    };
    let (features, psnr) = model.features_and_psnr(&[image])?;
    let psnr = psnr.first().copied().unwrap_or(0.0);
    Ok((
        features,
        judge(ood, card.check_image_psnr(psnr), "messages")?,
    ))
}

/// Answers on the model worker; `emit` gets the image's verdict ([`Piece::Checked`]) first,
/// then the answer's text as it grows ([`Piece::Delta`]).
fn answer(
    model: &UnifiedModel,
    image: RgbImage,
    question: &str,
    max_tokens: usize,
    sampling: &SamplingConfig,
    ood: OodPolicy,
    emit: &mut dyn FnMut(Piece),
) -> Result<Finished, ApiError> {
    let (features, warning) = see(model, image, ood)?;
    emit(Piece::Checked(warning));
    let mut ids: Vec<u32> = Vec::new();
    let mut deltas = Deltas::default();
    let answers = model
        .vqa()
        .answer_with(&features, &[question], max_tokens, sampling, |_, id| {
            ids.push(id);
            if let Ok(text) = model.text.decode(&ids) {
                if let Some(delta) = deltas.next(&text) {
                    emit(Piece::Delta(delta));
                }
            }
        })
        .map_err(UnifiedError::from)?;
    let text = answers.into_iter().next().unwrap_or_default();
    if let Some(rest) = deltas.finish(&text) {
        emit(Piece::Delta(rest));
    }
    let prompt_tokens =
        model.text.encode(question).map(|t| t.len()).unwrap_or(0) + model.cfg.image_tokens;
    Ok(Finished {
        text,
        finish_reason: if ids.len() >= max_tokens {
            "length"
        } else {
            "stop"
        },
        prompt_tokens,
        completion_tokens: ids.len(),
    })
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    })
}

pub(crate) async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    if state.model.llava.is_some() {
        return llava::completions(&state, req).await;
    }
    let q = parse(&state, &req)?;
    let image = load_image(&state, &q).await?;
    tracing::info!(
        question = %crate::logging::for_log(&q.question),
        stream = req.stream.unwrap_or(false),
        "ask"
    );
    let id = format!("chatcmpl-{:024x}", rand::random::<u128>() >> 32);
    let reply = Reply {
        id,
        created: unix_now(),
        model_id: state.model.id.clone(),
        reasoned: q.reasoned,
        warnings: q.warnings.clone(),
    };
    let Question {
        question,
        max_tokens,
        sampling,
        ..
    } = q;
    let metrics = state.metrics.clone();
    let ood = state.cfg.ood;
    let job = move |m: &UnifiedModel, emit: &mut dyn FnMut(Piece)| {
        let f = answer(m, image, &question, max_tokens, &sampling, ood, emit)?;
        metrics.tokens(f.completion_tokens);
        Ok(f)
    };
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        return streamed(&state, reply, include_usage, job).await;
    }
    let (done, warning) = state
        .engine
        .call(move |m| {
            let mut warning = None;
            let done = job(m, &mut |p| {
                if let Piece::Checked(w) = p {
                    warning = w;
                }
            })?;
            Ok((done, warning))
        })
        .await?;
    let mut reply = reply;
    reply.warnings.extend(warning);
    let mut resp = Json(reply.completion(&done)).into_response();
    mark_warned(&mut resp, &reply.warnings);
    Ok(resp)
}

/// What every response (or chunk) of one request repeats.
#[derive(Clone)]
struct Reply {
    id: String,
    created: u64,
    model_id: String,
    /// A yes/no question: `content` is the conclusion, `reasoning_content` the whole answer.
    reasoned: bool,
    warnings: Vec<String>,
}

impl Reply {
    /// The `chat.completion` of a finished answer.
    fn completion(&self, done: &Finished) -> Value {
        let mut message = json!({"role": "assistant", "content": done.text, "refusal": null});
        if self.reasoned {
            message["content"] = json!(conclusion(&done.text));
            message["reasoning_content"] = json!(done.text);
        }
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": done.finish_reason,
            }],
            "usage": usage(done),
        });
        if !self.warnings.is_empty() {
            body["warnings"] = json!(self.warnings);
        }
        body
    }

    /// One `chat.completion.chunk`.
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    /// The delta of a piece of the answer as it is generated.
    fn piece(&self, text: String) -> Value {
        if self.reasoned {
            json!({"reasoning_content": text})
        } else {
            json!({"content": text})
        }
    }

    /// What follows the last piece: the conclusion of a reasoned answer, the finish reason,
    /// the usage if asked for, `[DONE]`.
    fn finish(&self, f: &Finished, include_usage: bool, pending: &mut VecDeque<String>) {
        let end = conclusion(&f.text);
        if self.reasoned && !end.is_empty() {
            pending.push_back(self.chunk(json!({"content": end}), None).to_string());
        }
        pending.push_back(self.chunk(json!({}), Some(f.finish_reason)).to_string());
        if include_usage {
            let mut last = self.chunk(json!({}), None);
            last["choices"] = json!([]);
            last["usage"] = usage(f);
            pending.push_back(last.to_string());
        }
        pending.push_back("[DONE]".to_string());
    }

    /// Queues the events of what the worker sent (`None`: it dropped the channel); `true`
    /// when the answer is over.
    fn handle(
        &self,
        piece: Option<Piece>,
        include_usage: bool,
        pending: &mut VecDeque<String>,
    ) -> bool {
        match piece {
            Some(Piece::Checked(_)) => false,
            Some(Piece::Delta(text)) => {
                pending.push_back(self.chunk(self.piece(text), None).to_string());
                false
            }
            Some(Piece::Done(f)) => {
                self.finish(&f, include_usage, pending);
                true
            }
            Some(Piece::Failed(e)) => {
                pending.push_back(e.body().to_string());
                pending.push_back("[DONE]".to_string());
                true
            }
            None => {
                let e = ApiError::internal(
                    "The model worker failed on this request (see the server log).",
                );
                pending.push_back(e.body().to_string());
                pending.push_back("[DONE]".to_string());
                true
            }
        }
    }
}

/// Answers as server-sent events: the worker sends the image's verdict, then the answer's
/// pieces, down a channel as they come; queued (or refused with 503) before the response
/// starts, and the response starts after the verdict, so a full queue and a refused image are
/// still plain errors and a warning is in the headers.
async fn streamed<J>(
    state: &AppState,
    reply: Reply,
    include_usage: bool,
    job: J,
) -> Result<Response, ApiError>
where
    J: FnOnce(&UnifiedModel, &mut dyn FnMut(Piece)) -> Result<Finished, ApiError> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel::<Piece>();
    state.engine.submit(move |m| {
        let sent = tx.clone();
        let result = job(m, &mut |piece| {
            let _ = sent.send(piece);
        });
        let _ = tx.send(match result {
            Ok(f) => Piece::Done(f),
            Err(e) => Piece::Failed(e),
        });
    })?;
    stream_from(reply, include_usage, rx).await
}

/// The server-sent events of what the model worker sends down `rx`: the response starts after
/// the first piece (the verdict, or a failure, which is then a plain error response).
async fn stream_from(
    mut reply: Reply,
    include_usage: bool,
    mut rx: mpsc::UnboundedReceiver<Piece>,
) -> Result<Response, ApiError> {
    let early = match rx.recv().await {
        Some(Piece::Checked(warning)) => {
            reply.warnings.extend(warning);
            None
        }
        Some(Piece::Failed(e)) => return Err(e),
        other => Some(other),
    };
    let mut first = reply.chunk(json!({"role": "assistant", "content": ""}), None);
    if !reply.warnings.is_empty() {
        first["warnings"] = json!(reply.warnings);
    }
    let mut pending = VecDeque::new();
    pending.push_back(first.to_string());
    let finished = early.is_some_and(|p| reply.handle(p, include_usage, &mut pending));
    let warnings = reply.warnings.clone();
    let events = stream::unfold(
        (rx, pending, finished, reply),
        move |(mut rx, mut pending, mut finished, reply)| async move {
            loop {
                if let Some(data) = pending.pop_front() {
                    let event = Ok::<Event, Infallible>(Event::default().data(data));
                    return Some((event, (rx, pending, finished, reply)));
                }
                if finished {
                    return None;
                }
                finished = reply.handle(rx.recv().await, include_usage, &mut pending);
            }
        },
    );
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    mark_warned(&mut resp, &warnings);
    Ok(resp)
}

/// What the model worker sends as it answers.
pub(crate) enum Piece {
    /// The image's verdict: a warning under `ood = "warn"`, or none.
    Checked(Option<String>),
    Delta(String),
    Done(Finished),
    Failed(ApiError),
}

#[cfg(test)]
mod tests {
    use super::{Deltas, Finished, Reply, VecDeque};
    use serde_json::{json, Value};

    fn reply(reasoned: bool) -> Reply {
        Reply {
            id: "chatcmpl-1".into(),
            created: 0,
            model_id: "m".into(),
            reasoned,
            warnings: Vec::new(),
        }
    }

    fn finished(text: &str) -> Finished {
        Finished {
            text: text.into(),
            finish_reason: "stop",
            prompt_tokens: 1,
            completion_tokens: 3,
        }
    }

    #[test]
    fn a_reasoned_answer_is_its_conclusion_with_the_reasoning_beside_it() {
        let m = &reply(true).completion(&finished("red, so no"))["choices"][0]["message"];
        assert_eq!(m["content"], "no");
        assert_eq!(m["reasoning_content"], "red, so no");
        let m = &reply(false).completion(&finished("red"))["choices"][0]["message"];
        assert_eq!(m["content"], "red");
        assert!(m.get("reasoning_content").is_none());

        // streamed: pieces as reasoning, then the conclusion as content before the finish
        let r = reply(true);
        assert_eq!(
            r.piece("red, so".into()),
            json!({"reasoning_content": "red, so"})
        );
        let mut pending = VecDeque::new();
        r.finish(&finished("red, so no"), false, &mut pending);
        let chunks: Vec<Value> = pending
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("JSON"))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"content": "no"}));
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(reply(false).piece("red".into()), json!({"content": "red"}));
    }

    #[test]
    fn deltas_hold_back_partial_characters() {
        let mut d = Deltas::default();
        assert_eq!(d.next(" blue").as_deref(), Some("blue"));
        assert_eq!(d.next(" blue").as_deref(), None);
        assert_eq!(d.next(" blue \u{FFFD}").as_deref(), None);
        assert_eq!(d.next(" blue \u{e9}").as_deref(), Some(" \u{e9}"));
        assert_eq!(d.next(" blue \u{e9}\u{FFFD}").as_deref(), None);
        assert_eq!(d.finish("blue \u{e9}\u{FFFD}").as_deref(), Some("\u{FFFD}"));
        assert_eq!(d.finish("blue \u{e9}\u{FFFD}").as_deref(), None);
    }
}
