//! The referee's training loop on labelled images.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqrae_data::batch::EpochSampler;
use vqrae_data::easy_vqa::{COLORS, SHAPES};
use vqrae_data::image_io::resize;
use vqrae_data::tensor::images_to_tensor;
use vqrae_train::init::SeededVarMap;
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

use super::augment::augment;
use super::config::{RefereeConfig, RefereeTrainConfig};
use super::model::{Referee, NORMALIZE};
use super::report::Verdict;
use crate::error::{EvalError, Result};

/// Trains a referee on labelled real images. Returns the model and its variables (to save).
pub(crate) fn train(
    images: &[RgbImage],
    labels: &[Verdict],
    cfg: &RefereeConfig,
    train_cfg: &RefereeTrainConfig,
    device: &Device,
) -> Result<(Referee, SeededVarMap)> {
    if images.len() != labels.len() || images.len() < train_cfg.batch_size.max(1) {
        return Err(EvalError::Config(format!(
            "referee training needs at least one batch of labelled images ({} images, {} labels, batch {})",
            images.len(),
            labels.len(),
            train_cfg.batch_size
        )));
    }
    train_cfg.validate()?;
    let vars = SeededVarMap::new(train_cfg.seed);
    let referee = Referee::new(cfg, vars.var_builder(DType::F32, device))?;
    let all = vqrae_train::checkpoint::var_map_vars(&vars.varmap)?;
    let schedule = LrSchedule {
        peak_lr: train_cfg.lr,
        min_lr: train_cfg.lr * 0.05,
        warmup_steps: train_cfg.steps / 20,
        total_steps: train_cfg.steps,
    };
    let group = ParamGroup::new("referee", all.into_iter().collect(), schedule);
    let mut opt = AdamW::new(vec![group], AdamWConfig::default())?;
    let size = cfg.image_size as u32;
    let sized: Vec<RgbImage> = images.iter().map(|i| resize(i, size, size)).collect();
    let color_all: Vec<u32> = labels.iter().map(|l| l.color as u32).collect();
    let shape_all: Vec<u32> = labels.iter().map(|l| l.shape as u32).collect();
    let sampler = EpochSampler::new(images.len(), train_cfg.batch_size, train_cfg.seed, true);
    let mut rng = ChaCha8Rng::seed_from_u64(train_cfg.seed ^ 0x5eed);
    let mut loss_sum = 0.0;
    for step in 0..train_cfg.steps {
        let idx = sampler.batch_at(step);
        let batch: Vec<RgbImage> = idx
            .iter()
            .map(|&i| augment(&sized[i], train_cfg.flips, train_cfg.max_shift, &mut rng))
            .collect();
        let x = images_to_tensor(&batch, &NORMALIZE, device)?;
        let b = x.dim(0)?;
        // per-image noise level, then per-pixel Gaussian noise (seeded: CPU randn is not)
        let levels: Vec<f32> = (0..b)
            .map(|_| rng.gen_range(0.0..=train_cfg.noise_std) as f32)
            .collect();
        let noise = vqrae_train::init::seeded_randn(x.shape(), 0.0, 1.0, rng.gen(), device)?
            .broadcast_mul(&Tensor::new(levels, device)?.reshape((b, 1, 1, 1))?)?;
        let logits = referee.forward(&(x + noise)?)?;
        let pick =
            |all: &[u32]| Tensor::new(idx.iter().map(|&i| all[i]).collect::<Vec<_>>(), device);
        let loss_c = vqrae_train::ops::cross_entropy(
            &logits.narrow(1, 0, COLORS.len())?,
            &pick(&color_all)?,
        )?;
        let loss_s = vqrae_train::ops::cross_entropy(
            &logits.narrow(1, COLORS.len(), SHAPES.len())?,
            &pick(&shape_all)?,
        )?;
        let loss = (loss_c + loss_s)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        if (step + 1) % 100 == 0 || step + 1 == train_cfg.steps {
            let n = (step % 100 + 1) as f64;
            tracing::info!(
                step = step + 1,
                loss = loss_sum / n,
                "referee (mean loss since the last line)"
            );
            loss_sum = 0.0;
        }
    }
    Ok((referee, vars))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::referee::toy;

    #[test]
    fn learns_colours_and_round_trips_through_a_checkpoint() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for i in 0..64u32 {
            let (color, shape) = ((i % 4) as usize, 0);
            images.push(toy(color, shape, i % 8));
            labels.push(Verdict { color, shape });
        }
        let cfg = RefereeConfig {
            image_size: 32,
            channels: [8, 8, 16, 16],
            ..Default::default()
        };
        let tcfg = RefereeTrainConfig {
            steps: 60,
            batch_size: 16,
            lr: 1e-2,
            seed: 3,
            noise_std: 0.05,
            ..Default::default()
        };
        let (referee, vars) = train(&images, &labels, &cfg, &tcfg, &dev)?;
        let report = referee.evaluate(&images, &labels)?;
        assert!(report.color > 0.9, "{report:?}");
        let dir = tempfile::tempdir()?;
        referee.save(&dir.path().join("ref"), &vars)?;
        let loaded = Referee::load(&dir.path().join("ref"), &dev)?;
        assert_eq!(loaded.judge(&images)?, referee.judge(&images)?);
        Ok(())
    }
}
