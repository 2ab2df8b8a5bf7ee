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
//!
//! Modules: `config` (the config and its phases), `data` (the encoded training data),
//! `easy_vqa` (that data assembled from easy-VQA), `examples` (the examples each step draws),
//! `parts` (the trainable LM and projector), `step` (one step's loss) and `train` (the run).

mod config;
mod data;
mod easy_vqa;
mod examples;
mod parts;
mod step;
mod train;

pub use config::{JointConfig, Phase};
pub use data::JointData;
pub use train::{train, train_locked, JointSummary};
