//! The `train-lora` row's model: a frozen LLaMA at SmolLM2-135M-Instruct's shape (random
//! weights, written by `bench init` into `DIR/lora-base/`) with rank-16 adapters on all seven
//! projections, as the LLaVA trainer configures them (configs/llava/smollm2.toml), and one AdamW
//! step over the adapters alone.
//!
//! `bench init` also records what the PyTorch reference checks its LoRA against: the adapters it
//! starts from (`lora-base/adapters-init.safetensors`: `A` as [`Adapters::new`] makes it, `B`
//! seeded random so the side paths matter), two sequences (`lora_ids` in `inputs.safetensors`),
//! and the losses before, between and after two steps and the two gradient norms before clipping
//! (`lora_losses`, `lora_grad_norms` in `expected.safetensors`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::ValueEnum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_lm::lora::{Adapters, LoraConfig, LoraTarget};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_train::init::{seeded_randn, SeededVarMap};
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

/// The base's directory inside a bench directory (an HF Llama checkpoint, bf16 weights).
pub(crate) const LORA_DIR: &str = "lora-base";
/// The check's starting adapters, inside [`LORA_DIR`] (PEFT tensor names).
pub(crate) const ADAPTERS_INIT: &str = "adapters-init.safetensors";
/// The LLaVA trainer's adapters (configs/llava/smollm2.toml): rank 16, alpha 32, seed 0.
const RANK: usize = 16;
const ALPHA: f64 = 32.0;
/// The optimizer: the train_lm row's learning rate, the LLaVA config's weight decay (0) and
/// clipping (1).
const LR: f64 = 1e-4;
const GRAD_CLIP: f64 = 1.0;
/// Seeds of the base's weights, the check's `B` and the check's ids.
const BASE_SEED: u64 = 5;
const B_SEED: u64 = 100;
const IDS_SEED: u64 = 8;
/// Std of the check's `B` (the base's initializer_range: side paths of ~20% of the base's
/// projections).
const B_STD: f64 = 0.02;
/// Sequences of the check.
const CHECK_BATCH: usize = 2;

/// The frozen base `bench init` writes for the `train-lora` row (default preset only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoraBase {
    /// SmolLM2-135M-Instruct's shape (30 x 576, 9/3 heads, FFN 1536, vocabulary 49,152, tied
    /// embeddings): 135M parameters, 270 MB of bf16 on disk.
    Smollm2,
    /// A 2-layer, 64-wide LLaMA (the tests).
    Tiny,
    /// No base: the `train-lora` row cannot run on the directory.
    None,
}

impl LoraBase {
    /// The base's config; `None` for [`LoraBase::None`].
    fn config(self) -> Option<LlamaConfig> {
        let (vocab, hidden, ffn, layers, heads, kv, max_pos, theta) = match self {
            // lm/tests/gguf_smollm2.rs: the published shape as the project reads it
            Self::Smollm2 => (49_152, 576, 1536, 30, 9, 3, 8192, 100_000.0),
            Self::Tiny => (512, 64, 128, 2, 4, 2, 256, 100_000.0),
            Self::None => return None,
        };
        Some(LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: ffn,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: theta,
            max_position_embeddings: max_pos,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        })
    }
}

/// The adapters of every layer's seven projections.
fn lora_config() -> LoraConfig {
    LoraConfig::new(RANK, ALPHA, LoraTarget::ALL)
}

/// The frozen base (plain tensors, not variables) with fresh adapters attached, and AdamW over
/// the adapters alone.
pub(crate) struct LoraTrainer {
    lm: Llama,
    adapters: Adapters,
    opt: AdamW,
}

impl LoraTrainer {
    /// The base of the bench directory `bench_dir`, in f32, with fresh adapters (`B` zero).
    pub(crate) fn new(bench_dir: &Path, device: &Device) -> Result<Self> {
        let dir = bench_dir.join(LORA_DIR);
        if !dir.join("config.json").is_file() {
            bail!(
                "{} is missing: the train-lora row needs the base that `vqrae bench init \
                 --preset default` writes (run it again)",
                dir.display()
            );
        }
        let mut lm = Llama::load(&dir, device, DType::F32)
            .with_context(|| format!("loading {}", dir.display()))?;
        let adapters = Adapters::new(lm.config(), lora_config(), device)?;
        lm.attach_adapters(&adapters)?;
        let opt = AdamW::new(
            vec![ParamGroup::new(
                "adapters",
                adapters.named_vars()?,
                LrSchedule::constant(LR),
            )],
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )?;
        Ok(Self { lm, adapters, opt })
    }

    pub(crate) fn config(&self) -> &LlamaConfig {
        self.lm.config()
    }

    /// `batch` sequences of `seq` ids drawn from the base's vocabulary by `draw`, each token
    /// predicting the next (the LM trainer's batch and loss).
    pub(crate) fn batch(
        &self,
        batch: usize,
        seq: usize,
        mut draw: impl FnMut(usize, std::ops::Range<u32>) -> Vec<u32>,
        device: &Device,
    ) -> Result<TrainBatch> {
        let vocab = self.config().vocab_size as u32;
        let examples: Vec<Example> = (0..batch)
            .map(|_| Example {
                ids: draw(seq, 0..vocab),
                loss_from: 1,
            })
            .collect();
        Ok(TrainBatch::new(&examples, 0, device)?)
    }

    /// The mean next-token cross-entropy of `batch`.
    pub(crate) fn loss(&self, batch: &TrainBatch) -> Result<Tensor> {
        let h = self
            .lm
            .forward_hidden(&self.lm.embed(&batch.ids)?, None, true)?;
        Ok(batch.loss(&self.lm, &h)?)
    }

    /// One step: loss, backward, clipping to norm 1 and AdamW on the adapters. Returns the loss
    /// (before the update) and the gradient norm before clipping.
    pub(crate) fn step(&mut self, batch: &TrainBatch) -> Result<(Tensor, f64)> {
        let loss = self.loss(batch)?;
        let (norm, _) = self.opt.clip_and_step(&loss.backward()?, GRAD_CLIP)?;
        Ok((loss, norm))
    }
}

/// The check's tensors: for `inputs.safetensors` and for `expected.safetensors`.
pub(crate) type CheckTensors = (HashMap<String, Tensor>, HashMap<String, Tensor>);

/// Writes `which` base into `out/lora-base` (seeded, bf16) and the check's starting adapters
/// beside it, and runs the check's two steps on sequences of `seq` ids. `None` for
/// [`LoraBase::None`].
pub(crate) fn write_base_and_check(
    out: &Path,
    which: LoraBase,
    seq: usize,
    device: &Device,
) -> Result<Option<CheckTensors>> {
    let dir = out.join(LORA_DIR);
    let Some(cfg) = which.config() else {
        // a base left by an earlier init would not match this directory's inputs
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        return Ok(None);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    {
        // bf16 on disk (both implementations widen it to f32 on load): half the file
        let map = SeededVarMap::new(BASE_SEED);
        let lm = Llama::new(&cfg, map.var_builder(DType::BF16, device))?;
        lm.save(&dir)?;
    }
    let mut trainer = LoraTrainer::new(out, device)?;
    for (i, (name, var)) in trainer.adapters.named_vars()?.into_iter().enumerate() {
        if name.contains(".lora_B.") {
            var.set(&seeded_randn(
                var.shape(),
                0.0,
                B_STD,
                B_SEED + i as u64,
                device,
            )?)?;
        }
    }
    let init: HashMap<String, Tensor> = trainer
        .adapters
        .named_vars()?
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    let path = dir.join(ADAPTERS_INIT);
    candle_core::safetensors::save(&init, &path)
        .with_context(|| format!("writing {}", path.display()))?;

    let mut rng = ChaCha8Rng::seed_from_u64(IDS_SEED);
    let mut draw = |n: usize, range: std::ops::Range<u32>| -> Vec<u32> {
        (0..n).map(|_| rng.gen_range(range.clone())).collect()
    };
    let batch = trainer.batch(CHECK_BATCH, seq, &mut draw, device)?;
    let mut losses = Vec::with_capacity(3);
    let mut norms = Vec::with_capacity(2);
    for _ in 0..2 {
        let (loss, norm) = trainer.step(&batch)?;
        losses.push(loss.to_scalar::<f32>()?);
        norms.push(norm as f32);
    }
    losses.push(trainer.loss(&batch)?.to_scalar::<f32>()?);
    let inputs = HashMap::from([("lora_ids".to_string(), batch.ids.clone())]);
    let expected = HashMap::from([
        (
            "lora_losses".to_string(),
            Tensor::from_vec(losses, 3, device)?,
        ),
        (
            "lora_grad_norms".to_string(),
            Tensor::from_vec(norms, 2, device)?,
        ),
    ]);
    Ok(Some((inputs, expected)))
}
