//! Loading a bare Hugging Face encoder directory (`config.json`, `model.safetensors`, optional
//! `preprocessor_config.json`) as it comes from the hub or from `scripts/convert-dinov2.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vqrae_data::tensor::Normalize;

use super::{dinov2, known_fields, siglip, EncoderConfig, VitEncoder};
use crate::error::{Context, Result, TokenizerError};
use crate::preprocess::{Preprocess, Resize};

/// An encoder loaded from an HF directory, with the architecture's own preprocessing.
pub struct HfEncoder {
    pub config: EncoderConfig,
    pub encoder: VitEncoder,
    pub preprocess: Preprocess,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Config {
        path: path.to_path_buf(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    v: &serde_json::Value,
    keys: &[&str],
    path: &Path,
) -> Result<T> {
    serde_json::from_value(serde_json::Value::Object(known_fields(v, keys))).map_err(|source| {
        TokenizerError::Config {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Reads an HF `config.json` into our encoder config. Accepts `Dinov2Model` configs, bare
/// `SiglipVisionModel` configs and full `SiglipModel` configs (their `vision_config`).
pub fn hf_encoder_config(path: &Path) -> Result<EncoderConfig> {
    let v = read_json(path)?;
    if v.get("arch").is_some() {
        // the project's own encoder directories store our config, strictly
        return serde_json::from_value(v).map_err(|source| TokenizerError::Config {
            path: path.to_path_buf(),
            source,
        });
    }
    let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
    match model_type {
        "dinov2" => Ok(EncoderConfig::Dinov2(parse(&v, dinov2::HF_KEYS, path)?)),
        "siglip_vision_model" => Ok(EncoderConfig::Siglip(parse(&v, siglip::HF_KEYS, path)?)),
        "siglip" => {
            let vision = v.get("vision_config").cloned().unwrap_or_default();
            Ok(EncoderConfig::Siglip(parse(&vision, siglip::HF_KEYS, path)?))
        }
        other => Err(TokenizerError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "model_type {other:?} is not a supported encoder (dinov2, siglip, siglip_vision_model, \
                 or an own encoder directory with an \"arch\" field)"
            ),
        }),
    }
}

fn default_preprocess(cfg: &EncoderConfig) -> Preprocess {
    match cfg {
        EncoderConfig::Dinov2(_) => Preprocess {
            resize: Resize::ShortestEdgeCrop {
                shortest_edge: 256,
                crop_height: 224,
                crop_width: 224,
            },
            normalize: Normalize::IMAGENET,
        },
        EncoderConfig::Siglip(c) => Preprocess {
            resize: Resize::Exact {
                height: c.image_size as u32,
                width: c.image_size as u32,
            },
            normalize: Normalize::HALF,
        },
        EncoderConfig::Vit(c) => Preprocess {
            resize: Resize::Exact {
                height: c.image_size as u32,
                width: c.image_size as u32,
            },
            normalize: Normalize::HALF,
        },
    }
}

/// The prefix under which a checkpoint stores the encoder: `vision_model.` for SigLIP, none for
/// `Dinov2Model`, `dinov2.` for DINOv2 heads such as `Dinov2ForImageClassification`.
fn detect_prefix(st: &MmapedSafetensors, cfg: &EncoderConfig) -> Option<&'static str> {
    let patch = format!("{}.weight", cfg.names().patch);
    ["", "vision_model.", "dinov2.", "backbone."]
        .into_iter()
        .find(|p| st.get(&format!("{p}{patch}")).is_ok())
}

/// Opens a safetensors file for a `VarBuilder`, with the path in any error.
pub(crate) fn mmap(path: &Path) -> Result<MmapedSafetensors> {
    if !path.exists() {
        return Err(TokenizerError::Checkpoint {
            path: path.to_path_buf(),
            msg: "file not found".into(),
        });
    }
    // SAFETY: the file is only read; a concurrent writer would violate the mmap contract,
    // which is why every writer in this crate writes a temp file and renames it.
    unsafe { MmapedSafetensors::new(path) }.map_err(|e| TokenizerError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not a readable safetensors file: {e}"),
    })
}

/// The encoder tensors of an HF directory by their names without the checkpoint's prefix.
pub(crate) fn hf_tensors(dir: &Path, cfg: &EncoderConfig) -> Result<HashMap<String, Tensor>> {
    let weights = dir.join("model.safetensors");
    let st = mmap(&weights)?;
    let prefix = detect_prefix(&st, cfg).ok_or_else(|| TokenizerError::Checkpoint {
        path: weights.clone(),
        msg: format!("no {} patch embedding found", cfg.arch()),
    })?;
    st.tensors()
        .into_iter()
        .filter_map(|(name, _)| {
            name.strip_prefix(prefix)
                .map(|n| (n.to_string(), name.clone()))
        })
        .map(|(short, full)| {
            let t = st
                .load(&full, &Device::Cpu)
                .context(|| format!("reading {full} from {}", weights.display()))?;
            Ok((short, t))
        })
        .collect()
}

/// Loads an HF encoder directory.
pub fn load_hf_encoder(dir: &Path, device: &Device, dtype: DType) -> Result<HfEncoder> {
    let config = hf_encoder_config(&dir.join("config.json"))?;
    config.spec().map_err(TokenizerError::Invalid)?;
    let weights: PathBuf = dir.join("model.safetensors");
    let st = mmap(&weights)?;
    let prefix = detect_prefix(&st, &config).ok_or_else(|| TokenizerError::Checkpoint {
        path: weights.clone(),
        msg: format!(
            "no {} patch embedding found: not a {} checkpoint",
            config.arch(),
            config.arch()
        ),
    })?;
    let vb = VarBuilder::from_backend(Box::new(st), dtype, device.clone());
    let vb = match prefix.strip_suffix('.') {
        Some(p) => vb.pp(p),
        None => vb,
    };
    let encoder =
        VitEncoder::new(&config, vb).context(|| format!("loading {}", weights.display()))?;
    let pre_path = dir.join("preprocessor_config.json");
    let preprocess = if pre_path.exists() {
        Preprocess::from_hf_json(&read_json(&pre_path)?, default_preprocess(&config))
    } else {
        default_preprocess(&config)
    };
    Ok(HfEncoder {
        config,
        encoder,
        preprocess,
    })
}
