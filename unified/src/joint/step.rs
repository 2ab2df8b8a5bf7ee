//! One training step's forward pass: the phase's batches (VQA, text-to-image, scenes) and the
//! sum of their losses, each also recorded on its own for the metrics log.

use candle_core::{Device, Tensor};
use vqrae_lm::batch::{Example, TrainBatch};
use vqrae_lm::Llama;
use vqrae_understand::prompt::{splice, IMAGE_START};

use super::config::Phase;
use super::examples::Examples;
use super::parts::Parts;
use crate::error::{Result, UnifiedError};

/// The loss of one step, before the backward pass.
pub(crate) struct StepLoss {
    /// The sum of the phase's losses.
    pub(crate) loss: Tensor,
    /// Each task's loss (`loss_vqa`, `loss_t2i`, `loss_scenes`), for the metrics log.
    pub(crate) record: serde_json::Map<String, serde_json::Value>,
    /// Examples in the step, twins included.
    pub(crate) samples: usize,
}

/// The loss of step `step` of `phase`: its VQA, text-to-image and scene batches, in that order.
pub(crate) fn step_loss(
    examples: &Examples,
    parts: &Parts,
    features: &Tensor,
    phase: &Phase,
    step: u64,
    device: &Device,
) -> Result<StepLoss> {
    let pad_id = examples.prompts.text.pad_id();
    let mut loss = None;
    let mut record = serde_json::Map::new();
    let mut samples = 0;
    if phase.vqa_batch > 0 {
        let (batch, images) = examples.vqa_batch(phase, step)?;
        let l = vqa_loss(parts, features, &batch, images, pad_id, device)?;
        record.insert("loss_vqa".into(), l.to_scalar::<f32>()?.into());
        loss = Some(l);
        samples += batch.len();
    }
    if phase.t2i_batch > 0 {
        let batch = examples.t2i_batch(phase, step)?;
        let l = sequence_loss(&parts.lm, &batch, pad_id, device)?;
        record.insert("loss_t2i".into(), l.to_scalar::<f32>()?.into());
        loss = Some(add(loss, l)?);
        samples += batch.len();
    }
    if phase.scene_t2i_batch > 0 {
        let batch = examples.scene_batch(phase, step)?;
        let l = sequence_loss(&parts.lm, &batch, pad_id, device)?;
        record.insert("loss_scenes".into(), l.to_scalar::<f32>()?.into());
        loss = Some(add(loss, l)?);
        samples += batch.len();
    }
    // validate() rejects phases without examples, so a loss is always there
    let Some(loss) = loss else {
        return Err(UnifiedError::Config(format!(
            "phase {}: no examples",
            phase.name
        )));
    };
    Ok(StepLoss {
        loss,
        record,
        samples,
    })
}

/// `sum + l`, or `l` for the first term.
fn add(sum: Option<Tensor>, l: Tensor) -> Result<Tensor> {
    Ok(match sum {
        Some(v) => (v + l)?,
        None => l,
    })
}

/// The LM's loss on VQA examples: each example's image slots hold the projected features of
/// training image `images[i]` (rows of `features`).
fn vqa_loss(
    parts: &Parts,
    features: &Tensor,
    examples: &[Example],
    images: Vec<u32>,
    pad_id: u32,
    device: &Device,
) -> Result<Tensor> {
    let batch = TrainBatch::new(examples, pad_id, device)?;
    let feats = features.index_select(&Tensor::new(images, device)?, 0)?;
    let embeds = splice(
        &parts.lm.embed(&batch.ids)?,
        &parts.projector.forward(&feats)?,
        &vec![IMAGE_START; examples.len()],
    )?;
    let hidden = parts.lm.forward_hidden(&embeds, None, true)?;
    Ok(batch.loss(&parts.lm, &hidden)?)
}

/// The LM's loss on a batch of text-only sequences (text-to-image: caption, then codes), on
/// the tokens each example marks for it.
fn sequence_loss(lm: &Llama, examples: &[Example], pad_id: u32, device: &Device) -> Result<Tensor> {
    let batch = TrainBatch::new(examples, pad_id, device)?;
    let hidden = lm.forward_hidden(&lm.embed(&batch.ids)?, None, true)?;
    Ok(batch.loss(lm, &hidden)?)
}
