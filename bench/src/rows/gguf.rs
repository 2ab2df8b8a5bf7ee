//! The `gguf_decode` row: a LLaMA GGUF (SmolLM2-135M-Instruct Q4_1 by default) loaded
//! quantized as `vqrae chat --quantized` loads it (`QMatMul` projections, fused), `batch` rows
//! of `pp` prompt tokens prefilled into the KV cache (untimed), then `tg` cached decoding steps
//! timed, each feeding every row the argmax of its last logits. Reports generated tokens per
//! second across the batch, `batch * tg / decode seconds`: llama.cpp's `llama-batched-bench`
//! `S_TG t/s` at `-npp pp -ntg tg -npl batch` (scripts/perf/llamacpp_reference.py), which
//! also times `tg` decodes of `batch` tokens after an untimed prefill.
//!
//! Which file: `--gguf`, else the link `bench init` leaves in the bench directory
//! ([`GGUF_LINK`]), else SmolLM2 under the data root (`scripts/setup-smollm2.sh`); none there
//! is an error that says how to get one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, IndexOp, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqrae_lm::generate_text::check_context;
use vqrae_lm::gguf::GgufFile;
use vqrae_lm::Llama;

use super::timing::{time_part, Timing};
use super::Measured;

/// The bench directory's link to the GGUF, written by `bench init` when SmolLM2 is installed.
pub(crate) const GGUF_LINK: &str = "smollm2.gguf";

/// Where `scripts/setup-smollm2.sh` installs SmolLM2-135M-Instruct under a data root.
pub(crate) const SMOLLM2: &str = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The row's settings (`bench run --row gguf-decode`).
pub(crate) struct GgufDecode<'a> {
    /// `--gguf`, if given.
    pub(crate) gguf: Option<&'a Path>,
    /// The bench directory (`--dir`).
    pub(crate) dir: &'a Path,
    /// The data root, where SmolLM2 is looked for last.
    pub(crate) data_root: &'a Path,
    pub(crate) batch: usize,
    pub(crate) pp: usize,
    pub(crate) tg: usize,
}

impl GgufDecode<'_> {
    /// The GGUF to load: `--gguf` (which must exist), else [`GGUF_LINK`] in the bench
    /// directory, else [`SMOLLM2`] under the data root.
    pub(crate) fn path(&self) -> Result<PathBuf> {
        if let Some(p) = self.gguf {
            if !p.is_file() {
                bail!("--gguf {}: no such file", p.display());
            }
            return Ok(p.to_path_buf());
        }
        let candidates = [self.dir.join(GGUF_LINK), self.data_root.join(SMOLLM2)];
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => Ok(p.clone()),
            None => bail!(
                "gguf-decode: no GGUF at {} or {}: install SmolLM2 with scripts/setup-smollm2.sh \
                 (then `vqrae bench init` links it into the bench directory) or pass --gguf PATH",
                candidates[0].display(),
                candidates[1].display()
            ),
        }
    }

    /// Checks the sizes before anything is loaded.
    pub(crate) fn check(&self) -> Result<()> {
        if self.pp == 0 || self.tg == 0 {
            bail!(
                "gguf-decode: --pp and --tg must be at least 1 (got {} and {})",
                self.pp,
                self.tg
            );
        }
        Ok(())
    }
}

/// The GGUF's projection type (that of `blk.0.attn_q.weight`), lower case: e.g. `q4_1`.
fn weight_type(gguf: &GgufFile) -> String {
    gguf.content()
        .tensor_infos
        .get("blk.0.attn_q.weight")
        .map(|t| format!("{:?}", t.ggml_dtype).to_lowercase())
        .unwrap_or_else(|| "quantized".to_owned())
}

/// Greedy next ids of logits `(B, vocab)`, as a `(B, 1)` tensor.
fn argmax_ids(logits: &Tensor, device: &Device) -> Result<Tensor> {
    let ids = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let b = ids.len();
    Ok(Tensor::from_vec(ids, (b, 1), device)?)
}

/// One call: prefill `prompt` (untimed), then `tg` cached steps (timed); their seconds.
fn prefill_then_decode(lm: &Llama, prompt: &Tensor, tg: usize) -> Result<f64> {
    let (b, pp) = prompt.dims2()?;
    let device = lm.device();
    let mut cache = lm.new_cache(b, pp + tg, vec![0; b])?;
    let hidden = lm.forward_hidden(&lm.embed(prompt)?, Some(&mut cache), false)?;
    let mut next = argmax_ids(&lm.logits(&hidden.i((.., pp - 1))?)?, device)?;
    let t = Instant::now();
    for _ in 0..tg {
        let hidden = lm.forward_hidden(&lm.embed(&next)?, Some(&mut cache), false)?;
        next = argmax_ids(&lm.logits(&hidden.i((.., 0))?)?, device)?;
    }
    device.synchronize()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Times the row; `dtype` in the JSON line is the file's projection type.
pub(crate) fn gguf_decode(
    row: &GgufDecode,
    device: &Device,
    timing: Timing,
) -> Result<(Measured, String)> {
    row.check()?;
    let path = row.path()?;
    let gguf = GgufFile::open(&path).with_context(|| format!("gguf-decode: {}", path.display()))?;
    let wtype = weight_type(&gguf);
    let mut lm = gguf.load_quantized(device)?;
    lm.fuse_for_inference()?;
    check_context(&lm, row.pp, row.tg)?;
    // a fixed prompt per row: ids drawn from the vocabulary, seeded
    let vocab = lm.config().vocab_size as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let ids: Vec<u32> = (0..row.batch * row.pp)
        .map(|_| rng.gen_range(0..vocab))
        .collect();
    let prompt = Tensor::from_vec(ids, (row.batch, row.pp), device)?;
    let t = time_part(timing, || prefill_then_decode(&lm, &prompt, row.tg))?;
    let mut m = Measured::new("tokens/s", row.batch * row.tg, t);
    m.extra.insert("pp".into(), row.pp.into());
    m.extra.insert("tg".into(), row.tg.into());
    m.extra.insert(
        "gguf".into(),
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .into(),
    );
    Ok((m, wtype))
}

/// `bench init`: links `gguf` (default: [`SMOLLM2`] under `data_root`) into the bench
/// directory `out` as [`GGUF_LINK`] when the file exists; a given `gguf` that does not is an
/// error. A link from an earlier `init` is replaced (or removed when there is no file now).
/// Returns the file linked.
pub(crate) fn link_gguf(
    out: &Path,
    gguf: Option<&Path>,
    data_root: &Path,
) -> Result<Option<PathBuf>> {
    let src = match gguf {
        Some(p) if !p.is_file() => bail!("--gguf {}: no such file", p.display()),
        Some(p) => p.to_path_buf(),
        None => data_root.join(SMOLLM2),
    };
    let link = out.join(GGUF_LINK);
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    if !src.is_file() {
        return Ok(None);
    }
    let target = src
        .canonicalize()
        .with_context(|| format!("resolving {}", src.display()))?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    #[cfg(not(unix))]
    std::fs::copy(&target, &link).with_context(|| format!("copying to {}", link.display()))?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(gguf: Option<&'a Path>, dir: &'a Path, data_root: &'a Path) -> GgufDecode<'a> {
        GgufDecode {
            gguf,
            dir,
            data_root,
            batch: 1,
            pp: 4,
            tg: 2,
        }
    }

    #[test]
    fn which_gguf_and_the_errors_without_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, data) = (tmp.path().join("bench"), tmp.path().join("data"));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = tmp.path().join("missing.gguf");
        let err = row(Some(&missing), &dir, &data).path().unwrap_err();
        assert!(err.to_string().contains("--gguf"), "{err:#}");
        let err = row(None, &dir, &data).path().unwrap_err().to_string();
        assert!(
            err.contains("setup-smollm2.sh") && err.contains("--gguf") && err.contains(GGUF_LINK),
            "{err}"
        );
        assert!(link_gguf(&dir, None, &data).unwrap().is_none());
        assert!(link_gguf(&dir, Some(&missing), &data).is_err());

        // installed under the data root: found there, and `init` links it
        let installed = data.join(SMOLLM2);
        std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
        std::fs::write(&installed, b"GGUF").unwrap();
        assert_eq!(row(None, &dir, &data).path().unwrap(), installed);
        let linked = link_gguf(&dir, None, &data).unwrap().unwrap();
        assert_eq!(linked, installed.canonicalize().unwrap());
        assert_eq!(row(None, &dir, &data).path().unwrap(), dir.join(GGUF_LINK));
        // `--gguf` first; a link is replaced, and removed once its file is gone
        let other = tmp.path().join("other.gguf");
        std::fs::write(&other, b"GGUF").unwrap();
        assert_eq!(row(Some(&other), &dir, &data).path().unwrap(), other);
        link_gguf(&dir, Some(&other), &data).unwrap();
        assert_eq!(
            std::fs::read_link(dir.join(GGUF_LINK)).unwrap(),
            other.canonicalize().unwrap()
        );
        std::fs::remove_file(&installed).unwrap();
        assert!(link_gguf(&dir, None, &data).unwrap().is_none());
        assert!(dir.join(GGUF_LINK).symlink_metadata().is_err());

        let mut zero = row(None, &dir, &data);
        zero.tg = 0;
        assert!(zero.check().unwrap_err().to_string().contains("--tg"));
    }
}
