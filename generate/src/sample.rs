//! Sampling image codes from the LM, LlamaGen style: classifier-free guidance on a doubled
//! batch, every step constrained to the image codes.
//!
//! Rows `0..B` carry the captions, rows `B..2B` the null (or negative) prompts; after one prefill
//! of the left-padded prompts, each step computes logits for all `2B` rows in one forward,
//! mixes them as `u + s (c - u)`, keeps only image codes, samples one code per image and feeds it
//! to both rows of its pair. With `guidance == 1` the unconditional rows would not change the
//! result, so they are not computed.
//!
//! Every image has its own seed and its own random stream, so an image depends on its request,
//! not on which other requests share its batch (the server batches concurrent requests).

use candle_core::{DType, Device, Tensor};
use vqrae_lm::batch::left_padded;
use vqrae_lm::{split_cfg_batch, Llama, Sampler, SamplingConfig};
use vqrae_lm::{TextTokenizer, UnifiedVocab};

use crate::error::{GenerateError, Result};
use crate::sequence::prompt_ids;

/// The guidance scale when neither the caller nor the model's card says: the measured best of
/// the shipped model (`docs/results/lm/t2i-fresh-seeds.json`: the referee finds colour and shape
/// right on 93.0% of 768 images at 2 against 90.0% at 3). A model's card
/// (`vqrae_unified::ModelCard`) overrides it with its own measurement.
pub const DEFAULT_GUIDANCE: f64 = 2.0;

/// One image to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRequest {
    pub caption: String,
    /// What to steer away from; `None` is the null prompt.
    pub negative: Option<String>,
    pub seed: u64,
}

impl ImageRequest {
    /// One request per caption and seed, caption by caption, against the null prompt.
    pub fn grid(captions: &[String], seeds: std::ops::Range<u64>) -> Vec<ImageRequest> {
        captions
            .iter()
            .flat_map(|c| {
                seeds.clone().map(move |seed| ImageRequest {
                    caption: c.clone(),
                    negative: None,
                    seed,
                })
            })
            .collect()
    }
}

/// How to sample: guidance scale and the per-step sampling rule (its `seed` is ignored; each
/// request has its own).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    pub guidance: f64,
    pub sampling: SamplingConfig,
}

impl GenerationConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.guidance.is_finite() || self.guidance < 0.0 {
            return Err(GenerateError::Config(format!(
                "guidance scale must be finite and >= 0, got {}",
                self.guidance
            )));
        }
        self.sampling.validate()?;
        Ok(())
    }
}

/// The LM pieces text-to-image sampling needs.
pub struct T2i<'a> {
    pub lm: &'a Llama,
    pub text: &'a TextTokenizer,
    pub vocab: &'a UnifiedVocab,
    /// Codes per image (the tokenizer's grid).
    pub image_tokens: usize,
}

impl T2i<'_> {
    /// Samples `image_tokens` codes for each request.
    pub fn sample_codes(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        self.sample_codes_with(requests, cfg, |_| {})
    }

    /// [`T2i::sample_codes`], calling `on_codes` after every step with the codes sampled so
    /// far (one row per request, all of the same length): what streamed previews decode. The
    /// callback only reads, so the codes are the same as without it.
    pub fn sample_codes_with(
        &self,
        requests: &[ImageRequest],
        cfg: &GenerationConfig,
        on_codes: impl FnMut(&[Vec<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        cfg.validate()?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = requests.iter().position(|r| r.caption.trim().is_empty()) {
            return Err(GenerateError::Config(format!(
                "request {i}: the prompt is empty (the null prompt is for guidance only)"
            )));
        }
        let guided = cfg.guidance != 1.0;
        let mut prompts = requests
            .iter()
            .map(|r| prompt_ids(self.text, self.vocab, Some(&r.caption)))
            .collect::<Result<Vec<_>>>()?;
        if guided {
            for r in requests {
                prompts.push(prompt_ids(self.text, self.vocab, r.negative.as_deref())?);
            }
        }
        let seeds: Vec<u64> = requests.iter().map(|r| r.seed).collect();
        self.sample_from_prompts_with(&prompts, &seeds, cfg, on_codes)
    }

    /// Samples from prompts given as ids: one per seed, followed (when guided) by one
    /// unconditional prompt per seed, each ending in `<boi>`.
    pub fn sample_from_prompts(
        &self,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        cfg: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        self.sample_from_prompts_with(prompts, seeds, cfg, |_| {})
    }

    /// [`T2i::sample_from_prompts`] with `on_codes` called after every step (see
    /// [`T2i::sample_codes_with`]).
    pub fn sample_from_prompts_with(
        &self,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        cfg: &GenerationConfig,
        mut on_codes: impl FnMut(&[Vec<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        cfg.validate()?;
        let b = seeds.len();
        let guided = cfg.guidance != 1.0;
        if prompts.len() != if guided { 2 * b } else { b } {
            return Err(GenerateError::Config(format!(
                "{} prompts for {b} images (guided: {guided})",
                prompts.len()
            )));
        }
        let context = self.lm.config().max_position_embeddings;
        if let Some(p) = prompts
            .iter()
            .find(|p| p.len() + self.image_tokens > context)
        {
            return Err(GenerateError::Config(format!(
                "a prompt of {} tokens plus {} image tokens exceeds the model's context of {context}",
                p.len(),
                self.image_tokens
            )));
        }
        let dev: &Device = self.lm.device();
        let (ids, left_pad) = left_padded(prompts, self.text.pad_id(), dev)?;
        let rows = prompts.len();
        let l = ids.dim(1)?;
        let mut cache = self.lm.new_cache(rows, l + self.image_tokens, left_pad)?;
        let hidden = self
            .lm
            .forward_hidden(&self.lm.embed(&ids)?, Some(&mut cache), false)?;
        let mut logits = self.lm.logits(&hidden.narrow(1, l - 1, 1)?.squeeze(1)?)?;
        let mut samplers = seeds
            .iter()
            .map(|&seed| {
                Sampler::new(SamplingConfig {
                    seed,
                    ..cfg.sampling.clone()
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let code_range = self.vocab.code_range();
        let codes_span = (code_range.end - code_range.start) as usize;
        let mut codes = vec![Vec::with_capacity(self.image_tokens); b];
        for step in 0..self.image_tokens {
            // guidance first, then the constraint: masking first would give -inf - -inf = NaN
            let mixed = if guided {
                split_cfg_batch(&logits, cfg.guidance)?
            } else {
                logits
            };
            // only the codes' columns travel to the host: the same candidates as masking the
            // rest to -inf, without a mask per step or copying the text logits
            let host = mixed
                .narrow(1, code_range.start as usize, codes_span)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            let mut next = Vec::with_capacity(rows);
            for (row, sampler) in samplers.iter_mut().enumerate() {
                let code = sampler.sample_row(&host[row])?;
                codes[row].push(code);
                next.push(code + code_range.start);
            }
            on_codes(&codes);
            if step + 1 == self.image_tokens {
                break;
            }
            if guided {
                next.extend_from_within(..);
            }
            let ids = Tensor::from_vec(next, (rows, 1), dev)?;
            let hidden = self
                .lm
                .forward_hidden(&self.lm.embed(&ids)?, Some(&mut cache), false)?;
            logits = self.lm.logits(&hidden.squeeze(1)?)?;
        }
        Ok(codes)
    }
}
