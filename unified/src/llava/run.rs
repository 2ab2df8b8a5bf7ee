//! [`run`]: everything a LLaVA training run does around the loop: the base and its tokenizer
//! from the GGUF, the questions, the encoder's features (computed once per run directory and
//! reused on resume), with `[generation]` the captioned images' codes (likewise), the
//! examples, then [`super::train::train`] and the saved model directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use vqrae_data::easy_vqa::Split;
use vqrae_generate::sequence;
use vqrae_lm::batch::Example;
use vqrae_lm::chat::{ChatMessage, ChatTemplate};
use vqrae_lm::converse::Chat;
use vqrae_lm::gguf::{tokenizer::text_tokenizer, GgufFile};
use vqrae_lm::lora::Adapters;
use vqrae_lm::{SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::encoder::load_hf_encoder;
use vqrae_tokenizer::mixed::MixedSet;
use vqrae_tokenizer::Vqrae;

use super::config::{GenerationData, LlavaConfig};
use super::data::{encode_features, preprocess_at, VqaSet};
use super::instructions::instructions;
use super::model::{
    read_model_config, save_model_dir, LlavaModelConfig, ModelGeneration, VqaFeatures, WeightsRef,
    FORMAT, TOKENIZER_DIR,
};
use super::parts::LlavaParts;
use super::prompt::{text_example, ImagePrompt};
use super::train::{train, LlavaExamples, LlavaSummary};
use crate::error::{Result, UnifiedError};

/// The files a run reads: the base GGUF and the encoder directory under a models root (the
/// saved model records them relative to it, with their sha256), and the easy-VQA data.
#[derive(Clone, Debug)]
pub struct LlavaInputs {
    pub models_root: PathBuf,
    /// The base GGUF, relative to `models_root`.
    pub base: String,
    /// The encoder's HF directory, relative to `models_root`.
    pub encoder: String,
    pub easy_vqa_root: PathBuf,
    /// The data root the captioned images of `[generation]` are read from.
    pub data_root: PathBuf,
}

/// The base GGUF and the encoder directory the setup scripts install under `<data>/models`.
pub const DEFAULT_BASE: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_ENCODER: &str = "dinov2-small";
/// What installs them.
const BASE_INSTALL: &str = "scripts/setup-smollm2.sh";
const ENCODER_INSTALL: &str = "scripts/convert-dinov2.sh";

impl LlavaInputs {
    /// The files the setup scripts install under `<data>/models`.
    pub fn installed(data: &Path) -> Self {
        Self::under(data, DEFAULT_BASE, DEFAULT_ENCODER)
    }

    /// The base GGUF `base` and the encoder directory `encoder` under `<data>/models`, and
    /// easy-VQA under `<data>/easy-vqa`.
    pub fn under(data: &Path, base: &str, encoder: &str) -> Self {
        Self {
            models_root: data.join("models"),
            base: base.into(),
            encoder: encoder.into(),
            easy_vqa_root: data.join(vqrae_data::easy_vqa::DIR),
            data_root: data.to_path_buf(),
        }
    }

    pub fn base_gguf(&self) -> PathBuf {
        self.models_root.join(&self.base)
    }

    pub fn encoder_dir(&self) -> PathBuf {
        self.models_root.join(&self.encoder)
    }
}

/// A text-only conversation to keep the base's chat ability (`text.json` in the run directory:
/// the base's own replies to instructions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextSample {
    pub prompt: String,
    pub reply: String,
}

pub const FEATURES_FILE: &str = "features.safetensors";
pub const TEXT_FILE: &str = "text.json";
pub const ADAPTERS_FILE: &str = "adapters.safetensors";
pub const CODES_FILE: &str = "codes.json";

fn lm_err(e: vqrae_lm::LmError) -> UnifiedError {
    UnifiedError::Lm(Box::new(e))
}

/// The encoder's features of `set`'s images (the installed encoder's, or the generation
/// tokenizer's when the config says so), from `run_dir`'s cache when it holds as many images
/// at this resolution from the same encoder, else computed and cached.
fn features(
    cfg: &LlavaConfig,
    inputs: &LlavaInputs,
    set: &VqaSet,
    run_dir: &Path,
    device: &Device,
) -> Result<Tensor> {
    // The features' encoder, named in the cache: the installed one, or a tokenizer's by hash.
    let tokenizer = cfg
        .generation
        .as_ref()
        .filter(|g| g.vqa_features == VqaFeatures::Tokenizer)
        .map(|g| g.tokenizer.clone());
    let source = match &tokenizer {
        Some(dir) => format!("tokenizer {}", vqrae_data::fs::sha256_model(dir)?),
        None => "encoder".to_string(),
    };
    let path = run_dir.join(FEATURES_FILE);
    if path.exists() {
        let t = candle_core::safetensors::load(&path, device)
            .map_err(|e| UnifiedError::candle(format!("reading {}", path.display()), e))?;
        if let (Some(f), Some(r), Some(s)) =
            (t.get("features"), t.get("resolution"), t.get("source"))
        {
            let res = r.to_vec1::<u32>()?;
            if f.dim(0)? == set.images.len()
                && res == [cfg.resolution]
                && s.to_vec1::<u8>()? == source.as_bytes()
            {
                return Ok(f.to_dtype(DType::F32)?);
            }
        }
        tracing::warn!(path = %path.display(), "cached features do not match; recomputing");
    }
    let encoder = match &tokenizer {
        Some(dir) => Vqrae::load(dir, device, DType::F32)?.feature_encoder(),
        None => load_hf_encoder(&inputs.encoder_dir(), device, DType::F32)?,
    };
    let pre = preprocess_at(&encoder, cfg.resolution);
    let f = encode_features(&encoder, &pre, &set.images, 32, device)?;
    let tensors: HashMap<String, Tensor> = [
        ("features".to_string(), f.to_dtype(DType::F16)?),
        (
            "resolution".to_string(),
            Tensor::new(&[cfg.resolution], device)?,
        ),
        (
            "source".to_string(),
            Tensor::new(source.as_bytes(), device)?,
        ),
    ]
    .into_iter()
    .collect();
    vqrae_data::fs::write_atomic_with(&path, |tmp| {
        candle_core::safetensors::save(&tensors, tmp)
            .map_err(|e| UnifiedError::candle(format!("writing {}", path.display()), e))
    })?;
    // the cache is f16; train on what a resumed run will read back
    Ok(f.to_dtype(DType::F16)?.to_dtype(DType::F32)?)
}

/// The captioned training images of `[generation]`, as codes of its tokenizer: from
/// `run_dir`'s cache when it was made from the same images by the same tokenizer (by hash),
/// else encoded (32 at a time) and cached. Returns the captions, the codes and the codebook
/// size.
fn captioned_codes(
    g: &GenerationData,
    inputs: &LlavaInputs,
    run_dir: &Path,
    device: &Device,
) -> Result<(Vec<String>, Vec<Vec<u32>>, usize)> {
    let tokenizer = Vqrae::load(&g.tokenizer, device, DType::F32)?;
    let identity = vqrae_data::fs::sha256_model(&g.tokenizer)?;
    let size = tokenizer.config().image_size as u32;
    let set = MixedSet::load(&inputs.data_root, &g.data, Split::Train, size)?;
    let identity = format!("{} tokenizer {identity}", set.identity());
    tracing::info!(identity, "text-to-image images");
    let codebook = tokenizer.config().quantizer.codebook_size;
    let path = run_dir.join(CODES_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<CodesCache>(&text) {
            Ok(c) if c.identity == identity && c.codes.len() == set.images.len() => {
                return Ok((set.captions, c.codes, codebook));
            }
            _ => tracing::warn!(path = %path.display(), "cached codes do not match; recomputing"),
        }
    }
    let mut codes = Vec::with_capacity(set.images.len());
    for chunk in set.images.chunks(32) {
        let enc = tokenizer.encode(&tokenizer.images_to_input(chunk)?)?;
        codes.extend(enc.codes.to_vec2::<u32>()?);
    }
    let cache = CodesCache { identity, codes };
    let json = serde_json::to_string(&cache).map_err(|source| UnifiedError::Json {
        path: path.clone(),
        source,
    })?;
    vqrae_data::fs::write_atomic(&path, json.as_bytes())?;
    Ok((set.captions, cache.codes, codebook))
}

/// `codes.json` of a run directory: which images and tokenizer, and the codes of each image.
#[derive(Serialize, Deserialize)]
struct CodesCache {
    identity: String,
    codes: Vec<Vec<u32>>,
}

/// The text-only conversations of `path`; when there are none yet and a phase `needed` them,
/// the base's own greedy replies (at most 64 tokens, complete ones only) to
/// [`instructions`], generated once and saved there so that a resumed run trains on the same.
fn text_samples(
    path: &Path,
    needed: bool,
    base: &vqrae_lm::Llama,
    text: &vqrae_lm::TextTokenizer,
    template: &ChatTemplate,
) -> Result<Vec<TextSample>> {
    if path.exists() {
        let s = std::fs::read_to_string(path).map_err(UnifiedError::io(path))?;
        return serde_json::from_str(&s).map_err(|source| UnifiedError::Json {
            path: path.to_path_buf(),
            source,
        });
    }
    if !needed {
        return Ok(Vec::new());
    }
    let chat = Chat {
        model: base,
        tok: text,
        template,
    };
    let prompts = instructions();
    let mut samples = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(8) {
        let conversations: Vec<Vec<ChatMessage>> = chunk
            .iter()
            .map(|p| vec![ChatMessage::user(p.as_str())])
            .collect();
        let replies = chat
            .reply_batch(&conversations, &SamplingConfig::greedy(), 64, |_, _| {})
            .map_err(lm_err)?;
        for (prompt, reply) in chunk.iter().zip(replies) {
            if reply.stopped && !reply.text.trim().is_empty() {
                samples.push(TextSample {
                    prompt: prompt.clone(),
                    reply: reply.text.trim().to_string(),
                });
            }
        }
        tracing::info!(done = samples.len(), of = prompts.len(), "text samples");
    }
    let json = serde_json::to_string_pretty(&samples).map_err(|source| UnifiedError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    vqrae_data::fs::write_atomic(path, json.as_bytes())?;
    Ok(samples)
}

/// Runs (or resumes) a LLaVA training run in `run_dir` and saves the adapters (projector
/// included) to `run_dir/adapters.safetensors`, recording the base's sha256.
pub fn run(
    cfg: &LlavaConfig,
    inputs: &LlavaInputs,
    run_dir: &Path,
    device: &Device,
) -> Result<LlavaSummary> {
    cfg.validate()?;
    for (what, path, install) in [
        ("base GGUF", inputs.base_gguf(), BASE_INSTALL),
        ("encoder", inputs.encoder_dir(), ENCODER_INSTALL),
    ] {
        if !path.exists() {
            return Err(UnifiedError::Config(format!(
                "the {what} {} is not installed (run {install})",
                path.display()
            )));
        }
    }
    let gguf = GgufFile::open(inputs.base_gguf()).map_err(lm_err)?;
    let base_sha = vqrae_data::fs::sha256_file(&inputs.base_gguf())?;
    std::fs::create_dir_all(run_dir).map_err(UnifiedError::io(run_dir))?;
    let text = text_tokenizer(gguf.content()).map_err(lm_err)?;
    let template = ChatTemplate::from_gguf(gguf.content())
        .map_err(lm_err)?
        .ok_or_else(|| UnifiedError::Config("the GGUF has no chat template".into()))?;

    let set = VqaSet::easy_vqa(&inputs.easy_vqa_root, Split::Train, cfg.easy_vqa_images)?
        .concat(VqaSet::scenes(Split::Train, cfg.scenes));
    let features = features(cfg, inputs, &set, run_dir, device)?;
    let image_tokens = features.dim(1)?;
    let prompt = ImagePrompt {
        template: &template,
        text: &text,
        image_tokens,
    };
    let vqa = set
        .items
        .iter()
        .map(|it| {
            let (ex, start) = prompt.example(&it.question, &it.target())?;
            Ok((ex, it.image, start))
        })
        .collect::<Result<Vec<_>>>()?;
    let base = gguf.load_dequantized(device, DType::F32).map_err(lm_err)?;
    let needed = cfg.phases.iter().any(|p| p.text_per_step > 0);
    let samples = text_samples(&run_dir.join(TEXT_FILE), needed, &base, &text, &template)?;
    if needed && samples.is_empty() {
        return Err(UnifiedError::Config(format!(
            "a phase trains on text but {} holds no text samples",
            run_dir.join(TEXT_FILE).display()
        )));
    }
    let text_examples = samples
        .iter()
        .map(|s| text_example(&template, &text, &s.prompt, &s.reply))
        .collect::<Result<Vec<_>>>()?;
    let t2i = match &cfg.generation {
        Some(g) => Some(t2i_examples(g, inputs, &text, &base, run_dir, device)?),
        None => None,
    };
    let ex = LlavaExamples {
        features,
        vqa,
        text: text_examples,
        t2i: t2i.as_ref().map(|t| t.examples.clone()).unwrap_or_default(),
        caption_dropout: cfg.generation.as_ref().map_or(0.0, |g| g.caption_dropout),
        pad: text.pad_id(),
    };
    let feature_dim = ex.features.dim(2)?;
    let mut parts = starting_parts(cfg, base, (gguf.config(), &base_sha), feature_dim, device)?;
    if let Some(t) = &t2i {
        parts.add_image_rows(t.codebook, cfg.seed)?;
        if parts.image.as_ref().map(|(v, _)| v) != Some(&t.vocab) {
            return Err(UnifiedError::Config(
                "the image rows' vocabulary is not the examples'".into(),
            ));
        }
    }
    let summary = train(cfg, &parts, &ex, run_dir, device)?;
    let adapters_file = run_dir.join(ADAPTERS_FILE);
    parts
        .adapters
        .save(&adapters_file, &base_sha)
        .map_err(lm_err)?;
    let encoder_weights = format!("{}/model.safetensors", inputs.encoder);
    let model = LlavaModelConfig {
        format: FORMAT.into(),
        base: WeightsRef {
            path: inputs.base.clone(),
            sha256: base_sha,
            install: BASE_INSTALL.into(),
        },
        encoder: WeightsRef {
            sha256: vqrae_data::fs::sha256_file(&inputs.models_root.join(&encoder_weights))?,
            path: encoder_weights,
            install: ENCODER_INSTALL.into(),
        },
        resolution: cfg.resolution,
        image_tokens,
        projector: parts.projector_cfg.clone(),
        serve_quantized: false,
        generation: match (&cfg.generation, &t2i) {
            (Some(g), Some(t)) => Some(ModelGeneration {
                tokenizer: TOKENIZER_DIR.into(),
                tokenizer_sha256: vqrae_data::fs::sha256_model(&g.tokenizer)?,
                codes: t.codebook,
                image_tokens: t.image_tokens,
                guidance: vqrae_generate::sample::DEFAULT_GUIDANCE,
            }),
            _ => None,
        },
        vqa_features: cfg
            .generation
            .as_ref()
            .map_or_else(Default::default, |g| g.vqa_features),
    };
    let tokenizer = cfg.generation.as_ref().map(|g| g.tokenizer.as_path());
    save_model_dir(&run_dir.join("model"), &model, &adapters_file, tokenizer)?;
    Ok(summary)
}

/// What a run trains, on the frozen `base` (of the GGUF shape and sha256 `gguf`): fresh
/// adapters and projector, or those of `cfg.init_from` (which must have been trained on the
/// same base).
fn starting_parts(
    cfg: &LlavaConfig,
    base: vqrae_lm::Llama,
    (shape, base_sha): (&vqrae_lm::LlamaConfig, &str),
    feature_dim: usize,
    device: &Device,
) -> Result<LlavaParts> {
    let Some(dir) = &cfg.init_from else {
        return LlavaParts::init(base, cfg.lora.clone(), feature_dim, cfg.seed, device);
    };
    let from = read_model_config(dir)?;
    if from.base.sha256 != base_sha {
        return Err(UnifiedError::Config(format!(
            "{} was trained on a base with sha256 {}, not {base_sha}",
            dir.display(),
            from.base.sha256
        )));
    }
    let adapters =
        Adapters::load(&dir.join(ADAPTERS_FILE), shape, base_sha, device).map_err(lm_err)?;
    LlavaParts::from_adapters(base, adapters, &cfg.lora, from.projector)
}

/// The text-to-image examples of a run and what they were made with.
struct T2iExamples {
    examples: Vec<(Example, Example)>,
    vocab: UnifiedVocab,
    codebook: usize,
    image_tokens: usize,
}

/// Each captioned image's sequence with and without its caption, in the unified vocabulary of
/// `base` grown by the tokenizer's codes.
fn t2i_examples(
    g: &GenerationData,
    inputs: &LlavaInputs,
    text: &TextTokenizer,
    base: &vqrae_lm::Llama,
    run_dir: &Path,
    device: &Device,
) -> Result<T2iExamples> {
    let (captions, codes, codebook) = captioned_codes(g, inputs, run_dir, device)?;
    let vocab = super::image_rows::vocab_of(base, codebook)?;
    let image_tokens = codes.first().map_or(0, Vec::len);
    let examples = captions
        .iter()
        .zip(&codes)
        .map(|(caption, c)| {
            let cond = sequence::example(text, &vocab, Some(caption), c)?;
            let null = sequence::example(text, &vocab, None, c)?;
            Ok((cond, null))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(T2iExamples {
        examples,
        vocab,
        codebook,
        image_tokens,
    })
}
