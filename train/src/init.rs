//! Seeded parameter initialisation.
//!
//! candle's CPU random generator cannot be seeded, yet the same seed must give the same model.
//! [`SeededVarMap`] is a `VarBuilder` backend that creates each variable from a generator seeded
//! by `(seed, tensor name)`, so a value depends neither on the order of creation nor on the device,
//! and registers it in a `VarMap` for training and saving.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A `VarMap` whose fresh variables are drawn from per-name seeded generators.
#[derive(Clone)]
pub struct SeededVarMap {
    pub varmap: VarMap,
    pub seed: u64,
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
fn fnv1a(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Host values of `init` for `shape`, drawn from a generator seeded by `(seed, name)`.
pub(crate) fn seeded_values(init: Init, shape: &Shape, seed: u64, name: &str) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(seed, name));
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        match Normal::new(mean, std.max(0.0)) {
            Ok(d) => (0..n).map(|_| d.sample(rng) as f32).collect(),
            Err(_) => vec![mean as f32; n],
        }
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Uniform { lo, up } => (0..n).map(|_| rng.gen_range(lo..=up) as f32).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    (0..n).map(|_| rng.gen_range(-b..=b) as f32).collect()
                }
            }
        }
    }
}

/// A seeded `N(mean, std^2)` f32 tensor (tests and data generation; candle's own `randn` cannot
/// be seeded on the CPU).
pub fn seeded_randn(
    shape: impl Into<Shape>,
    mean: f64,
    std: f64,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let values = seeded_values(
        Init::Randn { mean, stdev: std },
        &shape,
        seed,
        "seeded_randn",
    );
    Tensor::from_vec(values, shape, device)
}

impl SeededVarMap {
    pub fn new(seed: u64) -> Self {
        Self {
            varmap: VarMap::new(),
            seed,
        }
    }

    /// A `VarBuilder` over this map: building a model through it creates (or reuses) its variables.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let values = seeded_values(init, &s, self.seed, name);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        match data.get(name) {
            Some(v) => v.as_tensor().to_device(dev)?.to_dtype(dtype),
            None => candle_core::bail!("cannot find tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_independent_of_order() -> Result<()> {
        let dev = Device::Cpu;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let a = SeededVarMap::new(7);
        let vb = a.var_builder(DType::F32, &dev);
        let x1 = vb.get_with_hints((3, 4), "x", init)?;
        let _ = vb.get_with_hints(5, "y", init)?;
        let b = SeededVarMap::new(7);
        let vb = b.var_builder(DType::F32, &dev);
        let _ = vb.get_with_hints(5, "y", init)?;
        let x2 = vb.get_with_hints((3, 4), "x", init)?;
        assert_eq!(x1.to_vec2::<f32>()?, x2.to_vec2::<f32>()?);
        let c = SeededVarMap::new(8);
        let x3 = c
            .var_builder(DType::F32, &dev)
            .get_with_hints((3, 4), "x", init)?;
        assert_ne!(x1.to_vec2::<f32>()?, x3.to_vec2::<f32>()?);
        assert_eq!(a.varmap.all_vars().len(), 2);
        Ok(())
    }
}
