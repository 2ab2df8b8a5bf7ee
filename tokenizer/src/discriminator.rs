//! The optional adversarial term of stage 2 (the paper: "optional GAN term late in stage 2,
//! weight 0.1"): a small PatchGAN discriminator with hinge losses. Off by default
//! (`gan.weight = 0`); when on, it starts at `gan.start_step` of the run.

use candle_core::{Result, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, Module, VarBuilder};
use serde::{Deserialize, Serialize};
use vqrae_train::schedule::LrSchedule;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GanConfig {
    /// Weight of the generator's adversarial loss; 0 turns the GAN off (no discriminator).
    pub weight: f64,
    /// Step of the run at which the discriminator and the adversarial term start.
    pub start_step: u64,
    /// Channels of the first discriminator layer (doubled once).
    pub channels: usize,
    /// Discriminator learning rate.
    pub lr: LrSchedule,
}

impl Default for GanConfig {
    fn default() -> Self {
        Self {
            weight: 0.0,
            start_step: 0,
            channels: 32,
            lr: LrSchedule {
                peak_lr: 1e-4,
                min_lr: 1e-5,
                warmup_steps: 0,
                total_steps: 1000,
            },
        }
    }
}

impl GanConfig {
    pub(crate) fn enabled(&self) -> bool {
        self.weight > 0.0
    }
}

/// PatchGAN: two stride-2 4x4 convolutions with leaky ReLU, then a 3x3 convolution to one logit
/// per patch (an 8x8 map for a 32 px input).
#[derive(Clone, Debug)]
pub struct Discriminator {
    convs: [Conv2d; 3],
}

impl Discriminator {
    pub fn new(cfg: &GanConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels.max(1);
        let down = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            convs: [
                conv2d(3, c, 4, down, vb.pp("conv0"))?,
                conv2d(c, 2 * c, 4, down, vb.pp("conv1"))?,
                conv2d(2 * c, 1, 3, same, vb.pp("conv2"))?,
            ],
        })
    }

    /// Patch logits `(B, 1, H/4, W/4)` of images `(B, 3, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = candle_nn::ops::leaky_relu(&self.convs[0].forward(x)?, 0.2)?;
        let x = candle_nn::ops::leaky_relu(&self.convs[1].forward(&x)?, 0.2)?;
        self.convs[2].forward(&x)
    }

    /// Hinge loss of the discriminator: `mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`;
    /// `fake` is detached here, so only the discriminator learns from it.
    pub fn loss(&self, real: &Tensor, fake: &Tensor) -> Result<Tensor> {
        let r = (1.0 - self.forward(real)?)?.relu()?.mean_all()?;
        let f = (self.forward(&fake.detach())? + 1.0)?.relu()?.mean_all()?;
        r + f
    }

    /// The generator's adversarial loss `-mean(D(fake))`.
    pub(crate) fn generator_loss(&self, fake: &Tensor) -> Result<Tensor> {
        self.forward(fake)?.mean_all()?.neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{seeded_randn, SeededVarMap};
    use candle_core::{DType, Device};

    #[test]
    fn patch_logits_and_losses_have_the_expected_shape_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let vars = SeededVarMap::new(0);
        let d = Discriminator::new(&GanConfig::default(), vars.var_builder(DType::F32, &dev))?;
        let real = seeded_randn((2, 3, 32, 32), 0.0, 1.0, 1, &dev)?;
        let fake =
            candle_core::Var::from_tensor(&seeded_randn((2, 3, 32, 32), 0.0, 1.0, 2, &dev)?)?;
        assert_eq!(d.forward(&real)?.dims(), &[2, 1, 8, 8]);
        // the discriminator's loss does not reach the generator's output
        let grads = d.loss(&real, fake.as_tensor())?.backward()?;
        assert!(grads.get(fake.as_tensor()).is_none());
        // the generator's does
        let grads = d.generator_loss(fake.as_tensor())?.backward()?;
        assert!(grads.get(fake.as_tensor()).is_some());
        Ok(())
    }
}
