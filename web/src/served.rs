//! What the server serves: a unified VQRAE model (`unified.json`: the from-scratch easy-VQA
//! model that draws and answers) or a LLaVA model (`llava.json`: a pretrained chat LM from a
//! GGUF with adapters, a frozen DINOv2 encoder and a projector, which chats and answers
//! questions about images in sentences, and draws when it was trained to: its directory then
//! holds the VQRAE tokenizer whose codes it samples). The kind is read from the model
//! directory, so `vqrae serve --model <dir>` serves either.

use std::path::Path;

use candle_core::{DType, Device};
use image::RgbImage;
use serde::Serialize;
use serde_json::{json, Value};
use vqrae_generate::sample::{GenerationConfig, ImageRequest};
use vqrae_lm::TextTokenizer;
use vqrae_tokenizer::Vqrae;
use vqrae_unified::llava::model::{LlavaModel, LLAVA_FILE};
use vqrae_unified::model::{UnifiedModel, UNIFIED_FILE};
use vqrae_unified::UnifiedError;

use crate::config::ServeConfig;
use crate::error::ApiError;

/// The served model; the model worker owns it.
// one value per server, moved once into the worker: the variants' sizes do not matter
#[allow(clippy::large_enum_variant)]
pub enum ServedModel {
    Unified(UnifiedModel),
    Llava(LlavaModel),
}

impl From<UnifiedModel> for ServedModel {
    fn from(m: UnifiedModel) -> Self {
        Self::Unified(m)
    }
}

impl From<LlavaModel> for ServedModel {
    fn from(m: LlavaModel) -> Self {
        Self::Llava(m)
    }
}

impl ServedModel {
    /// Loads the model directory `dir`: a LLaVA model when it holds `llava.json` (its base GGUF
    /// and encoder found under `models_root` and checked by sha256; `quantized` overrides the
    /// directory's serving default), else a unified model in `dtype` (whose load errors say
    /// what is missing). `quantized` given for a unified model is an error: its LM is not a
    /// GGUF.
    pub fn load(
        dir: &Path,
        models_root: &Path,
        quantized: Option<bool>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, UnifiedError> {
        if dir.join(LLAVA_FILE).is_file() {
            return Ok(Self::Llava(LlavaModel::load(
                dir,
                models_root,
                quantized,
                device,
            )?));
        }
        if quantized.is_some() && dir.join(UNIFIED_FILE).is_file() {
            return Err(UnifiedError::Config(format!(
                "{} is a unified model (unified.json): quantized / f32 choose how a LLaVA \
                 model's GGUF base is run, and this model has none",
                dir.display()
            )));
        }
        Ok(Self::Unified(UnifiedModel::load(dir, device, dtype)?))
    }

    /// [`Self::load`] of `cfg.model` with `cfg.models_root` and `cfg.quantized`.
    pub fn for_config(
        cfg: &ServeConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, UnifiedError> {
        Self::load(&cfg.model, &cfg.models_root, cfg.quantized, device, dtype)
    }

    /// `"unified"` or `"llava"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unified(_) => "unified",
            Self::Llava(_) => "llava",
        }
    }

    /// What this model does: a LLaVA model draws and tokenizes when it was trained to generate.
    pub(crate) fn capabilities(&self) -> Capabilities {
        match self {
            Self::Unified(_) => Capabilities::UNIFIED,
            Self::Llava(m) => Capabilities::llava(m.t2i().is_some() && m.image.is_some()),
        }
    }

    /// The VQRAE tokenizer whose codes the model draws (and the tokenizing routes use), when
    /// it draws.
    pub(crate) fn image_tokenizer(&self) -> Option<&Vqrae> {
        match self {
            Self::Unified(m) => Some(&m.tokenizer),
            Self::Llava(m) => m.image.as_ref().map(|(t, _)| t),
        }
    }

    /// The code grid `(rows, cols)` of a drawn image, when the model draws.
    pub(crate) fn drawn_grid(&self) -> Option<(usize, usize)> {
        match self {
            Self::Unified(m) => Some(m.cfg.grid),
            Self::Llava(_) => self.image_tokenizer().map(|t| t.config().grid()),
        }
    }

    /// The tokenizer of prompts (what a streamed generation counts its input tokens in).
    pub(crate) fn text(&self) -> &TextTokenizer {
        match self {
            Self::Unified(m) => &m.text,
            Self::Llava(m) => &m.text,
        }
    }

    /// One image per request, whichever kind draws, with `on_codes` called after every
    /// sampling step with the codes so far (streamed previews decode them); an error for a
    /// LLaVA model that was not trained to generate.
    pub(crate) fn generate_with(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
        on_codes: impl FnMut(&[Vec<u32>]),
    ) -> Result<Vec<RgbImage>, UnifiedError> {
        match self {
            Self::Unified(m) => m.generate_with(requests, cfg, on_codes),
            Self::Llava(m) => m.generate_with(requests, cfg, on_codes),
        }
    }

    /// The file whose modification time is the model's `created`.
    pub(crate) fn config_file(&self) -> &'static str {
        match self {
            Self::Unified(_) => UNIFIED_FILE,
            Self::Llava(_) => LLAVA_FILE,
        }
    }
}

/// What the served model does: `GET /v1/models` says it (`capabilities`), and the OpenAPI
/// document and the page follow it, so a client learns from one place which routes answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Capabilities {
    /// Conversations without an image (`/v1/chat/completions` with text only).
    pub(crate) chat: bool,
    /// A question about an image (`/v1/chat/completions` with an `image_url` part).
    pub(crate) image_questions: bool,
    /// Text to image (`/v1/images/generations`).
    pub(crate) image_generation: bool,
    /// An image to VQRAE codes and back (`/v1/images/tokenize`, `/v1/images/reconstructions`).
    pub(crate) image_tokenization: bool,
}

impl Capabilities {
    /// A unified VQRAE model draws, tokenizes and answers questions about an image; it holds
    /// no text conversation (its LM knows only easy-VQA's questions).
    pub(crate) const UNIFIED: Self = Self {
        chat: false,
        image_questions: true,
        image_generation: true,
        image_tokenization: true,
    };
    /// A LLaVA model chats and answers questions about an image; one trained to generate
    /// (`draws`) also draws, and tokenizes with the VQRAE tokenizer it draws through.
    pub(crate) const fn llava(draws: bool) -> Self {
        Self {
            chat: true,
            image_questions: true,
            image_generation: draws,
            image_tokenization: draws,
        }
    }

    /// Whether `/files/images/{file}` can ever hold anything: only routes that make images
    /// (`response_format: "url"`) put files there.
    pub(crate) fn stores_images(&self) -> bool {
        self.image_generation || self.image_tokenization
    }
}

/// What `GET /v1/models` and `/health` say about a served LLaVA model.
#[derive(Clone, Debug)]
pub(crate) struct LlavaInfo {
    /// The model's description: base, encoder, weight form, image slots.
    pub(crate) about: Value,
}

impl LlavaInfo {
    pub(crate) fn of(m: &LlavaModel, capabilities: Capabilities) -> Self {
        let cfg = &m.cfg;
        let mut about = json!({
                "kind": "llava",
                "capabilities": capabilities,
                "base": {"path": cfg.base.path, "sha256": cfg.base.sha256},
                "encoder": {"path": cfg.encoder.path, "sha256": cfg.encoder.sha256},
                "weights": if m.quantized { "quantized" } else { "f32" },
                "image_tokens": cfg.image_tokens,
                "resolution": cfg.resolution,
                "lm": {
                    "hidden_size": m.lm.config().hidden_size,
                    "layers": m.lm.config().num_hidden_layers,
                    "vocab_size": m.lm.config().vocab_size,
                },
        });
        if let (Some(g), Some((t, _))) = (&cfg.generation, &m.image) {
            // what it draws: the tokenizer's images, not the encoder's input side
            let (rows, cols) = t.config().grid();
            about["generation"] = json!({
                "image_size": t.config().image_size,
                "grid": [rows, cols],
                "codebook_size": g.codes,
                "tokenizer_sha256": g.tokenizer_sha256,
            });
            about["defaults"] = json!({"guidance_scale": g.guidance, "source": "llava.json"});
        }
        Self { about }
    }
}

/// The 400 of a route that needs a model that draws (drawing, VQRAE codes) on a LLaVA model
/// trained without generation; `who` names it (`` `smollm` ``).
pub(crate) fn not_unified(who: &str, what: &str) -> ApiError {
    ApiError::invalid(
        "model",
        format!(
            "{who} is a LLaVA chat model: it answers /v1/chat/completions (text, or a \
             question about an image) but does not {what}; serve a unified VQRAE model \
             (models/vqrae-easyvqa, the default) or a LLaVA model trained to generate for that"
        ),
    )
    .code("unsupported_by_model")
}
