//! [`evaluate`]: the held-out report of a LLaVA model directory (`vqrae eval-llava`): the
//! easy-VQA test split and the procedural scenes' test split (every question of each scene),
//! answers read as sentences ([`super::eval::score`]); optionally the shipped from-scratch
//! unified model on the same scene questions (new to it too); and whether training kept the
//! base's text ability: the perplexity of a held-out text and greedy replies to
//! [`HELD_OUT_PROMPTS`], for the adapted model and for its base in the same weight form.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use image::RgbImage;
use serde::Serialize;
use vqrae_data::easy_vqa::Split;
use vqrae_data::fs::sha256_model;
use vqrae_lm::chat::ChatMessage;
use vqrae_lm::converse::{Chat, ChatModel, WeightForm};
use vqrae_lm::score::{chunked_perplexity_over, Perplexity};
use vqrae_lm::{Llama, SamplingConfig};
use vqrae_tokenizer::Vqrae;

use super::data::VqaSet;
use super::eval::{score, VqaScore};
use super::instructions::HELD_OUT_PROMPTS;
use super::model::{LlavaModel, LlavaModelConfig, WeightsRef, ADAPTERS_FILE};
use crate::error::{Result, UnifiedError};
use crate::model::UnifiedModel;

/// The held-out text whose perplexity [`TextAbility`] reports (held out from the instructions
/// phase 2 trains on), relative to the repository root.
pub const HELDOUT_TEXT: &str = "lm/tests/fixtures/smollm2/heldout.txt";
/// Tokens per perplexity chunk (fewer when the model's context is shorter).
pub const PERPLEXITY_CHUNK: usize = 512;
/// Longest answer to a visual question, in tokens.
pub const ANSWER_TOKENS: usize = 24;
/// Longest reply to a held-out prompt, in tokens.
pub const REPLY_TOKENS: usize = 64;

/// What [`evaluate`] measures and where it reads (`vqrae eval-llava`'s flags; its defaults: the
/// whole easy-VQA test split, 300 test scenes, batches of 16, the directory's serving form).
#[derive(Clone, Debug)]
pub struct LlavaEvalOptions {
    /// The data root: the base and encoder under `<data>/models`, easy-VQA under
    /// `<data>/easy-vqa`.
    pub data: PathBuf,
    /// Overrides the directory's serving form (true: the GGUF's quantized blocks).
    pub quantized: Option<bool>,
    /// easy-VQA test questions asked (their first; 0: the whole split).
    pub easy_vqa: usize,
    /// Test scenes (the fixed test split's first), every question of each.
    pub scenes: usize,
    /// Questions per batched forward.
    pub batch: usize,
    /// A unified model directory answering the same scene questions, for comparison.
    pub baseline: Option<PathBuf>,
    /// The held-out text ([`HELDOUT_TEXT`] from the repository root).
    pub heldout_text: PathBuf,
    /// Answer from this VQRAE tokenizer's encoder features instead of the directory's own
    /// (the Table 6 measurement: the same projector fed a stage-2 encoder).
    pub features_from: Option<PathBuf>,
}

/// Questions asked of one split and how they were answered.
#[derive(Clone, Debug, Serialize)]
pub struct SplitScore {
    pub questions: usize,
    /// Scenes: how many were drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenes: Option<usize>,
    pub score: VqaScore,
}

/// The baseline model on the same scene questions.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub model: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `model`.
    pub model_sha256: String,
    pub scenes: VqaScore,
}

/// A held-out prompt and the greedy reply.
#[derive(Clone, Debug, Serialize)]
pub struct HeldOutReply {
    pub prompt: String,
    pub reply: String,
    /// Whether an end-of-turn token ended it (false: it ran to [`REPLY_TOKENS`]).
    pub stopped: bool,
}

/// One model's text ability.
#[derive(Clone, Debug, Serialize)]
pub struct TextScore {
    pub heldout_perplexity: Perplexity,
    pub replies: Vec<HeldOutReply>,
}

/// The adapted model's text ability beside its base's (same weight form).
#[derive(Clone, Debug, Serialize)]
pub struct TextAbility {
    pub heldout_text: PathBuf,
    pub adapted: TextScore,
    pub base: TextScore,
}

/// `vqrae eval-llava`'s report.
/// A tokenizer whose encoder fed the VQA path in place of the directory's own.
#[derive(Clone, Debug, Serialize)]
pub struct FeaturesFrom {
    pub tokenizer: PathBuf,
    pub tokenizer_sha256: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LlavaReport {
    pub model: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of the model directory (what identifies it once the
    /// path holds another); `adapters_sha256` is its adapters file's alone.
    pub model_sha256: String,
    pub adapters_sha256: String,
    pub base: WeightsRef,
    pub encoder: WeightsRef,
    pub quantized: bool,
    /// The tokenizer whose encoder gave the features, when not the directory's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features_from: Option<FeaturesFrom>,
    pub easy_vqa_test: SplitScore,
    pub scenes_test: SplitScore,
    pub baseline: Option<Baseline>,
    pub text_ability: TextAbility,
    pub seconds: f64,
    /// This process's command line.
    pub command: String,
    /// `git rev-parse HEAD` where the command ran; null outside a git checkout.
    pub commit: Option<String>,
}

/// The commit checked out in the current directory, if it is a git checkout and git runs.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !sha.is_empty()).then_some(sha)
}

/// Logs `what`'s progress every 320 questions or so, and at the end.
fn progress(what: &'static str, started: Instant) -> impl FnMut(usize, usize) {
    move |done, n| {
        if done % 320 < 16 || done == n {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(what, done, n, seconds, "answered");
        }
    }
}

/// Perplexity of `ids` and greedy replies to the held-out prompts, under `lm`.
fn text_score(chat: Chat<'_>, ids: &[u32]) -> Result<TextScore> {
    let chunk = PERPLEXITY_CHUNK.min(chat.model.config().max_position_embeddings);
    let replies = HELD_OUT_PROMPTS
        .iter()
        .map(|p| {
            let r = chat.reply(
                &[ChatMessage::user(*p)],
                &SamplingConfig::greedy(),
                REPLY_TOKENS,
            )?;
            Ok(HeldOutReply {
                prompt: p.to_string(),
                reply: r.text.trim().to_string(),
                stopped: r.stopped,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TextScore {
        // among text ids, as chat samples: a model that draws has image ids after them
        heldout_perplexity: chunked_perplexity_over(chat.model, ids, chunk, chat.tok.vocab_size())?,
        replies,
    })
}

/// `lm` chatting through `model`'s tokenizer and template.
fn chat_with<'a>(lm: &'a Llama, model: &'a LlavaModel) -> Chat<'a> {
    Chat {
        model: lm,
        tok: &model.text,
        template: &model.template,
    }
}

/// [`TextAbility`] of `model`, its base read again from `models_root` in the same form.
fn text_ability(model: &LlavaModel, models_root: &Path, heldout: &Path) -> Result<TextAbility> {
    let text = std::fs::read_to_string(heldout).map_err(UnifiedError::io(heldout))?;
    let ids = model.text.encode(&text)?;
    let form = match model.quantized {
        true => WeightForm::Quantized,
        false => WeightForm::Dequantized(DType::F32),
    };
    let base_path = models_root.join(&model.cfg.base.path);
    let base = ChatModel::from_gguf(base_path, form, model.lm.device())?;
    Ok(TextAbility {
        heldout_text: heldout.to_path_buf(),
        adapted: text_score(chat_with(&model.lm, model), &ids)?,
        base: text_score(chat_with(&base.model, model), &ids)?,
    })
}

/// Scores the LLaVA model directory `dir` as `opts` says, on `device`.
pub fn evaluate(dir: &Path, opts: &LlavaEvalOptions, device: &Device) -> Result<LlavaReport> {
    let started = Instant::now();
    let models_root = opts.data.join("models");
    let mut model = LlavaModel::load(dir, &models_root, opts.quantized, device)?;
    let features_from = match &opts.features_from {
        Some(t) => {
            model.use_features_of(&Vqrae::load(t, device, DType::F32)?)?;
            Some(FeaturesFrom {
                tokenizer: t.clone(),
                tokenizer_sha256: sha256_model(t)?,
            })
        }
        None => None,
    };
    let greedy = SamplingConfig::greedy();
    let scenes = VqaSet::scenes(Split::Test, opts.scenes);
    let easy = VqaSet::easy_vqa(&opts.data.join(vqrae_data::easy_vqa::DIR), Split::Test, 0)?;
    let ask = |im: &[RgbImage], q: &[&str]| model.ask(im, q, ANSWER_TOKENS, &greedy);
    let scene_score = score(&scenes, 0, opts.batch, ask, progress("scenes", started))?;
    let easy_score = score(
        &easy,
        opts.easy_vqa,
        opts.batch,
        ask,
        progress("easy-vqa", started),
    )?;
    let baseline = match &opts.baseline {
        Some(b) => {
            let m = UnifiedModel::load(b, device, DType::F32)?;
            let ask = |im: &[RgbImage], q: &[&str]| m.ask(im, q, 8, &greedy);
            Some(Baseline {
                model: b.clone(),
                model_sha256: sha256_model(b)?,
                scenes: score(&scenes, 0, 64, ask, progress("baseline scenes", started))?,
            })
        }
        None => None,
    };
    let text_ability = text_ability(&model, &models_root, &opts.heldout_text)?;
    let LlavaModelConfig { base, encoder, .. } = model.cfg.clone();
    Ok(LlavaReport {
        model: dir.to_path_buf(),
        model_sha256: sha256_model(dir)?,
        adapters_sha256: vqrae_data::fs::sha256_file(&dir.join(ADAPTERS_FILE))?,
        base,
        encoder,
        quantized: model.quantized,
        features_from,
        easy_vqa_test: SplitScore {
            questions: easy_score.overall.asked,
            scenes: None,
            score: easy_score,
        },
        scenes_test: SplitScore {
            questions: scenes.items.len(),
            scenes: Some(opts.scenes),
            score: scene_score,
        },
        baseline,
        text_ability,
        seconds: started.elapsed().as_secs_f64(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        commit: git_commit(),
    })
}
