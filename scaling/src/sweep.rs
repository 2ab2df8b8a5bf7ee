//! The whole sweep: the family of sizes on one tokenizer's codes, the fits, the held-out size
//! the fits predict, and the codebook sweep; every run resumable, every result kept on disk.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::scenes::{Scene, SceneConfig};
use vqrae_lm::{TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;

use super::codes::{CodeSet, Split};
use super::config::{ScalingConfig, SizeSpec};
use super::fit::{fit_power_law, frontier, PowerLawFit};
use super::quality::{Prompt, QualityCheck};
use super::run::{self, RunInputs, RunResult};
use crate::error::{Result, ScalingError};
use vqrae_eval::referee::{Referee, RefereeReport, Verdict};
use vqrae_eval::scene_judge::SkillRates;
use vqrae_eval::scenes::ScenePrompts;
use vqrae_generate::sequence;

/// The images a sweep learns from and is judged on.
pub(crate) struct SweepData {
    pub train_images: Vec<RgbImage>,
    pub train_captions: Vec<String>,
    /// Held-out images (validation loss, and the referee's ceiling on the reconstructions of
    /// those with a label: the easy-VQA ones).
    pub val_images: Vec<RgbImage>,
    pub val_captions: Vec<String>,
    pub val_labels: Vec<Option<Verdict>>,
    /// The captions generation quality is measured on.
    pub prompts: Vec<Prompt>,
    /// Held-out scenes whose captions are drawn and judged per skill (empty: none).
    pub scene_prompts: Vec<Scene>,
    pub scene_cfg: SceneConfig,
}

/// The fits' prediction for the held-out size, and what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub size: String,
    pub non_embedding_params: usize,
    /// `L(N)` at its N, with its standard error.
    pub from_n: f64,
    pub from_n_se: Option<f64>,
    /// `L(C)` of the frontier at its final compute.
    pub from_c: f64,
    pub from_c_se: Option<f64>,
    pub measured: f64,
}

/// One tokenizer of the codebook sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodebookRow {
    pub tokenizer: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `tokenizer` (empty in reports from before it was
    /// kept; never written empty).
    #[serde(default)]
    pub tokenizer_sha256: String,
    pub codebook_size: usize,
    pub codebook_dim: usize,
    pub run: RunResult,
    /// Validation loss in bits per image (its codes and `<eoi>`).
    pub bits_per_image: f64,
    /// The referee on this tokenizer's reconstructions: what its LM could reach at best.
    pub ceiling: RefereeReport,
    #[serde(default)]
    pub scene_ceiling: Option<SkillRates>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub name: String,
    pub tokenizer: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `tokenizer`, as [`CodebookRow::tokenizer_sha256`].
    #[serde(default)]
    pub tokenizer_sha256: String,
    pub train_sequences: usize,
    pub val_images: usize,
    pub guidance: f64,
    pub runs: Vec<RunResult>,
    pub held_out: RunResult,
    pub fit_n: PowerLawFit,
    pub fit_c: PowerLawFit,
    /// `(C, loss)` points of the compute-efficient frontier over the family's curves (from
    /// `fit_from` of each run on), which `fit_c` is fitted on.
    pub frontier: Vec<(f64, f64)>,
    pub fit_from: f64,
    pub prediction: Prediction,
    pub ceiling: RefereeReport,
    /// The scene judge on the tokenizer's reconstructions of the scene prompts.
    #[serde(default)]
    pub scene_ceiling: Option<SkillRates>,
    /// Scene prompts drawn per run (0: no scene quality).
    #[serde(default)]
    pub scene_prompts: usize,
    pub codebook: Vec<CodebookRow>,
    /// Training wall time of every run, summed (a resumed run counts all its sessions).
    pub train_seconds: f64,
    /// Wall time of this invocation (less than the sum when runs were reused).
    pub seconds: f64,
}

fn fit_err(what: &str) -> impl FnOnce(super::fit::FitError) -> ScalingError + '_ {
    move |e| ScalingError::Config(format!("fitting {what}: {e}"))
}

/// What every run of a sweep shares, whatever its tokenizer.
struct Shared<'a> {
    cfg: &'a ScalingConfig,
    data: &'a SweepData,
    text: &'a TextTokenizer,
    referee: &'a Referee,
    out: &'a Path,
    device: &'a Device,
}

/// Everything one tokenizer's runs share: its codes, vocabulary, tokenizer and quality check.
struct OnCodes {
    codes: CodeSet,
    vocab: UnifiedVocab,
    context: usize,
    tokenizer: Vqrae,
    dir: PathBuf,
    /// [`vqrae_data::fs::sha256_model`] of `dir`.
    sha256: String,
}

impl OnCodes {
    fn new(dir: &Path, sh: &Shared<'_>) -> Result<Self> {
        let (cfg, data, text, device) = (sh.cfg, sh.data, sh.text, sh.device);
        if !dir.join("config.json").exists() {
            return Err(ScalingError::Config(format!(
                "tokenizer {}: no config.json there (train one with `vqrae train-tokenizer`)",
                dir.display()
            )));
        }
        let n_train = match cfg.data.train_limit {
            0 => data.train_images.len(),
            k => k.min(data.train_images.len()),
        };
        let n_val = cfg.data.val_images.min(data.val_images.len());
        let codes = CodeSet::load_or_encode(
            dir,
            Split {
                images: &data.train_images[..n_train],
                captions: &data.train_captions[..n_train],
            },
            Split {
                images: &data.val_images[..n_val],
                captions: &data.val_captions[..n_val],
            },
            &sh.out.join("codes"),
            device,
        )?;
        let vocab = UnifiedVocab::new(text.vocab_size(), codes.codebook_size)?;
        let mut longest = 0;
        for c in data.train_captions.iter().chain(&data.val_captions) {
            longest = longest.max(sequence::prompt_ids(text, &vocab, Some(c))?.len());
        }
        for p in &data.prompts {
            longest = longest.max(sequence::prompt_ids(text, &vocab, Some(&p.caption))?.len());
        }
        let context = (longest + codes.image_tokens + 1).div_ceil(8) * 8;
        let tokenizer = Vqrae::load(dir, device, DType::F32)?;
        Ok(Self {
            codes,
            vocab,
            context,
            tokenizer,
            dir: dir.to_path_buf(),
            sha256: vqrae_data::fs::sha256_model(dir)?,
        })
    }

    fn inputs<'a>(&'a self, cfg: &'a ScalingConfig, text: &'a TextTokenizer) -> RunInputs<'a> {
        RunInputs {
            cfg,
            codes: &self.codes,
            tokenizer_dir: &self.dir,
            tokenizer_sha256: &self.sha256,
            text,
            vocab: &self.vocab,
            context: self.context,
        }
    }

    fn check<'a>(&'a self, sh: &Shared<'a>) -> QualityCheck<'a> {
        QualityCheck {
            tokenizer: &self.tokenizer,
            referee: sh.referee,
            prompts: &sh.data.prompts,
            per_caption: sh.cfg.quality.images_per_caption,
            guidance: sh.cfg.quality.guidance,
        }
    }

    /// The referee on this tokenizer's reconstructions of the labelled held-out images.
    fn ceiling(&self, sh: &Shared<'_>) -> Result<RefereeReport> {
        let n = self.codes.val.len();
        let (images, labels): (Vec<RgbImage>, Vec<Verdict>) = sh.data.val_images[..n]
            .iter()
            .zip(&sh.data.val_labels[..n])
            .filter_map(|(img, l)| l.map(|l| (img.clone(), l)))
            .unzip();
        self.check(sh).ceiling(&images, &labels)
    }

    /// The scene judge on this tokenizer's reconstructions of the scene prompts.
    fn scene_ceiling(&self, sh: &Shared<'_>) -> Result<Option<SkillRates>> {
        match scene_prompts(sh.data) {
            Some(p) => Ok(Some(self.check(sh).scene_ceiling(&p)?)),
            None => Ok(None),
        }
    }

    /// Trains (or reuses) one run and measures its generation quality once.
    fn run(&self, sh: &Shared<'_>, size: &SizeSpec, run_dir: &Path) -> Result<RunResult> {
        let inputs = self.inputs(sh.cfg, sh.text);
        let trained = run::train(&inputs, size, run_dir, sh.device, None)?.ok_or_else(|| {
            ScalingError::Config(format!("run {} stopped before its end", size.name))
        })?;
        let mut result = trained.result;
        if result.quality.is_none() {
            let started = Instant::now();
            let q = self
                .check(sh)
                .generated(&trained.lm, sh.text, &self.vocab)?;
            tracing::info!(
                run = size.name.as_str(),
                both = q.both,
                seconds = started.elapsed().as_secs_f64(),
                "generation quality"
            );
            result.quality = Some(q);
            run::write_result(run_dir, &result)?;
        }
        if let (None, Some(prompts)) = (&result.scenes, scene_prompts(sh.data)) {
            let started = Instant::now();
            let rates =
                self.check(sh)
                    .generated_scenes(&trained.lm, sh.text, &self.vocab, &prompts)?;
            tracing::info!(
                run = size.name.as_str(),
                all = rates.all,
                seconds = started.elapsed().as_secs_f64(),
                "scene quality"
            );
            result.scenes = Some(rates);
            run::write_result(run_dir, &result)?;
        }
        tracing::info!(
            run = size.name.as_str(),
            n = result.non_embedding_params,
            val_loss = result.val_loss,
            seconds = result.seconds,
            "run finished"
        );
        Ok(result)
    }
}

fn scene_prompts(data: &SweepData) -> Option<ScenePrompts<'_>> {
    (!data.scene_prompts.is_empty()).then_some(ScenePrompts {
        cfg: &data.scene_cfg,
        scenes: &data.scene_prompts,
    })
}

/// Loads the sweep's data from the data root, runs (or resumes) the sweep of `cfg` into `out`
/// and writes its report there ([`crate::report::write_all`]): what `vqrae scale` does.
pub fn run_and_report(
    cfg: &ScalingConfig,
    root: &Path,
    out: &Path,
    device: &Device,
) -> Result<SweepReport> {
    let data = crate::data::sweep_data(cfg, root)?;
    let report = run(cfg, &data, out, device)?;
    crate::report::write_all(&report, out)?;
    Ok(report)
}

/// Runs (or resumes) the sweep of `cfg` into `out`.
pub(crate) fn run(
    cfg: &ScalingConfig,
    data: &SweepData,
    out: &Path,
    device: &Device,
) -> Result<SweepReport> {
    cfg.validate()?;
    let started = Instant::now();
    check_data(data)?;
    std::fs::create_dir_all(out).map_err(ScalingError::io(out))?;
    let text = text_tokenizer(cfg, data, out)?;
    let referee = Referee::load_qualified(&cfg.quality.referee, device)?;
    let sh = Shared {
        cfg,
        data,
        text: &text,
        referee: &referee,
        out,
        device,
    };

    let main = OnCodes::new(&cfg.tokenizer, &sh)?;
    let ceiling = main.ceiling(&sh)?;
    let scene_ceiling = main.scene_ceiling(&sh)?;
    let mut runs = Vec::new();
    for size in &cfg.sizes {
        runs.push(main.run(&sh, size, &out.join("runs").join(&size.name))?);
    }
    let fits = Fits::of(&runs, cfg.fit_from)?;
    // the prediction is written down before the held-out size trains
    let mut prediction = fits.predict(&main.inputs(cfg, &text), cfg)?;
    let held_dir = out.join("runs").join(&cfg.predict.name);
    let held_out = main.run(&sh, &cfg.predict, &held_dir)?;
    prediction.measured = held_out.val_loss;
    let codebook = codebook_sweep(&sh)?;

    let train_seconds = runs
        .iter()
        .chain([&held_out])
        .chain(codebook.iter().map(|c| &c.run))
        .map(|r| r.seconds)
        .sum();
    Ok(SweepReport {
        name: cfg.name.clone(),
        tokenizer: cfg.tokenizer.clone(),
        tokenizer_sha256: main.sha256.clone(),
        train_sequences: main.codes.train.len(),
        val_images: main.codes.val.len(),
        guidance: cfg.quality.guidance,
        runs,
        held_out,
        fit_n: fits.n,
        fit_c: fits.c,
        frontier: fits.frontier,
        fit_from: cfg.fit_from,
        prediction,
        ceiling,
        scene_ceiling,
        scene_prompts: data.scene_prompts.len(),
        codebook,
        train_seconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every image needs its caption, every held-out image its (optional) label.
fn check_data(data: &SweepData) -> Result<()> {
    if data.train_images.is_empty() || data.val_images.is_empty() || data.prompts.is_empty() {
        return Err(ScalingError::Config(
            "the sweep needs training images, held-out images and prompts".into(),
        ));
    }
    let (nt, nv) = (data.train_images.len(), data.val_images.len());
    if data.train_captions.len() != nt
        || data.val_captions.len() != nv
        || data.val_labels.len() != nv
    {
        return Err(ScalingError::Config(format!(
            "{nt} training images with {} captions; {nv} held-out images with {} captions and {} \
             labels",
            data.train_captions.len(),
            data.val_captions.len(),
            data.val_labels.len()
        )));
    }
    Ok(())
}

/// The BPE of the training captions: trained once, then read back from `out`.
fn text_tokenizer(cfg: &ScalingConfig, data: &SweepData, out: &Path) -> Result<TextTokenizer> {
    let text_path = out.join("text-tokenizer.json");
    if text_path.exists() {
        return Ok(TextTokenizer::from_file(&text_path)?);
    }
    let t = TextTokenizer::train_bpe(
        data.train_captions.iter().map(String::as_str),
        cfg.text_vocab_size,
    )?;
    t.save(&text_path)?;
    Ok(t)
}

/// The family's fits: `L(N)` on its final losses, `L(C)` on the frontier of its curves.
struct Fits {
    n: PowerLawFit,
    c: PowerLawFit,
    frontier: Vec<(f64, f64)>,
}

impl Fits {
    fn of(runs: &[RunResult], fit_from: f64) -> Result<Self> {
        let ns: Vec<f64> = runs.iter().map(|r| r.non_embedding_params as f64).collect();
        let losses: Vec<f64> = runs.iter().map(|r| r.val_loss).collect();
        let n = fit_power_law(&ns, &losses).map_err(fit_err("L(N)"))?;
        let points: Vec<(f64, f64)> = runs
            .iter()
            .flat_map(|r| {
                r.curve
                    .iter()
                    .filter(|p| p.step as f64 >= fit_from * r.steps as f64)
                    .map(|p| (p.flops, p.val_loss))
            })
            .collect();
        let frontier = frontier(&points);
        let (cs, ls): (Vec<f64>, Vec<f64>) = frontier.iter().copied().unzip();
        let c = fit_power_law(&cs, &ls).map_err(fit_err("L(C) on the frontier"))?;
        Ok(Self { n, c, frontier })
    }

    /// Both fits' loss for `cfg.predict` (its measured loss still unknown: NaN).
    fn predict(&self, inputs: &RunInputs<'_>, cfg: &ScalingConfig) -> Result<Prediction> {
        let next_cfg = inputs.llama_config(&cfg.predict)?;
        let next_n = next_cfg.non_embedding_params();
        let next_tokens = cfg.budget.tokens(next_n);
        let next_c = 6.0 * next_n as f64 * next_tokens;
        let prediction = Prediction {
            size: cfg.predict.name.clone(),
            non_embedding_params: next_n,
            from_n: self.n.predict(next_n as f64),
            from_n_se: self.n.predict_se(next_n as f64),
            from_c: self.c.predict(next_c),
            from_c_se: self.c.predict_se(next_c),
            measured: f64::NAN,
        };
        tracing::info!(
            size = cfg.predict.name.as_str(),
            n = next_n,
            from_n = prediction.from_n,
            from_c = prediction.from_c,
            "predicted loss of the held-out size"
        );
        Ok(prediction)
    }
}

/// The codebook sweep: one size on the codes of each of `cfg.codebook`'s tokenizers.
fn codebook_sweep(sh: &Shared<'_>) -> Result<Vec<CodebookRow>> {
    let (cfg, out) = (sh.cfg, sh.out);
    let mut codebook = Vec::new();
    let Some(cb) = &cfg.codebook else {
        return Ok(codebook);
    };
    let size = cfg.size(&cb.size).ok_or_else(|| {
        ScalingError::Config(format!("codebook.size {:?} is not a size", cb.size))
    })?;
    for tok_dir in &cb.tokenizers {
        let on = OnCodes::new(tok_dir, sh)?;
        let tag = tok_dir
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|c| c != "model" && c != "." && c != "..")
            .collect::<Vec<_>>()
            .join("-");
        let dir = out.join("codebook").join(format!("{tag}-{}", size.name));
        let run = on.run(sh, size, &dir)?;
        let ceiling = on.ceiling(sh)?;
        let scene_ceiling = on.scene_ceiling(sh)?;
        let q = &on.tokenizer.config().quantizer;
        codebook.push(CodebookRow {
            tokenizer: tok_dir.clone(),
            tokenizer_sha256: on.sha256.clone(),
            codebook_size: q.codebook_size,
            codebook_dim: q.dim,
            bits_per_image: run.val_loss * (on.codes.image_tokens + 1) as f64
                / std::f64::consts::LN_2,
            run,
            ceiling,
            scene_ceiling,
        });
    }
    Ok(codebook)
}
