//! AdamW with parameter groups and a saveable state, and global gradient-norm clipping.
//!
//! The update is PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias correction):
//!
//! ```text
//! t      = step + 1
//! theta *= 1 - lr * weight_decay
//! m      = beta1 * m + (1 - beta1) * g
//! v      = beta2 * v + (1 - beta2) * g^2
//! theta -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! with `lr` taken from each group's [`LrSchedule`] at the 0-based `step`. Moments are kept in
//! f32 on the variable's device (f64 for f64 variables), and the update is computed in that
//! precision, then cast to the variable's dtype. An f32 variable on the CPU is updated by one
//! fused in-place pass (`fused_adamw`), bit for bit what the tensor operations compute
//! ([`AdamW::set_fused`] switches it off, for comparison).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, TrainError};
use crate::fused_adamw::{Coeffs, FusedUpdate, SumOfSquares};
use crate::schedule::LrSchedule;

/// Name of the step counter in [`AdamW::state_tensors`].
pub(crate) const STEP_KEY: &str = "step";

/// AdamW's constants. The learning rate lives in each group's schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

impl AdamWConfig {
    /// Betas in `[0, 1)`, `eps > 0`, `weight_decay >= 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(TrainError::Config(format!(
                    "adamw: {name} must be in [0, 1), got {b}"
                )));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(TrainError::Config(format!(
                "adamw: eps must be finite and > 0, got {}",
                self.eps
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::Config(format!(
                "adamw: weight_decay must be finite and >= 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// Variables that share a learning-rate schedule (e.g. "encoder" at 1e-5, "decoder" at 1e-4).
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub name: String,
    pub vars: Vec<(String, Var)>,
    pub schedule: LrSchedule,
}

impl ParamGroup {
    pub fn new(name: impl Into<String>, vars: Vec<(String, Var)>, schedule: LrSchedule) -> Self {
        Self {
            name: name.into(),
            vars,
            schedule,
        }
    }

    /// The variables of `vars` whose names start with `prefix` (all of them for `""`).
    pub fn with_prefix(
        name: impl Into<String>,
        vars: &HashMap<String, Var>,
        prefix: &str,
        schedule: LrSchedule,
    ) -> Self {
        let vars = vars
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self::new(name, vars, schedule)
    }
}

/// What one optimizer step saw.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients the step applied (after any clipping by the caller).
    pub grad_norm: f64,
    /// The learning rate each group used, by group name.
    pub lrs: Vec<(String, f64)>,
}

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    moments: Moments,
}

/// A variable's first and second moments.
enum Moments {
    /// Tensors on the variable's device, in [`moment_dtype`], replaced every step.
    Tensors { m: Tensor, v: Tensor },
    /// f32 vectors updated in place by the fused CPU pass.
    Host { m: Vec<f32>, v: Vec<f32> },
}

impl std::fmt::Debug for Moments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tensors { m, .. } => write!(f, "Moments::Tensors({:?})", m.shape()),
            Self::Host { m, .. } => write!(f, "Moments::Host({} elements)", m.len()),
        }
    }
}

/// Whether `var` takes the fused CPU update.
fn fusable(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32
}

impl Moments {
    fn zeros(var: &Var, fused: bool) -> candle_core::Result<Self> {
        if fused && fusable(var) {
            let n = var.elem_count();
            return Ok(Self::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            });
        }
        let m = Tensor::zeros(var.shape(), moment_dtype(var.dtype()), var.device())?;
        let v = m.zeros_like()?;
        Ok(Self::Tensors { m, v })
    }

    /// The moments as tensors of the variable's shape (copies of host vectors).
    fn tensors(&self, var: &Var) -> candle_core::Result<(Tensor, Tensor)> {
        match self {
            Self::Tensors { m, v } => Ok((m.clone(), v.clone())),
            Self::Host { m, v } => Ok((
                Tensor::from_slice(m, var.shape(), &Device::Cpu)?,
                Tensor::from_slice(v, var.shape(), &Device::Cpu)?,
            )),
        }
    }

    /// Moments holding `m` and `v` (checked to have the variable's shape), in this slot's form.
    fn with_values(&self, var: &Var, m: &Tensor, v: &Tensor) -> candle_core::Result<Self> {
        let host = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let dev = |t: &Tensor| {
            t.to_dtype(moment_dtype(var.dtype()))?
                .to_device(var.device())?
                .contiguous()
                .map(|t| t.detach())
        };
        Ok(match self {
            Self::Host { .. } => Self::Host {
                m: host(m)?,
                v: host(v)?,
            },
            Self::Tensors { .. } => Self::Tensors {
                m: dev(m)?,
                v: dev(v)?,
            },
        })
    }
}

#[derive(Debug)]
struct Group {
    name: String,
    schedule: LrSchedule,
    slots: Vec<Slot>,
}

/// AdamW over named variables in parameter groups, with an exactly saveable state.
#[derive(Debug)]
pub struct AdamW {
    groups: Vec<Group>,
    cfg: AdamWConfig,
    step: u64,
}

/// Moments of half-precision variables are kept in f32; f64 variables keep f64 moments.
fn moment_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

impl AdamW {
    /// Checks the config and schedules, and that every variable (by name and by identity) and
    /// every group name appears once. Moments start at zero, the step count at 0.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let mut group_names = HashSet::new();
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            group
                .schedule
                .validate()
                .map_err(|e| TrainError::Config(format!("group {}: {e}", group.name)))?;
            if !group_names.insert(group.name.clone()) {
                return Err(TrainError::Config(format!(
                    "parameter group {} appears twice",
                    group.name
                )));
            }
            let mut slots = Vec::with_capacity(group.vars.len());
            for (name, var) in group.vars {
                if !names.insert(name.clone()) || !ids.insert(var.id()) {
                    return Err(TrainError::DuplicateVar { name });
                }
                if !var.dtype().is_float() {
                    return Err(TrainError::Config(format!(
                        "variable {name} has dtype {:?}; AdamW needs a float dtype",
                        var.dtype()
                    )));
                }
                let moments = Moments::zeros(&var, true)
                    .ctx(|| format!("allocating AdamW moments of {name}"))?;
                slots.push(Slot { name, var, moments });
            }
            // A fixed order makes the update and its statistics independent of how the caller
            // built the list (e.g. from a HashMap).
            slots.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(Group {
                name: group.name,
                schedule: group.schedule,
                slots,
            });
        }
        Ok(Self {
            groups: out,
            cfg,
            step: 0,
        })
    }

    /// Number of steps taken (restored by [`AdamW::load_state`]).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// All optimized variables, in group order, by name within a group.
    pub fn vars(&self) -> Vec<Var> {
        self.slots().map(|s| s.var.clone()).collect()
    }

    /// The learning rate each group will use at the next step.
    pub fn lrs(&self) -> Vec<(String, f64)> {
        self.groups
            .iter()
            .map(|g| (g.name.clone(), g.schedule.lr(self.step)))
            .collect()
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.groups.iter().flat_map(|g| g.slots.iter())
    }

    /// Whether f32 CPU variables take the fused in-place update (the default) or the tensor
    /// operations; the moments move to the chosen form unchanged. Both compute the same bits.
    pub fn set_fused(&mut self, fused: bool) -> Result<()> {
        for slot in self.groups.iter_mut().flat_map(|g| g.slots.iter_mut()) {
            let name = &slot.name;
            let ctx = || format!("moving the AdamW moments of {name}");
            let (m, v) = slot.moments.tensors(&slot.var).ctx(ctx)?;
            let form = Moments::zeros(&slot.var, fused).ctx(ctx)?;
            slot.moments = form.with_values(&slot.var, &m, &v).ctx(ctx)?;
        }
        Ok(())
    }

    /// One AdamW update with the gradients in `grads`. Variables without a gradient are left
    /// unchanged, their moments too (no weight decay either, as in PyTorch). A non-finite
    /// gradient norm is an error and nothing is updated.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        let present: Vec<&Tensor> = self.slots().filter_map(|s| grads.get(&s.var)).collect();
        let grad_norm = global_norm(&present)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFiniteGradNorm { norm: grad_norm });
        }
        self.update(grads, None, grad_norm)
    }

    /// [`clip_grad_norm`] over this optimizer's variables, then [`AdamW::step`], the same bits
    /// as the two calls, with the clipping folded into the update: no scaled copy of any
    /// gradient is written (the fused CPU pass scales each element as it reads it), `grads` is
    /// left as it is, and the norm is computed once. Returns the norm before clipping and the
    /// step's statistics, whose `grad_norm` is the norm after it (`norm * factor`).
    pub fn clip_and_step(&mut self, grads: &GradStore, max_norm: f64) -> Result<(f64, StepStats)> {
        check_max_norm(max_norm)?;
        let present: Vec<&Tensor> = self.slots().filter_map(|s| grads.get(&s.var)).collect();
        let norm = global_norm(&present)?;
        if !norm.is_finite() {
            return Err(TrainError::NonFiniteGradNorm { norm });
        }
        let coef = max_norm / (norm + 1e-6);
        let (scale, applied) = if coef < 1.0 {
            (Some(coef), norm * coef)
        } else {
            (None, norm)
        };
        Ok((norm, self.update(grads, scale, applied)?))
    }

    /// The update with the gradients times `scale` (a clipping factor) where one is given.
    fn update(
        &mut self,
        grads: &GradStore,
        scale: Option<f64>,
        grad_norm: f64,
    ) -> Result<StepStats> {
        let t = self.step.saturating_add(1) as f64;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bc1 = 1.0 - beta1.powf(t);
        let bc2_sqrt = (1.0 - beta2.powf(t)).sqrt();
        let mut lrs = Vec::with_capacity(self.groups.len());
        for group in self.groups.iter_mut() {
            let lr = group.schedule.lr(self.step);
            lrs.push((group.name.clone(), lr));
            for slot in group.slots.iter_mut() {
                let Some(g) = grads.get(&slot.var) else {
                    continue;
                };
                let name = &slot.name;
                let ctx = || format!("AdamW update of {name}");
                let (m, v) = match &mut slot.moments {
                    Moments::Host { m, v } => {
                        let g = g
                            .to_dtype(DType::F32)
                            .and_then(|g| g.contiguous())
                            .ctx(ctx)?;
                        let op = FusedUpdate {
                            coeffs: Coeffs::new(&self.cfg, lr, t)
                                .with_grad_scale(scale.unwrap_or(1.0)),
                            moments: Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                        };
                        slot.var.as_tensor().inplace_op2(&g, &op).ctx(ctx)?;
                        continue;
                    }
                    Moments::Tensors { m, v } => (m, v),
                };
                let md = m.dtype();
                let g = match scale {
                    // in the gradient's dtype, as clip_grad_norm scales it
                    Some(c) => (g.detach() * c).ctx(ctx)?,
                    None => g.detach(),
                };
                let g = g.to_dtype(md).ctx(ctx)?;
                let m_next = ((&*m * beta1).ctx(ctx)? + (&g * (1.0 - beta1)).ctx(ctx)?).ctx(ctx)?;
                let v_next = ((&*v * beta2).ctx(ctx)?
                    + (g.sqr().ctx(ctx)? * (1.0 - beta2)).ctx(ctx)?)
                .ctx(ctx)?;
                let denom = ((v_next.sqrt().ctx(ctx)? / bc2_sqrt).ctx(ctx)? + eps).ctx(ctx)?;
                let theta = slot.var.as_detached_tensor().to_dtype(md).ctx(ctx)?;
                let decayed = (theta * (1.0 - lr * weight_decay)).ctx(ctx)?;
                let delta = ((&m_next / &denom).ctx(ctx)? * (lr / bc1)).ctx(ctx)?;
                let next = (decayed - delta)
                    .ctx(ctx)?
                    .to_dtype(slot.var.dtype())
                    .ctx(ctx)?;
                slot.var.set(&next).ctx(ctx)?;
                *m = m_next.detach();
                *v = v_next.detach();
            }
        }
        self.step += 1;
        Ok(StepStats { grad_norm, lrs })
    }

    /// The optimizer state: `m.<var>` and `v.<var>` for every variable and the step count as an
    /// i64 scalar under [`STEP_KEY`]. Saved with safetensors, it round-trips exactly.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in self.slots() {
            // Host moments are copied into tensors of the variable's shape, which cannot fail.
            if let Ok((m, v)) = s.moments.tensors(&s.var) {
                out.insert(format!("m.{}", s.name), m);
                out.insert(format!("v.{}", s.name), v);
            }
        }
        let step = i64::try_from(self.step).unwrap_or(i64::MAX);
        // A scalar on the CPU cannot fail to allocate in a way a caller could handle.
        if let Ok(t) = Tensor::new(step, &Device::Cpu) {
            out.insert(STEP_KEY.to_string(), t);
        }
        out
    }

    /// Restores a state written by [`AdamW::state_tensors`]. Strict: every moment of every
    /// variable must be present with the variable's shape, no other tensor may be present, and
    /// the step must be a non-negative integer scalar. On error nothing is changed.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mismatch = |name: &str, msg: String| TrainError::StateMismatch {
            what: "optimizer".into(),
            name: name.to_string(),
            msg,
        };
        let step_t = tensors
            .get(STEP_KEY)
            .ok_or_else(|| mismatch(STEP_KEY, "missing".into()))?;
        if step_t.elem_count() != 1 || !matches!(step_t.dtype(), DType::I64 | DType::U32) {
            return Err(mismatch(
                STEP_KEY,
                format!(
                    "expected an integer scalar, got {:?} {:?}",
                    step_t.dtype(),
                    step_t.dims()
                ),
            ));
        }
        let step = step_t
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::I64))
            .and_then(|t| t.to_vec1::<i64>())
            .ctx(|| "reading the optimizer step".into())?[0];
        let step =
            u64::try_from(step).map_err(|_| mismatch(STEP_KEY, format!("negative: {step}")))?;

        let mut expected = HashSet::from([STEP_KEY.to_string()]);
        let mut new_moments = Vec::new();
        for s in self.slots() {
            let mut pair = Vec::with_capacity(2);
            for prefix in ["m", "v"] {
                let key = format!("{prefix}.{}", s.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| mismatch(&key, "missing".into()))?;
                if t.dims() != s.var.dims() {
                    return Err(mismatch(
                        &key,
                        format!(
                            "shape {:?} does not match the variable's {:?}",
                            t.dims(),
                            s.var.dims()
                        ),
                    ));
                }
                pair.push(t);
                expected.insert(key);
            }
            let moments = s
                .moments
                .with_values(&s.var, pair[0], pair[1])
                .ctx(|| format!("loading the optimizer state of {}", s.name))?;
            new_moments.push(moments);
        }
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !expected.contains(*k)).collect();
        extra.sort();
        if let Some(k) = extra.first() {
            return Err(mismatch(k, "not a moment of any optimized variable".into()));
        }
        let slots = self.groups.iter_mut().flat_map(|g| g.slots.iter_mut());
        for (slot, moments) in slots.zip(new_moments) {
            slot.moments = moments;
        }
        self.step = step;
        Ok(())
    }
}

/// The global L2 norm of `grads`, summed in an order that does not depend on the order of
/// the list (per-tensor sums of squares are sorted before they are added), so a resumed run
/// clips exactly as an uninterrupted one.
fn global_norm(grads: &[&Tensor]) -> Result<f64> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    let ctx = || "computing the gradient norm".to_string();
    let mut partials = Vec::with_capacity(grads.len());
    for g in grads {
        let p = if g.device().is_cpu() && g.dtype() == DType::F32 {
            // one read-only pass, accumulated in f64
            g.contiguous()
                .and_then(|g| g.apply_op1_no_bwd(&SumOfSquares))
                .ctx(ctx)?
        } else {
            g.to_dtype(moment_dtype(g.dtype()))
                .and_then(|g| g.sqr())
                .and_then(|g| g.sum_all())
                .and_then(|g| g.to_dtype(DType::F64))
                .ctx(ctx)?
        };
        partials.push(p);
    }
    let device = partials[0].device().clone();
    let mut values: Vec<f64> = if partials.iter().all(|p| p.device().same_device(&device)) {
        // One transfer for all tensors.
        Tensor::stack(&partials, 0)
            .and_then(|t| t.to_vec1::<f64>())
            .ctx(ctx)?
    } else {
        partials
            .iter()
            .map(|p| p.to_scalar::<f64>())
            .collect::<candle_core::Result<_>>()
            .ctx(ctx)?
    };
    values.sort_by(f64::total_cmp);
    Ok(values.iter().sum::<f64>().sqrt())
}

fn check_max_norm(max_norm: f64) -> Result<()> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(TrainError::Config(format!(
            "clip_grad_norm: max_norm must be finite and > 0, got {max_norm}"
        )));
    }
    Ok(())
}

/// Scales the gradients of `vars` in place so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1)
/// and returns the norm before clipping. Variables without a gradient are skipped; a variable
/// listed twice counts once. A non-finite norm is an error, so training stops loudly on NaN.
pub fn clip_grad_norm<'a>(
    grads: &mut GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    max_norm: f64,
) -> Result<f64> {
    check_max_norm(max_norm)?;
    let mut seen = HashSet::new();
    let vars: Vec<&Var> = vars.into_iter().filter(|v| seen.insert(v.id())).collect();
    let present: Vec<(&Var, Tensor)> = vars
        .into_iter()
        .filter_map(|v| grads.get(v).map(|g| (v, g.clone())))
        .collect();
    let refs: Vec<&Tensor> = present.iter().map(|(_, g)| g).collect();
    let norm = global_norm(&refs)?;
    if !norm.is_finite() {
        return Err(TrainError::NonFiniteGradNorm { norm });
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (var, g) in present {
            let scaled = (g * coef).ctx(|| "scaling a gradient".to_string())?;
            grads.insert(var, scaled);
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const CPU: Device = Device::Cpu;

    fn var(values: &[f64], dtype: DType) -> Var {
        let t = Tensor::new(values, &CPU).unwrap().to_dtype(dtype).unwrap();
        Var::from_tensor(&t).unwrap()
    }

    fn values(v: &Var) -> Vec<f64> {
        v.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    }

    fn cfg(weight_decay: f64) -> AdamWConfig {
        AdamWConfig {
            weight_decay,
            ..AdamWConfig::default()
        }
    }

    /// loss = sum(a * theta^2 / 2 + b * theta), so grad = a * theta + b.
    fn quadratic_grads(theta: &Var, a: &[f64], b: &[f64]) -> GradStore {
        let dt = theta.dtype();
        let a = Tensor::new(a, &CPU).unwrap().to_dtype(dt).unwrap();
        let b = Tensor::new(b, &CPU).unwrap().to_dtype(dt).unwrap();
        let loss = ((theta.sqr().unwrap() * 0.5).unwrap() * a).unwrap();
        let loss = (loss + (theta.as_tensor() * b).unwrap()).unwrap();
        loss.sum_all().unwrap().backward().unwrap()
    }

    /// PyTorch's AdamW, written out in f64 (torch/optim/adamw.py, single-tensor path).
    fn reference(
        theta0: &[f64],
        a: &[f64],
        b: &[f64],
        lrs: &[f64],
        c: &AdamWConfig,
    ) -> Vec<Vec<f64>> {
        let mut theta = theta0.to_vec();
        let mut m = vec![0.0; theta.len()];
        let mut v = vec![0.0; theta.len()];
        let mut out = Vec::new();
        for (i, &lr) in lrs.iter().enumerate() {
            let step = (i + 1) as i32;
            let grad: Vec<f64> = (0..theta.len()).map(|j| a[j] * theta[j] + b[j]).collect();
            let bias1 = 1.0 - c.beta1.powi(step);
            let bias2 = 1.0 - c.beta2.powi(step);
            for j in 0..theta.len() {
                theta[j] *= 1.0 - lr * c.weight_decay;
                m[j] = c.beta1 * m[j] + (1.0 - c.beta1) * grad[j];
                v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * grad[j] * grad[j];
                let denom = v[j].sqrt() / bias2.sqrt() + c.eps;
                theta[j] -= lr / bias1 * m[j] / denom;
            }
            out.push(theta.clone());
        }
        out
    }

    #[test]
    fn matches_pytorch_adamw_for_three_steps() {
        let theta0 = [0.5, -1.0, 2.0, 0.0, 3.0];
        let a = [1.0, 2.0, 0.5, 1.0, 0.0];
        let b = [0.1, -0.3, 0.0, 0.7, -2.0];
        // warm-up of 1 step, then cosine over 2: lrs 0.1, 0.1, 0.055.
        let schedule = LrSchedule {
            peak_lr: 0.1,
            min_lr: 0.01,
            warmup_steps: 1,
            total_steps: 3,
        };
        let lrs = [0.1, 0.1, 0.055];
        let c = AdamWConfig {
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let expected = reference(&theta0, &a, &b, &lrs, &c);
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            let theta = var(&theta0, dtype);
            let group =
                ParamGroup::new("g", vec![("theta".into(), theta.clone())], schedule.clone());
            let mut opt = AdamW::new(vec![group], c.clone()).unwrap();
            for (i, want) in expected.iter().enumerate() {
                let grads = quadratic_grads(&theta, &a, &b);
                let stats = opt.step(&grads).unwrap();
                assert!((stats.lrs[0].1 - lrs[i]).abs() < 1e-15, "{stats:?}");
                let got = values(&theta);
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= tol,
                        "{dtype:?} step {i}: {got:?} vs {want:?}"
                    );
                }
                assert_eq!(theta.dtype(), dtype);
            }
            assert_eq!(opt.step_count(), 3);
        }
    }

    #[test]
    fn minimises_least_squares() {
        // y = X w* with a fixed, well-conditioned X; start from w = 0.
        let n = 32;
        let d = 6;
        let x: Vec<f32> = (0..n * d)
            .map(|i| {
                ((i * 7919 % 101) as f32 / 50.0 - 1.0) + if i % (d + 1) == 0 { 1.0 } else { 0.0 }
            })
            .collect();
        let x = Tensor::from_vec(x, (n, d), &CPU).unwrap();
        let w_star = Tensor::new(&[[1.5f32], [-2.0], [0.5], [3.0], [-1.0], [0.25]], &CPU).unwrap();
        let y = x.matmul(&w_star).unwrap();
        let w = Var::zeros((d, 1), DType::F32, &CPU).unwrap();
        let group = ParamGroup::new(
            "w",
            vec![("w".into(), w.clone())],
            LrSchedule::constant(0.05),
        );
        let mut opt = AdamW::new(vec![group], cfg(0.0)).unwrap();
        let loss = |w: &Var| {
            let r = (x.matmul(w).unwrap() - &y).unwrap();
            r.sqr().unwrap().mean_all().unwrap()
        };
        let first = loss(&w).to_scalar::<f32>().unwrap();
        for _ in 0..400 {
            let grads = loss(&w).backward().unwrap();
            opt.step(&grads).unwrap();
        }
        let last = loss(&w).to_scalar::<f32>().unwrap();
        assert!(last < first * 1e-4, "loss {first} -> {last}");
    }

    #[test]
    fn groups_use_their_own_learning_rates() {
        let enc = var(&[1.0, -1.0], DType::F32);
        let dec = var(&[1.0, -1.0], DType::F32);
        let groups = vec![
            ParamGroup::new(
                "encoder",
                vec![("enc".into(), enc.clone())],
                LrSchedule::constant(1e-3),
            ),
            ParamGroup::new(
                "decoder",
                vec![("dec".into(), dec.clone())],
                LrSchedule::constant(1e-1),
            ),
        ];
        let mut opt = AdamW::new(groups, cfg(0.0)).unwrap();
        assert_eq!(
            opt.lrs(),
            vec![("encoder".into(), 1e-3), ("decoder".into(), 1e-1)]
        );
        let loss = (enc.sum_all().unwrap() + dec.sum_all().unwrap()).unwrap();
        let stats = opt.step(&loss.backward().unwrap()).unwrap();
        assert_eq!(
            stats.lrs,
            vec![("encoder".into(), 1e-3), ("decoder".into(), 1e-1)]
        );
        assert!((stats.grad_norm - 2.0).abs() < 1e-9, "{}", stats.grad_norm);
        // First Adam step moves each weight by about lr (m_hat / sqrt(v_hat) = sign(g)).
        for (v, lr) in [(&enc, 1e-3), (&dec, 1e-1)] {
            let got = values(v);
            assert!((got[0] - (1.0 - lr)).abs() < 1e-6, "{got:?}");
            assert!((got[1] - (-1.0 - lr)).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn vars_without_gradient_are_untouched() {
        let a = var(&[1.0, 2.0], DType::F32);
        let c = var(&[3.0, 4.0], DType::F32);
        let group = ParamGroup::new(
            "all",
            vec![("a".into(), a.clone()), ("c".into(), c.clone())],
            LrSchedule::constant(0.1),
        );
        let mut opt = AdamW::new(vec![group], cfg(0.5)).unwrap();
        // Step 1: only `a` has a gradient.
        opt.step(&a.sum_all().unwrap().backward().unwrap()).unwrap();
        assert_eq!(values(&c), vec![3.0, 4.0], "no update, no weight decay");
        let st = opt.state_tensors();
        assert_eq!(st["m.c"].to_vec1::<f32>().unwrap(), vec![0.0, 0.0]);
        // Step 2: both; step 3: only `a` again, `c` and its moments stay.
        let loss = (a.sum_all().unwrap() + c.sum_all().unwrap()).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        let c_after = values(&c);
        let st2 = opt.state_tensors();
        opt.step(&a.sum_all().unwrap().backward().unwrap()).unwrap();
        let st3 = opt.state_tensors();
        assert_eq!(values(&c), c_after);
        for k in ["m.c", "v.c"] {
            assert_eq!(
                st2[k].to_vec1::<f32>().unwrap(),
                st3[k].to_vec1::<f32>().unwrap()
            );
        }
        assert_ne!(
            st2["m.a"].to_vec1::<f32>().unwrap(),
            st3["m.a"].to_vec1::<f32>().unwrap()
        );
        assert_eq!(opt.step_count(), 3);
    }

    #[test]
    fn clip_grad_norm_scales_to_max_norm() {
        let a = var(&[0.0, 0.0, 0.0], DType::F32);
        let b = var(&[0.0], DType::F32);
        let grads_of = || {
            let ca = Tensor::new(&[3f32, 4.0, 0.0], &CPU).unwrap();
            let cb = Tensor::new(&[12f32], &CPU).unwrap();
            let loss = ((a.as_tensor() * ca).unwrap().sum_all().unwrap()
                + (b.as_tensor() * cb).unwrap().sum_all().unwrap())
            .unwrap();
            loss.backward().unwrap()
        };
        // Below the threshold: returned norm, grads unchanged.
        let mut grads = grads_of();
        let norm = clip_grad_norm(&mut grads, [&a, &b], 100.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-9, "{norm}");
        assert_eq!(
            grads.get(&a).unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 4.0, 0.0]
        );
        // Above: scaled to max_norm; listing a var twice does not count it twice.
        let mut grads = grads_of();
        let norm = clip_grad_norm(&mut grads, [&a, &b, &b], 6.5).unwrap();
        assert!((norm - 13.0).abs() < 1e-9, "{norm}");
        let ga = grads.get(&a).unwrap().to_vec1::<f32>().unwrap();
        let gb = grads.get(&b).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (ga[0] - 1.5).abs() < 1e-5 && (ga[1] - 2.0).abs() < 1e-5,
            "{ga:?}"
        );
        assert!((gb[0] - 6.0).abs() < 1e-5, "{gb:?}");
        let mut again = grads;
        let after = clip_grad_norm(&mut again, [&a, &b], 1e9).unwrap();
        assert!((after - 6.5).abs() < 1e-5, "{after}");
        // Only the listed vars count and are scaled.
        let mut grads = grads_of();
        let norm = clip_grad_norm(&mut grads, [&a], 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        assert_eq!(grads.get(&b).unwrap().to_vec1::<f32>().unwrap(), vec![12.0]);
        // Bad max_norm.
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(clip_grad_norm(&mut grads_of(), [&a], bad).is_err());
        }
    }

    #[test]
    fn nan_gradients_are_errors() {
        let a = var(&[1.0, 2.0], DType::F32);
        let nan_grads = || {
            let c = Tensor::new(&[f32::NAN, 1.0], &CPU).unwrap();
            (a.as_tensor() * c)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let err = clip_grad_norm(&mut nan_grads(), [&a], 1.0).unwrap_err();
        assert!(matches!(err, TrainError::NonFiniteGradNorm { .. }), "{err}");
        let group = ParamGroup::new(
            "a",
            vec![("a".into(), a.clone())],
            LrSchedule::constant(0.1),
        );
        let mut opt = AdamW::new(vec![group], cfg(0.0)).unwrap();
        let err = opt.step(&nan_grads()).unwrap_err();
        assert!(matches!(err, TrainError::NonFiniteGradNorm { .. }), "{err}");
        assert_eq!(values(&a), vec![1.0, 2.0]);
        assert_eq!(opt.step_count(), 0);
    }

    #[test]
    fn new_rejects_duplicates_and_bad_configs() {
        let a = var(&[1.0], DType::F32);
        let b = var(&[1.0], DType::F32);
        let s = LrSchedule::constant(0.1);
        let dup_name = vec![
            ParamGroup::new("x", vec![("w".into(), a.clone())], s.clone()),
            ParamGroup::new("y", vec![("w".into(), b.clone())], s.clone()),
        ];
        let err = AdamW::new(dup_name, cfg(0.0)).unwrap_err();
        assert!(
            matches!(&err, TrainError::DuplicateVar { name } if name == "w"),
            "{err}"
        );
        let dup_var = vec![ParamGroup::new(
            "x",
            vec![("w1".into(), a.clone()), ("w2".into(), a.clone())],
            s.clone(),
        )];
        assert!(matches!(
            AdamW::new(dup_var, cfg(0.0)),
            Err(TrainError::DuplicateVar { .. })
        ));
        let dup_group = vec![
            ParamGroup::new("x", vec![("a".into(), a.clone())], s.clone()),
            ParamGroup::new("x", vec![("b".into(), b.clone())], s.clone()),
        ];
        assert!(AdamW::new(dup_group, cfg(0.0)).is_err());
        let int_var = Var::from_tensor(&Tensor::new(&[1u32], &CPU).unwrap()).unwrap();
        let g = vec![ParamGroup::new("x", vec![("i".into(), int_var)], s.clone())];
        assert!(AdamW::new(g, cfg(0.0)).is_err());
        let bad_sched = LrSchedule {
            total_steps: 0,
            ..LrSchedule::default()
        };
        let g = vec![ParamGroup::new(
            "x",
            vec![("a".into(), a.clone())],
            bad_sched,
        )];
        assert!(matches!(
            AdamW::new(g, cfg(0.0)),
            Err(TrainError::Config(_))
        ));
        for bad in [
            AdamWConfig {
                beta1: 1.0,
                ..cfg(0.0)
            },
            AdamWConfig {
                beta2: -0.1,
                ..cfg(0.0)
            },
            AdamWConfig {
                eps: 0.0,
                ..cfg(0.0)
            },
            AdamWConfig {
                weight_decay: f64::NAN,
                ..cfg(0.0)
            },
        ] {
            let g = vec![ParamGroup::new(
                "x",
                vec![("a".into(), a.clone())],
                s.clone(),
            )];
            assert!(matches!(AdamW::new(g, bad), Err(TrainError::Config(_))));
        }
    }

    #[test]
    fn with_prefix_selects_by_name() {
        let vars: HashMap<String, Var> = ["encoder.a", "encoder.b", "decoder.a"]
            .iter()
            .map(|n| (n.to_string(), var(&[1.0], DType::F32)))
            .collect();
        let g = ParamGroup::with_prefix("enc", &vars, "encoder.", LrSchedule::constant(1.0));
        let mut names: Vec<_> = g.vars.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["encoder.a", "encoder.b"]);
    }

    #[test]
    fn state_round_trips_and_load_is_strict() {
        let make = || {
            let a = var(&[1.0, 2.0], DType::F32);
            let b = var(&[3.0], DType::F32);
            let group = ParamGroup::new(
                "g",
                vec![("a".into(), a.clone()), ("b".into(), b.clone())],
                LrSchedule::constant(0.1),
            );
            (AdamW::new(vec![group], cfg(0.01)).unwrap(), a, b)
        };
        let (mut opt, a, b) = make();
        for _ in 0..3 {
            let loss = (a.sqr().unwrap().sum_all().unwrap() + b.sum_all().unwrap()).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let state = opt.state_tensors();
        let mut keys: Vec<_> = state.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec!["m.a", "m.b", "step", "v.a", "v.b"]);

        let (mut fresh, _, _) = make();
        fresh.load_state(&state).unwrap();
        assert_eq!(fresh.step_count(), 3);
        let again = fresh.state_tensors();
        for k in ["m.a", "m.b", "v.a", "v.b"] {
            assert_eq!(
                state[k].to_vec1::<f32>().unwrap(),
                again[k].to_vec1::<f32>().unwrap(),
                "{k}"
            );
        }

        let expect_err = |s: &HashMap<String, Tensor>, name: &str| {
            let (mut o, _, _) = make();
            let err = o.load_state(s).unwrap_err();
            assert!(
                matches!(&err, TrainError::StateMismatch { name: n, .. } if n == name),
                "{err}"
            );
            assert!(err.to_string().contains(name), "{err}");
            assert_eq!(o.step_count(), 0, "state unchanged on error");
        };
        let mut missing = state.clone();
        missing.remove("v.b");
        expect_err(&missing, "v.b");
        let mut no_step = state.clone();
        no_step.remove("step");
        expect_err(&no_step, "step");
        let mut extra = state.clone();
        extra.insert("m.zzz".into(), Tensor::zeros(1, DType::F32, &CPU).unwrap());
        expect_err(&extra, "m.zzz");
        let mut shape = state.clone();
        shape.insert("m.a".into(), Tensor::zeros(3, DType::F32, &CPU).unwrap());
        expect_err(&shape, "m.a");
        let mut neg = state.clone();
        neg.insert("step".into(), Tensor::new(-1i64, &CPU).unwrap());
        expect_err(&neg, "step");
        let mut float_step = state.clone();
        float_step.insert("step".into(), Tensor::new(3f32, &CPU).unwrap());
        expect_err(&float_step, "step");
    }
}
