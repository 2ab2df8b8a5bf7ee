//! Linear probes on frozen encoder features: how much class information the continuous
//! features carry. Used to show that loaded weights are real (vs a random encoder of the same
//! shape) and, later, as the understanding proxy of the training-strategy ablations.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{linear, AdamW, Module, Optimizer, ParamsAdamW};
use image::RgbImage;

use crate::encoder::VitEncoder;
use crate::error::{Context, Result};
use crate::init::SeededVarMap;
use crate::preprocess::Preprocess;

/// Mean-pooled last-layer patch tokens, `(n, d)`: the features downstream consumers get,
/// pooled over the grid.
pub(crate) fn pooled_features(
    encoder: &VitEncoder,
    preprocess: &Preprocess,
    images: &[RgbImage],
    device: &Device,
) -> Result<Tensor> {
    let x = preprocess.to_tensor(images, device)?;
    let tokens = encoder.patch_tokens(&x, false)?;
    Ok(tokens.mean(1)?)
}

#[derive(Clone, Debug)]
pub(crate) struct ProbeConfig {
    pub steps: usize,
    /// Seed of the classifier's initial weights.
    pub seed: u64,
    pub lr: f64,
    pub weight_decay: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            seed: 0,
            lr: 1e-2,
            weight_decay: 1e-4,
        }
    }
}

/// A softmax-regression classifier over standardised features.
pub(crate) struct LinearProbe {
    mean: Tensor,
    std: Tensor,
    head: candle_nn::Linear,
}

impl LinearProbe {
    /// Fits on `(n, d)` features and `n` labels in `0..classes`, full batch with AdamW.
    /// Standardisation statistics come from the training features only.
    pub fn fit(x: &Tensor, labels: &[u32], classes: usize, cfg: &ProbeConfig) -> Result<Self> {
        let dev = x.device();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(0)?;
        let std = (x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
        let xs = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let y = Tensor::new(labels, dev)?;
        let vars = SeededVarMap::new(cfg.seed);
        let head = linear(xs.dim(1)?, classes, vars.var_builder(DType::F32, dev))?;
        let params = ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        };
        let mut opt =
            AdamW::new(vars.varmap.all_vars(), params).context(|| "probe optimizer".into())?;
        for _ in 0..cfg.steps {
            let l = vqrae_train::ops::cross_entropy(&head.forward(&xs)?, &y)?;
            opt.backward_step(&l)?;
        }
        Ok(Self { mean, std, head })
    }

    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        let xs = x
            .to_dtype(DType::F32)?
            .broadcast_sub(&self.mean)?
            .broadcast_div(&self.std)?;
        Ok(self
            .head
            .forward(&xs)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?)
    }

    pub fn accuracy(&self, x: &Tensor, labels: &[u32]) -> Result<f64> {
        let pred = self.predict(x)?;
        let right = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok(right as f64 / labels.len().max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;

    #[test]
    fn probe_separates_separable_classes_and_not_noise() -> Result<()> {
        let dev = Device::Cpu;
        // class = sign of feature 0; other features are noise
        let x = seeded_randn((400, 8), 0.0, 1.0, 13, &dev)?;
        let labels: Vec<u32> = x
            .narrow(1, 0, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| u32::from(*v > 0.0))
            .collect();
        let (xtr, xte) = (x.narrow(0, 0, 300)?, x.narrow(0, 300, 100)?);
        let p = LinearProbe::fit(&xtr, &labels[..300], 2, &ProbeConfig::default())?;
        let acc = p.accuracy(&xte, &labels[300..])?;
        assert!(acc > 0.9, "separable classes: test accuracy {acc}");
        // random labels: test accuracy near chance
        let noise: Vec<u32> = (0..400u32).map(|i| (i * 7919 % 13) % 2).collect();
        let p = LinearProbe::fit(&xtr, &noise[..300], 2, &ProbeConfig::default())?;
        assert!(p.accuracy(&xte, &noise[300..])? < 0.75);
        Ok(())
    }
}
