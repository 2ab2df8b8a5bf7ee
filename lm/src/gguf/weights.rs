//! A LLaMA GGUF's tensors as [`Llama`] weights, in two forms.
//!
//! - **Dequantized** ([`GgufFile::load_dequantized`]): every tensor expanded to f32/bf16 under
//!   its HF name and handed to [`Llama::from_tensors`], so the result is a model like any
//!   checkpoint (trainable, savable, LoRA-able).
//! - **Quantized** ([`GgufFile::load_quantized`]): the projections stay the file's quantized
//!   blocks behind candle `QMatMul`s (on the CPU, or uploaded to a CUDA device), the norms and
//!   the embedding table are dequantized to f32 (the table is looked up by id, as
//!   candle-transformers' `quantized_llama` does), and a tied output head is a `QMatMul` over
//!   the quantized embedding. Inference only.
//!
//! **Row order.** llama.cpp's converter permutes the rows of `attn_q` / `attn_k` for its
//! interleaved RoPE (`w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2)`, `n_head` the KV head
//! count for `k`); [`Llama`] uses HF's rotate-half RoPE. Both forms undo the permutation on
//! the raw bytes, before anything is dequantized: each row of a quantized matrix is its own run
//! of blocks, so moving whole rows is exact. Both forms therefore share the one RoPE, the one
//! KV cache layout and HF's weight layout, and an adapter trained on the dequantized form
//! applies unchanged to the quantized one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;

use super::read::{gguf_err, tensor_bytes, GgufFile};
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};
use crate::fuse::Proj;
use crate::model::{LayerParts, Llama};

/// What a tensor is for: decides its type in [`super::write`] and how the quantized form
/// holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Embedding,
    Norm,
    Projection,
}

/// One tensor of a LLaMA GGUF: its GGUF and HF names, its candle shape (`(out, in)` for a
/// matrix) and, for `attn_q` / `attn_k`, the head count llama.cpp permuted its rows by.
#[derive(Clone, Debug)]
pub(crate) struct TensorSpec {
    pub(crate) gguf: String,
    pub(crate) hf: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) rope_heads: Option<usize>,
    pub(crate) role: Role,
}

/// Every tensor a LLaMA of `cfg` stores, GGUF names as llama.cpp writes them.
pub(crate) fn llama_tensors(cfg: &LlamaConfig) -> Vec<TensorSpec> {
    let (v, d, i) = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size);
    let hd = cfg.head_dim();
    let (h, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let spec = |gguf: String, hf: String, shape: Vec<usize>, rope_heads, role| TensorSpec {
        gguf,
        hf,
        shape,
        rope_heads,
        role,
    };
    let mut out = vec![spec(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![v, d],
        None,
        Role::Embedding,
    )];
    for l in 0..cfg.num_hidden_layers {
        let (g, p) = (format!("blk.{l}"), format!("model.layers.{l}"));
        for (gn, hn, shape, rope, role) in [
            ("attn_norm", "input_layernorm", vec![d], None, Role::Norm),
            (
                "ffn_norm",
                "post_attention_layernorm",
                vec![d],
                None,
                Role::Norm,
            ),
            (
                "attn_q",
                "self_attn.q_proj",
                vec![h * hd, d],
                Some(h),
                Role::Projection,
            ),
            (
                "attn_k",
                "self_attn.k_proj",
                vec![kv * hd, d],
                Some(kv),
                Role::Projection,
            ),
            (
                "attn_v",
                "self_attn.v_proj",
                vec![kv * hd, d],
                None,
                Role::Projection,
            ),
            (
                "attn_output",
                "self_attn.o_proj",
                vec![d, h * hd],
                None,
                Role::Projection,
            ),
            (
                "ffn_gate",
                "mlp.gate_proj",
                vec![i, d],
                None,
                Role::Projection,
            ),
            ("ffn_up", "mlp.up_proj", vec![i, d], None, Role::Projection),
            (
                "ffn_down",
                "mlp.down_proj",
                vec![d, i],
                None,
                Role::Projection,
            ),
        ] {
            out.push(spec(
                format!("{g}.{gn}.weight"),
                format!("{p}.{hn}.weight"),
                shape,
                rope,
                role,
            ));
        }
    }
    out.push(spec(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![d],
        None,
        Role::Norm,
    ));
    if !cfg.tie_word_embeddings {
        out.push(spec(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![v, d],
            None,
            Role::Projection,
        ));
    }
    out
}

/// Writes the rows of a GGUF `attn_q` / `attn_k` matrix `src` (`rows` rows of equal byte
/// length, `heads` heads) into `dst` in HF order: HF row `h*hd + j*hd/2 + i` is GGUF row
/// `h*hd + 2i + j`.
pub(crate) fn unpermute_rows(
    src: &[u8],
    dst: &mut [u8],
    rows: usize,
    heads: usize,
) -> std::result::Result<(), String> {
    let hd = rows.checked_div(heads).unwrap_or(0);
    let row_bytes = src.len().checked_div(rows).unwrap_or(0);
    if hd == 0
        || hd * heads != rows
        || !hd.is_multiple_of(2)
        || row_bytes * rows != src.len()
        || dst.len() != src.len()
    {
        return Err(format!(
            "cannot split {} bytes into {rows} rows of {heads} heads of even width",
            src.len()
        ));
    }
    let half = hd / 2;
    let mut rows_out = dst.chunks_exact_mut(row_bytes);
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let s = (h * hd + 2 * i + j) * row_bytes;
                if let Some(row) = rows_out.next() {
                    row.copy_from_slice(&src[s..s + row_bytes]);
                }
            }
        }
    }
    Ok(())
}

/// Reads tensors of one checked [`GgufFile`] through one open handle.
struct TensorReader<'a> {
    gguf: &'a GgufFile,
    file: File,
}

impl<'a> TensorReader<'a> {
    fn new(gguf: &'a GgufFile) -> Result<Self> {
        let file = File::open(&gguf.path).map_err(|source| LmError::Io {
            path: gguf.path.clone(),
            source,
        })?;
        Ok(Self { gguf, file })
    }

    /// The tensor of `spec`, rows in HF order, as a `QTensor` on `device` (checked present,
    /// shaped and inside the file by [`GgufFile::open`]).
    fn read(&mut self, spec: &TensorSpec, device: &Device) -> Result<QTensor> {
        let path = &self.gguf.path;
        let err = |m: String| gguf_err(path, format!("tensor {:?}: {m}", spec.gguf));
        let c = &self.gguf.content;
        let info = c
            .tensor_infos
            .get(&spec.gguf)
            .ok_or_else(|| err("missing".into()))?;
        let size = tensor_bytes(info.ggml_dtype, info.shape.elem_count()).map_err(err)?;
        let start = c.tensor_data_offset.saturating_add(info.offset);
        // a u64 buffer: the blocks are read in place as structs of up to 4-byte alignment
        let mut words = vec![0u64; size.div_ceil(8)];
        let buf = &mut bytemuck_bytes(&mut words)[..size];
        self.file
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| err(format!("reading {size} bytes at offset {start}: {e}")))?;
        let mut permuted;
        let bytes: &[u8] = match spec.rope_heads {
            Some(heads) => {
                permuted = vec![0u64; words.len()];
                let dst = &mut bytemuck_bytes(&mut permuted)[..size];
                unpermute_rows(
                    &bytemuck_bytes(&mut words)[..size],
                    dst,
                    spec.shape[0],
                    heads,
                )
                .map_err(err)?;
                dst
            }
            None => &bytemuck_bytes(&mut words)[..size],
        };
        qtensor_from_ggml(info.ggml_dtype, bytes, spec.shape.clone(), device)
            .map_err(|e| err(format!("loading as {:?}: {e}", info.ggml_dtype)))
    }
}

/// The bytes of a `u64` buffer (8-byte aligned, which every ggml block type needs at most).
fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirement, the length covers exactly the
    // buffer's bytes, and the returned slice borrows `words` mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

/// A quantized projection; a float-typed (F32/F16/BF16) one becomes a dense f32 projection.
fn proj(q: Arc<QTensor>, device: &Device) -> candle_core::Result<Proj> {
    match q.dtype() {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => Ok(Proj::new(Linear::new(
            q.dequantize(device)?.to_dtype(DType::F32)?,
            None,
        ))),
        _ => Ok(Proj::quantized(QMatMul::from_arc(q)?)),
    }
}

impl GgufFile {
    /// The model with quantized projections on `device` (CPU or CUDA), for inference: f32
    /// activations, embedding table and norms dequantized to f32, output head quantized (a
    /// tied one over the quantized embedding). See the module docs for the row order. The
    /// model refuses training mode; [`Llama::fuse_for_inference`] leaves it unchanged.
    pub fn load_quantized(&self, device: &Device) -> Result<Llama> {
        let cfg = &self.config;
        let specs = llama_tensors(cfg);
        let mut reader = TensorReader::new(self)?;
        let mut by_hf = HashMap::new();
        for spec in &specs {
            by_hf.insert(spec.hf.as_str(), Arc::new(reader.read(spec, device)?));
        }
        let ctx = |name: &str| {
            let path = self.path.clone();
            let name = name.to_string();
            move |e: candle_core::Error| gguf_err(&path, format!("tensor {name}: {e}"))
        };
        let take = |name: &str| {
            by_hf
                .get(name)
                .cloned()
                .ok_or_else(|| gguf_err(&self.path, format!("missing {name}")))
        };
        let dense = |name: &str| -> Result<Tensor> {
            take(name)?
                .dequantize(device)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(ctx(name))
        };
        let projection =
            |name: &str| -> Result<Proj> { proj(take(name)?, device).map_err(ctx(name)) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}.weight");
            layers.push(LayerParts {
                input_layernorm: dense(&p("input_layernorm"))?,
                post_attention_layernorm: dense(&p("post_attention_layernorm"))?,
                q_proj: projection(&p("self_attn.q_proj"))?,
                k_proj: projection(&p("self_attn.k_proj"))?,
                v_proj: projection(&p("self_attn.v_proj"))?,
                o_proj: projection(&p("self_attn.o_proj"))?,
                gate_proj: projection(&p("mlp.gate_proj"))?,
                up_proj: projection(&p("mlp.up_proj"))?,
                down_proj: projection(&p("mlp.down_proj"))?,
            });
        }
        let embed = "model.embed_tokens.weight";
        let head = if cfg.tie_word_embeddings {
            embed
        } else {
            "lm_head.weight"
        };
        Llama::from_parts(
            cfg,
            dense(embed)?,
            layers,
            dense("model.norm.weight")?,
            projection(head)?,
        )
    }

    /// Every tensor by its HF name, dequantized to `dtype` on `device`, rows in HF order (no
    /// `lm_head.weight` when the embeddings are tied).
    pub fn dequantized_tensors(
        &self,
        device: &Device,
        dtype: DType,
    ) -> Result<HashMap<String, Tensor>> {
        let mut reader = TensorReader::new(self)?;
        let mut out = HashMap::new();
        for spec in llama_tensors(&self.config) {
            let t = reader
                .read(&spec, &Device::Cpu)?
                .dequantize(&Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .and_then(|t| t.to_device(device))
                .map_err(|e| gguf_err(&self.path, format!("tensor {:?}: {e}", spec.gguf)))?;
            out.insert(spec.hf, t);
        }
        Ok(out)
    }

    /// The model with every weight dequantized to `dtype` on `device`: an ordinary [`Llama`]
    /// (as [`Llama::from_tensors`] builds), for training or for inference without
    /// quantization noise.
    pub fn load_dequantized(&self, device: &Device, dtype: DType) -> Result<Llama> {
        let tensors = self.dequantized_tensors(device, dtype)?;
        Llama::from_tensors(&self.config, tensors, device, dtype)
    }
}
