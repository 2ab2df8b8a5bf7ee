//! Opening a LLaMA GGUF: the bounded header scan ([`super::preflight`]), candle's parse, then
//! every check that makes the file one this crate can load, all before any tensor data is
//! read: the architecture, the hyper-parameters as a [`LlamaConfig`], every tensor's byte
//! range inside the file (a truncated download is caught here, not halfway through loading),
//! and every tensor the config needs present with its shape and a type candle can load.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use super::preflight::{self, Header};
use super::weights::{llama_tensors, TensorSpec};
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};

/// Largest `context_length` accepted: the RoPE tables are `context x head_dim` floats, built
/// in full at load (Llama 3.1's 131,072 fits).
const MAX_CONTEXT: usize = 1 << 18;
/// Largest width and vocabulary accepted (far above any LLaMA).
const MAX_DIM: usize = 1 << 20;
/// Most layers accepted (the largest LLaMA has 126).
const MAX_LAYERS: usize = 4096;

/// A GGUF file checked to hold a LLaMA this crate can load; the tensor data is read by
/// [`Self::load_quantized`] / [`Self::load_dequantized`].
#[derive(Debug)]
pub struct GgufFile {
    pub(crate) path: PathBuf,
    pub(crate) header: Header,
    pub(crate) content: Content,
    pub(crate) config: LlamaConfig,
}

/// The error for a problem with the file at `path`.
pub(crate) fn gguf_err(path: &Path, msg: impl Into<String>) -> LmError {
    LmError::Gguf {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads the header and metadata of any GGUF (any architecture) with the bounds of
/// [`super::preflight`] applied first; no tensor data is read. Also returns the file's GGUF
/// version and size.
pub fn read_content(path: &Path) -> Result<(Content, u32, u64)> {
    let io = |source| LmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let header = preflight::scan(&mut file, size).map_err(|m| gguf_err(path, m))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let content = Content::read(&mut BufReader::new(file))
        .map_err(|e| gguf_err(path, format!("reading the header: {e}")))?;
    Ok((content, header.version, header.file_size))
}

impl GgufFile {
    /// Opens and checks a LLaMA GGUF (v2 or v3). Errors name the path and, where there is one,
    /// the metadata key or tensor: not a GGUF, an unsupported version, a header whose lengths
    /// do not fit the file, another architecture, hyper-parameters this model cannot honour
    /// (RoPE scaling, partial rotary, experts), a tensor past the end of the file, a missing
    /// tensor, a tensor of the wrong shape or of a type candle cannot load.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (content, version, file_size) = read_content(path)?;
        let err = |m: String| gguf_err(path, m);
        check_ranges(&content, file_size).map_err(err)?;
        let config = llama_config(&content).map_err(err)?;
        config
            .validate()
            .map_err(|e| gguf_err(path, format!("hyper-parameters: {e}")))?;
        check_tensors(&content, &llama_tensors(&config)).map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            header: Header { version, file_size },
            content,
            config,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's shape, HF field names (see [`llama_config`] for where each comes from).
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// candle's parse of the header: metadata (the tokenizer's arrays, the chat template) and
    /// tensor infos.
    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn file_size(&self) -> u64 {
        self.header.file_size
    }
}

/// The byte size of a tensor of `elements` of `dtype`, or why it has none.
pub(crate) fn tensor_bytes(
    dtype: GgmlDType,
    elements: usize,
) -> std::result::Result<usize, String> {
    let block = dtype.block_size();
    if !elements.is_multiple_of(block) {
        return Err(format!(
            "{elements} elements are not whole blocks of {block} ({dtype:?})"
        ));
    }
    Ok(elements / block * dtype.type_size())
}

/// Every tensor's data (offset + size from its type and shape) lies inside the file.
fn check_ranges(c: &Content, file_size: u64) -> std::result::Result<(), String> {
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let info = &c.tensor_infos[name];
        let size = tensor_bytes(info.ggml_dtype, info.shape.elem_count())
            .map_err(|m| format!("tensor {name:?}: {m}"))?;
        let start = c.tensor_data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(size as u64));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_size => {}
            _ => {
                return Err(format!(
                    "truncated or corrupt: tensor {name:?} ({:?} {:?}) needs {size} bytes at \
                     offset {} + {}, past the end of the {file_size}-byte file",
                    info.ggml_dtype,
                    info.shape.dims(),
                    c.tensor_data_offset,
                    info.offset
                ))
            }
        }
    }
    Ok(())
}

/// Every tensor the config needs is present, of its shape, and of a type whose rows candle can
/// load (`Q8_1` and `Q8K` are intermediate types candle does not read from files).
fn check_tensors(c: &Content, specs: &[TensorSpec]) -> std::result::Result<(), String> {
    for spec in specs {
        let Some(info) = c.tensor_infos.get(&spec.gguf) else {
            return Err(format!("missing tensor {:?} (HF {})", spec.gguf, spec.hf));
        };
        if info.shape.dims() != spec.shape.as_slice() {
            return Err(format!(
                "tensor {:?} (HF {}) has shape {:?}, expected {:?}",
                spec.gguf,
                spec.hf,
                info.shape.dims(),
                spec.shape
            ));
        }
        if matches!(info.ggml_dtype, GgmlDType::Q8_1 | GgmlDType::Q8K) {
            return Err(format!(
                "tensor {:?} has type {:?}, which candle cannot load",
                spec.gguf, info.ggml_dtype
            ));
        }
        let width = spec.shape.last().copied().unwrap_or(0);
        if !width.is_multiple_of(info.ggml_dtype.block_size()) {
            return Err(format!(
                "tensor {:?}: rows of {width} are not whole {:?} blocks",
                spec.gguf, info.ggml_dtype
            ));
        }
    }
    Ok(())
}

/// A metadata value as a non-negative integer of any GGUF integer type.
fn as_usize(key: &str, v: &Value) -> std::result::Result<usize, String> {
    let n: i128 = match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        other => return Err(format!("{key} is {other:?}, not an integer")),
    };
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_DIM.max(MAX_CONTEXT))
        .ok_or_else(|| format!("{key} = {n} is out of range"))
}

/// A metadata value as a float; an f32 becomes the f64 of its shortest decimal form (an
/// epsilon stored as `1e-5f32` reads as `1e-5`, as HF's config.json writes it).
fn as_f64(key: &str, v: &Value) -> std::result::Result<f64, String> {
    match v {
        Value::F32(x) => Ok(x.to_string().parse().unwrap_or((*x).into())),
        Value::F64(x) => Ok(*x),
        other => as_usize(key, other).map(|n| n as f64),
    }
}

/// Reads the typed metadata of one architecture prefix.
struct Meta<'a> {
    c: &'a Content,
}

impl Meta<'_> {
    fn usize(&self, key: &str) -> std::result::Result<Option<usize>, String> {
        self.c
            .metadata
            .get(key)
            .map(|v| as_usize(key, v))
            .transpose()
    }

    fn need(&self, key: &str) -> std::result::Result<usize, String> {
        self.usize(key)?
            .ok_or_else(|| format!("missing metadata {key}"))
    }

    fn f64(&self, key: &str) -> std::result::Result<Option<f64>, String> {
        self.c.metadata.get(key).map(|v| as_f64(key, v)).transpose()
    }
}

/// Rejects the RoPE variants and mixtures of experts that [`crate::Llama`] does not compute.
fn check_unsupported(m: &Meta) -> std::result::Result<(), String> {
    if let Some(v) = m.c.metadata.get("llama.rope.scaling.type") {
        match v {
            Value::String(s) if s == "none" => {}
            other => {
                return Err(format!(
                    "llama.rope.scaling.type {other:?} is not supported (plain RoPE only)"
                ))
            }
        }
    }
    for key in ["llama.rope.scaling.factor", "llama.rope.scale_linear"] {
        if let Some(f) = m.f64(key)? {
            if f != 0.0 && f != 1.0 {
                return Err(format!("{key} = {f} is not supported (plain RoPE only)"));
            }
        }
    }
    if m.usize("llama.expert_count")?.unwrap_or(0) > 0 {
        return Err("llama.expert_count: mixtures of experts are not supported".into());
    }
    Ok(())
}

/// The hyper-parameters of a LLaMA GGUF as HF names, read as candle-transformers'
/// `quantized_llama` and llama.cpp read them: `llama.block_count`, `embedding_length`,
/// `feed_forward_length`, `attention.head_count` / `head_count_kv` (default: MHA),
/// `attention.layer_norm_rms_epsilon`, `context_length` (-> `max_position_embeddings`),
/// `rope.freq_base` (default 10,000); the vocabulary from `llama.vocab_size`, else the length
/// of `tokenizer.ggml.tokens`, else the embedding's rows; `head_dim` from
/// `attention.key_length` or `rope.dimension_count` where it differs from width / heads (a
/// rotary dimension below the head width is refused); tied embeddings when there is no
/// `output.weight`. RoPE scaling and experts are refused.
pub fn llama_config(c: &Content) -> std::result::Result<LlamaConfig, String> {
    match c.metadata.get("general.architecture") {
        Some(Value::String(a)) if a == "llama" => {}
        Some(Value::String(a)) => {
            return Err(format!(
                "architecture {a:?} is not supported (only \"llama\")"
            ))
        }
        Some(other) => return Err(format!("general.architecture is {other:?}, not a string")),
        None => return Err("no general.architecture in the metadata".into()),
    }
    let m = Meta { c };
    check_unsupported(&m)?;
    let hidden = m.need("llama.embedding_length")?;
    let heads = m.need("llama.attention.head_count")?;
    let kv_heads = m.usize("llama.attention.head_count_kv")?.unwrap_or(heads);
    let context = m.need("llama.context_length")?;
    if context > MAX_CONTEXT {
        return Err(format!(
            "llama.context_length {context} exceeds the supported {MAX_CONTEXT}"
        ));
    }
    let key_len = m.usize("llama.attention.key_length")?;
    let value_len = m.usize("llama.attention.value_length")?;
    if let (Some(k), Some(v)) = (key_len, value_len) {
        if k != v {
            return Err(format!(
                "attention.key_length {k} differs from value_length {v} (not supported)"
            ));
        }
    }
    let rope_dim = m.usize("llama.rope.dimension_count")?;
    let default_hd = hidden.checked_div(heads).unwrap_or(0);
    let head_dim = key_len.or(rope_dim).unwrap_or(default_hd);
    if let Some(r) = rope_dim {
        if r != head_dim {
            return Err(format!(
                "llama.rope.dimension_count {r} differs from the head width {head_dim} \
                 (partial rotary embeddings are not supported)"
            ));
        }
    }
    let vocab = match m.usize("llama.vocab_size")? {
        Some(v) => v,
        None => match c.metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => c
                .tensor_infos
                .get("token_embd.weight")
                .and_then(|i| i.shape.dims().first().copied())
                .ok_or("no llama.vocab_size, tokenizer.ggml.tokens or token_embd.weight")?,
        },
    };
    for (key, v) in [
        ("vocabulary", vocab),
        ("llama.embedding_length", hidden),
        ("llama.attention.head_count", heads),
        ("head width", head_dim),
    ] {
        if v > MAX_DIM {
            return Err(format!("{key} {v} exceeds {MAX_DIM}"));
        }
    }
    let layers = m.need("llama.block_count")?;
    if layers > MAX_LAYERS {
        return Err(format!(
            "llama.block_count {layers} exceeds the supported {MAX_LAYERS}"
        ));
    }
    let eps = m
        .f64("llama.attention.layer_norm_rms_epsilon")?
        .ok_or("missing metadata llama.attention.layer_norm_rms_epsilon")?;
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: m.need("llama.feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim: (head_dim != default_hd || hidden % heads.max(1) != 0).then_some(head_dim),
        rms_norm_eps: eps,
        rope_theta: m.f64("llama.rope.freq_base")?.unwrap_or(10_000.0),
        max_position_embeddings: context,
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        initializer_range: 0.02,
    })
}
