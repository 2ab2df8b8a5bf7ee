//! A LLaVA model's chat on the model worker: a batch of requests that agree on their kind,
//! sampling settings and token budget ([`ChatJob::batches_with`]) answered in one batched
//! decode, each request's text sent down its own channel as it grows.
//!
//! - text conversations go through the LM's chat template ([`vqrae_lm::converse::Chat`]), as
//!   the base model (SmolLM2) was trained to chat, adapters included;
//! - an image and a question go through the encoder and projector
//!   ([`vqrae_unified::llava::answer::LlavaVqa`]), answered in a sentence.
//!
//! A batch whose rows cannot run together for one row's fault (a prompt past the context) is
//! rerun request by request, so only that request gets the 400.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::RgbImage;
use tokio::sync::mpsc::UnboundedSender;
use vqrae_lm::chat::ChatMessage;
use vqrae_lm::converse::Chat;
use vqrae_lm::generate_text::{check_context, TextStream};
use vqrae_lm::{LmError, SamplingConfig};
use vqrae_unified::llava::model::LlavaModel;
use vqrae_unified::UnifiedError;

use crate::batcher::worker_failed;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::routes::chat::{Deltas, Finished, Piece};
use crate::served::ServedModel;

/// What one request asks.
pub(crate) enum ChatInput {
    /// A conversation (system, user, assistant turns) continued by the assistant.
    Text(Vec<ChatMessage>),
    /// A question about an image (decoded and resized to the encoder's resolution).
    Image { image: RgbImage, question: String },
}

/// One LLaVA chat request on its way to the worker.
pub(crate) struct ChatJob {
    pub(crate) input: ChatInput,
    pub(crate) max_tokens: usize,
    pub(crate) sampling: SamplingConfig,
    /// [`Piece::Checked`] first, then the answer's [`Piece::Delta`]s, then `Done` or `Failed`.
    pub(crate) tx: UnboundedSender<Piece>,
}

impl ChatJob {
    /// Whether the two may share a batch: both text or both image, the same sampling settings
    /// (a batch draws from one sampler) and the same budget.
    pub(crate) fn batches_with(&self, other: &Self) -> bool {
        let same_kind = matches!(
            (&self.input, &other.input),
            (ChatInput::Text(_), ChatInput::Text(_))
                | (ChatInput::Image { .. }, ChatInput::Image { .. })
        );
        same_kind && self.max_tokens == other.max_tokens && self.sampling == other.sampling
    }
}

/// An LM error as the client sees it: a prompt past the context or a conversation the template
/// refuses is a 400, anything else a 500.
fn lm_error(e: LmError) -> ApiError {
    match e {
        LmError::Chat(m) => ApiError::bad_request(format!(
            "the model's chat template refused the conversation: {m}"
        )),
        e => ApiError::from_model(UnifiedError::Lm(Box::new(e))),
    }
}

/// Answers `group` (jobs that [`ChatJob::batches_with`] each other) on `model`.
pub(crate) fn run_batch(model: &ServedModel, group: Vec<ChatJob>, metrics: &Metrics) {
    // a client that went away does not need its answer
    let group: Vec<ChatJob> = group.into_iter().filter(|j| !j.tx.is_closed()).collect();
    if group.is_empty() {
        return;
    }
    let ServedModel::Llava(m) = model else {
        let e = ApiError::internal("a chat job reached a model that is not a LLaVA model");
        for j in group {
            let _ = j.tx.send(Piece::Failed(e.clone()));
        }
        return;
    };
    // a prompt past the context is refused before its answer (a stream) starts; the others
    // go on. A LLaVA model has no model card: nothing else to judge.
    let mut fit = Vec::with_capacity(group.len());
    for j in group {
        match check_prompt(m, &j) {
            Ok(()) => {
                let _ = j.tx.send(Piece::Checked(None));
                fit.push(j);
            }
            Err(e) => {
                let _ = j.tx.send(Piece::Failed(e));
            }
        }
    }
    if !fit.is_empty() {
        run_group(m, fit, metrics);
    }
}

/// A 400 when the job's prompt and budget do not fit the LM's context (the batch's own check
/// then passes too: its longest prompt is one of these).
fn check_prompt(m: &LlavaModel, job: &ChatJob) -> Result<(), ApiError> {
    match &job.input {
        ChatInput::Text(messages) => {
            let chat = Chat {
                model: &m.lm,
                tok: &m.text,
                template: &m.template,
            };
            let ids = chat.prompt_ids(messages).map_err(lm_error)?;
            check_context(&m.lm, ids.len(), job.max_tokens).map_err(lm_error)
        }
        ChatInput::Image { question, .. } => {
            let (ids, _) = m.vqa().prompt.ids(question)?;
            let context = m.lm.config().max_position_embeddings;
            if ids.len() >= context {
                return Err(ApiError::bad_request(format!(
                    "the question and the image are {} tokens: no room for an answer in the \
                     model's context of {context} tokens; ask a shorter question",
                    ids.len()
                )));
            }
            Ok(())
        }
    }
}

fn run_group(m: &LlavaModel, group: Vec<ChatJob>, metrics: &Metrics) {
    let started = std::time::Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| match group.first().map(|j| &j.input) {
        Some(ChatInput::Image { .. }) => answer_images(m, &group),
        _ => answer_texts(m, &group),
    }));
    match outcome {
        Ok(Ok(done)) if done.len() == group.len() => {
            tracing::debug!(
                requests = group.len(),
                ms = started.elapsed().as_millis() as u64,
                "chat batch"
            );
            for (j, f) in group.into_iter().zip(done) {
                metrics.tokens(f.completion_tokens);
                let _ = j.tx.send(Piece::Done(f));
            }
        }
        Ok(Ok(done)) => {
            let e = ApiError::internal(format!(
                "the model gave {} answers for {} requests",
                done.len(),
                group.len()
            ));
            for j in group {
                let _ = j.tx.send(Piece::Failed(e.clone()));
            }
        }
        // one request's fault (a prompt past the context) must not fail the others, and it
        // shows before any token is drawn: each on its own
        Ok(Err(e)) if e.status.is_client_error() && group.len() > 1 => {
            for j in group {
                run_group(m, vec![j], metrics);
            }
        }
        Ok(Err(e)) => {
            for j in group {
                let _ = j.tx.send(Piece::Failed(e.clone()));
            }
        }
        Err(_) => {
            metrics.panicked();
            tracing::error!(requests = group.len(), "the model panicked in a chat batch");
            for j in group {
                let _ = j.tx.send(Piece::Failed(worker_failed()));
            }
        }
    }
}

/// Text conversations through the chat template, one batch, streamed as
/// [`TextStream`] pieces (joined, they are the reply).
fn answer_texts(m: &LlavaModel, group: &[ChatJob]) -> Result<Vec<Finished>, ApiError> {
    let chat = Chat {
        model: &m.lm,
        tok: &m.text,
        template: &m.template,
    };
    let conversations: Vec<Vec<ChatMessage>> = group
        .iter()
        .map(|j| match &j.input {
            ChatInput::Text(messages) => messages.clone(),
            ChatInput::Image { question, .. } => vec![ChatMessage::user(question.clone())],
        })
        .collect();
    let (max_tokens, sampling) = (group[0].max_tokens, &group[0].sampling);
    let mut streams: Vec<TextStream> = group.iter().map(|_| TextStream::new(&m.text)).collect();
    let replies = chat
        .reply_batch(&conversations, sampling, max_tokens, |row, id| {
            let (Some(stream), Some(job)) = (streams.get_mut(row), group.get(row)) else {
                return;
            };
            match stream.push(id) {
                Ok(piece) if !piece.is_empty() => {
                    let _ = job.tx.send(Piece::Delta(piece));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "decoding a streamed token failed"),
            }
        })
        .map_err(lm_error)?;
    let mut done = Vec::with_capacity(replies.len());
    for ((reply, stream), job) in replies.into_iter().zip(&mut streams).zip(group) {
        if let Ok(rest) = stream.finish() {
            if !rest.is_empty() {
                let _ = job.tx.send(Piece::Delta(rest));
            }
        }
        done.push(Finished {
            completion_tokens: reply.ids.len(),
            text: reply.text,
            finish_reason: if reply.stopped { "stop" } else { "length" },
            prompt_tokens: reply.prompt_tokens,
        });
    }
    Ok(done)
}

/// Questions about images, one batch through the encoder, projector and LM; each answer is a
/// sentence, streamed as it grows (trimmed, as the final answer is).
fn answer_images(m: &LlavaModel, group: &[ChatJob]) -> Result<Vec<Finished>, ApiError> {
    let mut images = Vec::with_capacity(group.len());
    let mut questions = Vec::with_capacity(group.len());
    for j in group {
        if let ChatInput::Image { image, question } = &j.input {
            images.push(image.clone());
            questions.push(question.as_str());
        }
    }
    if images.len() != group.len() {
        return Err(ApiError::internal(
            "a batch of image questions held a text chat",
        ));
    }
    let (max_tokens, sampling) = (group[0].max_tokens, &group[0].sampling);
    let features = m.features(&images)?;
    let vqa = m.vqa();
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); group.len()];
    let mut deltas: Vec<Deltas> = group.iter().map(|_| Deltas::default()).collect();
    let answers = vqa.answer_with(&features, &questions, max_tokens, sampling, |row, id| {
        let (Some(row_ids), Some(d), Some(job)) =
            (ids.get_mut(row), deltas.get_mut(row), group.get(row))
        else {
            return;
        };
        row_ids.push(id);
        if let Some(delta) = m.text.decode(row_ids).ok().and_then(|t| d.next(&t)) {
            let _ = job.tx.send(Piece::Delta(delta));
        }
    })?;
    let context = m.lm.config().max_position_embeddings;
    let mut done = Vec::with_capacity(answers.len());
    for (row, text) in answers.into_iter().enumerate() {
        if let Some(rest) = deltas[row].finish(&text) {
            let _ = group[row].tx.send(Piece::Delta(rest));
        }
        let prompt_tokens = vqa.prompt.ids(questions[row]).map_or(0, |(p, _)| p.len());
        let generated = ids[row].len();
        let cut = generated >= max_tokens || prompt_tokens + generated >= context;
        done.push(Finished {
            text,
            finish_reason: if cut { "length" } else { "stop" },
            prompt_tokens,
            completion_tokens: generated,
        });
    }
    Ok(done)
}
