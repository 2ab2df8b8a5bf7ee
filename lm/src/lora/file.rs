//! The adapter file: one safetensors file holding every trainable tensor (f32) under its
//! `VarMap` name, and in `__metadata__` the format tag, the [`LoraConfig`] as JSON and the
//! sha256 of the base model file the adapters were trained on.
//!
//! Adapters only make sense on the exact weights they were trained against, so loading checks
//! the recorded base hash before anything else and names both hashes when they differ. Every
//! size comes from the file and is checked: the file's length is capped before it is read,
//! safetensors checks that the header's offsets cover exactly the bytes present, and every
//! adapter tensor must have the shape the config and the base imply.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use safetensors::tensor::{Dtype, SafeTensors, View};

use super::adapters::{check_extra_name, expected_tensors, lock_vars, Adapters, LORA_PREFIX};
use super::config::LoraConfig;
use crate::config::LlamaConfig;
use crate::error::{LmError, Result};

/// The `format` value of an adapter file this code writes and reads.
pub const ADAPTER_FORMAT: &str = "vqrae-lora/1";
/// `__metadata__` keys.
pub const META_FORMAT: &str = "format";
pub const META_CONFIG: &str = "lora_config";
pub const META_BASE_SHA256: &str = "base_sha256";
/// Largest adapter file read (the whole file is read into memory): far above rank-64 adapters
/// on every projection of a 1B model plus a full new embedding table.
pub const MAX_ADAPTER_FILE_BYTES: u64 = 4 << 30;

/// What an adapter file says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfo {
    pub config: LoraConfig,
    /// sha256 (64 lowercase hex digits) of the base model file the adapters were trained on.
    pub base_sha256: String,
}

fn err(path: &Path, msg: impl Into<String>) -> LmError {
    LmError::Adapters {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// A base hash must be what `vqrae_data::fs::sha256_file` gives, not a path or a prefix.
fn check_sha(path: &Path, sha: &str, what: &str) -> Result<()> {
    let ok = sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(err(
            path,
            format!("{what} {sha:?} is not a sha256 (64 lowercase hex digits)"),
        ))
    }
}

/// An f32 tensor's little-endian bytes, as safetensors writes them.
struct F32Bytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32Bytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<F32Bytes> {
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(F32Bytes {
        shape: t.dims().to_vec(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// The file's header and tensors, checked only for being a well-formed adapter file.
struct Parsed {
    info: AdapterInfo,
    tensors: BTreeMap<String, Tensor>,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let io = |source| LmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_ADAPTER_FILE_BYTES {
        return Err(err(
            path,
            format!("{len} bytes is more than an adapter file may hold ({MAX_ADAPTER_FILE_BYTES})"),
        ));
    }
    std::fs::read(path).map_err(io)
}

fn parse_info(path: &Path, bytes: &[u8]) -> Result<AdapterInfo> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    match meta.get(META_FORMAT).map(String::as_str) {
        Some(ADAPTER_FORMAT) => {}
        Some(other) => {
            return Err(err(
                path,
                format!("unknown format {other:?} (expected {ADAPTER_FORMAT:?})"),
            ))
        }
        None => {
            return Err(err(
                path,
                format!("no {META_FORMAT:?} in the metadata: not a {ADAPTER_FORMAT} file"),
            ))
        }
    }
    let config_json = meta
        .get(META_CONFIG)
        .ok_or_else(|| err(path, format!("no {META_CONFIG:?} in the metadata")))?;
    let config: LoraConfig =
        serde_json::from_str(config_json).map_err(|e| err(path, format!("{META_CONFIG}: {e}")))?;
    let base_sha256 = meta
        .get(META_BASE_SHA256)
        .ok_or_else(|| err(path, format!("no {META_BASE_SHA256:?} in the metadata")))?
        .clone();
    check_sha(path, &base_sha256, "recorded base_sha256")?;
    Ok(AdapterInfo {
        config,
        base_sha256,
    })
}

fn parse_tensors(path: &Path, bytes: &[u8], device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(err(
                    path,
                    format!("tensor {name} has dtype {other:?} (expected F32, F16 or BF16)"),
                ))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| err(path, format!("tensor {name}: {e}")))?;
        tensors.insert(name.to_string(), t);
    }
    Ok(tensors)
}

fn read_parsed(path: &Path, device: &Device) -> Result<Parsed> {
    let bytes = read_bytes(path)?;
    let info = parse_info(path, &bytes)?;
    let tensors = parse_tensors(path, &bytes, device)?;
    Ok(Parsed { info, tensors })
}

/// Reads what an adapter file says about itself (its config and base hash) without a base
/// model at hand: what a server reads first to find the base to load.
pub fn read_info(path: &Path) -> Result<AdapterInfo> {
    let bytes = read_bytes(path)?;
    parse_info(path, &bytes)
}

/// Checks `parsed` fits `base` (hash, config, every adapter tensor present with its shape,
/// nothing unexpected under the adapters' prefix).
fn verify(path: &Path, parsed: &Parsed, base: &LlamaConfig, base_sha256: &str) -> Result<()> {
    check_sha(path, base_sha256, "base sha256")?;
    if parsed.info.base_sha256 != base_sha256 {
        return Err(err(
            path,
            format!(
                "made for the base with sha256 {}, not for this base (sha256 {base_sha256})",
                parsed.info.base_sha256
            ),
        ));
    }
    parsed
        .info
        .config
        .check(base)
        .map_err(|e| err(path, e.to_string()))?;
    let expected = expected_tensors(base, &parsed.info.config);
    for (name, dims) in &expected {
        match parsed.tensors.get(name) {
            None => return Err(err(path, format!("missing tensor {name}"))),
            Some(t) if t.dims() != dims => {
                return Err(err(
                    path,
                    format!("tensor {name} has shape {:?}, expected {dims:?}", t.dims()),
                ))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for name in parsed.tensors.keys() {
        if name.starts_with(LORA_PREFIX) && !known.contains(name.as_str()) {
            return Err(err(
                path,
                format!("unexpected tensor {name} (not an adapter of this config and base)"),
            ));
        }
        if !name.starts_with(LORA_PREFIX) {
            check_extra_name(name).map_err(|m| err(path, m))?;
        }
    }
    Ok(())
}

impl Adapters {
    /// Writes every trainable (adapters and extras) to `path` atomically, with the format tag,
    /// the config and `base_sha256` (the sha256 of the base model file, as
    /// `vqrae_data::fs::sha256_file` gives it) in the metadata.
    pub fn save(&self, path: &Path, base_sha256: &str) -> Result<()> {
        check_sha(path, base_sha256, "base sha256")?;
        let config = serde_json::to_string(self.config()).map_err(|source| LmError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = HashMap::from([
            (META_FORMAT.to_string(), ADAPTER_FORMAT.to_string()),
            (META_CONFIG.to_string(), config),
            (META_BASE_SHA256.to_string(), base_sha256.to_string()),
        ]);
        let mut owned = Vec::new();
        for (name, var) in self.named_vars()? {
            owned.push((name, to_bytes(var.as_tensor())?));
        }
        let views = owned.iter().map(|(n, b)| (n.as_str(), b));
        vqrae_data::fs::write_atomic_with(path, |tmp| {
            safetensors::serialize_to_file(views, Some(meta), tmp)
                .map_err(|e| err(path, format!("writing: {e}")))
        })
    }

    /// Loads adapters saved by [`Self::save`] for the base of shape `base` whose file has the
    /// sha256 `base_sha256`. Refuses adapters made for another base (naming both hashes), a
    /// missing or misshapen adapter tensor (naming it), an unknown format or a malformed file.
    /// Extra trainables come back under their names ([`Self::require_extra`]).
    pub fn load(
        path: &Path,
        base: &LlamaConfig,
        base_sha256: &str,
        device: &Device,
    ) -> Result<Self> {
        let parsed = read_parsed(path, device)?;
        verify(path, &parsed, base, base_sha256)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| err(path, "variable map lock poisoned"))?;
            for (name, t) in parsed.tensors {
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        Self::assemble(base, parsed.info.config, varmap, device)
    }

    /// Sets this instance's variables in place from `path` (the optimizer's `Var`s stay the
    /// same objects): the file must hold exactly these variables, with their shapes and this
    /// config, made for `base_sha256`. Nothing changes unless everything checks.
    pub fn restore(&self, path: &Path, base_sha256: &str) -> Result<()> {
        let parsed = read_parsed(path, self.device())?;
        verify(path, &parsed, self.base_config(), base_sha256)?;
        if &parsed.info.config != self.config() {
            return Err(err(
                path,
                format!(
                    "lora config {:?} differs from this run's {:?}",
                    parsed.info.config,
                    self.config()
                ),
            ));
        }
        let vars = lock_vars(self.varmap())?;
        for (name, var) in &vars {
            match parsed.tensors.get(name) {
                None => return Err(err(path, format!("missing tensor {name}"))),
                Some(t) if t.dims() != var.dims() => {
                    return Err(err(
                        path,
                        format!(
                            "tensor {name} has shape {:?}, expected {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(name) = parsed.tensors.keys().find(|n| !vars.contains_key(*n)) {
            return Err(err(
                path,
                format!("unexpected tensor {name} (not registered here)"),
            ));
        }
        for (name, var) in &vars {
            if let Some(t) = parsed.tensors.get(name) {
                var.set(t)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vqrae_train::init::seeded_randn;

    use super::*;
    use crate::lora::adapters::tests::{all_targets, randomise_b};
    use crate::lora::tests::tiny_base;
    use crate::lora::{lora_tensor_name, LoraPart, LoraTarget};

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    const OTHER: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn trained(dev: &Device) -> Result<Adapters> {
        let mut a = Adapters::new(&tiny_base(), all_targets(2), dev)?;
        randomise_b(&a)?;
        a.register_extra(
            "lm_head.new_rows",
            &seeded_randn((2, 16), 0.0, 0.1, 1, dev)?,
        )?;
        Ok(a)
    }

    fn bits(t: &Tensor) -> Result<Vec<u32>> {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        Ok(v.into_iter().map(f32::to_bits).collect())
    }

    fn same_vars(x: &Adapters, y: &Adapters) -> Result<()> {
        let (xv, yv) = (x.named_vars()?, y.named_vars()?);
        assert_eq!(xv.len(), yv.len());
        for ((xn, xt), (yn, yt)) in xv.iter().zip(&yv) {
            assert_eq!(xn, yn);
            assert_eq!(xt.dims(), yt.dims(), "{xn}");
            assert_eq!(bits(xt.as_tensor())?, bits(yt.as_tensor())?, "{xn}");
        }
        Ok(())
    }

    /// Writes a file with `meta` and `tensors` as given (for the malformed cases).
    fn write_raw(path: &Path, tensors: &[(String, Tensor)], meta: &[(&str, &str)]) -> Result<()> {
        let owned: Vec<(String, F32Bytes)> = tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), to_bytes(t)?)))
            .collect::<Result<_>>()?;
        let meta = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let views = owned.iter().map(|(n, b)| (n.as_str(), b));
        safetensors::serialize_to_file(views, Some(meta), path)
            .map_err(|e| err(path, e.to_string()))
    }

    fn all_tensors(a: &Adapters) -> Result<Vec<(String, Tensor)>> {
        Ok(a.named_vars()?
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect())
    }

    #[test]
    fn round_trip_is_bit_exact_with_the_metadata() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|e| err(Path::new("tmp"), e.to_string()))?;
        let path = dir.path().join("sub/adapters.safetensors");
        let a = trained(&dev)?;
        a.save(&path, SHA)?;
        let info = read_info(&path)?;
        assert_eq!(info.config, *a.config());
        assert_eq!(info.base_sha256, SHA);
        // the raw file: PEFT names, the metadata keys
        let bytes = std::fs::read(&path).map_err(|e| err(&path, e.to_string()))?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| err(&path, e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        assert_eq!(meta[META_FORMAT], ADAPTER_FORMAT);
        assert_eq!(meta[META_BASE_SHA256], SHA);
        assert!(meta[META_CONFIG].contains(r#""rank":2"#));
        let names = header.tensors();
        assert!(names.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
        assert!(
            names.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        );
        assert!(names.contains_key("lm_head.new_rows"));
        assert_eq!(names.len(), 2 * 7 * 2 + 1);

        let b = Adapters::load(&path, &tiny_base(), SHA, &dev)?;
        same_vars(&a, &b)?;
        assert_eq!(b.config(), a.config());
        assert!(b.require_extra("lm_head.new_rows", &[2, 16]).is_ok());
        let x = seeded_randn((3, 16), 0.0, 1.0, 2, &dev)?;
        let (da, db) = (
            a.delta(1, LoraTarget::QProj, &x).unwrap()?,
            b.delta(1, LoraTarget::QProj, &x).unwrap()?,
        );
        assert_eq!(bits(&da)?, bits(&db)?);
        Ok(())
    }

    #[test]
    fn restore_sets_a_fresh_instance_in_place() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|e| err(Path::new("tmp"), e.to_string()))?;
        let path = dir.path().join("a.safetensors");
        let a = trained(&dev)?;
        a.save(&path, SHA)?;
        // a fresh run: same config, the extra registered with other values
        let mut fresh = Adapters::new(&tiny_base(), all_targets(2), &dev)?;
        let rows = fresh.register_extra(
            "lm_head.new_rows",
            &Tensor::zeros((2, 16), DType::F32, &dev)?,
        )?;
        let b_before = fresh.get(0, LoraTarget::UpProj).map(|m| m.b().clone());
        fresh.restore(&path, SHA)?;
        same_vars(&a, &fresh)?;
        // tensors handed out earlier see the restored values (same storage)
        assert_eq!(bits(&rows)?, bits(a.extra("lm_head.new_rows").unwrap())?);
        let up = a.get(0, LoraTarget::UpProj).unwrap().b();
        assert_eq!(bits(&b_before.unwrap())?, bits(up)?);
        // a run without the extra, or with another rank, is refused and left unchanged
        let plain = Adapters::new(&tiny_base(), all_targets(2), &dev)?;
        let e = plain.restore(&path, SHA).unwrap_err().to_string();
        assert!(e.contains("unexpected tensor lm_head.new_rows"), "{e}");
        let zero = plain
            .get(0, LoraTarget::UpProj)
            .unwrap()
            .b()
            .abs()?
            .sum_all()?;
        assert_eq!(zero.to_scalar::<f32>()?, 0.0);
        let rank3 = Adapters::new(&tiny_base(), all_targets(3), &dev)?;
        assert!(rank3.restore(&path, SHA).is_err());
        Ok(())
    }

    #[test]
    fn refuses_another_base_and_bad_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|e| err(Path::new("tmp"), e.to_string()))?;
        let path = dir.path().join("a.safetensors");
        let a = trained(&dev)?;
        a.save(&path, SHA)?;
        let e = Adapters::load(&path, &tiny_base(), OTHER, &dev)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(SHA) && e.contains(OTHER) && e.contains("a.safetensors"),
            "{e}"
        );
        let e = Adapters::load(&path, &tiny_base(), "model.gguf", &dev)
            .err()
            .unwrap();
        assert!(e.to_string().contains("is not a sha256"), "{e}");
        assert!(a.save(&path, "abc").is_err());
        // the same adapters on a base with a wider MLP: gate_proj's B no longer fits
        let wider = LlamaConfig {
            intermediate_size: 32,
            ..tiny_base()
        };
        let e = Adapters::load(&path, &wider, SHA, &dev)
            .err()
            .unwrap()
            .to_string();
        let want = "model.layers.0.mlp.gate_proj.lora_B.weight has shape [24, 2], expected [32, 2]";
        assert!(e.contains(want), "{e}");
        // a deeper base: layer 2's adapters are missing
        let deeper = LlamaConfig {
            num_hidden_layers: 3,
            ..tiny_base()
        };
        let e = Adapters::load(&path, &deeper, SHA, &dev)
            .err()
            .unwrap()
            .to_string();
        let missing = lora_tensor_name(2, LoraTarget::QProj, LoraPart::A);
        assert!(e.contains(&format!("missing tensor {missing}")), "{e}");
        Ok(())
    }

    #[test]
    fn refuses_malformed_files() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|e| err(Path::new("tmp"), e.to_string()))?;
        let p = |n: &str| dir.path().join(n);
        let a = trained(&dev)?;
        let config = serde_json::to_string(a.config()).unwrap_or_default();
        let good_meta = [
            (META_FORMAT, ADAPTER_FORMAT),
            (META_CONFIG, config.as_str()),
            (META_BASE_SHA256, SHA),
        ];
        let load = |path: &Path| {
            Adapters::load(path, &tiny_base(), SHA, &dev)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // one adapter tensor left out
        let mut tensors = all_tensors(&a)?;
        let gone = lora_tensor_name(1, LoraTarget::VProj, LoraPart::B);
        tensors.retain(|(n, _)| *n != gone);
        write_raw(&p("missing"), &tensors, &good_meta)?;
        assert!(load(&p("missing")).contains(&format!("missing tensor {gone}")));
        // an adapter for a target the config does not list
        let mut tensors = all_tensors(&a)?;
        let stray = "base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight";
        tensors.push((stray.into(), Tensor::zeros((2, 16), DType::F32, &dev)?));
        write_raw(&p("stray"), &tensors, &good_meta)?;
        assert!(load(&p("stray")).contains(&format!("unexpected tensor {stray}")));
        // another format, no format, a config that does not check
        let tensors = all_tensors(&a)?;
        let mut meta = good_meta;
        meta[0].1 = "vqrae-lora/2";
        write_raw(&p("v2"), &tensors, &meta)?;
        assert!(load(&p("v2")).contains("unknown format \"vqrae-lora/2\""));
        write_raw(&p("peft"), &tensors, &[("format", "pt")])?;
        assert!(load(&p("peft")).contains("unknown format \"pt\""));
        write_raw(&p("bare"), &tensors, &[])?;
        assert!(load(&p("bare")).contains("no \"format\""));
        let bad_cfg = r#"{"rank":0,"alpha":1.0,"targets":["q_proj"]}"#;
        let meta = [good_meta[0], (META_CONFIG, bad_cfg), good_meta[2]];
        write_raw(&p("rank0"), &tensors, &meta)?;
        assert!(load(&p("rank0")).contains("rank must be positive"));
        // garbage, truncation, a header that claims more than the file holds, nothing at all
        std::fs::write(p("garbage"), b"GGUF\x03\0\0\0 certainly not safetensors")
            .map_err(|e| err(&p("garbage"), e.to_string()))?;
        assert!(load(&p("garbage")).contains("not a safetensors file"));
        a.save(&p("whole"), SHA)?;
        let whole = std::fs::read(p("whole")).map_err(|e| err(&p("whole"), e.to_string()))?;
        std::fs::write(p("cut"), &whole[..whole.len() - 3])
            .map_err(|e| err(&p("cut"), e.to_string()))?;
        assert!(load(&p("cut")).contains("not a safetensors file"));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        std::fs::write(p("huge"), &huge).map_err(|e| err(&p("huge"), e.to_string()))?;
        assert!(load(&p("huge")).contains("not a safetensors file"));
        assert!(matches!(
            Adapters::load(&p("absent"), &tiny_base(), SHA, &dev),
            Err(LmError::Io { .. })
        ));
        assert!(read_info(&p("garbage")).is_err());
        Ok(())
    }
}
