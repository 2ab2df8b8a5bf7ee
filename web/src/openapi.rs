//! `GET /openapi.json`: the API described in OpenAPI 3.1, written by hand, of the model this
//! server serves: a unified model's document has the image routes and the model card's
//! checks, a LLaVA model's has text chat with an optional image, the image routes when it
//! draws, and no route it would refuse (what it can do is [`Capabilities`]; where the two
//! kinds differ in more than a route, the `llava` flag below says which text applies).

use serde_json::{json, Map, Value};

use crate::served::Capabilities;
use crate::state::AppState;

fn error_responses(llava: bool, codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for &c in codes {
        let what = match c {
            "400" if llava => "Invalid request (a bad value, size, image or URL; a conversation or question past the model's context)",
            "400" => "Invalid request (a bad value, size, image or URL; a prompt, question or asked-about image outside the model card: code out_of_distribution)",
            "401" => "Missing or wrong API key (when the server has one)",
            "404" => "Unknown model or route",
            "413" => "Request body too large",
            "503" => "The model's queue is full; retry after Retry-After seconds",
            _ => "Error",
        };
        out.insert(
            c.to_string(),
            json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(out)
}

fn json_body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok_json(schema: &str, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn with(mut responses: Value, extra: Value) -> Value {
    if let (Some(r), Some(e)) = (responses.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    responses
}

/// The entries of `extra` (a JSON object) added to `map`.
fn extend(map: &mut Map<String, Value>, extra: Value) {
    if let Value::Object(e) = extra {
        map.extend(e);
    }
}

pub(crate) fn spec(state: &AppState) -> Value {
    let llava = state.model.llava.is_some();
    let description = if llava && state.model.capabilities.image_generation {
        "Chat, visual question answering and text-to-image with a LLaVA model: a pretrained \
         chat LM with adapters, a frozen image encoder and a projector, trained to draw the \
         codes of a VQRAE tokenizer too. It holds text conversations, answers questions about \
         an image in sentences and draws from a prompt. The image generation and chat \
         completion endpoints follow OpenAI's API, so its SDKs work unchanged (base URL \
         http://HOST/v1). Errors have OpenAI's shape."
    } else if llava {
        "Chat and visual question answering with a LLaVA model: a pretrained chat LM with \
         adapters, a frozen image encoder and a projector. It holds text conversations and \
         answers questions about an image in sentences; it does not draw. The chat completion \
         endpoint follows OpenAI's API, so its SDKs work unchanged (base URL http://HOST/v1). \
         Errors have OpenAI's shape."
    } else {
        "Text-to-image and visual question answering with one VQRAE model. \
         The image generation and chat completion endpoints follow OpenAI's API, so its \
         SDKs work unchanged (base URL http://HOST/v1). Errors have OpenAI's shape."
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vqrae-rs HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": description,
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "Only when the server runs with --api-key / VQRAE_API_KEY."}},
            "schemas": schemas(state),
        },
        "security": [{"bearer": []}],
        "paths": paths(state),
    })
}

/// The request and response bodies, with the served model's limits: the chat and model
/// schemas of either kind, the image schemas only where a route uses them.
fn schemas(state: &AppState) -> Value {
    let caps = state.model.capabilities;
    let mut out = Map::new();
    extend(
        &mut out,
        json!({
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["message", "type"], "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "examples": ["invalid_request_error", "server_error"]},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]}}}}},
            "Model": model_schema(state),
        }),
    );
    extend(&mut out, chat_schemas(state));
    if state.model.llava.is_none() {
        extend(
            &mut out,
            json!({"Warnings": {"type": "array", "items": {"type": "string"},
                "description": "Only under the server option ood = \"warn\": the prompt, question or image is outside the model card (the response also carries the header x-vqrae-warning: out_of_distribution)."}}),
        );
    }
    if caps.image_generation {
        extend(&mut out, generation_schemas(state));
    }
    if caps.stores_images() {
        // only a model card's checks warn
        extend(&mut out, images_response(state.model.llava.is_none()));
    }
    if caps.image_tokenization {
        extend(&mut out, tokenize_schemas());
    }
    Value::Object(out)
}

/// How an uploaded image is bounded before it is decoded, for both kinds.
fn image_limits(state: &AppState) -> String {
    let l = &state.cfg.limits;
    format!(
        "PNG, JPEG, GIF, BMP or WebP; at most {} pixels, {} pixels a side and {}:1 long side to \
         short, checked from the header before decoding; the request body at most {} bytes; \
         squashed to {}x{} for the model",
        l.max_image_pixels,
        l.max_image_side,
        l.max_image_aspect,
        l.max_body_bytes,
        state.model.image_size,
        state.model.image_size
    )
}

/// The chat request and response. A unified model answers one question about one image
/// (yes/no answers reasoned, questions checked against its card); a LLaVA model continues a
/// text conversation or answers a question about an image in a sentence.
fn chat_schemas(state: &AppState) -> Value {
    let m = &state.model;
    let l = &state.cfg.limits;
    let llava = m.llava.is_some();
    let chars = l.max_prompt_chars;
    let messages_about = if llava {
        format!(
            "Without an image: the conversation (system, user, assistant turns; developer counts \
             as system) continued by the assistant through the model's chat template. With an \
             image_url part (a data: URL; http(s):// and file:// URLs are refused) in a user \
             message, at most one per message, the last one counting: a question about that \
             image, which is the last user message's text; earlier turns are not read. Every \
             message's text is at most {chars} characters; the rendered prompt plus max_tokens \
             must fit the model's context of {} tokens (400 otherwise).",
            m.context
        )
    } else {
        format!(
            "The question is the last user message's text (at most {chars} characters, in the \
             model card's question forms); the image, which is required, the last image_url \
             part (a data: URL; http(s):// and file:// URLs are refused)."
        )
    };
    let content_string = if llava {
        json!({"type": "string", "maxLength": chars})
    } else {
        json!({"type": "string"})
    };
    let text_part = if llava {
        format!("A message's text parts are joined by spaces; together at most {chars} characters.")
    } else {
        "The last user message's text parts, joined by spaces, are the question.".to_string()
    };
    let answer = if llava {
        "The reply, or for a question about an image the sentence that answers it."
    } else {
        "The answer; for a yes/no question its conclusion (\"no\")."
    };
    let mut message = json!({"role": {"const": "assistant"}, "content": {"type": "string", "description": answer}});
    let mut completion = json!({
        "id": {"type": "string"}, "object": {"const": "chat.completion"},
        "created": {"type": "integer"}, "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"},
            "message": {"type": "object", "properties": {}},
            "finish_reason": {"type": "string", "enum": ["stop", "length"]}}}},
        "usage": {"type": "object", "properties": {
            "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}});
    if !llava {
        message["reasoning_content"] = json!({"type": "string", "description": "Yes/no questions only: the model's whole answer, the image's colour or shape and then the conclusion (\"red, so no\"). Streamed as delta.reasoning_content before delta.content."});
        completion["warnings"] = json!({"$ref": "#/components/schemas/Warnings"});
    }
    completion["choices"]["items"]["properties"]["message"]["properties"] = message;
    json!({
        "ChatCompletionRequest": {"type": "object", "required": ["messages"], "properties": {
            "model": {"type": "string", "examples": [m.id]},
            "messages": {"type": "array", "minItems": 1, "maxItems": l.max_messages,
                "items": {"$ref": "#/components/schemas/ChatMessage"}, "description": messages_about},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": l.max_tokens, "default": l.default_max_tokens},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": l.max_tokens},
            "temperature": {"type": "number", "minimum": 0, "maximum": 10, "default": 0, "description": "0: greedy (the default here)."},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": 1},
            "seed": {"type": "integer", "minimum": 0},
            "n": {"type": "integer", "enum": [1]},
            "stream": {"type": "boolean", "default": false, "description": "Server-sent events of chat.completion.chunk objects, then data: [DONE]."},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}}},
        "ChatMessage": {"type": "object", "required": ["role"], "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"oneOf": [
                content_string,
                {"type": "array", "description": text_part, "items": {"oneOf": [
                    {"type": "object", "required": ["type", "text"], "properties": {
                        "type": {"const": "text"}, "text": {"type": "string"}}},
                    {"type": "object", "required": ["type", "image_url"], "properties": {
                        "type": {"const": "image_url"},
                        "image_url": {"type": "object", "required": ["url"], "properties": {
                            "url": {"type": "string", "description": image_limits(state),
                                "examples": ["data:image/png;base64,iVBORw0KGgo..."]}}}}}]}}]}}},
        "ChatCompletion": {"type": "object", "properties": completion},
    })
}

/// `GET /v1/models`' model object: the fields both kinds have, then the kind's own.
fn model_schema(state: &AppState) -> Value {
    let mut props = json!({
        "id": {"type": "string", "description": "The served model's id; requests may also name it \"default\"."},
        "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"},
        "kind": {"type": "string", "enum": ["unified", "llava"], "description": "unified: a VQRAE model that draws and answers; llava: a pretrained chat LM with an image encoder"},
        "capabilities": {"type": "object", "description": "What the model does; the routes it does not serve answer 400 with code unsupported_by_model and are absent from this document",
            "required": ["chat", "image_questions", "image_generation", "image_tokenization"], "properties": {
            "chat": {"type": "boolean", "description": "Text-only conversations on /v1/chat/completions"},
            "image_questions": {"type": "boolean", "description": "A question about an image (an image_url part) on /v1/chat/completions"},
            "image_generation": {"type": "boolean", "description": "Text to image: /v1/images/generations"},
            "image_tokenization": {"type": "boolean", "description": "VQRAE codes: /v1/images/tokenize and /v1/images/reconstructions"}}},
        "image_size": {"type": "integer", "description": "The square side an image is read (and drawn) at, pixels"},
        "context_length": {"type": "integer", "description": "The LM's context, tokens"},
    });
    if state.model.llava.is_some() {
        extend_obj(
            &mut props,
            json!({
            "base": {"type": "object", "description": "The base LM's GGUF under the models root", "properties": {"path": {"type": "string"}, "sha256": {"type": "string"}}},
            "encoder": {"type": "object", "description": "The image encoder's weights under the models root", "properties": {"path": {"type": "string"}, "sha256": {"type": "string"}}},
            "weights": {"type": "string", "enum": ["quantized", "f32"], "description": "How the base is run: its GGUF blocks (adapters as side paths) or dequantized with the adapters merged"},
            "image_tokens": {"type": "integer", "description": "LM positions an image's features take"},
            "resolution": {"type": "integer", "description": "The encoder's input side, pixels"},
            "lm": {"type": "object", "properties": {"hidden_size": {"type": "integer"}, "layers": {"type": "integer"}, "vocab_size": {"type": "integer"}}},
            "card": {"type": "null", "description": "A LLaVA model has no model card: nothing is checked against one"},
            "generation": {"type": "object", "description": "Only for a model trained to draw: the VQRAE tokenizer whose codes it samples", "properties": {
                "image_size": {"type": "integer", "description": "The square side it draws (and tokenizes) at, pixels"},
                "grid": {"type": "array", "items": {"type": "integer"}},
                "codebook_size": {"type": "integer"},
                "tokenizer_sha256": {"type": "string"}}},
            "defaults": {"type": "object", "description": "Only for a model trained to draw", "properties": {
                "guidance_scale": {"type": "number", "description": "What image generation uses when a request does not say"},
                "source": {"const": "llava.json"}}}}),
        );
    } else {
        extend_obj(
            &mut props,
            json!({
            "grid": {"type": "array", "items": {"type": "integer"}},
            "defaults": {"type": "object", "properties": {
                "guidance_scale": {"type": "number", "description": "What image generation uses when a request does not say"},
                "source": {"type": "string", "enum": ["card", "built-in"]}}},
            "out_of_distribution": {"type": "string", "enum": ["refuse", "warn"], "description": "What the server does with a prompt, question or image outside the card"},
            "card": {"type": ["object", "null"], "description": "The model card (card.json in the model directory): training data, image size, caption vocabulary (articles, colors, shapes, scene_words, examples), question kinds with their forms and examples, measured defaults with their reports, the image check (images.min_reconstruction_psnr), held-out figures; null when the model has none (then nothing is checked)"}}),
        );
    }
    json!({"type": "object", "required": ["id", "object", "kind", "capabilities"], "properties": props})
}

/// [`extend`] on a JSON object value.
fn extend_obj(obj: &mut Value, extra: Value) {
    if let Value::Object(o) = obj {
        extend(o, extra);
    }
}

/// Text to image: the request and its stream's events.
fn generation_schemas(state: &AppState) -> Value {
    let m = &state.model;
    let l = &state.cfg.limits;
    let size = m.size();
    let guidance_default = if m.llava.is_some() {
        "Default: the model's own (llava.json's generation.guidance; GET /v1/models, defaults.guidance_scale)."
    } else {
        "Default: the model card's measured best (GET /v1/models, defaults.guidance_scale)."
    };
    json!({
        "ImageGenerationRequest": {"type": "object", "required": ["prompt"], "properties": {
            "prompt": {"type": "string", "maxLength": l.max_prompt_chars, "examples": ["a blue rectangle"]},
            "model": {"type": "string", "examples": [m.id]},
            "n": {"type": "integer", "minimum": 1, "maximum": l.max_images, "default": 1},
            "size": {"type": "string", "enum": [size, "auto"], "default": size},
            "response_format": {"type": "string", "enum": ["b64_json", "url"], "default": "b64_json"},
            "seed": {"type": "integer", "minimum": 0, "description": "Seed of the first image; image i uses seed + i. Default: random."},
            "guidance_scale": {"type": "number", "minimum": 0, "maximum": 50, "default": m.guidance, "description": format!("Classifier-free guidance; 1 turns it off. {guidance_default}")},
            "temperature": {"type": "number", "minimum": 0, "maximum": 10, "default": 1.0},
            "top_k": {"type": "integer", "minimum": 1},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "negative_prompt": {"type": "string", "description": "What to steer away from instead of the empty prompt."},
            "stream": {"type": "boolean", "default": false, "description": "Server-sent events as the codes are sampled: image_generation.partial_image events, then one image_generation.completed per image (b64_json only). Errors found before sampling begins are plain JSON errors."},
            "partial_images": {"type": "integer", "minimum": 0, "maximum": m.grid.0.max(3), "default": 0, "description": "With stream: partial images per image, spread over the rows of codes (the rows not sampled yet are grey). Ignored without stream."}}},
        "ImageGenStreamEvent": {"type": "object", "required": ["type", "b64_json", "created_at", "size", "image_index"], "properties": {
            "type": {"type": "string", "enum": ["image_generation.partial_image", "image_generation.completed"]},
            "b64_json": {"type": "string", "description": "PNG, base64"},
            "partial_image_index": {"type": "integer", "description": "0-based; partial events only"},
            "image_index": {"type": "integer", "description": "Which of the n images (an extension)"},
            "seed": {"type": "integer", "description": "The image's seed (an extension)"},
            "created_at": {"type": "integer"},
            "size": {"type": "string"},
            "quality": {"const": "auto"}, "background": {"const": "opaque"}, "output_format": {"const": "png"},
            "usage": {"type": "object", "description": "completed events only, per image", "properties": {
                "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
                "input_tokens_details": {"type": "object", "properties": {"text_tokens": {"type": "integer"}, "image_tokens": {"type": "integer"}}}}}}},
    })
}

/// The images response of generations and reconstructions; `warnings` where a model card
/// checks prompts.
fn images_response(warnings: bool) -> Value {
    let mut response = json!({
        "ImagesResponse": {"type": "object", "required": ["created", "data"], "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": {"type": "object", "properties": {
                "b64_json": {"type": "string", "description": "PNG, base64"},
                "url": {"type": "string", "description": "A short-lived URL of the PNG on this server"},
                "revised_prompt": {"type": "string"},
                "seed": {"type": "integer"}}}}}},
    });
    if warnings {
        response["ImagesResponse"]["properties"]["warnings"] =
            json!({"$ref": "#/components/schemas/Warnings"});
    }
    response
}

/// An image to VQRAE codes, and back to pixels.
fn tokenize_schemas() -> Value {
    json!({
        "ImageInput": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "description": "data:image/...;base64,... or bare base64 (PNG, JPEG, GIF, BMP, WebP)"},
            "model": {"type": "string"}}},
        "TokenizeRequest": {"allOf": [{"$ref": "#/components/schemas/ImageInput"}, {"type": "object", "properties": {
            "include_features": {"type": "boolean", "default": false}}}]},
        "TokenizeResponse": {"type": "object", "properties": {
            "object": {"const": "image.tokens"}, "model": {"type": "string"},
            "image_size": {"type": "integer"},
            "grid": {"type": "array", "items": {"type": "integer"}, "description": "[rows, cols]"},
            "codes": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}, "description": "rows x cols codebook indices"},
            "codebook_size": {"type": "integer"},
            "features_shape": {"type": "array", "items": {"type": "integer"}, "description": "[N, d]"},
            "features": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}},
        "ReconstructionRequest": {"allOf": [{"$ref": "#/components/schemas/ImageInput"}, {"type": "object", "properties": {
            "response_format": {"type": "string", "enum": ["b64_json", "url"], "default": "b64_json"}}}]},
    })
}

/// The endpoints the served model answers: a route a kind refuses (400 unsupported_by_model)
/// is left out.
fn paths(state: &AppState) -> Value {
    let llava = state.model.llava.is_some();
    let caps: Capabilities = state.model.capabilities;
    let api_errors = ["400", "401", "404", "413", "503"];
    let errors = |codes: &[&str]| error_responses(llava, codes);
    let mut out = Map::new();
    if caps.image_generation {
        let size = state.model.size();
        extend(
            &mut out,
            json!({"/v1/images/generations": {"post": {
            "summary": "Generate images from a prompt (OpenAI-compatible, with sampling extensions)",
            "description": format!("Images are {size}. Concurrent requests with equal sampling settings share batched forward passes."),
            "requestBody": json_body("ImageGenerationRequest"),
            "responses": with(errors(&api_errors), json!({"200": {
                "description": "The images; with stream: true, text/event-stream of `event: image_generation.partial_image` and `event: image_generation.completed` (data: ImageGenStreamEvent), or `event: error` (data: Error) on a failure after the stream began",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ImagesResponse"}},
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/ImageGenStreamEvent"}}}}}))}}}),
        );
    }
    let chat_summary = if llava {
        "Chat (text only), or answer a question about an image in a sentence (OpenAI-compatible)"
    } else {
        "Answer a question about an image (OpenAI-compatible)"
    };
    extend(
        &mut out,
        json!({"/v1/chat/completions": {"post": {
        "summary": chat_summary,
        "requestBody": json_body("ChatCompletionRequest"),
        "responses": with(errors(&api_errors), json!({"200": {
            "description": "The answer; with stream: true, text/event-stream of chat.completion.chunk objects ending with data: [DONE]",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                "text/event-stream": {"schema": {"type": "string"}}}}}))}}}),
    );
    if caps.image_tokenization {
        extend(
            &mut out,
            json!({
            "/v1/images/tokenize": {"post": {
                "summary": "An image's discrete codes grid and continuous feature shape",
                "requestBody": json_body("TokenizeRequest"),
                "responses": with(errors(&api_errors), json!({"200": ok_json("TokenizeResponse", "Codes and feature shape")}))}},
            "/v1/images/reconstructions": {"post": {
                "summary": "An image encoded to codes and decoded back to pixels",
                "requestBody": json_body("ReconstructionRequest"),
                "responses": with(errors(&api_errors), json!({"200": ok_json("ImagesResponse", "The reconstruction")}))}}}),
        );
    }
    if caps.stores_images() {
        extend(
            &mut out,
            json!({"/files/images/{file}": {"get": {"summary": "A generated image kept for response_format: url (expires)", "security": [],
            "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": with(errors(&["404"]), json!({"200": {"description": "PNG", "content": {"image/png": {}}}}))}}}),
        );
    }
    let page = if llava && caps.image_generation {
        "A small web page: prompt to images; chat, with an image to ask about or without"
    } else if llava {
        "A small web page: chat, with an image to ask about or without"
    } else {
        "A small web page: prompt to images, image and question to answer"
    };
    extend(
        &mut out,
        json!({
            "/v1/models": {"get": {"summary": "The served model: its kind, capabilities and card", "responses": with(errors(&["401"]), json!({"200": {"description": "{object: list, data: [Model]}"}}))}},
            "/v1/models/{id}": {"get": {"summary": "One model (its id or \"default\")", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(errors(&["401", "404"]), json!({"200": ok_json("Model", "The model object")}))}},
            "/health": {"get": {"summary": "Liveness and queue depth", "security": [], "responses": {"200": {"description": "{status: ok, ...}"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics: requests, latency, queue depth, batch sizes, images and tokens generated",
                "responses": with(errors(&["401"]), json!({"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}}))}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/": {"get": {"summary": page, "security": [],
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
        }),
    );
    Value::Object(out)
}
