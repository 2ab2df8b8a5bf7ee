//! The sweep's data, tokenised once: every training and held-out image's codes under one frozen
//! tokenizer, cached on disk under a fingerprint of everything that determines them (the
//! tokenizer's files, the images' pixels, the captions), so every run of a
//! sweep, and every later sweep on the same data, reads the same codes without re-encoding.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_tokenizer::Vqrae;

use crate::error::{Result, ScalingError};

/// One image as the LM sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captioned {
    pub caption: String,
    pub codes: Vec<u32>,
}

/// Codes of the training and held-out images under one tokenizer.
#[derive(Clone, Debug)]
pub struct CodeSet {
    pub image_tokens: usize,
    pub codebook_size: usize,
    pub train: Vec<Captioned>,
    pub val: Vec<Captioned>,
}

/// The sidecar of a cached code set: what the tensors file does not hold.
#[derive(Serialize, Deserialize)]
struct CacheMeta {
    fingerprint: String,
    image_tokens: usize,
    codebook_size: usize,
    train_captions: Vec<String>,
    val_captions: Vec<String>,
}

/// FNV-1a, 64 bit: a stable content hash (std's hasher may change between releases).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0100_0000_01b3);
        }
        // a length separator, so that ("ab", "c") and ("a", "bc") differ
        for x in (b.len() as u64).to_le_bytes() {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The images of one split with their captions.
pub(crate) struct Split<'a> {
    pub images: &'a [RgbImage],
    pub captions: &'a [String],
}

impl CodeSet {
    /// Encodes `train` and `val` with the tokenizer in `tokenizer_dir`, or reads them from
    /// `cache_dir` when the same inputs were encoded before.
    pub(crate) fn load_or_encode(
        tokenizer_dir: &Path,
        train: Split<'_>,
        val: Split<'_>,
        cache_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        for s in [&train, &val] {
            if s.images.is_empty() || s.images.len() != s.captions.len() {
                return Err(ScalingError::Config(format!(
                    "{} images for {} captions",
                    s.images.len(),
                    s.captions.len()
                )));
            }
        }
        let mut h = Fnv::new();
        for file in ["config.json", "model.safetensors"] {
            let p = tokenizer_dir.join(file);
            h.bytes(&std::fs::read(&p).map_err(ScalingError::io(&p))?);
        }
        for s in [&train, &val] {
            for (img, cap) in s.images.iter().zip(s.captions) {
                h.bytes(img.as_raw());
                h.bytes(cap.as_bytes());
            }
        }
        let fingerprint = format!("{:016x}", h.0);
        let tensors_path = cache_dir.join(format!("codes-{fingerprint}.safetensors"));
        let meta_path = cache_dir.join(format!("codes-{fingerprint}.json"));
        if let Some(set) = Self::read_cache(&tensors_path, &meta_path, &fingerprint)? {
            tracing::info!(path = %tensors_path.display(), "codes from the cache");
            return Ok(set);
        }

        let tokenizer = Vqrae::load(tokenizer_dir, device, candle_core::DType::F32)?;
        let started = std::time::Instant::now();
        let train_codes = encode_all(&tokenizer, train.images)?;
        let val_codes = encode_all(&tokenizer, val.images)?;
        tracing::info!(
            images = train.images.len() + val.images.len(),
            seconds = started.elapsed().as_secs_f64(),
            "encoded the sweep's images"
        );
        let (gh, gw) = tokenizer.config().grid();
        let set = Self {
            image_tokens: gh * gw,
            codebook_size: tokenizer.config().quantizer.codebook_size,
            train: zip(train.captions.to_vec(), train_codes),
            val: zip(val.captions.to_vec(), val_codes),
        };
        set.write_cache(&tensors_path, &meta_path, fingerprint)?;
        Ok(set)
    }

    fn read_cache(tensors: &Path, meta: &Path, fingerprint: &str) -> Result<Option<Self>> {
        if !(tensors.exists() && meta.exists()) {
            return Ok(None);
        }
        let text = std::fs::read_to_string(meta).map_err(ScalingError::io(meta))?;
        let m: CacheMeta = serde_json::from_str(&text).map_err(|source| ScalingError::Json {
            path: meta.to_path_buf(),
            source,
        })?;
        if m.fingerprint != fingerprint {
            return Ok(None);
        }
        let t = candle_core::safetensors::load(tensors, &Device::Cpu)
            .map_err(|e| ScalingError::candle(format!("reading {}", tensors.display()), e))?;
        let rows = |name: &str| -> Result<Vec<Vec<u32>>> {
            t.get(name)
                .ok_or_else(|| {
                    ScalingError::Config(format!("{}: no tensor {name}", tensors.display()))
                })?
                .to_vec2::<u32>()
                .map_err(Into::into)
        };
        let (train, val) = (rows("train")?, rows("val")?);
        if train.len() != m.train_captions.len() || val.len() != m.val_captions.len() {
            return Ok(None);
        }
        Ok(Some(Self {
            image_tokens: m.image_tokens,
            codebook_size: m.codebook_size,
            train: zip(m.train_captions, train),
            val: zip(m.val_captions, val),
        }))
    }

    /// Tensors first, the sidecar last: a sidecar names only complete tensor files.
    fn write_cache(&self, tensors: &Path, meta: &Path, fingerprint: String) -> Result<()> {
        let to_tensor = |rows: &[Captioned]| -> Result<Tensor> {
            let flat: Vec<u32> = rows.iter().flat_map(|r| r.codes.iter().copied()).collect();
            Ok(Tensor::from_vec(
                flat,
                (rows.len(), self.image_tokens),
                &Device::Cpu,
            )?)
        };
        let map = std::collections::HashMap::from([
            ("train".to_string(), to_tensor(&self.train)?),
            ("val".to_string(), to_tensor(&self.val)?),
        ]);
        vqrae_data::fs::write_atomic_with(tensors, |tmp| {
            candle_core::safetensors::save(&map, tmp)
                .map_err(|e| ScalingError::candle(format!("writing {}", tensors.display()), e))
        })?;
        let m = CacheMeta {
            fingerprint,
            image_tokens: self.image_tokens,
            codebook_size: self.codebook_size,
            train_captions: self.train.iter().map(|r| r.caption.clone()).collect(),
            val_captions: self.val.iter().map(|r| r.caption.clone()).collect(),
        };
        let text = serde_json::to_string(&m).map_err(|source| ScalingError::Json {
            path: meta.to_path_buf(),
            source,
        })?;
        Ok(vqrae_data::fs::write_atomic(meta, text.as_bytes())?)
    }
}

fn encode_all(tokenizer: &Vqrae, images: &[RgbImage]) -> Result<Vec<Vec<u32>>> {
    let mut codes = Vec::with_capacity(images.len());
    for chunk in images.chunks(64) {
        let enc = tokenizer.encode(&tokenizer.images_to_input(chunk)?)?;
        codes.extend(enc.codes.to_vec2::<u32>()?);
    }
    Ok(codes)
}

fn zip(captions: Vec<String>, codes: Vec<Vec<u32>>) -> Vec<Captioned> {
    captions
        .into_iter()
        .zip(codes)
        .map(|(caption, codes)| Captioned { caption, codes })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_separates_boundaries() {
        let (mut a, mut b) = (Fnv::new(), Fnv::new());
        a.bytes(b"ab");
        a.bytes(b"c");
        b.bytes(b"a");
        b.bytes(b"bc");
        assert_ne!(a.0, b.0);
    }
}
