//! Vector quantizers: SimVQ (the paper's) and plain learned VQ (the ablation baseline), plus
//! codebook utilisation / perplexity counters.
//!
//! SimVQ keeps a codebook `C` (k x e), drawn from `N(0, 1/e)` and not trained by gradients, and
//! learns a linear map `W`; the codewords are `W(C)`. Because every codeword moves with `W`, no
//! entry is left behind by the nearest-neighbour updates. The shipped recipes add dead-code
//! restarts (`train.rs`, `restart_dead_codes`: the trainer rewrites unused rows of `C` every few
//! dozen steps); without them the default recipe uses 19% of its codebook instead of 80%
//! (docs/TOKENIZER.md).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{linear_b, Init, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum QuantizerKind {
    #[default]
    #[cfg_attr(feature = "clap", value(name = "simvq"))]
    SimVq,
    Vq,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuantizerConfig {
    pub kind: QuantizerKind,
    /// Number of codewords `k`.
    pub codebook_size: usize,
    /// Codeword width `e`.
    pub dim: usize,
    /// Weight of the commitment term.
    pub beta: f64,
    /// Look up by cosine: inputs and codewords are L2-normalised before the nearest-neighbour
    /// search and the quantized vectors are the unit codewords (ViT-VQGAN's trick; not in
    /// SimVQ or the paper, off by default).
    pub l2_normalize: bool,
}

impl Default for QuantizerConfig {
    fn default() -> Self {
        Self {
            kind: QuantizerKind::SimVq,
            codebook_size: 16384,
            dim: 1536,
            beta: 0.25,
            l2_normalize: false,
        }
    }
}

/// The output of quantizing a batch of vectors.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// Codeword vectors with the straight-through gradient to the input, `(B, N, e)`.
    pub z_q: Tensor,
    /// Code indices `(B, N)`, u32.
    pub codes: Tensor,
    /// `||sg(z) - z_q||^2`: moves the codewords (through `W` for SimVQ).
    pub codebook_loss: Tensor,
    /// `||z - sg(z_q)||^2`: keeps the encoder close to its codewords.
    pub commit_loss: Tensor,
    /// `codebook_loss + beta * commit_loss`.
    pub loss: Tensor,
}

#[derive(Clone, Debug)]
pub struct Quantizer {
    cfg: QuantizerConfig,
    codebook: Tensor,
    /// SimVQ's learned map `W`; `None` for plain VQ.
    map: Option<Linear>,
}

/// Rows of the distance matrix computed at once, so that `rows x k` stays near 4M floats.
const DISTANCE_BLOCK: usize = 1 << 22;

impl Quantizer {
    /// Tensors that training must leave unchanged (SimVQ's codebook).
    pub fn frozen_names(&self) -> &'static [&'static str] {
        match self.cfg.kind {
            QuantizerKind::SimVq => &["codebook"],
            QuantizerKind::Vq => &[],
        }
    }

    pub fn new(cfg: &QuantizerConfig, vb: VarBuilder) -> Result<Self> {
        let (k, e) = (cfg.codebook_size, cfg.dim);
        if k == 0 || e == 0 {
            candle_core::bail!("codebook size and dim must be positive, got {k} x {e}");
        }
        let (codebook, map) = match cfg.kind {
            QuantizerKind::SimVq => {
                let init = Init::Randn {
                    mean: 0.0,
                    stdev: (e as f64).powf(-0.5),
                };
                let c = vb.get_with_hints((k, e), "codebook", init)?;
                (c, Some(linear_b(e, e, true, vb.pp("codebook_proj"))?))
            }
            QuantizerKind::Vq => {
                let b = 1.0 / k as f64;
                let c = vb.get_with_hints((k, e), "codebook", Init::Uniform { lo: -b, up: b })?;
                (c, None)
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            codebook,
            map,
        })
    }

    pub fn config(&self) -> &QuantizerConfig {
        &self.cfg
    }

    /// The current codewords `(k, e)` (unit length with `l2_normalize`).
    pub(crate) fn codewords(&self) -> Result<Tensor> {
        let cw = match &self.map {
            Some(w) => w.forward(&self.codebook)?,
            None => self.codebook.clone(),
        };
        if self.cfg.l2_normalize {
            l2_normalize(&cw)
        } else {
            Ok(cw)
        }
    }

    /// Index of the nearest codeword (L2) for each row of `z` `(M, e)`:
    /// `argmin_j |c_j|^2 - 2 z.c_j` (the `|z|^2` term does not change the argmin), in blocks.
    pub fn nearest(z: &Tensor, codewords: &Tensor) -> Result<Tensor> {
        let z = z.detach().to_dtype(DType::F32)?;
        let cw = codewords.detach().to_dtype(DType::F32)?;
        let (m, _) = z.dims2()?;
        let k = cw.dim(0)?;
        let cw_sq = cw.sqr()?.sum(D::Minus1)?.unsqueeze(0)?;
        let cw_t = cw.t()?.contiguous()?;
        let block = (DISTANCE_BLOCK / k).max(1);
        let mut parts = Vec::with_capacity(m.div_ceil(block));
        for start in (0..m).step_by(block) {
            let len = block.min(m - start);
            let zb = z.narrow(0, start, len)?;
            let d = cw_sq.broadcast_sub(&(zb.matmul(&cw_t)? * 2.0)?)?;
            parts.push(d.argmin(D::Minus1)?);
        }
        Tensor::cat(&parts, 0)
    }

    /// Data-dependent initial values for the learned codebook tensors, from sample inputs `z`
    /// `(M, e)`: SimVQ's map gets `bias = mean(z)` and `weight = (z - mean)^T G` with
    /// `G ~ N(0, 1/M)` `(M, e)`, so that the codewords `W(C)` of the fixed `N(0, 1/e)` codebook
    /// start with the mean and covariance of the data (`E[W W^T] / e = cov(z)`); plain VQ takes `k` seeded random rows of `z`
    /// (k-means-style seeding). Without it, codewords and inputs start on different scales and a
    /// few codewords take every input: the collapse the first easy-VQA run showed.
    /// Returns `(name, value)` pairs relative to the quantizer.
    pub(crate) fn data_init(&self, z: &Tensor, seed: u64) -> Result<Vec<(String, Tensor)>> {
        let z = z.detach().to_dtype(DType::F32)?;
        let (m, e) = z.dims2()?;
        if m == 0 || e != self.cfg.dim {
            candle_core::bail!(
                "data_init needs (M, {}) inputs, got {:?}",
                self.cfg.dim,
                z.shape()
            );
        }
        match self.cfg.kind {
            QuantizerKind::SimVq => {
                let mean = z.mean_keepdim(0)?;
                let centred = z.broadcast_sub(&mean)?;
                let g = crate::init::seeded_randn(
                    (m, e),
                    0.0,
                    1.0 / (m as f64).sqrt(),
                    seed,
                    z.device(),
                )?;
                let weight = centred.t()?.matmul(&g)?;
                Ok(vec![
                    ("codebook_proj.weight".into(), weight),
                    ("codebook_proj.bias".into(), mean.squeeze(0)?),
                ])
            }
            QuantizerKind::Vq => {
                use rand::{Rng, SeedableRng};
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let k = self.cfg.codebook_size;
                let rows: Vec<u32> = (0..k).map(|_| rng.gen_range(0..m) as u32).collect();
                let idx = Tensor::new(rows, z.device())?;
                Ok(vec![("codebook".into(), z.index_select(&idx, 0)?)])
            }
        }
    }

    /// Quantizes `z` `(B, N, e)`.
    pub fn forward(&self, z: &Tensor) -> Result<Quantized> {
        let (b, n, e) = z.dims3()?;
        let cw = self.codewords()?;
        let z = &if self.cfg.l2_normalize {
            l2_normalize(z)?
        } else {
            z.clone()
        };
        let flat = z.reshape((b * n, e))?;
        let codes = Self::nearest(&flat, &cw)?;
        let z_q = cw.embedding(&codes)?.reshape((b, n, e))?;
        let codebook_loss = (z.detach() - &z_q)?.sqr()?.mean_all()?;
        let commit_loss = (z - z_q.detach())?.sqr()?.mean_all()?;
        let loss = (&codebook_loss + (&commit_loss * self.cfg.beta)?)?;
        // straight-through: forward value z_q, gradient to z unchanged
        let z_st = (z + (&z_q - z)?.detach())?;
        Ok(Quantized {
            z_q: z_st,
            codes: codes.reshape((b, n))?,
            codebook_loss,
            commit_loss,
            loss,
        })
    }

    /// Codeword vectors `(B, N, e)` for code indices `(B, N)`.
    pub fn lookup(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        let k = self.cfg.codebook_size as u32;
        let max = codes
            .to_dtype(DType::U32)?
            .flatten_all()?
            .max(0)?
            .to_scalar::<u32>()?;
        if max >= k {
            candle_core::bail!("code {max} is outside the codebook of {k} entries");
        }
        let cw = self.codewords()?;
        cw.embedding(&codes.flatten_all()?)?
            .reshape((b, n, self.cfg.dim))
    }
}

impl Quantizer {
    /// Dead-code restart by splitting (the step of the LBG algorithm): every entry that no
    /// input chose (`usage` 0, counted since the last restart) becomes a copy of a live entry,
    /// drawn in proportion to its use, moved by a small random step. For SimVQ the step is taken
    /// in the frozen basis `C`, so the codeword moves by `W eps` and stays in the span the map
    /// has learned; its length is half the current quantisation error `rms`, so the copy lands
    /// among its parent's inputs and the next steps pull the two apart. Without it the entries
    /// that the data-dependent start placed away from the data's clusters are never chosen and
    /// never move (the collapse `docs/RESULTS.md` measures).
    ///
    /// Returns the number of entries restarted and the new `codebook` tensor, or `None` when no
    /// entry is dead or none was used.
    pub(crate) fn split_dead_codes(
        &self,
        usage: &[f32],
        rms: f64,
        seed: u64,
    ) -> Result<Option<(usize, Tensor)>> {
        use rand::distributions::{Distribution, WeightedIndex};
        use rand::SeedableRng;

        let (k, e) = (self.cfg.codebook_size, self.cfg.dim);
        if usage.len() != k {
            candle_core::bail!("usage has {} counts for {k} codebook entries", usage.len());
        }
        let dead: Vec<usize> = (0..k).filter(|&i| usage[i] <= 0.0).collect();
        if dead.is_empty() || dead.len() == k {
            return Ok(None);
        }
        let parents = WeightedIndex::new(usage.iter().map(|&u| u.max(0.0)))
            .map_err(|err| candle_core::Error::Msg(format!("code usage: {err}")))?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let device = self.codebook.device();
        let mut rows = self
            .codebook
            .detach()
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let flat: Vec<f64> = rows.iter().flatten().map(|&v| v as f64).collect();
        let mean = flat.iter().sum::<f64>() / flat.len() as f64;
        let std = (flat.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / flat.len() as f64)
            .sqrt()
            .max(1e-12);
        let eps = crate::init::seeded_randn((dead.len(), e), 0.0, std, seed, device)?;
        let moved = match &self.map {
            Some(w) => eps.matmul(&w.weight().detach().t()?)?,
            None => eps.clone(),
        };
        let lengths = moved.sqr()?.sum(D::Minus1)?.sqrt()?.to_vec1::<f32>()?;
        let eps = eps.to_vec2::<f32>()?;
        for ((&d, step), len) in dead.iter().zip(&eps).zip(lengths) {
            let parent = parents.sample(&mut rng);
            let scale = (0.5 * rms / (len as f64).max(1e-12)) as f32;
            rows[d] = rows[parent]
                .iter()
                .zip(step)
                .map(|(c, n)| c + n * scale)
                .collect();
        }
        let codebook =
            Tensor::from_vec(rows.concat(), (k, e), device)?.to_dtype(self.codebook.dtype())?;
        Ok(Some((dead.len(), codebook)))
    }
}

/// Rows scaled to unit L2 norm (differentiable).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Counts code usage over an evaluation pass.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CodebookStats {
    counts: Vec<u64>,
}

impl CodebookStats {
    pub fn new(codebook_size: usize) -> Self {
        Self {
            counts: vec![0; codebook_size],
        }
    }

    pub fn update(&mut self, codes: &Tensor) -> Result<()> {
        for c in codes
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
        {
            match self.counts.get_mut(c as usize) {
                Some(n) => *n += 1,
                None => candle_core::bail!("code {c} outside a codebook of {}", self.counts.len()),
            }
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Share of codebook entries used at least once.
    pub fn utilisation(&self) -> f64 {
        let used = self.counts.iter().filter(|&&c| c > 0).count();
        used as f64 / self.counts.len().max(1) as f64
    }

    /// `exp(entropy)` of the code distribution: the effective number of codes in use.
    pub fn perplexity(&self) -> f64 {
        let total = self.total() as f64;
        if total == 0.0 {
            return 0.0;
        }
        let h: f64 = self
            .counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total;
                -p * p.ln()
            })
            .sum();
        h.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;
    use crate::init::SeededVarMap;
    use candle_core::Device;
    use candle_core::Var;

    fn brute_force(z: &[Vec<f32>], cw: &[Vec<f32>]) -> Vec<u32> {
        z.iter()
            .map(|v| {
                let dist = |c: &Vec<f32>| -> f64 {
                    v.iter().zip(c).map(|(a, b)| ((a - b) as f64).powi(2)).sum()
                };
                let mut best = (0, f64::INFINITY);
                for (j, c) in cw.iter().enumerate() {
                    let d = dist(c);
                    if d < best.1 {
                        best = (j as u32, d);
                    }
                }
                best.0
            })
            .collect()
    }

    #[test]
    fn dead_codes_split_off_live_ones_at_half_the_error() -> Result<()> {
        let dev = Device::Cpu;
        for kind in [QuantizerKind::SimVq, QuantizerKind::Vq] {
            let cfg = QuantizerConfig {
                kind,
                codebook_size: 12,
                dim: 6,
                ..QuantizerConfig::default()
            };
            let vars = SeededVarMap::new(3);
            let q = Quantizer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
            let before = q.codewords()?.to_vec2::<f32>()?;
            // entries 0, 1 and 2 live (2 used most), the rest dead
            let mut usage = vec![0.0f32; 12];
            usage[..3].copy_from_slice(&[1.0, 2.0, 30.0]);
            let (n, codebook) = q.split_dead_codes(&usage, 0.2, 7)?.expect("dead entries");
            assert_eq!(n, 9);
            let again = q.split_dead_codes(&usage, 0.2, 7)?.expect("dead entries").1;
            assert_eq!(
                codebook.to_vec2::<f32>()?,
                again.to_vec2::<f32>()?,
                "same seed"
            );
            let map = q.map.clone();
            let after = Quantizer {
                cfg: cfg.clone(),
                codebook,
                map,
            }
            .codewords()?
            .to_vec2::<f32>()?;
            assert_eq!(after[..3], before[..3], "live entries moved");
            let dist = |a: &[f32], b: &[f32]| -> f32 {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).powi(2))
                    .sum::<f32>()
                    .sqrt()
            };
            let mut from_busiest = 0;
            for row in &after[3..] {
                let (parent, d) = (0..3)
                    .map(|j| (j, dist(row, &before[j])))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap();
                assert!((d - 0.1).abs() < 1e-4, "{kind:?}: moved {d}, not 0.1");
                from_busiest += usize::from(parent == 2);
            }
            assert!(from_busiest >= 6, "{kind:?}: parents ignore usage");
            let all_used = vec![1.0f32; 12];
            assert!(q.split_dead_codes(&all_used, 0.2, 7)?.is_none());
        }
        Ok(())
    }

    #[test]
    fn codes_equal_brute_force_nearest_neighbour() -> Result<()> {
        let dev = Device::Cpu;
        for kind in [QuantizerKind::SimVq, QuantizerKind::Vq] {
            let cfg = QuantizerConfig {
                kind,
                codebook_size: 300,
                dim: 24,
                beta: 0.25,
                l2_normalize: false,
            };
            let vars = SeededVarMap::new(3);
            let q = Quantizer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
            let cw = q.codewords()?;
            // inputs near random codewords plus noise, and pure noise
            let z = seeded_randn((4, 50, 24), 0.0, 0.3, 9, &dev)?;
            let out = q.forward(&z)?;
            let ours = out.codes.flatten_all()?.to_vec1::<u32>()?;
            let want = brute_force(&z.reshape((200, 24))?.to_vec2()?, &cw.to_vec2()?);
            assert_eq!(ours, want, "{kind:?}");
            // the quantized vectors are the chosen codewords
            let looked_up = q.lookup(&out.codes)?;
            let diff = (looked_up - &out.z_q)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn l2_normalized_lookup_is_nearest_by_cosine_with_unit_codewords() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = QuantizerConfig {
            kind: QuantizerKind::SimVq,
            codebook_size: 50,
            dim: 8,
            beta: 0.25,
            l2_normalize: true,
        };
        let vars = SeededVarMap::new(4);
        let q = Quantizer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        let z = seeded_randn((1, 40, 8), 0.0, 5.0, 6, &dev)?;
        let out = q.forward(&z)?;
        let raw = match &q.map {
            Some(w) => w.forward(&q.codebook)?,
            None => unreachable!(),
        };
        let cos = |a: &[f32], b: &[f32]| -> f32 {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (n(a) * n(b))
        };
        let raw = raw.to_vec2::<f32>()?;
        for (i, zi) in z.squeeze(0)?.to_vec2::<f32>()?.iter().enumerate() {
            let best = (0..raw.len())
                .max_by(|&a, &b| cos(zi, &raw[a]).total_cmp(&cos(zi, &raw[b])))
                .unwrap();
            assert_eq!(out.codes.squeeze(0)?.to_vec1::<u32>()?[i], best as u32);
        }
        let norms = out
            .z_q
            .sqr()?
            .sum(D::Minus1)?
            .sqrt()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
        Ok(())
    }

    #[test]
    fn blocked_search_matches_single_block() -> Result<()> {
        let dev = Device::Cpu;
        let cw = seeded_randn((1 << 13, 8), 0.0, 1.0, 10, &dev)?;
        let z = seeded_randn((1500, 8), 0.0, 1.0, 11, &dev)?; // 1500 > DISTANCE_BLOCK / k = 512
        let blocked = Quantizer::nearest(&z, &cw)?.to_vec1::<u32>()?;
        let d = cw
            .sqr()?
            .sum(D::Minus1)?
            .unsqueeze(0)?
            .broadcast_sub(&(z.matmul(&cw.t()?)? * 2.0)?)?;
        assert_eq!(blocked, d.argmin(D::Minus1)?.to_vec1::<u32>()?);
        Ok(())
    }

    #[test]
    fn simvq_gradients_reach_the_map_but_not_the_codebook_value() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = QuantizerConfig {
            kind: QuantizerKind::SimVq,
            codebook_size: 16,
            dim: 4,
            beta: 0.25,
            l2_normalize: false,
        };
        let vars = SeededVarMap::new(1);
        let q = Quantizer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        let z = Var::from_tensor(&seeded_randn((1, 5, 4), 0.0, 1.0, 12, &dev)?)?;
        let out = q.forward(z.as_tensor())?;
        let total = (out.loss + out.z_q.sqr()?.sum_all()?)?;
        let grads = total.backward()?;
        let map = vars.varmap.data().lock().unwrap()["codebook_proj.weight"].clone();
        assert!(grads.get(map.as_tensor()).is_some(), "W gets a gradient");
        let gz = grads
            .get(z.as_tensor())
            .expect("straight-through gradient to z");
        assert!(gz.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        assert_eq!(q.frozen_names(), &["codebook"]);
        Ok(())
    }

    #[test]
    fn data_init_matches_the_data_statistics_and_spreads_the_codes() -> Result<()> {
        let dev = Device::Cpu;
        // inputs far from the N(0, 1/e) scale, with a large common offset and all their spread in
        // the first two of 16 dimensions: the collapse case
        let e = 16;
        let scale: Vec<f32> = (0..e).map(|i| if i < 2 { 3.0 } else { 0.01 }).collect();
        let scale = Tensor::from_vec(scale, (1, e), &dev)?;
        let z = (seeded_randn((4096, e), 0.0, 1.0, 5, &dev)?.broadcast_mul(&scale)? + 10.0)?;
        for kind in [QuantizerKind::SimVq, QuantizerKind::Vq] {
            let cfg = QuantizerConfig {
                kind,
                codebook_size: 64,
                dim: e,
                beta: 0.25,
                l2_normalize: false,
            };
            let vars = SeededVarMap::new(2);
            let q = Quantizer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
            let used = |q: &Quantizer| -> Result<usize> {
                let mut s = CodebookStats::new(64);
                s.update(&Quantizer::nearest(&z, &q.codewords()?)?)?;
                Ok((s.utilisation() * 64.0).round() as usize)
            };
            let before = used(&q)?;
            let data = vars.varmap.data().lock().unwrap().clone();
            for (name, value) in q.data_init(&z, 7)? {
                data[&name].set(&value)?;
            }
            let cw = q.codewords()?;
            let mean = cw.mean_all()?.to_scalar::<f32>()?;
            assert!((mean - 10.0).abs() < 0.5, "{kind:?}: codeword mean {mean}");
            // the codewords spread where the data does: std ~3 in dims 0-1, ~0 elsewhere
            let std = cw
                .broadcast_sub(&cw.mean_keepdim(0)?)?
                .sqr()?
                .mean(0)?
                .sqrt()?
                .to_vec1::<f32>()?;
            assert!(std[0] > 2.0 && std[1] > 2.0, "{kind:?}: {std:?}");
            assert!(std[2..].iter().all(|&s| s < 0.1), "{kind:?}: {std:?}");
            let after = used(&q)?;
            assert!(
                after >= 60 && after > before,
                "{kind:?}: {before} -> {after} codes used"
            );
        }
        Ok(())
    }

    #[test]
    fn stats_count_utilisation_and_perplexity() -> Result<()> {
        let mut s = CodebookStats::new(4);
        s.update(&Tensor::new(
            &[[0u32, 1], [0, 1]],
            &candle_core::Device::Cpu,
        )?)?;
        assert_eq!(s.utilisation(), 0.5);
        assert!((s.perplexity() - 2.0).abs() < 1e-9);
        assert!(s
            .update(&Tensor::new(&[9u32], &candle_core::Device::Cpu)?)
            .is_err());
        Ok(())
    }

    #[test]
    fn lookup_rejects_codes_outside_the_codebook() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = QuantizerConfig {
            kind: QuantizerKind::Vq,
            codebook_size: 8,
            dim: 4,
            beta: 0.25,
            l2_normalize: false,
        };
        let q = Quantizer::new(&cfg, SeededVarMap::new(0).var_builder(DType::F32, &dev))?;
        assert!(q.lookup(&Tensor::new(&[[1u32, 8]], &dev)?).is_err());
        Ok(())
    }
}
