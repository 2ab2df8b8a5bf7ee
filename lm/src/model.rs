//! The LLaMA-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases.
//!
//! The model starts from **input embeddings** ([`Llama::forward_hidden`]), not token ids, so
//! text embeddings ([`Llama::embed`]), projected image features and image-code embeddings can be
//! mixed in one sequence by the caller. Logits are a separate step ([`Llama::logits`]) because
//! the callers need them at a few positions only (the last one during prefill, the image
//! positions in training); the `(B, T, vocab)` product is often the largest tensor of a step.
//!
//! Tensor names are those of Hugging Face `LlamaForCausalLM` ([`Llama::tensors`], in the
//! `weights` submodule with the assembly of a quantized model from parts); reading and
//! writing checkpoints is [`crate::checkpoint`], the inference-only weight fusion is
//! [`crate::fuse`], and growing the vocabulary is [`crate::grow`].
//!
//! **Training vs inference.** candle's fused `rms_norm`, `rope` and `softmax_last_dim` kernels
//! cut their outputs from the autograd graph without an error (docs/GPU.md). Every forward
//! takes `train: bool` and hands it to [`vqrae_train::ops`], the only place that looks at it,
//! choosing the fused kernels for inference and differentiable compositions for training.
//!
//! **Positions and masks.** Without a cache the sequence is plain causal at positions `0..T`.
//! With a [`KvCache`] the rows may be left-padded; the cache supplies each row's positions and
//! mask (see [`crate::cache`]) so that a padded row computes what it would alone.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use vqrae_train::ops;

use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};
use crate::fuse::Proj;

/// Kept at its old path for callers outside this crate (`vqrae-unified`); the checkpoint
/// format lives in [`crate::checkpoint`].
pub use crate::checkpoint::save_checkpoint;

mod weights;
pub(crate) use weights::LayerParts;

/// A bias-free linear layer initialised as HF initialises LLaMA (normal, `initializer_range`).
fn linear(
    in_dim: usize,
    out_dim: usize,
    init: Init,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    Ok(Linear::new(w, None))
}

#[derive(Clone, Debug)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps, train)
    }
}

/// The RoPE angles of one forward: `(T, hd/2)` or `(B, T, hd/2)`, in the model's dtype.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

#[derive(Clone, Debug)]
pub(crate) struct Attention {
    pub(crate) q_proj: Proj,
    pub(crate) k_proj: Proj,
    pub(crate) v_proj: Proj,
    pub(crate) o_proj: Proj,
    /// `[q; k; v]` stacked `(q + 2 kv, hidden)` after [`Llama::fuse_for_inference`]: one matmul
    /// instead of three. The separate projections are then views into it.
    pub(crate) qkv: Option<Proj>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &LlamaConfig, init: Init, vb: VarBuilder) -> candle_core::Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Self {
            q_proj: Proj::new(linear(d, h * hd, init, vb.pp("q_proj"))?),
            k_proj: Proj::new(linear(d, kv * hd, init, vb.pp("k_proj"))?),
            v_proj: Proj::new(linear(d, kv * hd, init, vb.pp("v_proj"))?),
            o_proj: Proj::new(linear(h * hd, d, init, vb.pp("o_proj"))?),
            qkv: None,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
        })
    }

    /// Every projection, in HF order (q, k, v, o).
    fn projections(&self) -> [(&'static str, &Proj); 4] {
        [
            ("self_attn.q_proj", &self.q_proj),
            ("self_attn.k_proj", &self.k_proj),
            ("self_attn.v_proj", &self.v_proj),
            ("self_attn.o_proj", &self.o_proj),
        ]
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.head_dim;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let (qn, kvn) = (self.heads * hd, self.kv_heads * hd);
        let (q, k, v) = match &self.qkv {
            Some(w) => {
                let y = w.forward(x)?;
                (
                    y.narrow(2, 0, qn)?,
                    y.narrow(2, qn, kvn)?,
                    y.narrow(2, qn + kvn, kvn)?,
                )
            }
            None => (
                self.q_proj.forward(x)?,
                self.k_proj.forward(x)?,
                self.v_proj.forward(x)?,
            ),
        };
        let q = heads(q, self.heads)?;
        let k = heads(k, self.kv_heads)?;
        let v = heads(v, self.kv_heads)?;
        let q = ops::rope(&q, &rope.cos, &rope.sin, train)?;
        let k = ops::rope(&k, &rope.cos, &rope.sin, train)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        if !train && t == 1 && x.device().is_cpu() && x.dtype() == DType::F32 {
            // one new token per row: one kernel instead of a gemm call per row and kv head
            let mask = mask
                .map(|m| m.flatten_all().and_then(|m| m.to_vec1::<f32>()))
                .transpose()?;
            let y = crate::decode_attention::one_token(&q, &k, &v, mask, (hd as f32).powf(-0.5))?;
            let y = y.reshape((b, 1, self.heads * hd))?;
            return self.o_proj.forward(&y);
        }
        let y = ops::attention(&q, &k, &v, mask, (hd as f64).powf(-0.5), train)?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * hd))?;
        self.o_proj.forward(&y)
    }
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub(crate) struct Mlp {
    pub(crate) gate_proj: Proj,
    pub(crate) up_proj: Proj,
    pub(crate) down_proj: Proj,
}

impl Mlp {
    fn new(cfg: &LlamaConfig, init: Init, vb: VarBuilder) -> candle_core::Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Proj::new(linear(d, i, init, vb.pp("gate_proj"))?),
            up_proj: Proj::new(linear(d, i, init, vb.pp("up_proj"))?),
            down_proj: Proj::new(linear(i, d, init, vb.pp("down_proj"))?),
        })
    }

    /// Every projection, in HF order (gate, up, down).
    fn projections(&self) -> [(&'static str, &Proj); 3] {
        [
            ("mlp.gate_proj", &self.gate_proj),
            ("mlp.up_proj", &self.up_proj),
            ("mlp.down_proj", &self.down_proj),
        ]
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // gate and up stay separate matmuls even when fused for inference: stacked, their
        // halves are strided views, and the elementwise silu * up on strided views cost more
        // at prefill than the saved matmul call (measured, docs/PERFORMANCE.md)
        let gate = self.gate_proj.forward(x)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&ops::silu_mul(&gate, &up)?)
    }
}

/// Pre-norm block: `x + attn(norm(x))`, then `h + mlp(norm(h))`.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    input_layernorm: RmsNorm,
    pub(crate) self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
}

impl Layer {
    fn new(cfg: &LlamaConfig, init: Init, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            self_attn: Attention::new(cfg, init, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(cfg, init, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let a = self.self_attn.forward(
            &self.input_layernorm.forward(x, train)?,
            rope,
            mask,
            cache,
            train,
        )?;
        let h = (x + a)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h, train)?)?;
        h + m
    }
}

/// A LLaMA-style causal LM over input embeddings (HF `LlamaForCausalLM` layout).
#[derive(Clone, Debug)]
pub struct Llama {
    pub(crate) cfg: LlamaConfig,
    /// `(vocab, hidden)`.
    pub(crate) embed_tokens: Tensor,
    pub(crate) layers: Vec<Layer>,
    norm: RmsNorm,
    /// `(vocab, hidden)`; the same tensor as `embed_tokens` when tied.
    pub(crate) lm_head: Proj,
    /// RoPE angle tables `(max_position_embeddings, head_dim / 2)` in the model dtype.
    cos: Tensor,
    sin: Tensor,
    /// Set by [`Llama::fuse_for_inference`]: the weights are no longer the variables they were
    /// built from, so training mode is refused.
    pub(crate) fused: bool,
}

/// The `(max_pos, hd/2)` cos and sin tables, computed in f32 the way HF computes them
/// (`inv_freq = 1 / theta^(2i/hd)`, angle = position * inv_freq) for bit-close parity.
fn rope_tables(
    cfg: &LlamaConfig,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim();
    let half = hd / 2;
    let max_pos = cfg.max_position_embeddings;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
        .collect();
    let mut cos = Vec::with_capacity(max_pos * half);
    let mut sin = Vec::with_capacity(max_pos * half);
    for p in 0..max_pos {
        for f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let cos = Tensor::from_vec(cos, (max_pos, half), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (max_pos, half), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

impl Llama {
    /// Builds the model from `vb`: a checkpoint's tensors, or fresh seeded weights through
    /// `vqrae_train::init::SeededVarMap` (normal with std `initializer_range`, norms at 1, as HF
    /// initialises LLaMA).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Self::build(cfg, vb).map_err(|e| LmError::candle("building the Llama model", e))
    }

    pub(crate) fn build(cfg: &LlamaConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: cfg.initializer_range,
        };
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let model = vb.pp("model");
        let embed_tokens = model
            .pp("embed_tokens")
            .get_with_hints((v, d), "weight", init)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| Layer::new(cfg, init, model.pp(format!("layers.{l}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::new(d, cfg.rms_norm_eps, model.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.pp("lm_head").get_with_hints((v, d), "weight", init)?
        };
        let (cos, sin) = rope_tables(cfg, vb.dtype(), vb.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head: Proj::new(Linear::new(lm_head, None)),
            cos,
            sin,
            fused: false,
        })
    }

    /// A model from named tensors (HF names), e.g. after [`Self::grow_vocab`].
    pub fn from_tensors(
        cfg: &LlamaConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::new(cfg, VarBuilder::from_tensors(tensors, dtype, device))
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// An empty [`KvCache`] for this model's shape, dtype and device.
    pub fn new_cache(&self, batch: usize, max_len: usize, left_pad: Vec<usize>) -> Result<KvCache> {
        KvCache::new(
            &self.cfg,
            batch,
            max_len,
            left_pad,
            self.device(),
            self.dtype(),
        )
    }

    /// Token embeddings `(B, T, hidden)` of `ids: (B, T)` u32; an id outside the vocabulary is
    /// an error (one small device-to-host read of the largest id).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids
            .dims2()
            .map_err(|e| LmError::candle("embed: ids must be (batch, seq)", e))?;
        if ids.dtype() != DType::U32 {
            return Err(LmError::Config(format!(
                "embed: ids must be u32, got {:?}",
                ids.dtype()
            )));
        }
        if b * t > 0 {
            let max = ids
                .max_all()
                .and_then(|m| m.to_scalar::<u32>())
                .map_err(|e| LmError::candle("embed: reading the largest id", e))?;
            if max as usize >= self.cfg.vocab_size {
                return Err(LmError::Config(format!(
                    "embed: token id {max} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        ids.flatten_all()
            .and_then(|flat| self.embed_tokens.embedding(&flat))
            .and_then(|e| e.reshape((b, t, self.cfg.hidden_size)))
            .map_err(|e| LmError::candle("embed", e))
    }

    /// Runs the decoder on `embeds: (B, T, hidden)` and returns the final-normed hidden states
    /// `(B, T, hidden)`.
    ///
    /// Without a cache the sequence is causal at positions `0..T`. With one, the `T` new columns
    /// are appended after `cache.len()` columns, with each row's left padding masked and its
    /// positions shifted (see [`crate::cache`]); `train` must then be false, because the cache's
    /// in-place writes are not differentiable.
    pub fn forward_hidden(
        &self,
        embeds: &Tensor,
        mut cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t, d) = embeds
            .dims3()
            .map_err(|e| LmError::candle("forward: embeds must be (batch, seq, hidden)", e))?;
        if b == 0 || t == 0 {
            return Err(LmError::Config(format!(
                "forward: empty input of shape {:?}",
                embeds.dims()
            )));
        }
        if d != self.cfg.hidden_size {
            return Err(LmError::Config(format!(
                "forward: embeddings of width {d}, the model's hidden_size is {}",
                self.cfg.hidden_size
            )));
        }
        if embeds.dtype() != self.dtype() {
            return Err(LmError::Config(format!(
                "forward: embeddings are {:?}, the model is {:?}",
                embeds.dtype(),
                self.dtype()
            )));
        }
        if train && self.fused {
            return Err(LmError::Config(
                "forward: a model fused for inference cannot train (its weights are copies)".into(),
            ));
        }
        if train && self.is_quantized() {
            return Err(LmError::Config(
                "forward: a quantized model cannot train (its projections are quantized blocks \
                 without gradients); load the GGUF dequantized for training"
                    .into(),
            ));
        }
        if train && cache.is_some() {
            return Err(LmError::Config(
                "forward: a KV cache is for inference; training mode takes none".into(),
            ));
        }
        let (rope, mask) = self.rope_and_mask(embeds, cache.as_deref(), train)?;
        let mut x = embeds.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, l));
            x = layer
                .forward(&x, &rope, mask.as_ref(), layer_cache, train)
                .map_err(|e| LmError::candle(format!("forward: layer {l}"), e))?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        self.norm
            .forward(&x, train)
            .map_err(|e| LmError::candle("forward: final norm", e))
    }

    /// The RoPE angles and the attention mask of one forward over `embeds: (B, T, hidden)`:
    /// causal at positions `0..T` without a cache; with one, each row's own positions and
    /// padding mask after the cached columns.
    fn rope_and_mask(
        &self,
        embeds: &Tensor,
        cache: Option<&KvCache>,
        train: bool,
    ) -> Result<(Rope, Option<Tensor>)> {
        let max_pos = self.cfg.max_position_embeddings;
        let dev = self.device();
        let (b, t, _) = embeds.dims3()?;
        Ok(match cache {
            None => {
                if t > max_pos {
                    return Err(LmError::Config(format!(
                        "forward: {t} positions exceed max_position_embeddings {max_pos}"
                    )));
                }
                let rope = Rope {
                    cos: self.cos.narrow(0, 0, t)?,
                    sin: self.sin.narrow(0, 0, t)?,
                };
                let mask = if t > 1 {
                    let m: Vec<f32> = (0..t)
                        .flat_map(|i| {
                            (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })
                        })
                        .collect();
                    Some(
                        Tensor::from_vec(m, (1, 1, t, t), dev)?
                            .to_dtype(ops::attention_dtype(embeds, train))?,
                    )
                } else {
                    None
                };
                (rope, mask)
            }
            Some(c) => {
                c.check_step(b, t)?;
                let pos = c.positions(t);
                if let Some(p) = pos.iter().find(|&&p| p as usize >= max_pos) {
                    return Err(LmError::Config(format!(
                        "forward: position {p} exceeds max_position_embeddings {max_pos}"
                    )));
                }
                let half = self.cfg.head_dim() / 2;
                let pos = Tensor::from_vec(pos, b * t, dev)?;
                let gather = |table: &Tensor| {
                    table
                        .index_select(&pos, 0)
                        .and_then(|x| x.reshape((b, t, half)))
                };
                let rope = Rope {
                    cos: gather(&self.cos)?,
                    sin: gather(&self.sin)?,
                };
                let keys = c.len() + t;
                let mask = c
                    .mask(t)
                    .map(|m| {
                        Tensor::from_vec(m, (b, 1, t, keys), dev)?
                            .to_dtype(ops::attention_dtype(embeds, train))
                    })
                    .transpose()?;
                (rope, mask)
            }
        })
    }

    /// Logits `(..., vocab)` in f32 of hidden states `(..., hidden)` (any leading shape, e.g.
    /// only the last position of a prefill).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims();
        let d = dims.last().copied().unwrap_or(0);
        if d != self.cfg.hidden_size {
            return Err(LmError::Config(format!(
                "logits: hidden states of width {d}, the model's hidden_size is {}",
                self.cfg.hidden_size
            )));
        }
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.cfg.vocab_size;
        }
        let rows = hidden.elem_count() / d;
        hidden
            .reshape((rows, d))
            .and_then(|h| self.lm_head.forward(&h))
            .and_then(|l| l.reshape(out_dims))
            .and_then(|l| l.to_dtype(DType::F32))
            .map_err(|e| LmError::candle("logits", e))
    }

    /// [`Self::forward_hidden`] then [`Self::logits`] at every position: `(B, T, vocab)` f32.
    pub fn forward(
        &self,
        embeds: &Tensor,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        self.logits(&self.forward_hidden(embeds, cache, train)?)
    }
}
