//! The tokenizer's training runs as the command line starts them: from config files, on a data
//! set of the data root. `vqrae init`, `pretrain-encoder` and `train-tokenizer` are these
//! functions behind flags.

use std::path::{Path, PathBuf};

use candle_core::Device;
use vqrae_data::easy_vqa::Split;
use vqrae_data::fs::read_toml;
use vqrae_data::image_io::resize;
use vqrae_data::labelled::Dataset;
use vqrae_train::lock::RunLock;

use crate::encoder::{hf_encoder_config, hf_tensors, EncoderConfig};
use crate::error::{Result, TokenizerError};
use crate::init::SeededVarMap;
use crate::mixed::MixedSet;
use crate::model::{Vqrae, VqraeConfig};
use crate::pretrain::{pretrain_encoder, PretrainConfig, PretrainSummary};
use crate::quantizer::{QuantizerConfig, QuantizerKind};
use crate::train::{train_locked, write_teacher, TrainConfig, TrainSummary};

/// Writes an untrained checkpoint of the config file `config` to `out`, its encoder taken from
/// `encoder` (an encoder directory whose config must match) when given.
pub fn init_checkpoint(
    config: &Path,
    encoder: Option<&Path>,
    seed: u64,
    out: &Path,
    device: &Device,
) -> Result<()> {
    let cfg = VqraeConfig::from_toml_file(config)?;
    let (model, vars) = Vqrae::init(&cfg, encoder, seed, device)?;
    model.save(out, &vars)
}

/// Semantic pretraining of the project's own ViT encoder on a data set's training split; with
/// the `clap` feature, the flags of `vqrae pretrain-encoder` (the field docs are their help).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct EncoderPretraining {
    /// Encoder config (TOML with `arch = "vit"` and the own ViT's fields).
    #[cfg_attr(feature = "clap", arg(long = "encoder"))]
    pub encoder_config: PathBuf,
    /// Training hyper-parameters (TOML, `PretrainConfig`); defaults when absent.
    #[cfg_attr(feature = "clap", arg(long = "train"))]
    pub train_config: Option<PathBuf>,
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "easy-vqa"))]
    pub dataset: Dataset,
    /// Use a seeded random subset of the training split (0 = all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub limit: usize,
    /// Output encoder directory.
    #[cfg_attr(feature = "clap", arg(short, long))]
    pub out: PathBuf,
}

/// Pretrains the encoder `p` describes on the images and label columns of its data set.
pub fn pretrain_encoder_run(
    p: &EncoderPretraining,
    root: &Path,
    device: &Device,
) -> Result<PretrainSummary> {
    let enc_cfg: EncoderConfig = read_toml(&p.encoder_config)?;
    enc_cfg.spec().map_err(TokenizerError::Invalid)?;
    let cfg: PretrainConfig = match &p.train_config {
        Some(path) => read_toml(path)?,
        None => PretrainConfig::default(),
    };
    let data = p.dataset.load(root, Split::Train, p.limit, cfg.seed)?;
    pretrain_encoder(&enc_cfg, &data.images, &data.columns, &cfg, &p.out, device)
}

/// Changes to a fresh model's quantizer, for the codebook sweeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuantizerOverrides {
    /// Codebook width `e`.
    pub dim: Option<usize>,
    /// Codebook size `k`.
    pub codebook_size: Option<usize>,
    pub kind: Option<QuantizerKind>,
    /// Look codes up by cosine ([`QuantizerConfig::l2_normalize`]); `false` keeps the config's.
    pub l2_normalize: bool,
}

impl QuantizerOverrides {
    /// Whether these change nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn apply(&self, q: &mut QuantizerConfig) {
        q.dim = self.dim.unwrap_or(q.dim);
        q.codebook_size = self.codebook_size.unwrap_or(q.codebook_size);
        q.kind = self.kind.unwrap_or(q.kind);
        q.l2_normalize |= self.l2_normalize;
    }
}

/// Where a tokenizer's training starts. Only a fresh model takes quantizer overrides: a
/// checkpoint keeps its own config.
#[derive(Clone, Debug)]
pub enum TokenizerStart {
    /// A fresh model of a config file (TOML), its encoder optionally from an encoder directory
    /// (Hugging Face or `pretrain-encoder` output).
    Fresh {
        config: PathBuf,
        encoder: Option<PathBuf>,
        overrides: QuantizerOverrides,
    },
    /// The weights of a tokenizer checkpoint (stage 2 starts from stage 1's `RUN/model`).
    Checkpoint(PathBuf),
}

/// One run of tokenizer training (stage 1 or 2, as its training config says), resumable.
#[derive(Clone, Debug)]
pub struct TokenizerTraining {
    pub start: TokenizerStart,
    /// Training config (TOML, [`TrainConfig`]).
    pub train_config: PathBuf,
    pub dataset: Dataset,
    /// A seeded random subset of the training split (0: all of it).
    pub limit: usize,
    /// Run directory: training checkpoints, `metrics.jsonl`, `model/`.
    pub run: PathBuf,
    /// Stage 2: distil to this encoder directory instead of a copy of the starting encoder.
    /// Read when the run starts; a resumed run keeps its own.
    pub teacher: Option<PathBuf>,
}

/// `vqrae train-tokenizer`'s flags (with the `clap` feature; the field docs are their help): a
/// fresh model or a checkpoint to start from, the quantizer overrides of the codebook sweeps,
/// the run. [`Self::training`] turns them into the [`TokenizerTraining`] they describe.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TokenizerTrainingFlags {
    /// Tokenizer config (TOML) for a fresh model; not needed with --init.
    #[cfg_attr(feature = "clap", arg(long))]
    pub config: Option<PathBuf>,
    /// Start from this tokenizer checkpoint (stage 2 starts from stage 1's `RUN/model`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub init: Option<PathBuf>,
    /// Encoder directory (Hugging Face or `pretrain-encoder` output) for a fresh model.
    #[cfg_attr(feature = "clap", arg(long))]
    pub encoder: Option<PathBuf>,
    /// Training config (TOML, `TrainConfig`: stage, steps, learning rates, loss weights).
    #[cfg_attr(feature = "clap", arg(long))]
    pub train: PathBuf,
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "easy-vqa"))]
    pub dataset: Dataset,
    /// Use a seeded random subset of the training split (0 = all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub limit: usize,
    /// Run directory: training checkpoints (resumed automatically), metrics.jsonl, `model/`.
    #[cfg_attr(feature = "clap", arg(long))]
    pub run: PathBuf,
    /// Stage 2: distil to this encoder (Hugging Face or `pretrain-encoder` output) instead of a
    /// copy of the starting one; e.g. the original pretrained encoder when `--init` is a model
    /// whose encoder has already moved. Read when the run starts; a resumed run keeps its own.
    #[cfg_attr(feature = "clap", arg(long))]
    pub teacher: Option<PathBuf>,
    /// Override the config's codebook width `e` (fresh models only; the codebook sweeps).
    #[cfg_attr(feature = "clap", arg(long))]
    pub codebook_dim: Option<usize>,
    /// Override the config's codebook size `k` (fresh models only).
    #[cfg_attr(feature = "clap", arg(long))]
    pub codebook_size: Option<usize>,
    /// Override the config's quantizer kind (fresh models only).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub quantizer: Option<QuantizerKind>,
    /// Look codes up by cosine (fresh models only; see `QuantizerConfig::l2_normalize`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub l2_normalize: bool,
}

impl TokenizerTrainingFlags {
    /// The run these flags describe: exactly one of `config` (a fresh model) and `init` (a
    /// checkpoint), and quantizer overrides only for a fresh model.
    pub fn training(self) -> Result<TokenizerTraining> {
        let overrides = QuantizerOverrides {
            dim: self.codebook_dim,
            codebook_size: self.codebook_size,
            kind: self.quantizer,
            l2_normalize: self.l2_normalize,
        };
        let bad = |m: &str| Err(TokenizerError::Invalid(m.to_string()));
        let start = match (self.init, self.config) {
            (Some(_), None) if !overrides.is_empty() => {
                return bad(
                    "--codebook-dim, --codebook-size, --quantizer and --l2-normalize change a \
                     fresh model's config; a checkpoint keeps its own",
                )
            }
            (Some(dir), None) => TokenizerStart::Checkpoint(dir),
            (None, Some(config)) => TokenizerStart::Fresh {
                config,
                encoder: self.encoder,
                overrides,
            },
            _ => {
                return bad("give exactly one of --config (a fresh model) or --init (a checkpoint)")
            }
        };
        Ok(TokenizerTraining {
            start,
            train_config: self.train,
            dataset: self.dataset,
            limit: self.limit,
            run: self.run,
            teacher: self.teacher,
        })
    }
}

/// Trains (or resumes) the run `t` describes on its data set's training split, resized to the
/// model's resolution.
pub fn train_tokenizer_run(
    t: &TokenizerTraining,
    root: &Path,
    device: &Device,
) -> Result<TrainSummary> {
    let cfg = TrainConfig::from_toml_file(&t.train_config)?;
    // before anything is written into the run: a second trainer fails here, at once
    let _lock = RunLock::acquire(&t.run)?;
    let ((model, vars), fresh) = start_model(&t.start, cfg.seed, device)?;
    if let Some(dir) = &t.teacher {
        set_teacher(&model, &t.run, dir, cfg.stage)?;
    }
    let s = model.config().image_size as u32;
    let (images, label) = match &cfg.data {
        Some(_) if t.limit > 0 => {
            return Err(TokenizerError::Invalid(format!(
                "--limit {} is for --dataset; the training config's [data] table caps each source",
                t.limit
            )))
        }
        Some(mix) => {
            let set = MixedSet::load(root, mix, Split::Train, s)?;
            let label = set.identity();
            tracing::info!(images = set.images.len(), "{label}");
            (set.images, label)
        }
        None => {
            let data = t.dataset.load(root, Split::Train, t.limit, cfg.seed)?;
            let label = format!(
                "{} train limit {} seed {}",
                t.dataset.name(),
                t.limit,
                cfg.seed
            );
            (data.images.iter().map(|i| resize(i, s, s)).collect(), label)
        }
    };
    train_locked(
        &model,
        &vars,
        (&images, &label),
        &cfg,
        &t.run,
        fresh,
        device,
    )
}

/// The model a run starts from, and whether it is fresh (only then may its codebook be
/// initialised from the data).
fn start_model(
    start: &TokenizerStart,
    seed: u64,
    device: &Device,
) -> Result<((Vqrae, SeededVarMap), bool)> {
    match start {
        TokenizerStart::Checkpoint(dir) => {
            Ok((Vqrae::init_from_checkpoint(dir, seed, device)?, false))
        }
        TokenizerStart::Fresh {
            config,
            encoder,
            overrides,
        } => {
            let mut mcfg = VqraeConfig::from_toml_file(config)?;
            overrides.apply(&mut mcfg.quantizer);
            mcfg.validate()?;
            Ok((Vqrae::init(&mcfg, encoder.as_deref(), seed, device)?, true))
        }
    }
}

/// Makes the encoder in `dir` the stage-2 teacher of the run in `run_dir`, unless the run
/// already has one (a resumed run keeps its own).
fn set_teacher(model: &Vqrae, run_dir: &Path, dir: &Path, stage: u8) -> Result<()> {
    if stage != 2 {
        return Err(TokenizerError::Invalid(
            "a teacher encoder (--teacher) is for stage 2 (stage 1 has the encoder frozen: it \
             is the teacher)"
                .into(),
        ));
    }
    let hf = hf_encoder_config(&dir.join("config.json"))?;
    if hf != model.config().encoder {
        return Err(TokenizerError::Invalid(format!(
            "teacher encoder {} has another architecture than the model's",
            dir.display()
        )));
    }
    let tensors = hf_tensors(dir, &hf)?;
    if !write_teacher(run_dir, &tensors)? {
        tracing::info!(run = %run_dir.display(), "the run already has its teacher; --teacher is ignored");
    }
    Ok(())
}

/// What the procedures' unit tests share: a temporary directory, and one holding a tiny
/// untrained checkpoint.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use candle_core::Device;
    use tempfile::TempDir;

    use crate::error::{Result, TokenizerError};

    /// A file or folder under `tokenizer/tests/fixtures`.
    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// A fresh temporary directory.
    pub(crate) fn tempdir() -> Result<TempDir> {
        tempfile::tempdir().map_err(|source| TokenizerError::Io {
            path: "tempdir".into(),
            source,
        })
    }

    /// A temporary directory and its `tok`: an untrained checkpoint of `configs/tiny.toml`
    /// (seed 2).
    pub(crate) fn tiny_checkpoint() -> Result<(TempDir, PathBuf)> {
        let dir = tempdir()?;
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny.toml");
        let model = dir.path().join("tok");
        super::init_checkpoint(&tiny, None, 2, &model, &Device::Cpu)?;
        Ok((dir, model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    fn write(path: &Path, text: &str) -> Result<()> {
        std::fs::write(path, text).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    #[test]
    fn flags_name_one_start_and_override_only_a_fresh_model() {
        let flags = |config: Option<&str>, init: Option<&str>, dim: Option<usize>| {
            TokenizerTrainingFlags {
                config: config.map(PathBuf::from),
                init: init.map(PathBuf::from),
                encoder: None,
                train: "t.toml".into(),
                dataset: Dataset::EasyVqa,
                limit: 0,
                run: "run".into(),
                teacher: None,
                codebook_dim: dim,
                codebook_size: None,
                quantizer: None,
                l2_normalize: false,
            }
            .training()
        };
        let fresh = flags(Some("c.toml"), None, Some(8)).map(|t| t.start);
        assert!(
            matches!(fresh, Ok(TokenizerStart::Fresh { overrides, .. }) if overrides.dim == Some(8))
        );
        let resumed = flags(None, Some("m"), None).map(|t| t.start);
        assert!(matches!(resumed, Ok(TokenizerStart::Checkpoint(_))));
        let err = |r: Result<TokenizerTraining>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(flags(None, Some("m"), Some(8))).contains("fresh model"));
        assert!(err(flags(None, None, None)).contains("exactly one"));
        assert!(err(flags(Some("c.toml"), Some("m"), None)).contains("exactly one"));
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let mut q = QuantizerConfig::default();
        let before = q.clone();
        QuantizerOverrides::default().apply(&mut q);
        assert_eq!(q, before);
        assert!(QuantizerOverrides::default().is_empty());
        let o = QuantizerOverrides {
            dim: Some(12),
            kind: Some(QuantizerKind::Vq),
            ..Default::default()
        };
        assert!(!o.is_empty());
        o.apply(&mut q);
        assert_eq!((q.dim, q.kind), (12, QuantizerKind::Vq));
        assert_eq!(q.codebook_size, before.codebook_size);
    }

    /// A stage-1 run of the tiny config on 8 scenes, its training config written into `dir`.
    fn scenes_run(dir: &Path, run: &str) -> Result<TokenizerTraining> {
        let train = dir.join("s1.toml");
        write(
            &train,
            "stage = 1\nsteps = 1\nbatch_size = 4\n[decoder_lr]\npeak_lr = 1e-3\n\
             min_lr = 1e-4\nwarmup_steps = 1\ntotal_steps = 1\n",
        )?;
        Ok(TokenizerTraining {
            start: TokenizerStart::Fresh {
                config: repo("configs/tiny.toml"),
                encoder: None,
                overrides: QuantizerOverrides::default(),
            },
            train_config: train,
            dataset: Dataset::Scenes,
            limit: 8,
            run: dir.join(run),
            teacher: None,
        })
    }

    #[test]
    fn a_second_trainer_on_the_run_fails_at_once_naming_it() -> Result<()> {
        let dir = testing::tempdir()?;
        let t = scenes_run(dir.path(), "run")?;
        let held = RunLock::acquire(&t.run)?;
        let err = train_tokenizer_run(&t, Path::new("/nonexistent"), &Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("in use by another trainer"), "{msg}");
        assert!(msg.contains(&t.run.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(!t.run.join("metrics.jsonl").exists(), "nothing written");
        drop(held);
        // released with its handle: the run trains now, and frees the lock when it returns
        train_tokenizer_run(&t, Path::new("/nonexistent"), &Device::Cpu)?;
        RunLock::acquire(&t.run)?;
        Ok(())
    }

    #[test]
    fn a_truncated_teacher_is_named() -> Result<()> {
        let dir = testing::tempdir()?;
        let t = scenes_run(dir.path(), "run")?;
        train_tokenizer_run(&t, Path::new("/nonexistent"), &Device::Cpu)?;
        let teacher = t.run.join("teacher.safetensors");
        let bytes = std::fs::read(&teacher).map_err(|source| TokenizerError::Io {
            path: teacher.clone(),
            source,
        })?;
        let cut = |n: usize| -> Result<String> {
            std::fs::write(&teacher, &bytes[..n]).map_err(|source| TokenizerError::Io {
                path: teacher.clone(),
                source,
            })?;
            // a fresh start in the same run (its state removed) reads the run's teacher
            let _ = std::fs::remove_dir_all(t.run.join("state"));
            Ok(
                train_tokenizer_run(&t, Path::new("/nonexistent"), &Device::Cpu)
                    .map(|_| ())
                    .unwrap_err()
                    .to_string(),
            )
        };
        // cut inside the tensors and inside the header
        for n in [bytes.len() - 100, 20] {
            let msg = cut(n)?;
            assert!(msg.contains(&teacher.display().to_string()), "{msg}");
            assert!(msg.contains("teacher encoder is unreadable"), "{msg}");
        }
        Ok(())
    }

    #[test]
    fn pretrain_then_train_both_stages_on_the_scenes() -> Result<()> {
        let dir = testing::tempdir()?;
        let p = |name: &str| dir.path().join(name);
        // the scenes are made, not installed: no data root is read
        let root = Path::new("/nonexistent");
        write(
            &p("pre.toml"),
            "steps = 2\nbatch_size = 4\n[lr]\npeak_lr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 1\n\
             total_steps = 2\n",
        )?;
        let pretraining = EncoderPretraining {
            encoder_config: repo("configs/encoder/tiny.toml"),
            train_config: Some(p("pre.toml")),
            dataset: Dataset::Scenes,
            limit: 8,
            out: p("enc"),
        };
        let summary = pretrain_encoder_run(&pretraining, root, &Device::Cpu)?;
        assert_eq!(summary.steps, 2);
        let stage = |n: u8| {
            format!(
                "stage = {n}\nsteps = 2\nbatch_size = 4\ncheckpoint_every = 1\nlog_every = 1\n\
                 [decoder_lr]\npeak_lr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 1\ntotal_steps = 2\n"
            )
        };
        write(&p("s1.toml"), &stage(1))?;
        write(&p("s2.toml"), &stage(2))?;
        let mut run = TokenizerTraining {
            start: TokenizerStart::Fresh {
                config: repo("configs/tiny.toml"),
                encoder: Some(p("enc")),
                overrides: QuantizerOverrides {
                    codebook_size: Some(40),
                    ..Default::default()
                },
            },
            train_config: p("s1.toml"),
            dataset: Dataset::Scenes,
            limit: 8,
            run: p("run1"),
            teacher: Some(p("enc")),
        };
        let err = train_tokenizer_run(&run, root, &Device::Cpu).map(|_| ());
        assert!(err.is_err_and(|e| e.to_string().contains("stage 2")));
        run.teacher = None;
        let s1 = train_tokenizer_run(&run, root, &Device::Cpu)?;
        assert_eq!(s1.steps, 2);
        let model = Vqrae::load(&s1.model_dir, &Device::Cpu, candle_core::DType::F32)?;
        assert_eq!(model.config().quantizer.codebook_size, 40);
        let run2 = TokenizerTraining {
            start: TokenizerStart::Checkpoint(s1.model_dir.clone()),
            train_config: p("s2.toml"),
            run: p("run2"),
            teacher: Some(p("enc")),
            ..run
        };
        let s2 = train_tokenizer_run(&run2, root, &Device::Cpu)?;
        assert!(s2.model_dir.join("model.safetensors").is_file());
        let hash = vqrae_data::fs::sha256_model(&s2.model_dir)?;
        assert_eq!(s2.model_dir_sha256, hash);
        assert_ne!(s1.model_dir_sha256, hash, "stage 2 moved the weights");
        assert!(p("run2/teacher.safetensors").is_file());
        init_checkpoint(
            &repo("configs/tiny.toml"),
            None,
            1,
            &p("init"),
            &Device::Cpu,
        )?;
        assert!(p("init/config.json").is_file());
        Ok(())
    }
}
