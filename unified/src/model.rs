//! The one model for both paths: the VQRAE tokenizer, one LLaMA-style LM over the unified
//! vocabulary, the understanding projector and the text tokenizer, in one directory.
//!
//! ```text
//! DIR/unified.json             vocabulary layout, image tokens, grid, projector shape
//! DIR/tokenizer/               the VQRAE tokenizer checkpoint (config.json, model.safetensors)
//! DIR/lm/                      HF LlamaForCausalLM (config.json, model.safetensors, tokenizer.json)
//! DIR/projector.safetensors    the 2-layer MLP (linear_1, linear_2)
//! DIR/card.json                optional: what the model knows ([`ModelCard`])
//! ```
//! The `lm/` folder loads in `transformers` as it is; only the embedding rows past the text
//! vocabulary (codes, markers) mean something to vqrae alone.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::fs::{write_atomic, write_atomic_with};
use vqrae_generate::sample::{GenerationConfig, ImageRequest, T2i};
use vqrae_lm::{Llama, SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;
use vqrae_understand::answer::Vqa;
use vqrae_understand::{Projector, ProjectorConfig};

use crate::card::ModelCard;
use crate::error::{Result, UnifiedError};

pub const UNIFIED_FILE: &str = "unified.json";
pub(crate) const TOKENIZER_DIR: &str = "tokenizer";
pub(crate) const LM_DIR: &str = "lm";
pub(crate) const TEXT_TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) const PROJECTOR_FILE: &str = "projector.safetensors";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnifiedConfig {
    pub vocab: UnifiedVocab,
    /// Codes (and feature slots) per image: the tokenizer's grid, row-major.
    pub image_tokens: usize,
    pub grid: (usize, usize),
    pub projector: ProjectorConfig,
}

pub struct UnifiedModel {
    pub cfg: UnifiedConfig,
    pub tokenizer: Vqrae,
    pub lm: Llama,
    pub projector: Projector,
    pub text: TextTokenizer,
    /// What the model knows (`card.json`), when its directory has a card.
    pub card: Option<ModelCard>,
}

impl UnifiedModel {
    /// Loads a model directory; the LM and projector in `dtype` (f32 on CPU, bf16 on GPU), the
    /// tokenizer in f32.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let path = dir.join(UNIFIED_FILE);
        let text = std::fs::read_to_string(&path).map_err(UnifiedError::io(&path))?;
        let cfg: UnifiedConfig =
            serde_json::from_str(&text).map_err(|source| UnifiedError::Json {
                path: path.clone(),
                source,
            })?;
        cfg.vocab.validate()?;
        let tokenizer = Vqrae::load(&dir.join(TOKENIZER_DIR), device, DType::F32)?;
        // a loaded model serves: q/k/v and gate/up run as one matmul each (see the LM's docs)
        let mut lm = Llama::load(&dir.join(LM_DIR), device, dtype)?;
        lm.fuse_for_inference()?;
        let text = TextTokenizer::from_file(dir.join(LM_DIR).join(TEXT_TOKENIZER_FILE))?;
        // each message names the file of the part and the file it disagrees with
        let check_against = |says: &Path, what: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(UnifiedError::Config(format!(
                    "{what} is {got}, {} says {want}",
                    says.display()
                )))
            }
        };
        let check = |what: &str, got: usize, want: usize| check_against(&path, what, got, want);
        let in_file = |what: &str, parts: &[&str]| {
            let file = parts.iter().fold(dir.to_path_buf(), |p, part| p.join(part));
            format!("{what} ({})", file.display())
        };
        check(
            &in_file("the LM's vocabulary", &[LM_DIR, "config.json"]),
            lm.config().vocab_size,
            cfg.vocab.size(),
        )?;
        check(
            &in_file(
                "the text tokenizer's vocabulary",
                &[LM_DIR, TEXT_TOKENIZER_FILE],
            ),
            text.vocab_size(),
            cfg.vocab.text,
        )?;
        let tok_config = [TOKENIZER_DIR, "config.json"];
        check(
            &in_file("the tokenizer's codebook", &tok_config),
            tokenizer.config().quantizer.codebook_size,
            cfg.vocab.codes,
        )?;
        let (gh, gw) = tokenizer.config().grid();
        check(
            &in_file("the tokenizer's grid", &tok_config),
            gh * gw,
            cfg.image_tokens,
        )?;
        let card = ModelCard::load(dir)?;
        if let Some(card) = &card {
            check_against(
                &dir.join(crate::card::CARD_FILE),
                &in_file("the tokenizer's image size", &tok_config),
                tokenizer.config().image_size,
                card.image_size,
            )?;
        }
        let ppath = dir.join(PROJECTOR_FILE);
        let tensors = candle_core::safetensors::load(&ppath, device)
            .map_err(|e| UnifiedError::candle(format!("reading {}", ppath.display()), e))?;
        let projector = Projector::new(
            &cfg.projector,
            VarBuilder::from_tensors(tensors, dtype, device),
        )
        .map_err(|e| UnifiedError::candle(format!("loading {}", ppath.display()), e))?;
        Ok(Self {
            cfg,
            tokenizer,
            lm,
            projector,
            text,
            card,
        })
    }

    /// The guidance scale text-to-image uses when not told: the card's measured one, else
    /// [`vqrae_generate::sample::DEFAULT_GUIDANCE`].
    pub fn default_guidance(&self) -> f64 {
        self.card
            .as_ref()
            .map_or(vqrae_generate::sample::DEFAULT_GUIDANCE, |c| {
                c.defaults.guidance.value
            })
    }

    /// Writes a model directory from its parts, each file atomically
    /// ([`vqrae_data::fs::write_atomic`]), so that a server reloading the directory never reads
    /// half a file. `tokenizer_dir` is copied unless it is the directory's own.
    pub(crate) fn save_parts(
        dir: &Path,
        cfg: &UnifiedConfig,
        tokenizer_dir: &Path,
        lm: &Llama,
        projector: &HashMap<String, Tensor>,
        text: &TextTokenizer,
        dtype: DType,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(UnifiedError::io(dir))?;
        let tok = dir.join(TOKENIZER_DIR);
        if tok.canonicalize().ok() != tokenizer_dir.canonicalize().ok() {
            for f in [
                vqrae_tokenizer::checkpoint::CONFIG_FILE,
                vqrae_tokenizer::checkpoint::WEIGHTS_FILE,
            ] {
                let from = tokenizer_dir.join(f);
                write_atomic_with(&tok.join(f), |tmp| {
                    std::fs::copy(&from, tmp)
                        .map(drop)
                        .map_err(UnifiedError::io(&from))
                })?;
            }
        }
        let lm_dir = dir.join(LM_DIR);
        let cast = |m: HashMap<String, Tensor>| -> Result<HashMap<String, Tensor>> {
            m.into_iter()
                .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
                .collect()
        };
        vqrae_lm::model::save_checkpoint(&lm_dir, lm.config(), &cast(lm.tensors())?)?;
        text.save(lm_dir.join(TEXT_TOKENIZER_FILE))?;
        let ppath = dir.join(PROJECTOR_FILE);
        let projector = cast(projector.clone())?;
        write_atomic_with(&ppath, |tmp| {
            candle_core::safetensors::save(&projector, tmp)
                .map_err(|e| UnifiedError::candle(format!("writing {}", ppath.display()), e))
        })?;
        let upath = dir.join(UNIFIED_FILE);
        let json = serde_json::to_string_pretty(cfg).map_err(|source| UnifiedError::Json {
            path: upath.clone(),
            source,
        })?;
        write_atomic(&upath, (json + "\n").as_bytes())?;
        Ok(())
    }

    pub fn vqa(&self) -> Vqa<'_> {
        Vqa {
            lm: &self.lm,
            projector: &self.projector,
            text: &self.text,
            vocab: &self.cfg.vocab,
        }
    }

    pub fn t2i(&self) -> T2i<'_> {
        T2i {
            lm: &self.lm,
            text: &self.text,
            vocab: &self.cfg.vocab,
            image_tokens: self.cfg.image_tokens,
        }
    }

    /// Continuous features `(B, N, d)` of images (the understanding path).
    pub fn features(&self, images: &[RgbImage]) -> Result<Tensor> {
        let input = self.tokenizer.images_to_input(images)?;
        Ok(self.tokenizer.encode(&input)?.features)
    }

    /// Answers one question per image.
    pub fn ask(
        &self,
        images: &[RgbImage],
        questions: &[&str],
        max_tokens: usize,
        sampling: &SamplingConfig,
    ) -> Result<Vec<String>> {
        let features = self.features(images)?;
        Ok(self
            .vqa()
            .answer_with(&features, questions, max_tokens, sampling, |_, _| {})?)
    }

    /// Generates one image per request: codes from the LM, pixels from the tokenizer's decoder.
    pub fn generate(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
    ) -> Result<Vec<RgbImage>> {
        self.generate_with(requests, cfg, |_| {})
    }

    /// [`UnifiedModel::generate`], calling `on_codes` with the codes sampled so far after every
    /// step ([`T2i::sample_codes_with`]): the server's streamed previews decode them.
    pub fn generate_with(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
        on_codes: impl FnMut(&[Vec<u32>]),
    ) -> Result<Vec<RgbImage>> {
        let codes = self.t2i().sample_codes_with(requests, cfg, on_codes)?;
        self.decode_codes(&codes)
    }

    /// Pixels of code grids.
    pub(crate) fn decode_codes(&self, codes: &[Vec<u32>]) -> Result<Vec<RgbImage>> {
        Ok(self.tokenizer.decode_codes(codes)?)
    }
}
