//! Joint training of the one LM on both paths: VQA on continuous features (through the
//! projector) and text-to-image on discrete codes, mixed in every step.
//!
//! Training runs in **phases**, each with its own batch mix, its own trainable parts and a fresh
//! optimizer (as LLaVA's phases do). The default recipe (`configs/lm/joint-easyvqa.toml`):
//! 1. `generation`: the LM learns captions -> codes (no pretrained LM exists offline, so this
//!    phase is also where it learns the text it will later answer in);
//! 2. `align` (LLaVA phase 1): the projector alone learns to place image features where the LM
//!    can read them;
//! 3. `joint` (LLaVA phase 2): projector and LM together on a mix of both tasks, so one
//!    checkpoint serves both paths.
//!
//! The tokenizer (encoder, codebook, decoder) stays frozen: features and codes of the training
//! images are computed once, before the first step. Checkpoints (every `checkpoint_every` steps
//! and at each phase's end) resume exactly: the data order depends only on the global step, and
//! a checkpoint taken at the end of a phase resumes into the next phase with a fresh optimizer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vqrae_data::batch::EpochSampler;
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_lm::{Llama, LmShape, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;
use vqrae_train::checkpoint;
use vqrae_train::init::SeededVarMap;
use vqrae_train::metrics::MetricsLog;
use vqrae_train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroup};
use vqrae_train::progress;
use vqrae_train::schedule::LrSchedule;
use vqrae_understand::prompt::{splice, IMAGE_START};
use vqrae_understand::{counterfactual, reasoning};
use vqrae_understand::{Projector, ProjectorConfig};

use crate::error::{Result, UnifiedError};
use crate::model::{UnifiedConfig, UnifiedModel, TEXT_TOKENIZER_FILE};
use vqrae_generate::augment;
use vqrae_generate::sequence;

/// One phase of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub steps: u64,
    /// VQA examples per step (0: none).
    #[serde(default)]
    pub vqa_batch: usize,
    /// Text-to-image examples per step (0: none).
    #[serde(default)]
    pub t2i_batch: usize,
    /// Draw VQA examples so that every (question template, answer) pair is equally likely,
    /// instead of in proportion to the data (see [`answer_prior_weights`]).
    #[serde(default)]
    pub balance_vqa: bool,
    /// Add each drawn yes/no question's counterfactual twin (same image, the colour or shape
    /// word swapped so that the answer flips; [`vqrae_understand::counterfactual`]) to the
    /// batch, so that the words alone cannot predict the answer.
    #[serde(default)]
    pub counterfactual_vqa: bool,
    /// Leave out the negated yes/no questions ("is there not a ...?"): a curriculum step, so
    /// that the answer is the match of word and image alone before negation flips it.
    #[serde(default)]
    pub skip_negated: bool,
    /// Train yes/no questions on reasoned answers, "<the image's attribute>, so <yes|no>"
    /// ([`vqrae_understand::reasoning`]), twins included: the model states what it sees, then
    /// compares two words instead of a word with the image.
    #[serde(default)]
    pub reasoned_vqa: bool,
    /// Draw text-to-image examples from the captioned images and their left-right mirrors
    /// ([`JointData::mirror_codes`]): twice the images. easy-VQA's captions name colour and
    /// shape, which a mirror keeps, and its triangles stay upright.
    #[serde(default)]
    pub mirror_t2i: bool,
    /// Draw text-to-image examples from this many shifted copies of each captioned image too
    /// (the first of [`JointData::shifted_codes`], made by
    /// [`vqrae_generate::augment::random_placement`]): the shape moved elsewhere on its background,
    /// mirrored half of the time; the caption stays true. 0: none.
    #[serde(default)]
    pub shifted_copies: usize,
    /// Procedural-scene text-to-image examples per step (0: none), drawn from the config's
    /// `scenes` training scenes and their mirrors ([`JointData::scene_codes`]).
    #[serde(default)]
    pub scene_t2i_batch: usize,
    /// The LM's schedule; absent: the LM is frozen in this phase.
    #[serde(default)]
    pub lm_lr: Option<LrSchedule>,
    /// The projector's schedule; absent: the projector is frozen in this phase.
    #[serde(default)]
    pub projector_lr: Option<LrSchedule>,
}

/// The joint training config (`configs/lm/*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointConfig {
    pub seed: u64,
    /// Size of the BPE trained on the training captions, questions and answers.
    pub text_vocab_size: usize,
    /// Share of text-to-image examples whose caption is dropped (the null prompt of guidance).
    pub caption_dropout: f64,
    pub grad_clip: f64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// The saved model's LM and projector dtype ("f32", "f16" or "bf16"); loading converts.
    #[serde(default = "default_save_dtype")]
    pub save_dtype: String,
    pub lm: LmShape,
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Procedural training scenes (the fixed training split's first) rendered and encoded, each
    /// with its mirror, for the phases with `scene_t2i_batch`. 0: none.
    #[serde(default)]
    pub scenes: usize,
    pub phases: Vec<Phase>,
}

fn default_save_dtype() -> String {
    "f32".into()
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(UnifiedError::Config(format!(
            "dtype must be f32, f16 or bf16, got {other:?}"
        ))),
    }
}

impl JointConfig {
    /// Whether a phase draws text-to-image examples from mirrored images too.
    pub fn uses_mirrors(&self) -> bool {
        self.phases.iter().any(|p| p.mirror_t2i && p.t2i_batch > 0)
    }

    /// How many shifted copies of each training image the phases need (0: none).
    pub fn shifted_copies_needed(&self) -> usize {
        self.phases
            .iter()
            .filter(|p| p.t2i_batch > 0)
            .map(|p| p.shifted_copies)
            .max()
            .unwrap_or(0)
    }

    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let cfg: Self = vqrae_tokenizer::checkpoint::read_toml(path)?;
        cfg.validate()
            .map_err(|e| UnifiedError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(UnifiedError::Config(m));
        if self.phases.is_empty() {
            return bad("no training phases".into());
        }
        if !(0.0..1.0).contains(&self.caption_dropout) {
            return bad(format!(
                "caption_dropout {} is not in [0, 1)",
                self.caption_dropout
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!("grad_clip {} must be > 0", self.grad_clip));
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("checkpoint_every and log_every must be > 0".into());
        }
        parse_dtype(&self.save_dtype)?;
        self.adamw.validate()?;
        self.lm.llama_config(self.text_vocab_size.max(1) + 1)?;
        for p in &self.phases {
            let name = &p.name;
            if p.steps == 0 {
                return bad(format!("phase {name}: zero steps"));
            }
            if p.vqa_batch + p.t2i_batch + p.scene_t2i_batch == 0 {
                return bad(format!(
                    "phase {name}: no examples (vqa_batch = t2i_batch = scene_t2i_batch = 0)"
                ));
            }
            if p.scene_t2i_batch > 0 && self.scenes == 0 {
                return bad(format!(
                    "phase {name}: scene_t2i_batch needs training scenes (scenes > 0)"
                ));
            }
            if (p.counterfactual_vqa || p.skip_negated || p.reasoned_vqa) && p.vqa_batch == 0 {
                return bad(format!(
                    "phase {name}: counterfactual_vqa, skip_negated and reasoned_vqa need VQA \
                     examples (vqa_batch > 0)"
                ));
            }
            if p.lm_lr.is_none() && p.projector_lr.is_none() {
                return bad(format!(
                    "phase {name}: nothing trains (no lm_lr, no projector_lr)"
                ));
            }
            if p.shifted_copies > 0 && p.t2i_batch == 0 {
                return bad(format!(
                    "phase {name}: shifted_copies without text-to-image examples (t2i_batch = 0)"
                ));
            }
            if p.lm_lr.is_none() && p.t2i_batch + p.scene_t2i_batch > 0 {
                return bad(format!(
                    "phase {name}: text-to-image examples with a frozen LM train nothing"
                ));
            }
            for s in p.lm_lr.iter().chain(p.projector_lr.iter()) {
                s.validate()?;
            }
        }
        Ok(())
    }

    pub fn total_steps(&self) -> u64 {
        self.phases.iter().map(|p| p.steps).sum()
    }

    /// The phase that step `s` (0-based, the step about to run) belongs to, and its first step.
    fn phase_at(&self, s: u64) -> Option<(usize, u64)> {
        let mut start = 0;
        for (i, p) in self.phases.iter().enumerate() {
            if s < start + p.steps {
                return Some((i, start));
            }
            start += p.steps;
        }
        None
    }
}

/// The frozen tokenizer's view of the training data, computed once.
pub struct JointData {
    /// Continuous features of every training image `(n_images, N, d)`.
    pub features: Tensor,
    /// Codes of every training image.
    pub codes: Vec<Vec<u32>>,
    /// Caption of every training image (`None`: not known; such images are not used for T2I).
    pub captions: Vec<Option<String>>,
    /// `(image index, question, answer)`.
    pub questions: Vec<(usize, String, String)>,
    /// Codes of every training image's left-right mirror, in the same order; empty unless
    /// [`JointData::with_mirrors`] added them (phases with `mirror_t2i` need them).
    pub mirror_codes: Vec<Vec<u32>>,
    /// Codes of shifted copies of the training images, copy `c` of image `i` at
    /// `c * n_images + i`; empty unless [`JointData::with_shifted_copies`] added them.
    pub shifted_codes: Vec<Vec<u32>>,
    /// Codes and captions of procedural scenes for the phases with `scene_t2i_batch`; empty
    /// unless [`JointData::with_scenes`] added them. They are text-to-image examples only and
    /// stay out of the BPE's corpus, so adding scenes to a run does not change its text
    /// tokenizer.
    pub scene_codes: Vec<Vec<u32>>,
    pub scene_captions: Vec<String>,
}

/// Features `(n, N, d)` and codes of `images`, encoded in batches of 64 by the frozen tokenizer.
fn encode_batches(
    tokenizer: &Vqrae,
    images: &[image::RgbImage],
) -> Result<(Tensor, Vec<Vec<u32>>)> {
    let mut features = Vec::new();
    let mut codes = Vec::new();
    for chunk in images.chunks(64) {
        let enc = tokenizer.encode(&tokenizer.images_to_input(chunk)?)?;
        features.push(enc.features);
        codes.extend(enc.codes.to_vec2::<u32>()?);
    }
    Ok((Tensor::cat(&features, 0)?, codes))
}

impl JointData {
    /// Encodes images in batches of 64 with the frozen tokenizer.
    pub fn encode(
        tokenizer: &Vqrae,
        images: &[image::RgbImage],
        captions: Vec<Option<String>>,
        questions: Vec<(usize, String, String)>,
    ) -> Result<Self> {
        if images.is_empty() || captions.len() != images.len() {
            return Err(UnifiedError::Config(format!(
                "{} images for {} captions",
                images.len(),
                captions.len()
            )));
        }
        if let Some((i, _, _)) = questions.iter().find(|(i, _, _)| *i >= images.len()) {
            return Err(UnifiedError::Config(format!(
                "a question refers to image {i}"
            )));
        }
        let (features, codes) = encode_batches(tokenizer, images)?;
        Ok(Self {
            features,
            codes,
            captions,
            questions,
            mirror_codes: Vec::new(),
            shifted_codes: Vec::new(),
            scene_codes: Vec::new(),
            scene_captions: Vec::new(),
        })
    }

    /// Adds the codes of each image's left-right mirror (`images`: the ones given to
    /// [`JointData::encode`], in the same order), for the phases with `mirror_t2i`.
    pub fn with_mirrors(mut self, tokenizer: &Vqrae, images: &[image::RgbImage]) -> Result<Self> {
        if images.len() != self.codes.len() {
            return Err(UnifiedError::Config(format!(
                "{} images to mirror for {} encoded",
                images.len(),
                self.codes.len()
            )));
        }
        let mirrored: Vec<_> = images
            .iter()
            .map(image::imageops::flip_horizontal)
            .collect();
        self.mirror_codes = encode_batches(tokenizer, &mirrored)?.1;
        Ok(self)
    }

    /// Adds the codes of `copies` shifted copies of each image (`images`: the ones given to
    /// [`JointData::encode`], in the same order), for the phases with `shifted_copies`. Copy `c` of
    /// image `i` draws its placement from a generator seeded by `(seed, c, i)`, so the copies do
    /// not depend on how many there are or on the order they are made in.
    pub fn with_shifted_copies(
        mut self,
        tokenizer: &Vqrae,
        images: &[image::RgbImage],
        copies: usize,
        seed: u64,
    ) -> Result<Self> {
        if images.len() != self.codes.len() {
            return Err(UnifiedError::Config(format!(
                "{} images to shift for {} encoded",
                images.len(),
                self.codes.len()
            )));
        }
        self.shifted_codes.clear();
        for c in 0..copies as u64 {
            let shifted: Vec<_> = images
                .iter()
                .enumerate()
                .map(|(i, img)| {
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        seed ^ 0x5_41f7
                            ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                            ^ ((i as u64) << 20),
                    );
                    augment::random_placement(img, &mut rng)
                })
                .collect();
            self.shifted_codes
                .extend(encode_batches(tokenizer, &shifted)?.1);
        }
        Ok(self)
    }

    /// Adds procedural scenes (`images`, their renders, and `captions`), encoded by the frozen
    /// tokenizer, for the phases with `scene_t2i_batch`.
    pub fn with_scenes(
        mut self,
        tokenizer: &Vqrae,
        images: &[image::RgbImage],
        captions: Vec<String>,
    ) -> Result<Self> {
        if images.is_empty() || images.len() != captions.len() {
            return Err(UnifiedError::Config(format!(
                "{} scene images for {} captions",
                images.len(),
                captions.len()
            )));
        }
        self.scene_codes = encode_batches(tokenizer, images)?.1;
        self.scene_captions = captions;
        Ok(self)
    }

    /// The texts the BPE learns from: captions, questions, answers.
    fn corpus(&self) -> impl Iterator<Item = &str> {
        self.captions.iter().flatten().map(String::as_str).chain(
            self.questions
                .iter()
                .flat_map(|(_, q, a)| [q.as_str(), a.as_str()]),
        )
    }
}

/// Sampling weights that remove the answer prior of templated questions: each question weighs
/// `1 / n(template, answer)`, where the template is the question with every word that is also
/// an answer word masked ("is there a * shape?"). In easy-VQA, "is there a <colour> shape?" is
/// answered "no" 88% of the time in training; a model can score well on it from the words alone
/// and never learn to compare the colour word with the image. Balanced, each template's answers
/// come equally often, so only the image tells them apart.
pub fn answer_prior_weights(questions: &[(usize, String, String)]) -> Vec<f64> {
    let answers: HashSet<String> = questions
        .iter()
        .map(|(_, _, a)| a.trim().to_lowercase())
        .collect();
    let key = |q: &str, a: &str| {
        let template: Vec<String> = q
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| {
                if answers.contains(w) {
                    "*".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        (template.join(" "), a.trim().to_lowercase())
    };
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (_, q, a) in questions {
        *counts.entry(key(q, a)).or_default() += 1;
    }
    questions
        .iter()
        .map(|(_, q, a)| 1.0 / counts[&key(q, a)] as f64)
        .collect()
}

/// The counterfactual twins `(image, question, answer)` of the drawn questions `picks` that have
/// one (yes/no questions about an image with a one-shape caption).
fn twins(
    picks: &[usize],
    questions: &[(usize, String, String)],
    captions: &[Option<String>],
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for &i in picks {
        let (image, q, a) = &questions[i];
        let Some((color, shape)) = image_attributes(captions, *image) else {
            continue;
        };
        if let Some((q2, a2)) = counterfactual::twin(q, a, color, shape, rng) {
            out.push((*image, q2, a2));
        }
    }
    out
}

/// The colour and shape of training image `image`, from its caption.
fn image_attributes(
    captions: &[Option<String>],
    image: usize,
) -> Option<(&'static str, &'static str)> {
    captions
        .get(image)?
        .as_deref()
        .and_then(counterfactual::caption_attributes)
}

/// `answer` in its reasoned form where it has one ([`reasoning::reasoned`]), else unchanged.
fn reasoned_answer(
    captions: &[Option<String>],
    image: usize,
    question: &str,
    answer: &str,
) -> String {
    image_attributes(captions, image)
        .and_then(|(color, shape)| reasoning::reasoned(question, answer, color, shape))
        .unwrap_or_else(|| answer.to_string())
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JointSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub seconds: f64,
    pub params: usize,
    pub non_embedding_params: usize,
    pub vocab: UnifiedVocab,
    pub final_losses: serde_json::Value,
    pub model_dir: PathBuf,
}

/// Trainable state: the LM and projector variables and the built modules.
struct Parts {
    lm: Llama,
    projector: Projector,
    lm_vars: HashMap<String, Var>,
    projector_vars: HashMap<String, Var>,
}

impl Parts {
    /// All variables under the names checkpoints use (`projector.` prefix for the projector).
    fn all_vars(&self) -> HashMap<String, Var> {
        let mut all = self.lm_vars.clone();
        for (k, v) in &self.projector_vars {
            all.insert(format!("projector.{k}"), v.clone());
        }
        all
    }

    fn optimizer(&self, phase: &Phase, adamw: &AdamWConfig) -> Result<AdamW> {
        let mut groups = Vec::new();
        if let Some(s) = &phase.lm_lr {
            groups.push(ParamGroup::new("lm", sorted(&self.lm_vars), s.clone()));
        }
        if let Some(s) = &phase.projector_lr {
            groups.push(ParamGroup::new(
                "projector",
                sorted(&self.projector_vars)
                    .into_iter()
                    .map(|(k, v)| (format!("projector.{k}"), v))
                    .collect(),
                s.clone(),
            ));
        }
        Ok(AdamW::new(groups, adamw.clone())?)
    }
}

/// The LM's loss on a batch of text-only sequences (text-to-image: caption, then codes), on
/// the tokens each example marks for it.
fn sequence_loss(lm: &Llama, examples: &[Example], pad_id: u32, device: &Device) -> Result<Tensor> {
    let batch = TrainBatch::new(examples, pad_id, device)?;
    let hidden = lm.forward_hidden(&lm.embed(&batch.ids)?, None, true)?;
    Ok(batch.loss(lm, &hidden)?)
}

fn sorted(vars: &HashMap<String, Var>) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Trains (or resumes) a joint run in `run_dir` on `data` encoded by the tokenizer at
/// `tokenizer_dir`, and writes the unified model to `run_dir/model`.
pub fn train(
    cfg: &JointConfig,
    data: &JointData,
    tokenizer_dir: &Path,
    run_dir: &Path,
    device: &Device,
) -> Result<JointSummary> {
    cfg.validate()?;
    let started = Instant::now();
    std::fs::create_dir_all(run_dir).map_err(|source| UnifiedError::Io {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let tokenizer = Vqrae::load(tokenizer_dir, device, DType::F32)?;
    let codebook = tokenizer.config().quantizer.codebook_size;
    let (gh, gw) = tokenizer.config().grid();
    let image_tokens = gh * gw;
    let (n_img, n_feat, d_feat) = data.features.dims3()?;
    if n_feat != image_tokens || data.codes.iter().any(|c| c.len() != image_tokens) {
        return Err(UnifiedError::Config(format!(
            "the data was encoded with {n_feat} tokens per image, the tokenizer has {image_tokens}"
        )));
    }

    // the text tokenizer is part of the run: trained once, then reloaded on resume
    let text_path = run_dir.join(TEXT_TOKENIZER_FILE);
    let text = if text_path.exists() {
        TextTokenizer::from_file(&text_path)?
    } else {
        let t = TextTokenizer::train_bpe(data.corpus(), cfg.text_vocab_size)?;
        t.save(&text_path)?;
        t
    };
    let vocab = UnifiedVocab::new(text.vocab_size(), codebook)?;
    let llama_cfg = cfg.lm.llama_config(vocab.size())?;
    let tokenize = |q: &str, a: &str| -> Result<Example> {
        Ok(vqrae_understand::prompt::example(
            &text,
            &vocab,
            image_tokens,
            q,
            a,
        )?)
    };

    // VQA examples, tokenised once: as given, and in reasoned form if a phase asks for it
    let vqa_examples = data
        .questions
        .iter()
        .map(|(i, q, a)| Ok((*i, tokenize(q, a)?)))
        .collect::<Result<Vec<(usize, Example)>>>()?;
    let reasoned_examples = if cfg.phases.iter().any(|p| p.reasoned_vqa) {
        data.questions
            .iter()
            .map(|(i, q, a)| tokenize(q, &reasoned_answer(&data.captions, *i, q, a)))
            .collect::<Result<Vec<Example>>>()?
    } else {
        Vec::new()
    };
    let longest_vqa = vqa_examples
        .iter()
        .map(|(_, e)| e)
        .chain(&reasoned_examples)
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(0);
    let needed = longest_vqa.max(2 + 32 + image_tokens + 1);
    if needed > llama_cfg.max_position_embeddings {
        return Err(UnifiedError::Config(format!(
            "sequences need up to {needed} positions, max_position_embeddings is {}",
            llama_cfg.max_position_embeddings
        )));
    }

    let lm_map = SeededVarMap::new(cfg.seed);
    let lm = Llama::new(&llama_cfg, lm_map.var_builder(DType::F32, device))?;
    let proj_map = SeededVarMap::new(cfg.seed.wrapping_add(1));
    let projector_cfg = ProjectorConfig {
        input_dim: d_feat,
        output_dim: llama_cfg.hidden_size,
    };
    let projector = Projector::new(&projector_cfg, proj_map.var_builder(DType::F32, device))?;
    let parts = Parts {
        lm,
        projector,
        lm_vars: checkpoint::var_map_vars(&lm_map.varmap)?,
        projector_vars: checkpoint::var_map_vars(&proj_map.varmap)?,
    };
    let all_vars = parts.all_vars();

    let balanced = if cfg.phases.iter().any(|p| p.balance_vqa && p.vqa_batch > 0) {
        Some(
            WeightedIndex::new(answer_prior_weights(&data.questions))
                .map_err(|e| UnifiedError::Config(format!("balanced VQA sampling: {e}")))?,
        )
    } else {
        None
    };
    let affirmative: Vec<usize> = (0..data.questions.len())
        .filter(|&i| !counterfactual::is_negated(&data.questions[i].1))
        .collect();
    let t2i_images: Vec<usize> = (0..n_img).filter(|&i| data.captions[i].is_some()).collect();
    let uses = |f: fn(&Phase) -> usize| cfg.phases.iter().any(|p| f(p) > 0);
    if uses(|p| p.vqa_batch) && vqa_examples.is_empty() {
        return Err(UnifiedError::Config("VQA phases but no questions".into()));
    }
    if uses(|p| p.t2i_batch) && t2i_images.is_empty() {
        return Err(UnifiedError::Config(
            "text-to-image phases but no captions".into(),
        ));
    }
    let copies = cfg.shifted_copies_needed();
    if data.shifted_codes.len() < copies * data.codes.len() {
        return Err(UnifiedError::Config(format!(
            "the config asks for {copies} shifted copies of each image, the data has {} codes \
             for {} images (JointData::with_shifted_copies)",
            data.shifted_codes.len(),
            data.codes.len()
        )));
    }
    if cfg.phases.iter().any(|p| p.scene_t2i_batch > 0) && data.scene_codes.is_empty() {
        return Err(UnifiedError::Config(
            "a phase sets scene_t2i_batch but the data has no scenes (JointData::with_scenes)"
                .into(),
        ));
    }
    if cfg.uses_mirrors() && data.mirror_codes.len() != data.codes.len() {
        return Err(UnifiedError::Config(
            "a phase sets mirror_t2i but the data has no mirror codes (JointData::with_mirrors)"
                .into(),
        ));
    }

    // resume: the newest checkpoint's step decides the phase; a checkpoint at a phase's end
    // is loaded with that phase's optimizer, then the next phase starts with a fresh one
    let total = cfg.total_steps();
    let mut start = 0;
    let mut resumed_from = None;
    let mut current: Option<(usize, AdamW)> = None;
    if let Some(dir) = checkpoint::latest(run_dir)? {
        let p = dir.join(checkpoint::TRAINER_FILE);
        let text = std::fs::read_to_string(&p).map_err(|source| UnifiedError::Io {
            path: p.clone(),
            source,
        })?;
        let trainer: checkpoint::TrainerState =
            serde_json::from_str(&text).map_err(|source| UnifiedError::Json { path: p, source })?;
        let saved = trainer.extra["phase"]
            .as_u64()
            .and_then(|i| cfg.phases.get(i as usize).map(|ph| (i as usize, ph)))
            .ok_or_else(|| {
                UnifiedError::Config(format!(
                    "{}: its phase is missing or not in this config",
                    dir.display()
                ))
            })?;
        let mut opt = parts.optimizer(saved.1, &cfg.adamw)?;
        let (step, _) = checkpoint::load(&dir, &all_vars, &mut opt)?;
        start = step;
        resumed_from = Some(step);
        // mid-phase: go on with the loaded optimizer; at a phase's end the next starts afresh
        if cfg.phase_at(step).map(|(i, _)| i) == Some(saved.0) {
            current = Some((saved.0, opt));
        }
    }
    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), resumed_from)?;
    let bar = progress::bar(total, start, "joint");
    let mut throughput = progress::Throughput::new();
    let mut last = serde_json::json!({});

    for step in start..total {
        let (pi, phase_start) = cfg
            .phase_at(step)
            .ok_or_else(|| UnifiedError::Config(format!("step {step} is past the phases")))?;
        let phase = &cfg.phases[pi];
        if current.as_ref().map(|(i, _)| *i) != Some(pi) {
            tracing::info!(phase = phase.name.as_str(), step, "phase starts");
            current = Some((pi, parts.optimizer(phase, &cfg.adamw)?));
        }
        let Some((_, opt)) = current.as_mut() else {
            return Err(UnifiedError::Config(format!("step {step}: no optimizer")));
        };

        let mut loss = None;
        let mut record = serde_json::Map::new();
        let mut samples = 0;
        if phase.vqa_batch > 0 {
            let picks = if let (true, Some(weights)) = (phase.balance_vqa, &balanced) {
                // with replacement, from a generator seeded by the step: resumes exactly
                let mut rng =
                    ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xba1a ^ step.wrapping_mul(0x2545_f491));
                (0..phase.vqa_batch)
                    .map(|_| weights.sample(&mut rng))
                    .collect()
            } else if phase.skip_negated {
                EpochSampler::new(affirmative.len(), phase.vqa_batch, cfg.seed, true)
                    .batch_at(step)
                    .into_iter()
                    .map(|i| affirmative[i])
                    .collect()
            } else {
                EpochSampler::new(vqa_examples.len(), phase.vqa_batch, cfg.seed, true)
                    .batch_at(step)
            };
            let mut examples: Vec<Example> = picks
                .iter()
                .map(|&i| {
                    if phase.reasoned_vqa {
                        reasoned_examples[i].clone()
                    } else {
                        vqa_examples[i].1.clone()
                    }
                })
                .collect();
            let mut images: Vec<u32> = picks.iter().map(|&i| vqa_examples[i].0 as u32).collect();
            if phase.counterfactual_vqa {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xc0f7 ^ step.wrapping_mul(0x2545_f491));
                for (image, q, a) in twins(&picks, &data.questions, &data.captions, &mut rng) {
                    let a = if phase.reasoned_vqa {
                        reasoned_answer(&data.captions, image, &q, &a)
                    } else {
                        a
                    };
                    examples.push(tokenize(&q, &a)?);
                    images.push(image as u32);
                }
            }
            let batch = TrainBatch::new(&examples, text.pad_id(), device)?;
            let feats = data
                .features
                .index_select(&Tensor::new(images, device)?, 0)?;
            let embeds = splice(
                &parts.lm.embed(&batch.ids)?,
                &parts.projector.forward(&feats)?,
                &vec![IMAGE_START; examples.len()],
            )?;
            let hidden = parts.lm.forward_hidden(&embeds, None, true)?;
            let l = batch.loss(&parts.lm, &hidden)?;
            record.insert("loss_vqa".into(), l.to_scalar::<f32>()?.into());
            loss = Some(l);
            samples += examples.len();
        }
        if phase.t2i_batch > 0 {
            // the pool: the captioned images, then (each in the same order) their mirrors and
            // their shifted copies, as the phase asks
            let mut sources: Vec<&[Vec<u32>]> = vec![&data.codes];
            if phase.mirror_t2i {
                sources.push(&data.mirror_codes);
            }
            sources.extend(data.shifted_codes.chunks(n_img).take(phase.shifted_copies));
            let pool = t2i_images.len() * sources.len();
            let sampler = EpochSampler::new(pool, phase.t2i_batch, cfg.seed, true);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ step.wrapping_mul(0x9e37_79b9));
            let examples = sampler
                .batch_at(step)
                .iter()
                .map(|&k| {
                    let i = t2i_images[k % t2i_images.len()];
                    let codes = &sources[k / t2i_images.len()][i];
                    let caption = if rng.gen::<f64>() < cfg.caption_dropout {
                        None
                    } else {
                        data.captions[i].as_deref()
                    };
                    sequence::example(&text, &vocab, caption, codes)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let l = sequence_loss(&parts.lm, &examples, text.pad_id(), device)?;
            record.insert("loss_t2i".into(), l.to_scalar::<f32>()?.into());
            loss = Some(match loss {
                Some(v) => (v + l)?,
                None => l,
            });
            samples += examples.len();
        }
        if phase.scene_t2i_batch > 0 {
            let sampler = EpochSampler::new(
                data.scene_codes.len(),
                phase.scene_t2i_batch,
                cfg.seed ^ 0x5ce7e,
                true,
            );
            let mut rng =
                ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5ce7e ^ step.wrapping_mul(0x9e37_79b9));
            let examples = sampler
                .batch_at(step)
                .iter()
                .map(|&k| {
                    let caption = if rng.gen::<f64>() < cfg.caption_dropout {
                        None
                    } else {
                        Some(data.scene_captions[k].as_str())
                    };
                    sequence::example(&text, &vocab, caption, &data.scene_codes[k])
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let l = sequence_loss(&parts.lm, &examples, text.pad_id(), device)?;
            record.insert("loss_scenes".into(), l.to_scalar::<f32>()?.into());
            loss = Some(match loss {
                Some(v) => (v + l)?,
                None => l,
            });
            samples += examples.len();
        }
        // validate() rejects phases without examples, so a loss is always there
        let Some(loss) = loss else {
            return Err(UnifiedError::Config(format!(
                "phase {}: no examples",
                phase.name
            )));
        };
        let mut grads = loss.backward()?;
        let vars = opt.vars();
        let norm = clip_grad_norm(&mut grads, vars.iter(), cfg.grad_clip)?;
        opt.step(&grads)?;
        throughput.add(samples as u64);
        let done = step + 1;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        bar.set_position(done);
        bar.set_message(progress::message(loss_value, throughput.per_sec()));
        let phase_end = phase_start + phase.steps;
        if done % cfg.log_every == 0 || done == phase_end {
            record.insert("loss".into(), loss_value.into());
            record.insert("grad_norm".into(), norm.into());
            record.insert("phase".into(), pi.into());
            for (g, lr) in opt.lrs() {
                record.insert(format!("lr_{g}"), lr.into());
            }
            record.insert("samples_per_sec".into(), throughput.per_sec().into());
            last = serde_json::Value::Object(record);
            log.log(done, &last)?;
            throughput.reset();
        }
        if done % cfg.checkpoint_every == 0 || done == phase_end {
            checkpoint::save(
                run_dir,
                done,
                &all_vars,
                opt,
                &serde_json::json!({ "phase": pi }),
                checkpoint::DEFAULT_KEEP,
            )?;
        }
    }
    bar.finish_and_clear();

    let model_dir = run_dir.join("model");
    let projector_tensors: HashMap<String, Tensor> = parts
        .projector_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let unified = UnifiedConfig {
        vocab,
        image_tokens,
        grid: (gh, gw),
        projector: projector_cfg,
    };
    UnifiedModel::save_parts(
        &model_dir,
        &unified,
        tokenizer_dir,
        &parts.lm,
        &projector_tensors,
        &text,
        parse_dtype(&cfg.save_dtype)?,
    )?;
    Ok(JointSummary {
        steps: total,
        resumed_from,
        seconds: started.elapsed().as_secs_f64(),
        params: llama_cfg.params(),
        non_embedding_params: llama_cfg.non_embedding_params(),
        vocab,
        final_losses: last,
        model_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_keep_the_image_and_flip_the_answer() {
        let q = |i: usize, q: &str, a: &str| (i, q.to_string(), a.to_string());
        let questions = vec![
            q(0, "is there a blue shape?", "no"),
            q(0, "what color is the shape?", "red"),
            q(1, "is no circle present?", "no"),
            q(2, "is there a red shape?", "no"),
        ];
        let captions = vec![
            Some("a red circle".into()),
            Some("a teal circle".into()),
            None,
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t = twins(&[0, 1, 2, 3], &questions, &captions, &mut rng);
        assert_eq!(
            t,
            vec![
                q(0, "is there a red shape?", "yes"),
                (1, t[1].1.clone(), "yes".into()),
            ]
        );
        // the circle's own shape swapped for another
        assert!(["is no rectangle present?", "is no triangle present?"].contains(&t[1].1.as_str()));
    }

    #[test]
    fn reasoned_answers_state_the_captioned_attribute() {
        let captions = vec![Some("a red circle".to_string()), None];
        let r = |image, q, a| reasoned_answer(&captions, image, q, a);
        assert_eq!(r(0, "is there a blue shape?", "no"), "red, so no");
        assert_eq!(r(0, "is no circle present?", "no"), "circle, so no");
        // not yes/no, or no caption, or an image past the captions: the answer unchanged
        assert_eq!(r(0, "what color is the shape?", "red"), "red");
        assert_eq!(r(1, "is there a blue shape?", "no"), "no");
        assert_eq!(r(7, "is there a blue shape?", "no"), "no");
    }

    #[test]
    fn balancing_gives_each_template_answer_pair_equal_mass() {
        let q = |q: &str, a: &str| (0, q.to_string(), a.to_string());
        let questions = vec![
            q("is there a red shape?", "no"),
            q("is there a blue shape?", "no"),
            q("is there a red shape?", "no"),
            q("is there a red shape?", "yes"),
            q("what color is the shape?", "red"),
            q("what color is the shape?", "blue"),
        ];
        let w = answer_prior_weights(&questions);
        // three "no"s share one third of what the single "yes" gets
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-12 && (w[3] - 1.0).abs() < 1e-12);
        let no: f64 = w[..3].iter().sum();
        assert!((no - w[3]).abs() < 1e-12);
        // answer words (here red, blue) are masked in templates; others are not
        assert_eq!(
            answer_prior_weights(&[q("is there a green shape?", "no")]),
            vec![1.0]
        );
        // two (template, answer) pairs of one question each
        assert_eq!(w[4], 1.0);
        assert_eq!(w[5], 1.0);
    }
}
