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
//! precision, then cast to the variable's dtype.

use std::collections::{HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, TrainError};
use crate::schedule::LrSchedule;

/// Name of the step counter in [`AdamW::state_tensors`].
pub const STEP_KEY: &str = "step";

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
    m: Tensor,
    v: Tensor,
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
                let md = moment_dtype(var.dtype());
                let m = Tensor::zeros(var.shape(), md, var.device())
                    .ctx(|| format!("allocating AdamW moments of {name}"))?;
                let v = m.zeros_like().ctx(|| format!("allocating AdamW moments of {name}"))?;
                slots.push(Slot { name, var, m, v });
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

    /// One AdamW update with the gradients in `grads`. Variables without a gradient are left
    /// unchanged, their moments too (no weight decay either, as in PyTorch). A non-finite
    /// gradient norm is an error and nothing is updated.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        let present: Vec<&Tensor> = self.slots().filter_map(|s| grads.get(&s.var)).collect();
        let grad_norm = global_norm(&present)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFiniteGradNorm { norm: grad_norm });
        }
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
                let md = slot.m.dtype();
                let g = g.detach().to_dtype(md).ctx(ctx)?;
                let m = ((&slot.m * beta1).ctx(ctx)? + (&g * (1.0 - beta1)).ctx(ctx)?).ctx(ctx)?;
                let v = ((&slot.v * beta2).ctx(ctx)? + (g.sqr().ctx(ctx)? * (1.0 - beta2)).ctx(ctx)?)
                    .ctx(ctx)?;
                let denom = ((v.sqrt().ctx(ctx)? / bc2_sqrt).ctx(ctx)? + eps).ctx(ctx)?;
                let theta = slot.var.as_detached_tensor().to_dtype(md).ctx(ctx)?;
                let decayed = (theta * (1.0 - lr * weight_decay)).ctx(ctx)?;
                let delta = ((&m / &denom).ctx(ctx)? * (lr / bc1)).ctx(ctx)?;
                let next = (decayed - delta)
                    .ctx(ctx)?
                    .to_dtype(slot.var.dtype())
                    .ctx(ctx)?;
                slot.var.set(&next).ctx(ctx)?;
                slot.m = m.detach();
                slot.v = v.detach();
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
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
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
        let step = u64::try_from(step).map_err(|_| mismatch(STEP_KEY, format!("negative: {step}")))?;

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
                let t = t
                    .to_dtype(s.m.dtype())
                    .and_then(|t| t.to_device(s.var.device()))
                    .and_then(|t| t.contiguous())
                    .ctx(|| format!("loading optimizer state {key}"))?;
                pair.push(t.detach());
                expected.insert(key);
            }
            new_moments.push(pair);
        }
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !expected.contains(*k)).collect();
        extra.sort();
        if let Some(k) = extra.first() {
            return Err(mismatch(
                k,
                "not a moment of any optimized variable".into(),
            ));
        }
        let slots = self.groups.iter_mut().flat_map(|g| g.slots.iter_mut());
        for (slot, mut pair) in slots.zip(new_moments) {
            if let (Some(v), Some(m)) = (pair.pop(), pair.pop()) {
                slot.m = m;
                slot.v = v;
            }
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
        let acc = moment_dtype(g.dtype());
        let p = g
            .to_dtype(acc)
            .and_then(|g| g.sqr())
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_dtype(DType::F64))
            .ctx(ctx)?;
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

/// Scales the gradients of `vars` in place so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1)
/// and returns the norm before clipping. Variables without a gradient are skipped; a variable
/// listed twice counts once. A non-finite norm is an error, so training stops loudly on NaN.
pub fn clip_grad_norm<'a>(
    grads: &mut GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    max_norm: f64,
) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(TrainError::Config(format!(
            "clip_grad_norm: max_norm must be finite and > 0, got {max_norm}"
        )));
    }
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
