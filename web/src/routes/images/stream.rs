//! `POST /v1/images/generations` with `"stream": true`: OpenAI's image-streaming shape over
//! server-sent events. While the LM samples an image's codes (row by row, top to bottom), the
//! request gets `partial_images` previews, then the final image:
//!
//! ```text
//! event: image_generation.partial_image
//! data: {"type": "image_generation.partial_image", "b64_json": "...", "partial_image_index": 0,
//!        "image_index": 0, "seed": 7, "created_at": ..., "size": "64x64", ...}
//! ...
//! event: image_generation.completed
//! data: {"type": "image_generation.completed", "b64_json": "...", "image_index": 0, "seed": 7,
//!        "usage": {...}, ...}
//! ```
//!
//! Partial `i` (of `N`) shows the first `ceil((i + 1) R / (N + 1))` of the grid's `R` code rows,
//! decoded, the rows still to come grey (`partial_images` in `batcher.rs`); `N` may be 0 to
//! `max(3, R)` (OpenAI allows 0 to 3), and when it is above `R` only `R` partials come (OpenAI
//! too may send fewer). With `n > 1` every image gets its own events, told apart by
//! `image_index` (an extension, as is `seed`): each partial index for images 0..n, then the
//! completed events in image order. The final image is the one the same request without
//! `stream` gets, bit for bit.
//!
//! Errors found before the first code is sampled (bad values, a full queue, a prompt past the
//! context) are plain JSON errors with their status; the response starts only once sampling
//! has. A failure after that is an `event: error` with OpenAI's error object, and the stream
//! ends.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use image::RgbImage;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::Plan;
use crate::batcher::{Preview, Previews};
use crate::codec;
use crate::error::ApiError;
use crate::routes::ResponseFormat;
use crate::state::{unix_now, AppState};

/// OpenAI's largest `partial_images`; a model with more code rows allows up to its rows.
const OPENAI_MAX_PARTIALS: usize = 3;

/// Codes sampled per image after which each partial image is decoded: `partials` (at most
/// `rows`) row boundaries spread evenly over the grid, ascending and distinct.
fn preview_steps(partials: usize, rows: usize, cols: usize) -> Vec<usize> {
    let sent = partials.min(rows);
    (0..sent)
        .map(|i| ((i + 1) * rows).div_ceil(sent + 1) * cols)
        .collect()
}

fn worker_failed() -> ApiError {
    ApiError::internal("The model worker failed on this request (see the server log).")
}

/// What the events of one request share.
struct Shape {
    size: String,
    seeds: Vec<u64>,
    image_tokens: usize,
}

impl Shape {
    /// One event's data: the fields OpenAI's image events carry, and ours.
    fn data(&self, kind: &str, image: usize, png: &[u8]) -> Value {
        json!({
            "type": kind,
            "b64_json": codec::base64(png),
            "created_at": unix_now(),
            "size": self.size,
            "quality": "auto",
            "background": "opaque",
            "output_format": "png",
            "image_index": image,
            "seed": self.seeds.get(image),
        })
    }

    /// One `event: image_generation.partial_image` per image.
    fn partials(&self, index: usize, images: &[RgbImage], out: &mut VecDeque<Event>) {
        for (j, img) in images.iter().enumerate() {
            match codec::png(img) {
                Ok(png) => {
                    let mut data = self.data("image_generation.partial_image", j, &png);
                    data["partial_image_index"] = json!(index);
                    out.push_back(event("image_generation.partial_image", &data));
                }
                Err(e) => tracing::warn!(error = %e.message, "encoding a partial image failed"),
            }
        }
    }

    /// One `event: image_generation.completed` per image, or one `event: error`.
    fn completed(&self, images: &[RgbImage], prompt_tokens: usize, out: &mut VecDeque<Event>) {
        for (j, img) in images.iter().enumerate() {
            match codec::png(img) {
                Ok(png) => {
                    let mut data = self.data("image_generation.completed", j, &png);
                    // per image: the prompt it was drawn from, and its codes
                    data["usage"] = json!({
                        "input_tokens": prompt_tokens,
                        "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
                        "output_tokens": self.image_tokens,
                        "total_tokens": prompt_tokens + self.image_tokens,
                    });
                    out.push_back(event("image_generation.completed", &data));
                }
                Err(e) => {
                    out.push_back(error_event(&e));
                    return;
                }
            }
        }
    }
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

fn error_event(e: &ApiError) -> Event {
    let mut data = e.body();
    data["type"] = json!("error");
    event("error", &data)
}

/// Checks what streaming needs of a request, queues it, waits for its sampling to begin and
/// answers with the event stream.
pub(super) async fn respond(
    state: &AppState,
    plan: Plan,
    partial_images: Option<usize>,
) -> Result<Response, ApiError> {
    let (rows, cols) = state.model.grid;
    let partials = partial_images.unwrap_or(0);
    let max = rows.max(OPENAI_MAX_PARTIALS);
    if partials > max {
        return Err(ApiError::invalid(
            "partial_images",
            format!("partial_images must be between 0 and {max} (this model draws {rows} rows of codes), got {partials}"),
        ));
    }
    if plan.format != ResponseFormat::B64Json {
        return Err(ApiError::invalid(
            "response_format",
            "a streamed generation sends its images as b64_json; response_format \"url\" \
             needs stream: false",
        ));
    }
    let shape = Shape {
        size: state.model.size(),
        seeds: plan.requests.iter().map(|r| r.seed).collect(),
        image_tokens: rows * cols,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let previews = Previews {
        steps: preview_steps(partials, rows, cols),
        tx,
    };
    let reply = state
        .engine
        .generate_streamed(plan.requests, plan.cfg, previews)?;
    let mut pending = VecDeque::new();
    let mut done = None;
    // answer only once sampling has begun, so that what the model refuses is a plain error
    let prompt_tokens = match rx.recv().await {
        Some(Preview::Started { prompt_tokens }) => {
            done = Some(reply);
            prompt_tokens
        }
        Some(Preview::Partial { index, images }) => {
            // never sent before Started; shown if it were
            shape.partials(index, &images, &mut pending);
            done = Some(reply);
            0
        }
        // the job ended without a step: it failed (or drew no codes at all)
        None => match reply.await {
            Ok(Ok(images)) => {
                shape.completed(&images, 0, &mut pending);
                0
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(worker_failed()),
        },
    };
    let streaming = Streaming {
        rx,
        done,
        pending,
        shape,
        prompt_tokens,
    };
    let events = stream::unfold(streaming, |mut s| async move {
        let next = s.next().await?;
        Some((Ok::<Event, Infallible>(next), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The state of one response's event stream.
struct Streaming {
    rx: mpsc::UnboundedReceiver<Preview>,
    /// The final images, until they are turned into events.
    done: Option<oneshot::Receiver<Result<Vec<RgbImage>, ApiError>>>,
    pending: VecDeque<Event>,
    shape: Shape,
    prompt_tokens: usize,
}

impl Streaming {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let done = self.done.as_mut()?;
            // the worker drops its sender after it replies, so the partials all come first
            match self.rx.recv().await {
                Some(Preview::Partial { index, images }) => {
                    self.shape.partials(index, &images, &mut self.pending);
                }
                Some(Preview::Started { .. }) => {}
                None => {
                    match done.await {
                        Ok(Ok(images)) => {
                            self.shape
                                .completed(&images, self.prompt_tokens, &mut self.pending)
                        }
                        Ok(Err(e)) => self.pending.push_back(error_event(&e)),
                        Err(_) => self.pending.push_back(error_event(&worker_failed())),
                    }
                    self.done = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preview_steps;

    #[test]
    fn partials_fall_on_distinct_row_boundaries() {
        // 4 x 4 grid: 3 partials after rows 1, 2, 3 (of 4)
        assert_eq!(preview_steps(3, 4, 4), vec![4, 8, 12]);
        assert_eq!(preview_steps(1, 4, 4), vec![8]);
        assert_eq!(preview_steps(0, 4, 4), Vec::<usize>::new());
        // as many partials as rows: one per row, the last one complete
        assert_eq!(preview_steps(4, 4, 4), vec![4, 8, 12, 16]);
        // more than rows: one per row
        assert_eq!(preview_steps(3, 2, 2), vec![2, 4]);
        for rows in 1..12 {
            for n in 0..=rows {
                let s = preview_steps(n, rows, 3);
                assert_eq!(s.len(), n);
                assert!(s.windows(2).all(|w| w[0] < w[1]), "{rows} {n}: {s:?}");
                assert!(
                    s.iter().all(|&k| k >= 3 && k <= rows * 3),
                    "{rows} {n}: {s:?}"
                );
            }
        }
    }
}
