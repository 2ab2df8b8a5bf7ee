//! A LLaVA model directory: `llava.json` (what base and encoder it was trained on, by file and
//! sha256, and its shape) and `adapters.safetensors` (LoRA + projector). The base GGUF and the
//! encoder are not copied in (100 MB that the setup scripts install): they are found under a
//! models root (`.data/models` by default) and checked against the recorded hashes, so a
//! directory never runs on weights it was not trained on.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_generate::sample::{GenerationConfig, ImageRequest, T2i};
use vqrae_lm::chat::{stop_ids, ChatTemplate};
use vqrae_lm::gguf::{tokenizer::text_tokenizer, GgufFile};
use vqrae_lm::lora::Adapters;
use vqrae_lm::{Llama, SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::encoder::{load_hf_encoder, HfEncoder};
use vqrae_tokenizer::preprocess::Preprocess;
use vqrae_tokenizer::Vqrae;
use vqrae_understand::{Projector, ProjectorConfig};

use super::answer::LlavaVqa;
use super::data::{encode_features, preprocess_at};
use super::image_rows::IMAGE_ROWS;
use super::parts::projector_from;
use super::prompt::ImagePrompt;
use crate::error::{Result, UnifiedError};

pub const LLAVA_FILE: &str = "llava.json";
pub const FORMAT: &str = "vqrae-llava/1";
pub use super::run::ADAPTERS_FILE;

/// A file the model was trained on, found under the models root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRef {
    /// Path under the models root (`smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`).
    pub path: String,
    pub sha256: String,
    /// How to install it (the setup script).
    pub install: String,
}

/// `llava.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlavaModelConfig {
    pub format: String,
    pub base: WeightsRef,
    /// The encoder directory's `model.safetensors`.
    pub encoder: WeightsRef,
    pub resolution: u32,
    pub image_tokens: usize,
    pub projector: ProjectorConfig,
    /// Whether serving runs the base quantized (the GGUF's blocks, adapters as side paths) or
    /// dequantized to f32 (adapters merged), when the caller does not say.
    pub serve_quantized: bool,
    /// Text-to-image, when the model learned it: the tokenizer whose codes it draws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<ModelGeneration>,
    /// Which encoder the VQA path reads features from.
    #[serde(default, skip_serializing_if = "VqaFeatures::is_encoder")]
    pub vqa_features: VqaFeatures,
}

/// Where a LLaVA model's visual features come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VqaFeatures {
    /// The installed encoder `llava.json` names (what the projector was trained on).
    #[default]
    Encoder,
    /// The generation tokenizer's own encoder: one encoder for both paths, the paper's unified
    /// tokenizer. After a stage 2 that moved the encoder this differs from `Encoder`.
    Tokenizer,
}

impl VqaFeatures {
    fn is_encoder(&self) -> bool {
        *self == Self::Encoder
    }
}

/// The generation part of `llava.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGeneration {
    /// The VQRAE tokenizer's directory inside the model directory ([`TOKENIZER_DIR`]).
    pub tokenizer: String,
    /// Its [`vqrae_data::fs::sha256_model`], checked on load.
    pub tokenizer_sha256: String,
    /// Codebook size: the image rows are `codes + 3` (the markers after the codes).
    pub codes: usize,
    /// Codes per image (the tokenizer's token grid).
    pub image_tokens: usize,
    /// The guidance scale when a request does not say.
    pub guidance: f64,
}

/// Where a generating model's tokenizer lives inside its directory.
pub const TOKENIZER_DIR: &str = "tokenizer";

/// A loaded LLaVA model: base + adapters, projector, encoder, tokenizer and chat template.
pub struct LlavaModel {
    pub cfg: LlavaModelConfig,
    pub lm: Llama,
    pub projector: Projector,
    pub encoder: HfEncoder,
    pub preprocess: Preprocess,
    pub text: TextTokenizer,
    pub template: ChatTemplate,
    pub stops: Vec<u32>,
    pub quantized: bool,
    /// The tokenizer and the unified vocabulary, when the model generates images.
    pub image: Option<(Vqrae, UnifiedVocab)>,
}

fn lm_err(e: vqrae_lm::LmError) -> UnifiedError {
    UnifiedError::Lm(Box::new(e))
}

/// `root/reference.path`, checked against its sha256.
fn resolve(root: &Path, r: &WeightsRef, what: &str) -> Result<PathBuf> {
    let path = root.join(&r.path);
    if !path.exists() {
        return Err(UnifiedError::Config(format!(
            "the {what} {} is not installed (run {})",
            path.display(),
            r.install
        )));
    }
    let sha = vqrae_data::fs::sha256_file(&path)?;
    if sha != r.sha256 {
        return Err(UnifiedError::Config(format!(
            "the {what} {} has sha256 {sha}, the model was trained on {} (run {})",
            path.display(),
            r.sha256,
            r.install
        )));
    }
    Ok(path)
}

impl LlavaModel {
    /// Loads `dir` with its base and encoder from `models_root`; `quantized` overrides the
    /// directory's serving default.
    pub fn load(
        dir: &Path,
        models_root: &Path,
        quantized: Option<bool>,
        device: &Device,
    ) -> Result<Self> {
        let cfg = read_model_config(dir)?;
        let base_path = resolve(models_root, &cfg.base, "base LM")?;
        let encoder_file = resolve(models_root, &cfg.encoder, "encoder")?;
        let encoder_dir = encoder_file
            .parent()
            .ok_or_else(|| UnifiedError::Config("the encoder path has no directory".into()))?;
        let gguf = GgufFile::open(&base_path).map_err(lm_err)?;
        let adapters = Adapters::load(
            &dir.join(ADAPTERS_FILE),
            gguf.config(),
            &cfg.base.sha256,
            device,
        )
        .map_err(lm_err)?;
        let projector = projector_from(&adapters, &cfg.projector)?;
        let quantized = quantized.unwrap_or(cfg.serve_quantized);
        if quantized && cfg.generation.is_some() {
            return Err(UnifiedError::Config(
                "a model that generates images serves its base dequantized (its image rows \
                 extend the tied embedding table, which the quantized head cannot take)"
                    .into(),
            ));
        }
        let lm = if quantized {
            let mut lm = gguf.load_quantized(device).map_err(lm_err)?;
            lm.attach_adapters(&adapters).map_err(lm_err)?;
            lm
        } else {
            let mut lm = gguf.load_dequantized(device, DType::F32).map_err(lm_err)?;
            lm.merge_adapters(&adapters).map_err(lm_err)?;
            if let Some(g) = &cfg.generation {
                let rows = adapters
                    .require_extra(IMAGE_ROWS, &[g.codes + 3, lm.config().hidden_size])
                    .map_err(lm_err)?;
                lm.append_vocab_rows(rows).map_err(lm_err)?;
            }
            lm.fuse_for_inference().map_err(lm_err)?;
            lm
        };
        let image = match &cfg.generation {
            Some(g) => Some(load_image_side(dir, g, gguf.config().vocab_size, device)?),
            None => None,
        };
        let text = text_tokenizer(gguf.content()).map_err(lm_err)?;
        let template = ChatTemplate::from_gguf(gguf.content())
            .map_err(lm_err)?
            .ok_or_else(|| UnifiedError::Config("the base GGUF has no chat template".into()))?;
        let stops = stop_ids(&text);
        let encoder = load_hf_encoder(encoder_dir, device, DType::F32)?;
        let preprocess = preprocess_at(&encoder, cfg.resolution);
        let mut model = Self {
            cfg,
            lm,
            projector,
            encoder,
            preprocess,
            text,
            template,
            stops,
            quantized,
            image,
        };
        if model.cfg.vqa_features == VqaFeatures::Tokenizer {
            let tokenizer = model
                .image
                .as_ref()
                .map(|(t, _)| t.clone())
                .ok_or_else(|| {
                    UnifiedError::Config(
                        "llava.json: vqa_features = \"tokenizer\" needs a generation tokenizer"
                            .into(),
                    )
                })?;
            model.use_features_of(&tokenizer)?;
        }
        Ok(model)
    }

    /// Answers from `tokenizer`'s encoder features from now on (the Table 6 measurement: the
    /// projector trained on one encoder, fed another). The encoder must have the projector's
    /// input width and give the model's number of image tokens at its resolution.
    pub fn use_features_of(&mut self, tokenizer: &Vqrae) -> Result<()> {
        let encoder = tokenizer.feature_encoder();
        let width = encoder.config.width();
        if width != self.cfg.projector.input_dim {
            return Err(UnifiedError::Config(format!(
                "the tokenizer's encoder is {width} wide, the projector takes {}",
                self.cfg.projector.input_dim
            )));
        }
        let side = self.cfg.resolution as usize;
        let (rows, cols) = encoder.encoder.grid(side, side);
        if rows * cols != self.cfg.image_tokens {
            return Err(UnifiedError::Config(format!(
                "the tokenizer's encoder gives {} tokens at {side} px, the model takes {}",
                rows * cols,
                self.cfg.image_tokens
            )));
        }
        self.preprocess = preprocess_at(&encoder, self.cfg.resolution);
        self.encoder = encoder;
        Ok(())
    }

    /// The text-to-image sampler over this model, when it generates.
    pub fn t2i(&self) -> Option<T2i<'_>> {
        let (_, vocab) = self.image.as_ref()?;
        Some(T2i {
            lm: &self.lm,
            text: &self.text,
            vocab,
            image_tokens: self.cfg.generation.as_ref()?.image_tokens,
        })
    }

    /// One image per request ([`crate::model::UnifiedModel::generate`]'s contract): codes from the LM, pixels
    /// from the tokenizer's decoder; an error for a model that does not generate.
    pub fn generate(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
    ) -> Result<Vec<RgbImage>> {
        self.generate_with(requests, cfg, |_| {})
    }

    /// [`Self::generate`], calling `on_codes` with the codes sampled so far after every step
    /// (what streamed previews decode with [`Self::decode_codes`]).
    pub fn generate_with(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
        on_codes: impl FnMut(&[Vec<u32>]),
    ) -> Result<Vec<RgbImage>> {
        let t2i = self.t2i().ok_or_else(not_generating)?;
        let codes = t2i.sample_codes_with(requests, cfg, on_codes)?;
        self.decode_codes(&codes)
    }

    /// Pixels of code grids, through the model's tokenizer.
    pub fn decode_codes(&self, codes: &[Vec<u32>]) -> Result<Vec<RgbImage>> {
        let (tokenizer, _) = self.image.as_ref().ok_or_else(not_generating)?;
        Ok(tokenizer.decode_codes(codes)?)
    }

    /// The frozen encoder's features of `images`, `(B, tokens, width)`.
    pub fn features(&self, images: &[RgbImage]) -> Result<Tensor> {
        encode_features(
            &self.encoder,
            &self.preprocess,
            images,
            32,
            self.lm.device(),
        )
    }

    /// The VQA path over this model.
    pub fn vqa(&self) -> LlavaVqa<'_> {
        LlavaVqa {
            lm: &self.lm,
            projector: &self.projector,
            prompt: ImagePrompt {
                template: &self.template,
                text: &self.text,
                image_tokens: self.cfg.image_tokens,
            },
            stops: self.stops.clone(),
        }
    }

    /// Greedy (or sampled) answers in a sentence, one per image.
    pub fn ask(
        &self,
        images: &[RgbImage],
        questions: &[&str],
        max_tokens: usize,
        sampling: &SamplingConfig,
    ) -> Result<Vec<String>> {
        let f = self.features(images)?;
        self.vqa()
            .answer_with(&f, questions, max_tokens, sampling, |_, _| {})
    }
}

fn not_generating() -> UnifiedError {
    UnifiedError::Config("this LLaVA model was not trained to generate images".into())
}

/// The tokenizer of a generating model (checked against its recorded hash) and the unified
/// vocabulary of a base with `text` ids.
fn load_image_side(
    dir: &Path,
    g: &ModelGeneration,
    text: usize,
    device: &Device,
) -> Result<(Vqrae, UnifiedVocab)> {
    let tdir = dir.join(&g.tokenizer);
    let sha = vqrae_data::fs::sha256_model(&tdir)?;
    if sha != g.tokenizer_sha256 {
        return Err(UnifiedError::Config(format!(
            "the tokenizer {} has sha256 {sha}, the model was trained with {}",
            tdir.display(),
            g.tokenizer_sha256
        )));
    }
    let tokenizer = Vqrae::load(&tdir, device, DType::F32)?;
    let k = tokenizer.config().quantizer.codebook_size;
    if k != g.codes {
        return Err(UnifiedError::Config(format!(
            "the tokenizer {} has {k} codes, the model's image rows {}",
            tdir.display(),
            g.codes
        )));
    }
    let vocab = UnifiedVocab::new(text, k).map_err(lm_err)?;
    Ok((tokenizer, vocab))
}

/// `dir`'s `llava.json`, checked for its format.
pub fn read_model_config(dir: &Path) -> Result<LlavaModelConfig> {
    let cfg_path = dir.join(LLAVA_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(UnifiedError::io(&cfg_path))?;
    let cfg: LlavaModelConfig =
        serde_json::from_str(&text).map_err(|source| UnifiedError::Json {
            path: cfg_path.clone(),
            source,
        })?;
    if cfg.format != FORMAT {
        return Err(UnifiedError::Config(format!(
            "{}: format {:?}, expected {FORMAT:?}",
            cfg_path.display(),
            cfg.format
        )));
    }
    Ok(cfg)
}

/// Writes a model directory: `llava.json`, the run's adapter file and, for a generating
/// model, a copy of its tokenizer directory.
pub fn save_model_dir(
    dir: &Path,
    cfg: &LlavaModelConfig,
    adapters_file: &Path,
    tokenizer: Option<&Path>,
) -> Result<()> {
    vqrae_data::fs::write_dir_atomic(dir, |tmp| -> Result<()> {
        if let Some(src) = tokenizer {
            let to = tmp.join(TOKENIZER_DIR);
            std::fs::create_dir_all(&to).map_err(UnifiedError::io(&to))?;
            for entry in std::fs::read_dir(src).map_err(UnifiedError::io(src))? {
                let path = entry.map_err(UnifiedError::io(src))?.path();
                if path.is_file() {
                    let name = path.file_name().unwrap_or_default();
                    std::fs::copy(&path, to.join(name)).map_err(UnifiedError::io(&path))?;
                }
            }
        }
        let json = serde_json::to_string_pretty(cfg).map_err(|source| UnifiedError::Json {
            path: dir.join(LLAVA_FILE),
            source,
        })?;
        std::fs::write(tmp.join(LLAVA_FILE), json + "\n").map_err(UnifiedError::io(tmp))?;
        std::fs::copy(adapters_file, tmp.join(ADAPTERS_FILE)).map_err(UnifiedError::io(tmp))?;
        Ok(())
    })
}
