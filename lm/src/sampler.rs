//! Choosing the next token from the LM's logits, LlamaGen-style, in one small module.
//!
//! - [`SamplingConfig`] / [`Sampler`]: greedy (temperature 0) or temperature sampling restricted
//!   to the top-k ids and then to the top-p nucleus, from a seeded ChaCha8 stream, so that the
//!   same seed gives the same tokens (and so the same images) on every run and machine.
//! - [`cfg_logits`] / [`split_cfg_batch`]: classifier-free guidance, `u + s (c - u)`. The
//!   conditional and unconditional prompts run as one doubled batch (one forward pass instead
//!   of two), and the guided logits are formed before sampling.
//! - [`restrict_to_range`]: constrained decoding; inside an image only image codes may come
//!   next, after the last code only `<eoi>`. Masking the logits (rather than re-drawing) keeps
//!   the distribution over the allowed ids exactly the model's.
//!
//! A generation step is therefore: logits `(2B, V)` -> [`split_cfg_batch`] -> `(B, V)` ->
//! [`restrict_to_range`] -> [`Sampler::sample`]. Guidance comes before the mask because the mask
//! writes `-inf`, and `-inf - -inf` in `c - u` would be NaN.
//!
//! Sampling itself runs on the host in f64: the batch is copied off the device once per step,
//! and the per-row work (a partial sort for top-k, a sort for top-p) is small next to a forward
//! pass, while f64 keeps tiny temperatures and long tails exact enough to test.

use std::cmp::Ordering;
use std::ops::Range;

use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{LmError, Result};

/// Slack in the top-p comparison: a nucleus whose mass equals `top_p` up to f64 round-off
/// (0.5 + 0.3 against 0.8) must count as reaching it, or one extra token sneaks in.
const TOP_P_SLACK: f64 = 1e-9;

/// How [`Sampler`] picks tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 means greedy (argmax, ties to the lowest id), and then top-k and
    /// top-p do not matter.
    pub temperature: f64,
    /// Keep only the `k` most likely ids (ties to the lower id).
    pub top_k: Option<usize>,
    /// Keep only the smallest set of most likely ids whose probability (after temperature and
    /// top-k) reaches `p`, in (0, 1]; the most likely id always stays.
    pub top_p: Option<f64>,
    /// Seed of the random stream; every draw of a [`Sampler`] advances it.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding: always the most likely id.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self.check() {
            Some(bad) => Err(LmError::Config(bad.message)),
            None => Ok(()),
        }
    }

    /// The first setting out of range, with the name the CLI and the API give it: the one
    /// check every front end reports from.
    pub fn check(&self) -> Option<InvalidSampling> {
        let bad = |param, message| Some(InvalidSampling { param, message });
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return bad(
                "temperature",
                format!("temperature must be a finite number >= 0 (0 = greedy), got {t}"),
            );
        }
        if self.top_k == Some(0) {
            return bad(
                "top_k",
                "top_k must be at least 1 (leave it unset to keep every id)".to_owned(),
            );
        }
        if let Some(p) = self.top_p {
            // written so that NaN fails too
            if !(p > 0.0 && p <= 1.0) {
                return bad(
                    "top_p",
                    format!("top_p must be in (0, 1] (leave it unset to keep every id), got {p}"),
                );
            }
        }
        None
    }
}

/// A sampling setting out of range: which one, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidSampling {
    pub param: &'static str,
    pub message: String,
}

/// Draws token ids from logits with a [`SamplingConfig`] and its own seeded random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Checks `cfg` and seeds the stream with `cfg.seed`.
    pub fn new(cfg: SamplingConfig) -> Result<Self> {
        cfg.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Ok(Self { cfg, rng })
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.cfg
    }

    /// One id per row of `logits` `(B, V)` (any float dtype, any device). The batch is copied
    /// to the host once, as f32; rows are drawn in order, so row `i`'s draw depends on the rows
    /// before it, and the same seed and logits give the same ids.
    pub fn sample(&mut self, logits: &Tensor) -> Result<Vec<u32>> {
        let (_, v) = logits
            .dims2()
            .map_err(|e| LmError::candle("sampling needs logits of shape (batch, vocab)", e))?;
        if !logits.dtype().is_float() {
            return Err(LmError::Config(format!(
                "logits must be a float tensor, got {:?}",
                logits.dtype()
            )));
        }
        if v == 0 {
            return Err(LmError::Config(
                "logits have an empty vocabulary".to_owned(),
            ));
        }
        let host = logits
            .to_dtype(DType::F32)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(|e| LmError::candle("copying logits to the host", e))?;
        host.chunks_exact(v)
            .enumerate()
            .map(|(i, row)| {
                self.sample_row(row).map_err(|e| match e {
                    LmError::Config(msg) => LmError::Config(format!("row {i}: {msg}")),
                    other => other,
                })
            })
            .collect()
    }

    /// One id from a single row of logits on the host. An empty row, a NaN or `+inf` logit
    /// (a diverged model), or a row that is `-inf` everywhere (a mask that allows nothing) is
    /// an error.
    pub fn sample_row(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(LmError::Config("logits row is empty".to_owned()));
        }
        if let Some(i) = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
        {
            return Err(LmError::Config(format!(
                "logit of id {i} is {}; the model's output is not usable",
                logits[i]
            )));
        }
        if logits.len() > u32::MAX as usize {
            return Err(LmError::Config(format!(
                "a vocabulary of {} does not fit u32 ids",
                logits.len()
            )));
        }
        // -inf ids can never be drawn; dropping them first makes masked rows cheap.
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cands.is_empty() {
            return Err(LmError::Config(
                "every id is masked out (-inf); nothing can be sampled".to_owned(),
            ));
        }

        if self.cfg.temperature == 0.0 {
            // `min_by` keeps the first of equal elements and ids ascend, so ties go low.
            return Ok(cands.iter().min_by(|a, b| by_rank(a, b)).map_or(0, |c| c.0));
        }

        if let Some(k) = self.cfg.top_k {
            if k < cands.len() {
                cands.select_nth_unstable_by(k - 1, by_rank);
                cands.truncate(k);
            }
        }
        let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max) as f64;
        let t = self.cfg.temperature;
        // Shifted by the max, so every weight is in (0, 1] and the max's is 1: no overflow
        // however small `t` is, and the softmax denominator never vanishes.
        let weight = |l: f32| ((l as f64 - max) / t).exp();

        if let Some(p) = self.cfg.top_p {
            cands.sort_unstable_by(by_rank);
            let total: f64 = cands.iter().map(|c| weight(c.1)).sum();
            let mut mass = 0.0;
            let mut keep = 0;
            for c in &cands {
                mass += weight(c.1) / total;
                keep += 1;
                if mass >= p - TOP_P_SLACK {
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }

        let weights: Vec<f64> = cands.iter().map(|c| weight(c.1)).collect();
        let total: f64 = weights.iter().sum();
        let u = self.rng.gen::<f64>() * total;
        let mut acc = 0.0;
        for (c, w) in cands.iter().zip(&weights) {
            acc += w;
            if u < acc {
                return Ok(c.0);
            }
        }
        // Unreachable: `acc` ends at `total` (same additions, same order) and `u < total`.
        // Still, fall back to the most likely id rather than panic.
        Ok(cands.iter().min_by(|a, b| by_rank(a, b)).map_or(0, |c| c.0))
    }
}

/// Most likely first; among equal logits the lower id first. Logits here are finite.
fn by_rank(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Classifier-free guidance: `uncond + scale * (cond - uncond)`, elementwise, same shape and
/// dtype in and out. Scale 1 returns `cond` exactly (no guidance; `u + (c - u)` would round),
/// scale 0 the unconditional logits, larger scales push further from the unconditional ones.
/// Apply it to raw logits, before [`restrict_to_range`] (see the module docs).
pub(crate) fn cfg_logits(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    if cond.shape() != uncond.shape() {
        return Err(LmError::Config(format!(
            "guidance needs conditional and unconditional logits of one shape, got {:?} and {:?}",
            cond.shape(),
            uncond.shape()
        )));
    }
    if !scale.is_finite() {
        return Err(LmError::Config(format!(
            "guidance scale must be finite, got {scale}"
        )));
    }
    if scale == 1.0 {
        return Ok(cond.clone());
    }
    (cond - uncond)
        .and_then(|d| d * scale)
        .and_then(|d| uncond + d)
        .map_err(|e| LmError::candle("classifier-free guidance", e))
}

/// Guidance on a doubled batch. `logits` is `(2B, V)` with the **conditional rows first**
/// (rows `0..B`, the real prompts) and the **unconditional rows last** (rows `B..2B`, the same
/// sequences with the prompt replaced by the null condition), row `i` pairing with row `B + i`;
/// this is LlamaGen's layout, and the one the generation loop builds its batch in. Returns the
/// guided `(B, V)`.
pub fn split_cfg_batch(logits: &Tensor, scale: f64) -> Result<Tensor> {
    let (n, _) = logits
        .dims2()
        .map_err(|e| LmError::candle("guidance needs logits of shape (2B, vocab)", e))?;
    if n == 0 || n % 2 != 0 {
        return Err(LmError::Config(format!(
            "guidance needs an even, non-empty batch (B conditional then B unconditional rows), \
             got {n} rows"
        )));
    }
    let b = n / 2;
    let cond = logits.narrow(0, 0, b)?;
    let uncond = logits.narrow(0, b, b)?;
    cfg_logits(&cond, &uncond, scale)
}

/// `logits` (any shape `(..., V)`, any float dtype) with every id outside `allowed` set to
/// `-inf`, so that no sampler setting can pick it; ids inside keep their values exactly.
pub fn restrict_to_range(logits: &Tensor, allowed: Range<u32>) -> Result<Tensor> {
    let v = logits
        .dim(D::Minus1)
        .map_err(|e| LmError::candle("restricting logits to a range", e))?;
    if allowed.is_empty() || allowed.end as usize > v {
        return Err(LmError::Config(format!(
            "allowed ids {allowed:?} must be a non-empty range within the vocabulary of {v}"
        )));
    }
    let mask: Vec<u8> = (0..v)
        .map(|i| u8::from(allowed.contains(&(i as u32))))
        .collect();
    let restrict = || {
        let shape = logits.shape();
        let mask = Tensor::from_vec(mask, v, logits.device())?.broadcast_as(shape)?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, logits.device())?
            .to_dtype(logits.dtype())?
            .broadcast_as(shape)?;
        mask.where_cond(logits, &neg_inf)
    };
    restrict().map_err(|e| LmError::candle(format!("restricting logits to {allowed:?}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A reproducible row of standard-normal-ish logits.
    fn random_row(v: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..v)
            .map(|_| {
                // sum of uniforms: close enough to normal for test logits
                (0..4).map(|_| rng.gen::<f32>()).sum::<f32>() * 2.0 - 4.0
            })
            .collect()
    }

    fn sampler(cfg: SamplingConfig) -> Sampler {
        Sampler::new(cfg).expect("valid test config")
    }

    fn temp(temperature: f64, seed: u64) -> SamplingConfig {
        SamplingConfig {
            temperature,
            seed,
            ..SamplingConfig::default()
        }
    }

    /// Ids sorted by logit, best first.
    fn ranked(row: &[f32]) -> Vec<u32> {
        let mut ids: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        ids.sort_by(by_rank);
        ids.into_iter().map(|c| c.0).collect()
    }

    #[test]
    fn top_k_never_leaves_the_k_best() -> anyhow::Result<()> {
        let row = random_row(50, 1);
        let k = 5;
        let best: Vec<u32> = ranked(&row)[..k].to_vec();
        let batch = Tensor::new(vec![row.clone(); 20], &Device::Cpu)?;
        let mut seen = std::collections::HashSet::new();
        for seed in 0..100 {
            let mut s = sampler(SamplingConfig {
                // a high temperature flattens the distribution, so outsiders would show up
                temperature: 5.0,
                top_k: Some(k),
                top_p: None,
                seed,
            });
            for id in s.sample(&batch)? {
                assert!(best.contains(&id), "seed {seed} drew {id}, not in {best:?}");
                seen.insert(id);
            }
        }
        assert_eq!(seen.len(), k, "all of the k best should be drawn");
        Ok(())
    }

    #[test]
    fn seeds_repeat_and_differ() -> anyhow::Result<()> {
        let rows: Vec<Vec<f32>> = (0..64).map(|i| random_row(100, i)).collect();
        let logits = Tensor::new(rows, &Device::Cpu)?;
        let draw = |seed| sampler(temp(1.0, seed)).sample(&logits);
        let a = draw(7)?;
        assert_eq!(a, draw(7)?);
        assert_ne!(a, draw(8)?);
        // the stream advances: a second step differs from the first
        let mut s = sampler(temp(1.0, 7));
        let first = s.sample(&logits)?;
        assert_eq!(first, a);
        assert_ne!(s.sample(&logits)?, first);
        Ok(())
    }

    #[test]
    fn cfg_scale_one_is_the_conditional() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let cond = Tensor::new(vec![random_row(40, 2), random_row(40, 3)], &dev)?;
        let uncond = Tensor::new(vec![random_row(40, 4), random_row(40, 5)], &dev)?;
        let guided = cfg_logits(&cond, &uncond, 1.0)?;
        assert_eq!(guided.to_vec2::<f32>()?, cond.to_vec2::<f32>()?);
        // the doubled batch: conditional rows first
        let doubled = Tensor::cat(&[&cond, &uncond], 0)?;
        let split = split_cfg_batch(&doubled, 1.0)?;
        assert_eq!(split.to_vec2::<f32>()?, cond.to_vec2::<f32>()?);
        let cfg = SamplingConfig {
            temperature: 1.3,
            top_k: Some(20),
            top_p: Some(0.9),
            seed: 11,
        };
        for _ in 0..3 {
            assert_eq!(
                sampler(cfg.clone()).sample(&split)?,
                sampler(cfg.clone()).sample(&cond)?
            );
        }
        Ok(())
    }

    #[test]
    fn cfg_formula_and_batch_layout() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let c = Tensor::new(&[[1.0f32, 2.0, -1.0]], &dev)?;
        let u = Tensor::new(&[[0.5f32, 3.0, -1.0]], &dev)?;
        let g = cfg_logits(&c, &u, 3.0)?.to_vec2::<f32>()?;
        assert_eq!(g, vec![vec![2.0, 0.0, -1.0]]);
        assert_eq!(
            cfg_logits(&c, &u, 0.0)?.to_vec2::<f32>()?,
            u.to_vec2::<f32>()?
        );
        let doubled = Tensor::cat(&[&c, &u], 0)?;
        assert_eq!(split_cfg_batch(&doubled, 3.0)?.to_vec2::<f32>()?, g);
        // bf16 stays bf16
        let gb = cfg_logits(&c.to_dtype(DType::BF16)?, &u.to_dtype(DType::BF16)?, 3.0)?;
        assert_eq!(gb.dtype(), DType::BF16);
        // misuse is an error, not a panic
        assert!(split_cfg_batch(&Tensor::zeros((3, 4), DType::F32, &dev)?, 2.0).is_err());
        assert!(split_cfg_batch(&Tensor::zeros((0, 4), DType::F32, &dev)?, 2.0).is_err());
        assert!(split_cfg_batch(&Tensor::zeros(4, DType::F32, &dev)?, 2.0).is_err());
        assert!(cfg_logits(&c, &doubled, 2.0).is_err());
        assert!(cfg_logits(&c, &u, f64::NAN).is_err());
        Ok(())
    }

    #[test]
    fn top_p_keeps_the_minimal_nucleus() -> anyhow::Result<()> {
        let probs = [0.5f64, 0.3, 0.15, 0.05];
        let row: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        let logits = Tensor::new(vec![row.clone(); 1000], &Device::Cpu)?;
        let mut counts = [0usize; 4];
        for seed in 0..4 {
            let mut s = sampler(SamplingConfig {
                top_p: Some(0.8),
                seed,
                ..SamplingConfig::default()
            });
            for id in s.sample(&logits)? {
                counts[id as usize] += 1;
            }
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        // the nucleus is renormalised: 0.5 : 0.3 -> 62.5% id 0
        let share = counts[0] as f64 / 4000.0;
        assert!((share - 0.625).abs() < 0.03, "{counts:?}");
        // a nucleus smaller than the top id keeps the top id alone
        let mut s = sampler(SamplingConfig {
            top_p: Some(0.1),
            ..SamplingConfig::default()
        });
        assert!(s.sample(&logits)?.iter().all(|&id| id == 0));
        // just above 0.8 needs the third id too
        let mut s = sampler(SamplingConfig {
            top_p: Some(0.81),
            seed: 3,
            ..SamplingConfig::default()
        });
        let ids = s.sample(&logits)?;
        assert!(ids.contains(&2) && !ids.contains(&3));
        Ok(())
    }

    #[test]
    fn greedy_is_argmax_with_low_ties() -> anyhow::Result<()> {
        let rows: Vec<Vec<f32>> = (0..16).map(|i| random_row(300, 100 + i)).collect();
        let logits = Tensor::new(rows.clone(), &Device::Cpu)?;
        let expect: Vec<u32> = rows.iter().map(|r| ranked(r)[0]).collect();
        let mut s = sampler(SamplingConfig {
            top_k: Some(3),
            top_p: Some(0.5),
            ..SamplingConfig::greedy()
        });
        assert_eq!(s.sample(&logits)?, expect);
        // every float dtype gives the same choice
        for dtype in [DType::F16, DType::BF16, DType::F64] {
            let l = Tensor::new(&[[0.0f32, 3.0, 1.0, -2.0]], &Device::Cpu)?.to_dtype(dtype)?;
            assert_eq!(s.sample(&l)?, vec![1], "{dtype:?}");
        }
        assert_eq!(s.sample_row(&[1.0, 4.0, 4.0, 4.0])?, 1);
        // top_k 1 is greedy too, ties included
        let mut k1 = sampler(SamplingConfig {
            top_k: Some(1),
            ..temp(1.0, 5)
        });
        assert_eq!(k1.sample_row(&[1.0, 4.0, 4.0, 4.0])?, 1);
        Ok(())
    }

    #[test]
    fn restricted_sampling_stays_in_range() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let rows: Vec<Vec<f32>> = (0..8).map(|i| random_row(60, 200 + i)).collect();
        let logits = Tensor::new(rows.clone(), &dev)?;
        let allowed = 40..52;
        let masked = restrict_to_range(&logits, allowed.clone())?;
        // inside: untouched; outside: -inf
        for (orig, m) in rows.iter().zip(masked.to_vec2::<f32>()?) {
            for (i, (&o, &x)) in orig.iter().zip(&m).enumerate() {
                if allowed.contains(&(i as u32)) {
                    assert_eq!(o, x);
                } else {
                    assert_eq!(x, f32::NEG_INFINITY);
                }
            }
        }
        for seed in 0..50 {
            let mut s = sampler(temp(10.0, seed));
            for id in s.sample(&masked)? {
                assert!(allowed.contains(&id), "seed {seed}: {id}");
            }
        }
        // a single allowed id (<eoi> after the last code) is always drawn
        let eoi = restrict_to_range(&logits, 59..60)?;
        assert!(sampler(temp(1.0, 0))
            .sample(&eoi)?
            .iter()
            .all(|&id| id == 59));
        // bf16 and 3-D logits work; bad ranges are errors
        let b16 = restrict_to_range(&logits.to_dtype(DType::BF16)?.unsqueeze(0)?, 0..1)?;
        assert_eq!(b16.dtype(), DType::BF16);
        assert_eq!(b16.dims(), &[1, 8, 60]);
        assert!(restrict_to_range(&logits, 5..5).is_err());
        assert!(restrict_to_range(&logits, 50..61).is_err());
        Ok(())
    }

    #[test]
    fn low_temperature_approaches_greedy() -> anyhow::Result<()> {
        let rows: Vec<Vec<f32>> = (0..200).map(|i| random_row(30, 300 + i)).collect();
        let logits = Tensor::new(rows.clone(), &Device::Cpu)?;
        let greedy = sampler(SamplingConfig::greedy()).sample(&logits)?;
        let agree = |t: f64| -> anyhow::Result<usize> {
            let ids = sampler(temp(t, 9)).sample(&logits)?;
            Ok(ids.iter().zip(&greedy).filter(|(a, b)| a == b).count())
        };
        let (hot, warm, cold) = (agree(1.0)?, agree(0.3)?, agree(1e-6)?);
        assert!(hot < warm && warm < cold, "{hot} {warm} {cold}");
        assert_eq!(cold, 200);
        // a tiny temperature neither overflows nor produces NaN
        assert_eq!(sampler(temp(1e-300, 0)).sample_row(&[0.0, 1e30, -1e30])?, 1);
        Ok(())
    }

    #[test]
    fn frequencies_follow_the_softmax() -> anyhow::Result<()> {
        let row = [1.0f32, 0.0, -1.0, 2.0, 0.5, -3.0];
        let t = 0.8;
        let w: Vec<f64> = row.iter().map(|&l| (l as f64 / t).exp()).collect();
        let z: f64 = w.iter().sum();
        let n = 20_000;
        let logits = Tensor::new(vec![row.to_vec(); n], &Device::Cpu)?;
        let mut counts = [0f64; 6];
        for id in sampler(temp(t, 1234)).sample(&logits)? {
            counts[id as usize] += 1.0;
        }
        let chi2: f64 = counts
            .iter()
            .zip(&w)
            .map(|(o, wi)| {
                let e = n as f64 * wi / z;
                (o - e).powi(2) / e
            })
            .sum();
        // 5 degrees of freedom: P(chi2 > 30) ~ 1.5e-5, and the seed is fixed, so no flakes
        assert!(chi2 < 30.0, "chi2 {chi2}, counts {counts:?}");
        Ok(())
    }

    #[test]
    fn invalid_configs_are_errors() {
        let bad = [
            temp(f64::NAN, 0),
            temp(-0.1, 0),
            temp(f64::INFINITY, 0),
            SamplingConfig {
                top_k: Some(0),
                ..SamplingConfig::default()
            },
            SamplingConfig {
                top_p: Some(0.0),
                ..SamplingConfig::default()
            },
            SamplingConfig {
                top_p: Some(1.5),
                ..SamplingConfig::default()
            },
            SamplingConfig {
                top_p: Some(f64::NAN),
                ..SamplingConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
            assert!(Sampler::new(cfg).is_err());
        }
        let ok = SamplingConfig {
            top_p: Some(1.0),
            top_k: Some(1),
            ..SamplingConfig::greedy()
        };
        assert!(ok.validate().is_ok());
        // serde: defaults fill missing fields, unknown fields are rejected
        let cfg: SamplingConfig = serde_json::from_str(r#"{"top_k": 50}"#).expect("parses");
        assert_eq!(cfg.temperature, 1.0);
        assert!(serde_json::from_str::<SamplingConfig>(r#"{"topk": 50}"#).is_err());
    }

    #[test]
    fn unusable_logits_are_errors() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let mut s = sampler(SamplingConfig::default());
        assert!(s.sample_row(&[]).is_err());
        assert!(s.sample_row(&[0.0, f32::NAN]).is_err());
        assert!(s.sample_row(&[0.0, f32::INFINITY]).is_err());
        assert!(s.sample_row(&[f32::NEG_INFINITY; 3]).is_err());
        assert!(s.sample(&Tensor::zeros(5, DType::F32, &dev)?).is_err());
        assert!(s.sample(&Tensor::zeros((2, 0), DType::F32, &dev)?).is_err());
        assert!(s.sample(&Tensor::zeros((2, 5), DType::U32, &dev)?).is_err());
        let err = s
            .sample(&Tensor::new(&[[0.0f32, 1.0], [f32::NAN, 0.0]], &dev)?)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1"), "{err}");
        // an empty batch is no work, not an error
        assert!(s
            .sample(&Tensor::zeros((0, 5), DType::F32, &dev)?)?
            .is_empty());
        Ok(())
    }
}
