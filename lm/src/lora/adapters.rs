//! [`Adapters`]: one [`LoraLinear`] per (layer, target) of a base model, plus the caller's
//! extra trainables, all variables of one candle `VarMap`.
//!
//! The `VarMap` holds every trainable tensor and nothing else, under the names the adapter file
//! uses, so the optimizer is given exactly [`Adapters::named_vars`], and the trainer's
//! checkpoint (which saves and restores a `VarMap` by name) resumes them bit-exactly. The frozen
//! base is never a variable, so gradients cannot reach it.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarMap};
use vqrae_train::init::SeededVarMap;

use super::config::{LoraConfig, LoraTarget};
use super::linear::LoraLinear;
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};

/// Prefix of every adapter tensor's name (PEFT's, for a `LlamaForCausalLM`); extra trainables
/// may not use it.
pub const LORA_PREFIX: &str = "base_model.model.";

/// Which matrix of an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraPart {
    /// `lora_A`, `(rank, in)`.
    A,
    /// `lora_B`, `(out, rank)`.
    B,
}

/// The name of an adapter matrix, as PEFT saves a `LlamaForCausalLM`'s:
/// `base_model.model.model.layers.{layer}.self_attn.q_proj.lora_A.weight`.
pub fn lora_tensor_name(layer: usize, target: LoraTarget, part: LoraPart) -> String {
    let part = match part {
        LoraPart::A => "lora_A",
        LoraPart::B => "lora_B",
    };
    format!(
        "{LORA_PREFIX}model.layers.{layer}.{}.{part}.weight",
        target.module_path()
    )
}

/// Every adapter tensor `config` puts on `base`, with its shape.
pub(crate) fn expected_tensors(
    base: &LlamaConfig,
    config: &LoraConfig,
) -> Vec<(String, [usize; 2])> {
    let r = config.rank;
    let mut out = Vec::with_capacity(base.num_hidden_layers * config.targets.len() * 2);
    for layer in 0..base.num_hidden_layers {
        for &t in &config.targets {
            let (i, o) = t.dims(base);
            out.push((lora_tensor_name(layer, t, LoraPart::A), [r, i]));
            out.push((lora_tensor_name(layer, t, LoraPart::B), [o, r]));
        }
    }
    out
}

/// Whether `name` may name an extra trainable (it must not collide with the adapters' names,
/// nor with safetensors' reserved `__metadata__`).
pub(crate) fn check_extra_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.starts_with(LORA_PREFIX) || name == "__metadata__" {
        return Err(format!(
            "extra trainable name {name:?} is empty, reserved, or starts with {LORA_PREFIX:?}"
        ));
    }
    Ok(())
}

/// Low-rank adapters on every targeted projection of a frozen LLaMA, plus extra trainables.
pub struct Adapters {
    base: LlamaConfig,
    config: LoraConfig,
    varmap: VarMap,
    /// `layers[l][target.index()]`.
    layers: Vec<[Option<LoraLinear>; 7]>,
    extras: BTreeMap<String, Tensor>,
    device: Device,
}

impl Adapters {
    /// Fresh adapters for `base`, initialised as PEFT does: `A` kaiming-uniform with
    /// `a = sqrt(5)`, i.e. uniform on `[-1/sqrt(in), 1/sqrt(in)]`, seeded by
    /// `(config.seed, tensor name)`; `B` zero, so the adapted model starts equal to the base.
    pub fn new(base: &LlamaConfig, config: LoraConfig, device: &Device) -> Result<Self> {
        config.check(base)?;
        let seeded = SeededVarMap::new(config.seed);
        let vb = seeded.var_builder(DType::F32, device);
        for (name, [rows, cols]) in expected_tensors(base, &config) {
            let init = if name.contains(".lora_A.") {
                let bound = 1.0 / (cols as f64).sqrt();
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            } else {
                Init::Const(0.0)
            };
            vb.get_with_hints((rows, cols), &name, init)
                .map_err(|e| LmError::candle(format!("creating {name}"), e))?;
        }
        Self::assemble(base, config, seeded.varmap, device)
    }

    /// Builds the adapters over `varmap`, which holds every expected adapter tensor (shapes
    /// already checked) and, under any other names, the extra trainables.
    pub(crate) fn assemble(
        base: &LlamaConfig,
        config: LoraConfig,
        varmap: VarMap,
        device: &Device,
    ) -> Result<Self> {
        let vars = lock_vars(&varmap)?;
        let scale = config.scale();
        let mut layers: Vec<[Option<LoraLinear>; 7]> = (0..base.num_hidden_layers)
            .map(|_| Default::default())
            .collect();
        for (l, slots) in layers.iter_mut().enumerate() {
            for &t in &config.targets {
                let get = |part| {
                    let name = lora_tensor_name(l, t, part);
                    vars.get(&name)
                        .map(|v| v.as_tensor().clone())
                        .ok_or_else(|| LmError::Config(format!("lora: missing tensor {name}")))
                };
                slots[t.index()] = Some(LoraLinear::new(
                    get(LoraPart::A)?,
                    get(LoraPart::B)?,
                    scale,
                )?);
            }
        }
        let extras = vars
            .iter()
            .filter(|(k, _)| !k.starts_with(LORA_PREFIX))
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        Ok(Self {
            base: base.clone(),
            config,
            varmap,
            layers,
            extras,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The shape of the base model these adapters are for.
    pub fn base_config(&self) -> &LlamaConfig {
        &self.base
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.scale()
    }

    /// The adapter of `target` in `layer`; `None` when that module is not adapted (or `layer`
    /// is past the base's layers).
    pub fn get(&self, layer: usize, target: LoraTarget) -> Option<&LoraLinear> {
        self.layers.get(layer)?.get(target.index())?.as_ref()
    }

    /// `scale * (x A^T) B^T` of `target` in `layer` for `x: (..., in)`, in `x`'s dtype;
    /// `None` when that module is not adapted.
    pub fn delta(&self, layer: usize, target: LoraTarget, x: &Tensor) -> Option<Result<Tensor>> {
        self.get(layer, target).map(|m| m.delta(x))
    }

    /// `base_out + delta(x)` (in `base_out`'s dtype), or `base_out` unchanged when the module
    /// is not adapted: the one line the forward pass adds after each projection.
    pub fn add_delta(
        &self,
        layer: usize,
        target: LoraTarget,
        x: &Tensor,
        base_out: Tensor,
    ) -> Result<Tensor> {
        match self.get(layer, target) {
            None => Ok(base_out),
            Some(m) => {
                let d = m.delta(x)?.to_dtype(base_out.dtype())?;
                Ok(base_out.add(&d)?)
            }
        }
    }

    /// The deltas of `targets` concatenated along the last dim (zeros for a target that is not
    /// adapted), for a fused projection such as stacked q/k/v; `None` when none is adapted.
    pub fn stacked_delta(
        &self,
        layer: usize,
        targets: &[LoraTarget],
        x: &Tensor,
    ) -> Result<Option<Tensor>> {
        if targets.iter().all(|&t| self.get(layer, t).is_none()) {
            return Ok(None);
        }
        let lead = x
            .dims()
            .split_last()
            .map(|(_, l)| l.to_vec())
            .unwrap_or_default();
        let mut parts = Vec::with_capacity(targets.len());
        for &t in targets {
            match self.get(layer, t) {
                Some(m) => parts.push(m.delta(x)?),
                None => {
                    let mut dims = lead.clone();
                    dims.push(t.dims(&self.base).1);
                    parts.push(Tensor::zeros(dims, x.dtype(), x.device())?);
                }
            }
        }
        Ok(Some(Tensor::cat(&parts, lead.len())?))
    }

    /// `W + scale * B A` for the base weight `w: (out, in)` of `target` in `layer` (detached,
    /// `w`'s dtype): folds the adapter into a dense base for inference. `w` unchanged (after a
    /// shape check) when the module is not adapted.
    pub fn merged_weight(&self, w: &Tensor, layer: usize, target: LoraTarget) -> Result<Tensor> {
        match self.get(layer, target) {
            Some(m) => m.merged(w),
            None => {
                let (i, o) = target.dims(&self.base);
                if w.dims() != [o, i] {
                    return Err(LmError::Config(format!(
                        "lora: base weight of {target} has shape {:?}, expected ({o}, {i})",
                        w.dims()
                    )));
                }
                Ok(w.clone())
            }
        }
    }

    /// Registers an extra trainable (new embedding or head rows, the projector's weights) with
    /// the initial value `init`, copied to f32 on the adapters' device; it is trained, saved and
    /// restored with the adapters. Returns the variable's tensor (shared storage).
    pub fn register_extra(&mut self, name: &str, init: &Tensor) -> Result<Tensor> {
        check_extra_name(name).map_err(LmError::Config)?;
        let value = init
            .detach()
            .to_dtype(DType::F32)?
            .to_device(&self.device)?;
        let var = Var::from_tensor(&value)?;
        {
            let mut data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| LmError::Config("lora: variable map lock poisoned".into()))?;
            if data.contains_key(name) {
                return Err(LmError::Config(format!(
                    "lora: extra trainable {name:?} is already registered"
                )));
            }
            data.insert(name.to_string(), var.clone());
        }
        let t = var.as_tensor().clone();
        self.extras.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The extra trainable `name` (shares storage with its variable).
    pub fn extra(&self, name: &str) -> Option<&Tensor> {
        self.extras.get(name)
    }

    /// The extra trainable `name`, which must exist with shape `dims` (the error names it):
    /// what a caller uses after [`Self::load`] to pick up the rows and projector it registered.
    pub fn require_extra(&self, name: &str, dims: &[usize]) -> Result<&Tensor> {
        match self.extras.get(name) {
            None => Err(LmError::Config(format!(
                "lora: extra trainable {name:?} is missing"
            ))),
            Some(t) if t.dims() != dims => Err(LmError::Config(format!(
                "lora: extra trainable {name:?} has shape {:?}, expected {dims:?}",
                t.dims()
            ))),
            Some(t) => Ok(t),
        }
    }

    /// The extra trainables' names, sorted.
    pub fn extra_names(&self) -> Vec<&str> {
        self.extras.keys().map(String::as_str).collect()
    }

    /// The `VarMap` holding every trainable (adapters and extras) and nothing else.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Every trainable variable with its name, sorted by name (an optimizer's parameter group).
    pub fn named_vars(&self) -> Result<Vec<(String, Var)>> {
        let mut v: Vec<_> = lock_vars(&self.varmap)?.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Trainable parameters: adapters plus extras.
    pub fn num_trainable_params(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Parameters of the adapters alone: `layers * sum over targets of rank * (in + out)`.
    pub fn num_lora_params(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .flatten()
            .map(|m| m.a().elem_count() + m.b().elem_count())
            .sum()
    }
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters")
            .field("config", &self.config)
            .field("layers", &self.layers.len())
            .field("extras", &self.extras.keys().collect::<Vec<_>>())
            .field("trainable_params", &self.num_trainable_params())
            .finish()
    }
}

/// A snapshot of the map's variables (the `Var`s share storage with the map's).
pub(crate) fn lock_vars(map: &VarMap) -> Result<HashMap<String, Var>> {
    let data = map
        .data()
        .lock()
        .map_err(|_| LmError::Config("lora: variable map lock poisoned".into()))?;
    Ok(data.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use vqrae_train::init::seeded_randn;

    use super::*;
    use crate::lora::tests::tiny_base;

    pub(crate) fn all_targets(rank: usize) -> LoraConfig {
        LoraConfig::new(rank, 2.0 * rank as f64, LoraTarget::ALL)
    }

    /// Gives every `B` seeded random values, so the deltas are not zero.
    pub(crate) fn randomise_b(a: &Adapters) -> Result<()> {
        for (i, (name, var)) in a.named_vars()?.into_iter().enumerate() {
            if name.contains(".lora_B.") {
                var.set(&seeded_randn(
                    var.shape(),
                    0.0,
                    0.5,
                    100 + i as u64,
                    a.device(),
                )?)?;
            }
        }
        Ok(())
    }

    fn max_abs_diff(x: &Tensor, y: &Tensor) -> Result<f32> {
        Ok((x - y)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    }

    #[test]
    fn starts_at_the_base_with_peft_init() -> Result<()> {
        let dev = Device::Cpu;
        let base = tiny_base();
        let a = Adapters::new(&base, all_targets(2), &dev)?;
        let x = seeded_randn((2, 3, 16), 0.0, 1.0, 1, &dev)?;
        for t in [LoraTarget::QProj, LoraTarget::KProj, LoraTarget::UpProj] {
            let d = a.delta(1, t, &x).unwrap()?;
            assert_eq!(d.dims(), [2, 3, t.dims(&base).1]);
            assert_eq!(d.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        }
        let y = seeded_randn((2, 3, 16), 0.0, 1.0, 2, &dev)?;
        let same = a.add_delta(0, LoraTarget::QProj, &x, y.clone())?;
        assert_eq!(max_abs_diff(&same, &y)?, 0.0);
        // A is uniform on [-1/sqrt(in), 1/sqrt(in)], not degenerate, and seeded
        let m = a.get(0, LoraTarget::DownProj).unwrap();
        let av = m.a().flatten_all()?.to_vec1::<f32>()?;
        let bound = 1.0 / (24f32).sqrt();
        assert!(av.iter().all(|v| v.abs() <= bound + 1e-7));
        assert!(av.iter().any(|v| v.abs() > bound / 2.0));
        let again = Adapters::new(&base, all_targets(2), &dev)?;
        let other = Adapters::new(
            &base,
            LoraConfig {
                seed: 9,
                ..all_targets(2)
            },
            &dev,
        )?;
        let a2 = again
            .get(0, LoraTarget::DownProj)
            .unwrap()
            .a()
            .flatten_all()?;
        let a3 = other
            .get(0, LoraTarget::DownProj)
            .unwrap()
            .a()
            .flatten_all()?;
        assert_eq!(a2.to_vec1::<f32>()?, av);
        assert_ne!(a3.to_vec1::<f32>()?, av);
        // a module that is not adapted has no delta
        let qv = Adapters::new(&base, LoraConfig::new(2, 4.0, [LoraTarget::QProj]), &dev)?;
        assert!(qv.delta(0, LoraTarget::VProj, &x).is_none());
        assert!(qv.delta(5, LoraTarget::QProj, &x).is_none());
        Ok(())
    }

    #[test]
    fn delta_equals_the_explicit_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let a = Adapters::new(&tiny_base(), all_targets(3), &dev)?;
        randomise_b(&a)?;
        let x = seeded_randn((2, 5, 24), 0.0, 1.0, 3, &dev)?;
        let m = a.get(1, LoraTarget::DownProj).unwrap();
        assert_eq!((m.rank(), m.dims(), m.scale()), (3, (24, 16), 2.0));
        let got = a.delta(1, LoraTarget::DownProj, &x).unwrap()?;
        let ba = m.b().matmul(m.a())?; // (out, in)
        let want = (x.reshape((10, 24))?.matmul(&ba.t()?)? * 2.0)?.reshape((2, 5, 16))?;
        assert!(max_abs_diff(&got, &want)? < 1e-5);
        // a bf16 activation gets a bf16 delta, computed in f32
        let got16 = m.delta(&x.to_dtype(DType::BF16)?)?;
        assert_eq!(got16.dtype(), DType::BF16);
        assert!(max_abs_diff(&got16.to_dtype(DType::F32)?, &want)? < 0.1);
        // the wrong width is an error, not a panic
        assert!(m.delta(&seeded_randn((2, 16), 0.0, 1.0, 4, &dev)?).is_err());
        Ok(())
    }

    #[test]
    fn merged_weight_equals_base_plus_side_path() -> Result<()> {
        let dev = Device::Cpu;
        let a = Adapters::new(&tiny_base(), all_targets(2), &dev)?;
        randomise_b(&a)?;
        let x = seeded_randn((4, 16), 0.0, 1.0, 5, &dev)?;
        let w = seeded_randn((8, 16), 0.0, 0.2, 6, &dev)?; // k_proj: 16 -> 8
        let merged = a.merged_weight(&w, 1, LoraTarget::KProj)?;
        let folded = x.matmul(&merged.t()?)?;
        let side = a.add_delta(1, LoraTarget::KProj, &x, x.matmul(&w.t()?)?)?;
        assert!(max_abs_diff(&folded, &side)? < 1e-5);
        assert!(max_abs_diff(&merged, &w)? > 1e-3);
        assert!(a.merged_weight(&w.t()?, 1, LoraTarget::KProj).is_err());
        let q_only = Adapters::new(
            &tiny_base(),
            LoraConfig::new(2, 2.0, [LoraTarget::QProj]),
            &dev,
        )?;
        let same = q_only.merged_weight(&w, 0, LoraTarget::KProj)?;
        assert_eq!(max_abs_diff(&same, &w)?, 0.0);
        assert!(q_only
            .merged_weight(&w, 0, LoraTarget::VProj.max(LoraTarget::OProj))
            .is_err());
        Ok(())
    }

    #[test]
    fn stacked_delta_fills_unadapted_parts_with_zeros() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = LoraConfig::new(2, 2.0, [LoraTarget::QProj, LoraTarget::VProj]);
        let a = Adapters::new(&tiny_base(), cfg, &dev)?;
        randomise_b(&a)?;
        let x = seeded_randn((2, 3, 16), 0.0, 1.0, 7, &dev)?;
        let qkv = [LoraTarget::QProj, LoraTarget::KProj, LoraTarget::VProj];
        let s = a.stacked_delta(0, &qkv, &x)?.unwrap();
        assert_eq!(s.dims(), [2, 3, 32]);
        let q = a.delta(0, LoraTarget::QProj, &x).unwrap()?;
        let v = a.delta(0, LoraTarget::VProj, &x).unwrap()?;
        assert_eq!(max_abs_diff(&s.narrow(2, 0, 16)?, &q)?, 0.0);
        assert_eq!(
            s.narrow(2, 16, 8)?.abs()?.sum_all()?.to_scalar::<f32>()?,
            0.0
        );
        assert_eq!(max_abs_diff(&s.narrow(2, 24, 8)?, &v)?, 0.0);
        let mlp = [LoraTarget::GateProj, LoraTarget::UpProj];
        assert!(a.stacked_delta(0, &mlp, &x)?.is_none());
        Ok(())
    }

    #[test]
    fn extras_and_parameter_counts() -> Result<()> {
        let dev = Device::Cpu;
        let mut a = Adapters::new(&tiny_base(), all_targets(2), &dev)?;
        // per layer: q 2*(16+16), k and v 2*(16+8), o 2*(16+16), gate and up and down 2*(16+24)
        let per_layer = 64 + 48 + 48 + 64 + 3 * 80;
        assert_eq!(a.num_lora_params(), 2 * per_layer);
        assert_eq!(a.num_trainable_params(), 2 * per_layer);
        let rows = seeded_randn((3, 16), 0.0, 0.02, 8, &dev)?;
        let t = a.register_extra("embed_tokens.new_rows", &rows)?;
        assert_eq!(max_abs_diff(&t, &rows)?, 0.0);
        assert_eq!(a.num_trainable_params(), 2 * per_layer + 48);
        assert_eq!(a.extra_names(), ["embed_tokens.new_rows"]);
        assert!(a.require_extra("embed_tokens.new_rows", &[3, 16]).is_ok());
        let wrong = a
            .require_extra("embed_tokens.new_rows", &[4, 16])
            .unwrap_err();
        assert!(wrong
            .to_string()
            .contains("has shape [3, 16], expected [4, 16]"));
        assert!(a.require_extra("projector", &[1]).is_err());
        for bad in [
            "embed_tokens.new_rows",
            "",
            "__metadata__",
            "base_model.model.x",
        ] {
            assert!(a.register_extra(bad, &rows).is_err(), "{bad:?}");
        }
        assert_eq!(a.named_vars()?.len(), 2 * 7 * 2 + 1);
        Ok(())
    }

    #[test]
    fn smollm2_rank8_on_every_projection_counts() -> Result<()> {
        // SmolLM2-135M's shape: 30 layers, width 576, 9 heads of 64, 3 kv heads, ffn 1536
        let base = LlamaConfig {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            max_position_embeddings: 8192,
            ..tiny_base()
        };
        let a = Adapters::new(
            &base,
            LoraConfig::new(8, 16.0, LoraTarget::ALL),
            &Device::Cpu,
        )?;
        // per layer: q, o 8*(576+576); k, v 8*(576+192); gate, up, down 8*(576+1536)
        assert_eq!(a.num_lora_params(), 30 * (2 * 9216 + 2 * 6144 + 3 * 16896));
        assert_eq!(a.num_lora_params(), 2_442_240);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Adapters>();
        assert!(format!("{a:?}").contains("trainable_params: 2442240"));
        Ok(())
    }

    #[test]
    fn gradients_reach_exactly_the_trainables() -> Result<()> {
        let dev = Device::Cpu;
        let base = tiny_base();
        let mut a = Adapters::new(&base, all_targets(2), &dev)?;
        randomise_b(&a)?;
        let proj = a.register_extra(
            "projector.weight",
            &seeded_randn((16, 8), 0.0, 0.3, 9, &dev)?,
        )?;
        // the frozen base: plain tensors, not variables
        let feats = seeded_randn((3, 8), 0.0, 1.0, 10, &dev)?;
        let h = feats.matmul(&proj.t()?)?; // (3, 16), through the extra
        let mut loss = Tensor::zeros((), DType::F32, &dev)?;
        let mut frozen = Vec::new();
        for l in 0..base.num_hidden_layers {
            for t in LoraTarget::ALL {
                let (i, o) = t.dims(&base);
                let x = if i == 16 {
                    h.clone()
                } else {
                    seeded_randn((3, i), 0.0, 1.0, 11, &dev)?
                };
                let w = seeded_randn((o, i), 0.0, 0.1, 12, &dev)?;
                let y = a.add_delta(l, t, &x, x.matmul(&w.t()?)?)?;
                loss = (loss + y.sqr()?.sum_all()?)?;
                frozen.push(w);
            }
        }
        let grads = loss.backward()?;
        // candle's store also keeps the gradients of untracked operands of tracked ops
        // (`base_out`, the input features): intermediates, not parameters. What matters: every
        // variable has one, the frozen weights have none, and the only
        // variables in the graph are the VarMap's (the base is plain tensors).
        let want: HashSet<_> = a.varmap().all_vars().iter().map(|v| v.id()).collect();
        let got: HashSet<_> = grads.get_ids().copied().collect();
        assert!(want.is_subset(&got));
        assert_eq!(want.len(), 2 * 7 * 2 + 1);
        for w in &frozen {
            assert!(!w.is_variable());
            assert!(grads.get(w).is_none());
        }
        for (name, var) in a.named_vars()? {
            let g = grads.get(var.as_tensor()).unwrap();
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
        }
        Ok(())
    }
}
