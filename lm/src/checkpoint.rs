//! The LM's inference checkpoint: a directory in Hugging Face `LlamaForCausalLM` format,
//! `config.json` plus `model.safetensors` (or, read only, the shards listed by
//! `model.safetensors.index.json`), so checkpoints go both ways and the parity tests compare
//! against `transformers` itself. Files are replaced atomically (`vqrae_data::fs`), because
//! loading memory-maps them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::error::{LmError, Result};
use crate::model::Llama;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Written by `save_pretrained` for checkpoints split into shards; read, never written here.
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LmError + '_ {
    move |source| LmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prefixes a config error with the file it came from.
fn in_file(path: &Path, e: LmError) -> LmError {
    match e {
        LmError::Config(msg) => LmError::Config(format!("{}: {msg}", path.display())),
        other => other,
    }
}

/// The weight files of a checkpoint directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join(INDEX_FILE);
    if !index.exists() {
        return Err(LmError::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {WEIGHTS_FILE} and no {INDEX_FILE} in the checkpoint directory"),
            ),
        });
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|source| LmError::Json {
        path: index.clone(),
        source,
    })?;
    let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
    let mut files = Vec::with_capacity(shards.len());
    for shard in shards {
        let name = Path::new(shard);
        // A shard is a file beside the index; anything else is a malformed (or hostile) index.
        if name.components().count() != 1 || name.is_absolute() {
            return Err(LmError::Config(format!(
                "{}: shard name {shard:?} is not a plain file name",
                index.display()
            )));
        }
        let path = dir.join(name);
        if !path.exists() {
            return Err(LmError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("shard listed in {INDEX_FILE} is missing"),
                ),
            });
        }
        files.push(path);
    }
    Ok(files)
}

/// Every tensor name and shape a model of `cfg` stores, in HF `LlamaForCausalLM` naming.
pub fn tensor_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (d, hd, i) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
    let (h, kv, v) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.vocab_size,
    );
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![d]),
            (format!("{p}.self_attn.q_proj.weight"), vec![h * hd, d]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv * hd, d]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv * hd, d]),
            (format!("{p}.self_attn.o_proj.weight"), vec![d, h * hd]),
            (format!("{p}.post_attention_layernorm.weight"), vec![d]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, d]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, d]),
            (format!("{p}.mlp.down_proj.weight"), vec![d, i]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, d]));
    }
    out
}

/// Writes a checkpoint directory: `model.safetensors` (the `tensors`, HF names) and then
/// `config.json`, each replaced atomically. Other files in `dir` (the LM's `tokenizer.json`)
/// are left alone, which is why this replaces files rather than swapping the directory.
///
/// `tensors` must be exactly the set [`tensor_shapes`] lists for `cfg` (as a training `VarMap`
/// built through [`Llama::new`] holds): a missing, extra or misshapen tensor is an error here
/// rather than a checkpoint that fails to load later.
pub fn save_checkpoint(
    dir: &Path,
    cfg: &LlamaConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    cfg.validate()?;
    let expected = tensor_shapes(cfg);
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => return Err(LmError::Config(format!("save: tensor {name} is missing"))),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(LmError::Config(format!(
                    "save: tensor {name} has shape {:?}, the config implies {shape:?}",
                    t.dims()
                )))
            }
            Some(_) => {}
        }
    }
    if tensors.len() != expected.len() {
        let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let extra: Vec<&String> = tensors
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .collect();
        return Err(LmError::Config(format!(
            "save: tensors not in a LlamaForCausalLM of this config: {extra:?}"
        )));
    }
    let dtype = tensors
        .get("model.embed_tokens.weight")
        .map(|t| t.dtype())
        .unwrap_or(DType::F32);
    let weights = dir.join(WEIGHTS_FILE);
    vqrae_data::fs::write_atomic_with(&weights, |tmp| {
        candle_core::safetensors::save(tensors, tmp)
            .map_err(|e| LmError::candle(format!("writing {}", weights.display()), e))
    })?;
    let config = dir.join(CONFIG_FILE);
    let json =
        serde_json::to_string_pretty(&cfg.to_hf_json(dtype)).map_err(|source| LmError::Json {
            path: config.clone(),
            source,
        })?;
    Ok(vqrae_data::fs::write_atomic(
        &config,
        (json + "\n").as_bytes(),
    )?)
}

impl Llama {
    /// Loads a checkpoint directory: `config.json` and `model.safetensors` (or the shards of
    /// `model.safetensors.index.json`), converting the weights to `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config).map_err(io_err(&config))?;
        let cfg: LlamaConfig = serde_json::from_str(&text).map_err(|source| LmError::Json {
            path: config.clone(),
            source,
        })?;
        cfg.validate().map_err(|e| in_file(&config, e))?;
        let files = weight_files(dir)?;
        let shown = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // SAFETY: the files are only read. A concurrent writer would break the mmap contract,
        // which is why every writer here writes a temporary file and renames it into place
        // (`vqrae_data::fs::write_atomic`).
        let st = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| LmError::candle(format!("reading {shown}"), e))?;
        let vb = VarBuilder::from_backend(Box::new(st), dtype, device.clone());
        Self::build(&cfg, vb).map_err(|e| LmError::candle(format!("loading {shown}"), e))
    }

    /// Saves this model's config and weights into `dir` (see [`save_checkpoint`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_checkpoint(dir, &self.cfg, &self.tensors())
    }
}
