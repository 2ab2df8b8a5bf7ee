//! What to adapt and how strongly: [`LoraTarget`] (the projections, by their Hugging Face
//! names) and [`LoraConfig`] (rank, alpha, targets, seed).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;
use crate::error::{LmError, Result};

/// One linear projection of a LLaMA decoder layer, named as in HF `LlamaForCausalLM` (and as
/// PEFT's `target_modules` names them), so configs read the same in both worlds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LoraTarget {
    #[serde(rename = "q_proj")]
    QProj,
    #[serde(rename = "k_proj")]
    KProj,
    #[serde(rename = "v_proj")]
    VProj,
    #[serde(rename = "o_proj")]
    OProj,
    #[serde(rename = "gate_proj")]
    GateProj,
    #[serde(rename = "up_proj")]
    UpProj,
    #[serde(rename = "down_proj")]
    DownProj,
}

impl LoraTarget {
    /// Every target, in layer order (attention, then MLP).
    pub const ALL: [LoraTarget; 7] = [
        Self::QProj,
        Self::KProj,
        Self::VProj,
        Self::OProj,
        Self::GateProj,
        Self::UpProj,
        Self::DownProj,
    ];

    /// The HF module name (`q_proj`, ..., `down_proj`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::QProj => "q_proj",
            Self::KProj => "k_proj",
            Self::VProj => "v_proj",
            Self::OProj => "o_proj",
            Self::GateProj => "gate_proj",
            Self::UpProj => "up_proj",
            Self::DownProj => "down_proj",
        }
    }

    /// The module's path inside a decoder layer (`self_attn.q_proj`, `mlp.down_proj`).
    pub fn module_path(self) -> &'static str {
        match self {
            Self::QProj => "self_attn.q_proj",
            Self::KProj => "self_attn.k_proj",
            Self::VProj => "self_attn.v_proj",
            Self::OProj => "self_attn.o_proj",
            Self::GateProj => "mlp.gate_proj",
            Self::UpProj => "mlp.up_proj",
            Self::DownProj => "mlp.down_proj",
        }
    }

    /// Position in [`Self::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// `(in_features, out_features)` of this projection in a model of shape `base`; its HF
    /// weight is `(out_features, in_features)`.
    pub fn dims(self, base: &LlamaConfig) -> (usize, usize) {
        let d = base.hidden_size;
        let q = base.num_attention_heads * base.head_dim();
        let kv = base.num_key_value_heads * base.head_dim();
        let ff = base.intermediate_size;
        match self {
            Self::QProj => (d, q),
            Self::KProj | Self::VProj => (d, kv),
            Self::OProj => (q, d),
            Self::GateProj | Self::UpProj => (d, ff),
            Self::DownProj => (ff, d),
        }
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

impl FromStr for LoraTarget {
    type Err = LmError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.hf_name() == s)
            .ok_or_else(|| {
                LmError::Config(format!(
                    "lora target {s:?} is not one of q_proj, k_proj, v_proj, o_proj, \
                     gate_proj, up_proj, down_proj"
                ))
            })
    }
}

fn default_seed() -> u64 {
    0
}

/// The adapters' hyper-parameters. Field names are ours; PEFT's spellings (`r`, `lora_alpha`,
/// `target_modules`) are read too, so a PEFT `adapter_config.json`'s values can be pasted in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Inner width of each adapter (`A` is `(rank, in)`, `B` is `(out, rank)`).
    #[serde(alias = "r")]
    pub rank: usize,
    /// The update is scaled by `alpha / rank`, so changing the rank does not change the
    /// initial step size of a tuned learning rate (the LoRA paper's convention).
    #[serde(alias = "lora_alpha")]
    pub alpha: f64,
    /// The projections adapted in every layer.
    #[serde(alias = "target_modules")]
    pub targets: BTreeSet<LoraTarget>,
    /// Seeds the `A` initialisation (per tensor name, so independent of creation order).
    #[serde(default = "default_seed")]
    pub seed: u64,
}

impl LoraConfig {
    /// A config adapting `targets` with `rank` and `alpha`, seed 0.
    pub fn new(rank: usize, alpha: f64, targets: impl IntoIterator<Item = LoraTarget>) -> Self {
        Self {
            rank,
            alpha,
            targets: targets.into_iter().collect(),
            seed: default_seed(),
        }
    }

    /// `alpha / rank`, the factor on `B A x`.
    pub fn scale(&self) -> f64 {
        if self.rank == 0 {
            0.0
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks the config against the model it adapts; the error names the bad parameter.
    pub fn check(&self, base: &LlamaConfig) -> Result<()> {
        let bad = |msg: String| Err(LmError::Config(format!("lora: {msg}")));
        if self.rank == 0 {
            return bad("rank must be positive".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha {} must be finite and positive", self.alpha));
        }
        if self.targets.is_empty() {
            return bad("targets must name at least one projection".into());
        }
        if base.num_hidden_layers == 0 {
            return bad("the base model has no layers to adapt".into());
        }
        for &t in &self.targets {
            let (i, o) = t.dims(base);
            if self.rank > i.min(o) {
                return bad(format!(
                    "rank {} is larger than {t}'s dims ({i} in, {o} out): \
                     a low-rank update must have rank <= min(in, out)",
                    self.rank
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::tests::tiny_base;

    #[test]
    fn serde_uses_hf_names_and_peft_aliases() {
        let c = LoraConfig::new(4, 8.0, [LoraTarget::VProj, LoraTarget::QProj]);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"rank":4,"alpha":8.0,"targets":["q_proj","v_proj"],"seed":0}"#
        );
        let back: LoraConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let peft = r#"{"r": 2, "lora_alpha": 16, "target_modules": ["down_proj", "o_proj"]}"#;
        let p: LoraConfig = serde_json::from_str(peft).unwrap();
        assert_eq!((p.rank, p.scale(), p.seed), (2, 8.0, 0));
        assert_eq!(
            p.targets.into_iter().collect::<Vec<_>>(),
            [LoraTarget::OProj, LoraTarget::DownProj]
        );
        let bad = r#"{"rank": 2, "alpha": 1, "targets": ["qkv_proj"]}"#;
        assert!(serde_json::from_str::<LoraConfig>(bad).is_err());
        let extra = r#"{"rank": 2, "alpha": 1, "targets": ["q_proj"], "dropout": 0.1}"#;
        assert!(serde_json::from_str::<LoraConfig>(extra).is_err());
        assert_eq!("up_proj".parse::<LoraTarget>().unwrap(), LoraTarget::UpProj);
        assert!("lm_head".parse::<LoraTarget>().is_err());
    }

    #[test]
    fn dims_follow_the_base_shape() {
        let base = tiny_base();
        // hidden 16, 4 heads of 4, 2 kv heads, ffn 24
        assert_eq!(LoraTarget::QProj.dims(&base), (16, 16));
        assert_eq!(LoraTarget::KProj.dims(&base), (16, 8));
        assert_eq!(LoraTarget::OProj.dims(&base), (16, 16));
        assert_eq!(LoraTarget::UpProj.dims(&base), (16, 24));
        assert_eq!(LoraTarget::DownProj.dims(&base), (24, 16));
    }

    #[test]
    fn check_names_the_bad_parameter() {
        let base = tiny_base();
        assert!(LoraConfig::new(8, 16.0, LoraTarget::ALL)
            .check(&base)
            .is_ok());
        let cases = [
            (
                LoraConfig::new(0, 1.0, [LoraTarget::QProj]),
                "rank must be positive",
            ),
            (
                LoraConfig::new(2, f64::NAN, [LoraTarget::QProj]),
                "alpha NaN",
            ),
            (
                LoraConfig::new(2, f64::INFINITY, [LoraTarget::QProj]),
                "alpha inf",
            ),
            (LoraConfig::new(2, 1.0, []), "targets must name"),
            // k_proj is 16 -> 8: rank 9 cannot fit it, though q_proj (16 -> 16) could
            (
                LoraConfig::new(9, 1.0, [LoraTarget::QProj, LoraTarget::KProj]),
                "rank 9 is larger than k_proj's dims (16 in, 8 out)",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.check(&base).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
