//! Writing a LLaMA GGUF from a [`LlamaConfig`] and HF-named tensors, as llama.cpp's converter
//! lays one out: its metadata keys, its tensor names, `attn_q` / `attn_k` rows permuted for
//! interleaved RoPE, each tensor quantized to the type its role asks for. The tests build
//! their GGUF files with it (tiny models, tokenizers, adapters' bases), so that the reader is
//! tested on files written independently of it (the permutation here is llama.cpp's tensor
//! reshape, the reader's inverse works on bytes).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::weights::{llama_tensors, Role, TensorSpec};
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};

/// How [`write_llama_gguf`] stores the tensors.
#[derive(Clone, Debug)]
pub struct GgufWriteOptions {
    /// Type of the attention and MLP matrices and of an untied output head.
    pub projections: GgmlDType,
    /// Type of the embedding table (also the tied output head).
    pub embedding: GgmlDType,
    /// Type of the RMSNorm weights.
    pub norms: GgmlDType,
    /// GGUF version, 2 or 3 (the same layout; llama.cpp writes 3).
    pub version: u32,
    /// Extra metadata written after the model's own (e.g. the `tokenizer.ggml.*` arrays, a
    /// chat template); a key the writer writes itself is replaced by the value given here.
    pub metadata: Vec<(String, Value)>,
}

impl GgufWriteOptions {
    /// Every tensor F32: a lossless file.
    pub fn f32() -> Self {
        Self::typed(GgmlDType::F32, GgmlDType::F32)
    }

    /// The types of SmolLM2-135M-Instruct.Q4_1.gguf: Q4_1 projections, a Q8_0 embedding, F32
    /// norms.
    pub fn like_smollm2() -> Self {
        Self::typed(GgmlDType::Q4_1, GgmlDType::Q8_0)
    }

    /// `projections` and `embedding` as given, F32 norms, version 3, no extra metadata.
    pub fn typed(projections: GgmlDType, embedding: GgmlDType) -> Self {
        Self {
            projections,
            embedding,
            norms: GgmlDType::F32,
            version: 3,
            metadata: Vec::new(),
        }
    }
}

fn u32_value(name: &str, v: usize) -> Result<Value> {
    u32::try_from(v)
        .map(Value::U32)
        .map_err(|_| LmError::Config(format!("GGUF writer: {name} {v} does not fit a u32")))
}

/// The metadata llama.cpp writes for a LLaMA of `cfg` (`general.architecture` and the
/// `llama.*` hyper-parameters), in its types.
pub fn llama_metadata(cfg: &LlamaConfig) -> Result<Vec<(String, Value)>> {
    let mut out = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("general.name".to_string(), Value::String("vqrae-lm".into())),
    ];
    for (key, v) in [
        ("llama.vocab_size", cfg.vocab_size),
        ("llama.context_length", cfg.max_position_embeddings),
        ("llama.embedding_length", cfg.hidden_size),
        ("llama.block_count", cfg.num_hidden_layers),
        ("llama.feed_forward_length", cfg.intermediate_size),
        ("llama.rope.dimension_count", cfg.head_dim()),
        ("llama.attention.head_count", cfg.num_attention_heads),
        ("llama.attention.head_count_kv", cfg.num_key_value_heads),
    ] {
        out.push((key.to_string(), u32_value(key, v)?));
    }
    out.push((
        "llama.rope.freq_base".to_string(),
        Value::F32(cfg.rope_theta as f32),
    ));
    out.push((
        "llama.attention.layer_norm_rms_epsilon".to_string(),
        Value::F32(cfg.rms_norm_eps as f32),
    ));
    Ok(out)
}

/// llama.cpp's `permute`: `w.reshape(heads, 2, hd/2, in).swapaxes(1, 2).reshape(w.shape)`.
fn permute_for_gguf(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let half = out / heads / 2;
    w.reshape((heads, 2, half, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

/// One tensor of `spec` from `tensors`, checked, permuted where llama.cpp permutes, quantized.
fn quantized(
    spec: &TensorSpec,
    tensors: &HashMap<String, Tensor>,
    opts: &GgufWriteOptions,
) -> Result<QTensor> {
    let t = tensors
        .get(&spec.hf)
        .ok_or_else(|| LmError::Config(format!("GGUF writer: missing tensor {}", spec.hf)))?;
    if t.dims() != spec.shape.as_slice() {
        return Err(LmError::Config(format!(
            "GGUF writer: {} has shape {:?}, expected {:?}",
            spec.hf,
            t.dims(),
            spec.shape
        )));
    }
    let dtype = match spec.role {
        Role::Embedding => opts.embedding,
        Role::Norm => opts.norms,
        Role::Projection => opts.projections,
    };
    let ctx = |e| LmError::candle(format!("GGUF writer: {} as {dtype:?}", spec.hf), e);
    let t = t
        .to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(ctx)?;
    let t = match spec.rope_heads {
        Some(heads) => permute_for_gguf(&t, heads).map_err(ctx)?,
        None => t,
    };
    QTensor::quantize(&t, dtype).map_err(ctx)
}

/// The bytes of a LLaMA GGUF of `cfg` holding `tensors` (HF names, any float dtype, any
/// device; `lm_head.weight` only when untied), stored as `opts` says.
pub fn llama_gguf_bytes(
    cfg: &LlamaConfig,
    tensors: &HashMap<String, Tensor>,
    opts: &GgufWriteOptions,
) -> Result<Vec<u8>> {
    cfg.validate()?;
    if opts.version != 2 && opts.version != 3 {
        return Err(LmError::Config(format!(
            "GGUF writer: version {} (only 2 and 3)",
            opts.version
        )));
    }
    let specs = llama_tensors(cfg);
    let qtensors = specs
        .iter()
        .map(|s| quantized(s, tensors, opts))
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = llama_metadata(cfg)?;
    for (key, value) in &opts.metadata {
        match metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => metadata.push((key.clone(), value.clone())),
        }
    }
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = specs
        .iter()
        .zip(&qtensors)
        .map(|(s, q)| (s.gguf.as_str(), q))
        .collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts).map_err(|e| LmError::candle("GGUF writer", e))?;
    let mut bytes = out.into_inner();
    // candle writes version 2; versions 2 and 3 share the layout (3 added big-endian files)
    if let Some(v) = bytes.get_mut(4..8) {
        v.copy_from_slice(&opts.version.to_le_bytes());
    }
    Ok(bytes)
}

/// Writes [`llama_gguf_bytes`] to `path` (atomically: a temporary file renamed into place).
pub fn write_llama_gguf(
    path: &Path,
    cfg: &LlamaConfig,
    tensors: &HashMap<String, Tensor>,
    opts: &GgufWriteOptions,
) -> Result<()> {
    let bytes = llama_gguf_bytes(cfg, tensors, opts)?;
    Ok(vqrae_data::fs::write_atomic(path, &bytes)?)
}
