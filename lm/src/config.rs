//! The LM's shape, read and written as a Hugging Face `config.json`.
//!
//! The field names are those of `transformers.LlamaConfig`, so a checkpoint directory written
//! here loads with `LlamaForCausalLM.from_pretrained` and one written by `save_pretrained` loads
//! here. Reading is lenient about the many HF fields that do not change the computation
//! (`bos_token_id`, `use_cache`, ...), but strict about those that would: a config that asks for
//! attention or MLP biases, another activation, or RoPE scaling is an error, not a model that
//! silently computes something else.
//!
//! Two HF spellings of the RoPE base are accepted: `rope_theta` at the top level (transformers
//! 4.x) and `rope_parameters.rope_theta` (transformers 5.x). Writing uses the top-level form,
//! which both read.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::{LmError, Result};

/// Shape and constants of a LLaMA-style decoder (HF `LlamaConfig` field names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); equal to `num_attention_heads` for plain MHA.
    pub num_key_value_heads: usize,
    /// Per-head width; `None` means `hidden_size / num_attention_heads`. See [`Self::head_dim`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Longest sequence the RoPE table covers (positions `0..max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// Whether `lm_head` shares the embedding matrix (then no `lm_head.weight` is stored).
    pub tie_word_embeddings: bool,
    /// Std of the normal initialisation of fresh weights (HF's default 0.02).
    pub initializer_range: f64,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_init_range() -> f64 {
    0.02
}
fn default_act() -> String {
    "silu".into()
}

/// transformers 5.x nests the RoPE base here.
#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

/// What an HF `config.json` may contain, before the checks that make it a [`LlamaConfig`].
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_init_range")]
    initializer_range: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    model_type: Option<String>,
}

impl TryFrom<RawConfig> for LlamaConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> std::result::Result<Self, String> {
        if let Some(t) = raw.model_type.as_deref() {
            if t != "llama" {
                return Err(format!(
                    "model_type {t:?} is not supported (only \"llama\")"
                ));
            }
        }
        if raw.hidden_act != "silu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only \"silu\")",
                raw.hidden_act
            ));
        }
        if raw.attention_bias || raw.mlp_bias {
            return Err("attention_bias / mlp_bias are not supported (LLaMA has no biases)".into());
        }
        if raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is not supported (plain RoPE only)".into());
        }
        let mut rope_theta = raw.rope_theta;
        if let Some(p) = raw.rope_parameters {
            if let Some(kind) = p.rope_type.as_deref() {
                if kind != "default" {
                    return Err(format!(
                        "rope_type {kind:?} is not supported (plain RoPE only)"
                    ));
                }
            }
            rope_theta = rope_theta.or(p.rope_theta);
        }
        Ok(LlamaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw.head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: rope_theta.unwrap_or_else(default_theta),
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            initializer_range: raw.initializer_range,
        })
    }
}

/// The `torch_dtype` string HF writes for a candle dtype.
pub(crate) fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

impl LlamaConfig {
    /// Per-head width of queries, keys and values.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or_else(|| {
            self.hidden_size
                .checked_div(self.num_attention_heads)
                .unwrap_or(0)
        })
    }

    /// Query heads per key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads
            .checked_div(self.num_key_value_heads)
            .unwrap_or(0)
    }

    /// Checks the sizes fit together; the error names the offending fields.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(LmError::Config(msg));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.vocab_size > u32::MAX as usize {
            return bad(format!(
                "vocab_size {} does not fit u32 token ids",
                self.vocab_size
            ));
        }
        match self.head_dim {
            Some(0) => return bad("head_dim must be positive".into()),
            Some(_) => {}
            None => {
                if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
                    return bad(format!(
                        "hidden_size {} does not divide into num_attention_heads {} \
                         (set head_dim explicitly for such shapes)",
                        self.hidden_size, self.num_attention_heads
                    ));
                }
            }
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even (RoPE rotates pairs)",
                self.head_dim()
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_key_value_heads {} does not divide num_attention_heads {}",
                self.num_key_value_heads, self.num_attention_heads
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!(
                "rms_norm_eps {} must be positive",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return bad(format!(
                "initializer_range {} must be non-negative",
                self.initializer_range
            ));
        }
        Ok(())
    }

    /// Parameters outside the embedding and the output head (Kaplan et al.'s `N`, the count
    /// scaling laws are fitted against): attention and MLP matrices and all RMSNorm weights.
    pub fn non_embedding_params(&self) -> usize {
        let d = self.hidden_size;
        let hd = self.head_dim();
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let attn = d * q + 2 * d * kv + q * d;
        let mlp = 3 * d * self.intermediate_size;
        let norms = 2 * d;
        self.num_hidden_layers * (attn + mlp + norms) + d
    }

    /// Every stored parameter: [`Self::non_embedding_params`] plus the embedding, plus the
    /// output head unless it is tied to the embedding.
    pub fn params(&self) -> usize {
        let table = self.vocab_size * self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { table };
        self.non_embedding_params() + table + head
    }

    /// The `config.json` object to write next to weights of `dtype`: these fields plus what
    /// `transformers` needs to pick the class (`architectures`, `model_type`) and the weights'
    /// dtype, and the HF fields that state this model has no biases and uses SiLU.
    pub(crate) fn to_hf_json(&self, dtype: DType) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "torch_dtype": torch_dtype_name(dtype),
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
        });
        if let (Some(obj), Ok(serde_json::Value::Object(fields))) =
            (v.as_object_mut(), serde_json::to_value(self))
        {
            obj.extend(fields);
            // HF writes the resolved head width; so do we, so readers need not derive it.
            obj.insert("head_dim".into(), self.head_dim().into());
        }
        v
    }
}

/// The LM's shape; the vocabulary size follows from the text tokenizer and the codebook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_max_positions() -> usize {
    256
}

fn default_rope_theta() -> f64 {
    10_000.0
}

impl LmShape {
    pub fn llama_config(&self, vocab_size: usize) -> Result<LlamaConfig> {
        let mut v = serde_json::to_value(self).map_err(|e| LmError::Config(e.to_string()))?;
        v["vocab_size"] = vocab_size.into();
        v["rms_norm_eps"] = 1e-5.into();
        if self.num_key_value_heads.is_none() {
            v["num_key_value_heads"] = self.num_attention_heads.into();
        }
        let cfg: LlamaConfig =
            serde_json::from_value(v).map_err(|e| LmError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: false,
            initializer_range: 0.02,
        }
    }

    #[test]
    fn reads_both_hf_spellings_and_defaults() {
        let v4 = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "rope_theta": 500000.0,
            "bos_token_id": 1, "use_cache": true, "rope_scaling": null}"#;
        let c: LlamaConfig = serde_json::from_str(v4).unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim(), 4);
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert!(!c.tie_word_embeddings);
        let v5 = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 6, "rope_parameters": {"rope_theta": 1000.0, "rope_type": "default"},
            "model_type": "llama", "dtype": "float32"}"#;
        let c: LlamaConfig = serde_json::from_str(v5).unwrap();
        assert_eq!((c.head_dim(), c.rope_theta, c.kv_groups()), (6, 1000.0, 2));
    }

    #[test]
    fn rejects_features_that_change_the_computation() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2"#;
        for extra in [
            r#""attention_bias": true"#,
            r#""hidden_act": "gelu""#,
            r#""rope_scaling": {"type": "linear", "factor": 2.0}"#,
            r#""rope_parameters": {"rope_theta": 1.0, "rope_type": "llama3"}"#,
            r#""model_type": "qwen2""#,
        ] {
            let json = format!("{{{base}, {extra}}}");
            let err = serde_json::from_str::<LlamaConfig>(&json).unwrap_err();
            assert!(err.to_string().contains("not supported"), "{extra}: {err}");
        }
    }

    #[test]
    fn validate_names_the_problem() {
        assert!(tiny().validate().is_ok());
        type Edit = fn(&mut LlamaConfig);
        let cases: [(Edit, &str); 5] = [
            (|c| c.num_attention_heads = 5, "does not divide into"),
            (|c| c.num_key_value_heads = 3, "num_key_value_heads 3"),
            (|c| c.vocab_size = 0, "vocab_size must be positive"),
            (|c| c.head_dim = Some(7), "must be even"),
            (|c| c.rms_norm_eps = 0.0, "rms_norm_eps"),
        ];
        for (edit, want) in cases {
            let mut c = tiny();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
        // an explicit head_dim makes a non-dividing width legal (as in HF)
        let mut c = tiny();
        c.hidden_size = 30;
        c.head_dim = Some(8);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn parameter_counts() {
        let c = tiny();
        // per layer: q 32x32, k,v 32x16 each, o 32x32, mlp 3x32x48, 2 norms of 32
        let layer = 1024 + 512 + 512 + 1024 + 3 * 32 * 48 + 64;
        assert_eq!(c.non_embedding_params(), 2 * layer + 32);
        assert_eq!(c.params(), 2 * layer + 32 + 2 * 50 * 32);
        let tied = LlamaConfig {
            tie_word_embeddings: true,
            ..c
        };
        assert_eq!(tied.params(), 2 * layer + 32 + 50 * 32);
    }

    #[test]
    fn hf_json_round_trips() {
        let c = LlamaConfig {
            head_dim: Some(8),
            ..tiny()
        };
        let v = c.to_hf_json(DType::BF16);
        assert_eq!(v["model_type"], "llama");
        assert_eq!(v["torch_dtype"], "bfloat16");
        assert_eq!(v["architectures"][0], "LlamaForCausalLM");
        let back: LlamaConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        // a derived head_dim is written resolved and reads back equal in effect
        let v = tiny().to_hf_json(DType::F32);
        assert_eq!(v["head_dim"], 8);
        let back: LlamaConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back.head_dim(), 8);
    }
}
