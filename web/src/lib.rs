//! vqrae-web: the axum HTTP API over both paths and a small web page (lands with the HTTP API
//! issue).
//!
//! What lands here: OpenAI-compatible `POST /v1/images/generations` and
//! `POST /v1/chat/completions` (with image parts and server-sent-event streaming), tokenize and
//! reconstruction endpoints, `/v1/models`, `/health`, `/metrics`, `/openapi.json`, request
//! batching into shared forward passes behind a bounded queue, and the static page at `/`.
//!
//! Nothing is implemented yet; this crate exists so that the workspace has its final shape.
