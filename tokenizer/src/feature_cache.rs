//! Frozen-encoder features of a training set, kept on disk and shared by every stage-1 run
//! whose encoder, preprocessing and images are the same: DINOv2-S runs at ~20 images/s on two
//! CPU cores, so a codebook sweep would otherwise spend most of its time recomputing them.
//!
//! A cache file is a safetensors file holding one f16 tensor `features` `(n, N, d)`; its
//! header's metadata holds the [`FeatureKey`] as JSON and the sha256 of the tensor bytes. The
//! file name carries a hash of the key, so caches of different encoders or image sets sit side
//! by side. Reading checks the file's size before it is read, the key, the tensor's shape and
//! the bytes' hash; any mismatch is a warning and the features are computed again and the file
//! rewritten (atomically). Runs that use the cache always train on the f16-rounded features,
//! whether they computed them or read them, so a run does not depend on who came first.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vqrae_data::tensor::Normalize;

use crate::encoder::{EncoderConfig, VitEncoder};
use crate::error::{Result, TokenizerError};
use crate::model::Vqrae;
use crate::train::TrainConfig;

/// Bumped when what a cache file holds, or how its features are computed, changes.
pub const FORMAT: u32 = 1;

/// The largest safetensors header a cache file may have (the key is a few hundred bytes).
const MAX_HEADER_BYTES: u64 = 64 << 10;

/// The tensor's name in the file.
const TENSOR: &str = "features";

/// Everything the cached features depend on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureKey {
    pub format: u32,
    pub encoder: EncoderConfig,
    /// [`tensors_sha256`] of the encoder's weights.
    pub encoder_sha256: String,
    /// Square input resolution and pixel normalisation of the encoder's input.
    pub image_size: usize,
    pub normalize: Normalize,
    /// What the images are, in words (e.g. a mixed set's sources, caps, split and seed).
    pub images: String,
    /// [`images_sha256`] of the images, in order: what makes the key exact.
    pub images_sha256: String,
    /// Shape of the features: images, tokens per image, width.
    pub count: usize,
    pub tokens: usize,
    pub width: usize,
}

impl FeatureKey {
    fn json(&self) -> Result<String> {
        serde_json::to_string(self)
            .map_err(|e| TokenizerError::Invalid(format!("feature key: {e}")))
    }

    /// The cache file of this key under `dir`: `<arch>-<size>px-<n>-<first 16 hex of the key's
    /// sha256>.safetensors`.
    pub fn path(&self, dir: &Path) -> Result<PathBuf> {
        let hash = hex(&Sha256::digest(self.json()?.as_bytes()));
        Ok(dir.join(format!(
            "{}-{}px-{}-{}.safetensors",
            self.encoder.arch(),
            self.image_size,
            self.count,
            &hash[..16]
        )))
    }

    /// Bytes of the features in f16.
    fn data_bytes(&self) -> u64 {
        (self.count as u64) * (self.tokens as u64) * (self.width as u64) * 2
    }
}

/// How a run got its features from the cache; in the run's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheUse {
    pub path: PathBuf,
    /// Read from the file (the encoder did not run), or computed and written.
    pub hit: bool,
    pub images: usize,
    /// Time to read, or to compute and write.
    pub seconds: f64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 over the images in order: each one's width and height (u32 LE), then its RGB bytes.
pub fn images_sha256(images: &[RgbImage]) -> String {
    let mut h = Sha256::new();
    for img in images {
        h.update(img.width().to_le_bytes());
        h.update(img.height().to_le_bytes());
        h.update(img.as_raw());
    }
    hex(&h.finalize())
}

/// sha256 over named tensors sorted by name: each name's bytes, a 0 byte, the dims (u64 LE),
/// then the values as f32 LE, so the hash does not depend on how the weights were stored.
pub fn tensors_sha256(tensors: &HashMap<String, Tensor>) -> Result<String> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        let t = &tensors[name];
        h.update(name.as_bytes());
        h.update([0u8]);
        for d in t.dims() {
            h.update((*d as u64).to_le_bytes());
        }
        t.to_dtype(DType::F32)?.write_bytes(&mut h)?;
    }
    Ok(hex(&h.finalize()))
}

/// The features of `key` from the cache under `dir`, or `compute`d, rounded to f16, written
/// there and returned. A file that exists but does not hold `key`'s features (another key, a
/// wrong shape, damaged bytes) is reported as a warning and replaced.
pub fn cached_features(
    dir: &Path,
    key: &FeatureKey,
    device: &Device,
    compute: impl FnOnce() -> Result<Tensor>,
) -> Result<(Tensor, CacheUse)> {
    let path = key.path(dir)?;
    let t0 = Instant::now();
    if path.exists() {
        match read(&path, key, device) {
            Ok(features) => {
                let used = CacheUse {
                    path,
                    hit: true,
                    images: key.count,
                    seconds: t0.elapsed().as_secs_f64(),
                };
                tracing::info!(path = %used.path.display(), images = key.count, "feature cache hit");
                return Ok((features, used));
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                "feature cache unusable, computing the features again: {e}"
            ),
        }
    }
    let features = compute()?.to_dtype(DType::F16)?;
    let (n, t, d) = features.dims3()?;
    if (n, t, d) != (key.count, key.tokens, key.width) {
        return Err(TokenizerError::Invalid(format!(
            "computed features are {n}x{t}x{d}, the key says {}x{}x{}",
            key.count, key.tokens, key.width
        )));
    }
    write(&path, key, &features)?;
    let used = CacheUse {
        path,
        hit: false,
        images: n,
        seconds: t0.elapsed().as_secs_f64(),
    };
    tracing::info!(path = %used.path.display(), images = n, seconds = used.seconds, "feature cache written");
    Ok((features.to_dtype(DType::F32)?, used))
}

/// The teacher's features of `images`: from the run's feature cache in stage 1 when the config
/// names one (keyed by the teacher's weights, the preprocessing and the images; `label` says
/// what the images are), else computed in memory.
pub(crate) fn training_features(
    (teacher, weights): (&VitEncoder, &HashMap<String, Tensor>),
    model: &Vqrae,
    images: &[RgbImage],
    label: &str,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<(Tensor, Option<CacheUse>)> {
    let compute = || crate::train::teacher_features(teacher, model, images, cfg.batch_size);
    let Some(dir) = cfg.feature_cache.as_deref().filter(|_| cfg.stage == 1) else {
        return Ok((compute()?, None));
    };
    let mc = model.config();
    let (rows, cols) = mc.grid();
    let key = FeatureKey {
        format: FORMAT,
        encoder: mc.encoder.clone(),
        encoder_sha256: tensors_sha256(weights)?,
        image_size: mc.image_size,
        normalize: mc.normalize,
        images: label.to_string(),
        images_sha256: images_sha256(images),
        count: images.len(),
        tokens: rows * cols,
        width: mc.encoder.width(),
    };
    let (features, used) = cached_features(dir, &key, device, compute)?;
    Ok((features, Some(used)))
}

/// Writes `features` (f16) with `key` in the header, atomically.
fn write(path: &Path, key: &FeatureKey, features: &Tensor) -> Result<()> {
    let mut data = Vec::with_capacity(usize::try_from(key.data_bytes()).unwrap_or(0));
    features.write_bytes(&mut data)?;
    let metadata = serde_json::json!({
        "key": key.json()?,
        "data_sha256": hex(&Sha256::digest(&data)),
    });
    let header = serde_json::json!({
        "__metadata__": metadata,
        TENSOR: {"dtype": "F16", "shape": features.dims(), "data_offsets": [0, data.len()]},
    });
    let mut head = serde_json::to_vec(&header)
        .map_err(|e| TokenizerError::Invalid(format!("feature cache header: {e}")))?;
    // safetensors pads the header with spaces to a multiple of 8 bytes
    head.resize(head.len().div_ceil(8) * 8, b' ');
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| TokenizerError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let io = |source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    };
    vqrae_data::fs::write_atomic_with(path, |tmp| -> Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(io)?);
        f.write_all(&(head.len() as u64).to_le_bytes())
            .map_err(io)?;
        f.write_all(&head).map_err(io)?;
        f.write_all(&data).map_err(io)?;
        f.flush().map_err(io)
    })
}

/// The features of `key` in the file at `path`, as f32, or why they are not there.
fn read(path: &Path, key: &FeatureKey, device: &Device) -> Result<Tensor> {
    let bad = |msg: String| TokenizerError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let max = 8 + MAX_HEADER_BYTES + key.data_bytes();
    let len = std::fs::metadata(path)
        .map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len > max {
        return Err(bad(format!(
            "{len} bytes, more than the {max} its key allows"
        )));
    }
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let head_len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("shorter than a safetensors header".into()))?;
    if head_len > MAX_HEADER_BYTES || 8 + head_len > len {
        return Err(bad(format!("header of {head_len} bytes")));
    }
    let head_end = 8 + head_len as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..head_end])
        .map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let meta = |k: &str| header["__metadata__"][k].as_str().unwrap_or_default();
    if meta("key") != key.json()? {
        return Err(bad(format!(
            "holds the features of another key ({})",
            meta("key")
        )));
    }
    let data = &bytes[head_end..];
    if meta("data_sha256") != hex(&Sha256::digest(data)) {
        return Err(bad("its features do not match their recorded sha256".into()));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(crate::error::plain(e).to_string()))?;
    let t = tensors
        .get(TENSOR)
        .ok_or_else(|| bad(format!("no tensor {TENSOR}")))?;
    let want = [key.count, key.tokens, key.width];
    if t.dtype() != DType::F16 || t.dims() != want {
        return Err(bad(format!(
            "{:?} {:?}, not f16 {want:?}",
            t.dtype(),
            t.dims()
        )));
    }
    Ok(t.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::OwnVitConfig;

    fn key(images: &str) -> Result<FeatureKey> {
        Ok(FeatureKey {
            format: FORMAT,
            encoder: EncoderConfig::Vit(OwnVitConfig::default()),
            encoder_sha256: "e".into(),
            image_size: 8,
            normalize: Normalize {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            images: images.into(),
            images_sha256: images_sha256(&[RgbImage::new(8, 8)]),
            count: 2,
            tokens: 4,
            width: 3,
        })
    }

    #[test]
    fn written_once_then_read_and_a_damaged_or_foreign_file_is_recomputed() -> Result<()> {
        let dir = crate::runs::testing::tempdir()?;
        let dev = Device::Cpu;
        let k = key("a")?;
        let feats = Tensor::arange(0f32, 24.0, &dev)?.reshape((2, 4, 3))?;
        let mut calls = 0;
        let mut get = |k: &FeatureKey| {
            cached_features(dir.path(), k, &dev, || {
                calls += 1;
                Ok(feats.clone())
            })
        };
        let (first, used) = get(&k)?;
        assert!(!used.hit && used.path.is_file());
        let (again, used2) = get(&k)?;
        assert!(used2.hit, "the second run reads the file");
        assert_eq!(used2.path, used.path);
        let diff = (first - &again)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        // another key is another file
        let other = key("b")?;
        assert_ne!(other.path(dir.path())?, used.path);
        assert!(!get(&other)?.1.hit);
        // a file under this key's name holding another key's features, or damaged bytes:
        // computed again and replaced
        std::fs::copy(other.path(dir.path())?, &used.path).map_err(|source| {
            TokenizerError::Io {
                path: used.path.clone(),
                source,
            }
        })?;
        assert!(read(&used.path, &k, &dev).is_err_and(|e| e.to_string().contains("another key")));
        assert!(!get(&k)?.1.hit);
        assert!(get(&k)?.1.hit);
        let mut bytes = std::fs::read(&used.path).map_err(|source| TokenizerError::Io {
            path: used.path.clone(),
            source,
        })?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&used.path, &bytes).map_err(|source| TokenizerError::Io {
            path: used.path.clone(),
            source,
        })?;
        assert!(read(&used.path, &k, &dev).is_err_and(|e| e.to_string().contains("sha256")));
        assert!(!get(&k)?.1.hit);
        assert_eq!(calls, 4);
        // features of the wrong shape are refused, not cached
        let wrong = cached_features(dir.path(), &key("c")?, &dev, || {
            Ok(Tensor::zeros((1, 4, 3), DType::F32, &dev)?)
        });
        assert!(wrong.is_err_and(|e| e.to_string().contains("the key says")));
        Ok(())
    }

    #[test]
    fn hashes_follow_the_values() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::new(&[1f32, 2.0], &dev)?;
        let map = |t: &Tensor| HashMap::from([("w".to_string(), t.clone())]);
        let h = tensors_sha256(&map(&a))?;
        assert_eq!(h, tensors_sha256(&map(&a.to_dtype(DType::F64)?))?);
        assert_ne!(h, tensors_sha256(&map(&Tensor::new(&[1f32, 3.0], &dev)?))?);
        assert_ne!(h, tensors_sha256(&map(&a.reshape((2, 1))?))?);
        let img = RgbImage::new(2, 2);
        assert_ne!(
            images_sha256(std::slice::from_ref(&img)),
            images_sha256(&[img.clone(), img])
        );
        Ok(())
    }
}
