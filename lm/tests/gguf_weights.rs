//! GGUF weights on tiny files the tests write themselves: the writer + reader round trip (exact
//! for F32 files: proves the q/k row un-permutation), quantized files against the
//! quantize-dequantize of the source, the quantized model against the dequantized one, KV-cache
//! decoding on the quantized model, and every kind of bad input as a clear error.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Tensor};
use common::max_diff;
use vqrae_lm::fuse::QuantizedRows;
use vqrae_lm::gguf::{llama_gguf_bytes, write_llama_gguf, GgufFile, GgufWriteOptions};
use vqrae_lm::{Llama, LlamaConfig, LmError};
use vqrae_train::init::SeededVarMap;

/// A tiny GQA LLaMA whose widths are whole Q4_1/Q8_0 blocks (32).
fn tiny(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 80,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
        initializer_range: 0.2,
    }
}

fn source(cfg: &LlamaConfig, seed: u64) -> Result<Llama> {
    let vars = SeededVarMap::new(seed);
    Ok(Llama::new(cfg, vars.var_builder(DType::F32, &Device::Cpu))?)
}

fn ids() -> Result<Tensor> {
    let rows: [[u32; 10]; 2] = [
        [3, 14, 15, 9, 26, 53, 5, 8, 79, 7],
        [2, 7, 18, 28, 18, 28, 45, 9, 0, 4],
    ];
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (2, 10), &Device::Cpu)?)
}

fn logits(model: &Llama, ids: &Tensor) -> Result<Tensor> {
    Ok(model.forward(&model.embed(ids)?, None, false)?)
}

/// Writes `model` as a GGUF into `dir` and returns its path.
fn write(dir: &Path, name: &str, model: &Llama, opts: &GgufWriteOptions) -> Result<PathBuf> {
    let path = dir.join(name);
    write_llama_gguf(&path, model.config(), &model.tensors(), opts)?;
    Ok(path)
}

/// The config a GGUF of `cfg` reads back as (GGUF stores no initializer range).
fn as_read(cfg: &LlamaConfig) -> LlamaConfig {
    LlamaConfig {
        initializer_range: 0.02,
        ..cfg.clone()
    }
}

/// llama.cpp's row permutation of q/k as an index gather, written independently of both the
/// writer (tensor reshapes) and the reader (byte moves): GGUF row `h*hd + 2i + j` is HF row
/// `h*hd + j*hd/2 + i`. `to_gguf` selects the direction.
fn permute_rows(w: &Tensor, heads: usize, to_gguf: bool) -> Result<Tensor> {
    let rows = w.dim(0)?;
    let hd = rows / heads;
    let half = hd / 2;
    let mut gguf_to_hf = vec![0u32; rows];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                gguf_to_hf[h * hd + 2 * i + j] = (h * hd + j * half + i) as u32;
            }
        }
    }
    let index: Vec<u32> = if to_gguf {
        gguf_to_hf
    } else {
        let mut inv = vec![0u32; rows];
        for (g, &r) in gguf_to_hf.iter().enumerate() {
            inv[r as usize] = g as u32;
        }
        inv
    };
    let index = Tensor::from_vec(index, rows, w.device())?;
    Ok(w.index_select(&index, 0)?)
}

/// The heads llama.cpp permutes a tensor's rows by, if any.
fn rope_heads(cfg: &LlamaConfig, name: &str) -> Option<usize> {
    if name.ends_with("q_proj.weight") {
        Some(cfg.num_attention_heads)
    } else if name.ends_with("k_proj.weight") {
        Some(cfg.num_key_value_heads)
    } else {
        None
    }
}

/// What a file written with `opts` should dequantize to: each tensor permuted as llama.cpp
/// does, quantized, dequantized, permuted back.
fn quantize_dequantize(model: &Llama, opts: &GgufWriteOptions) -> Result<HashMap<String, Tensor>> {
    let cfg = model.config();
    let mut out = HashMap::new();
    for (name, t) in model.tensors() {
        let dtype = if name.contains("norm") {
            opts.norms
        } else if name.contains("embed_tokens") {
            opts.embedding
        } else {
            opts.projections
        };
        let heads = rope_heads(cfg, &name);
        let t = match heads {
            Some(h) => permute_rows(&t, h, true)?,
            None => t,
        };
        let t = QTensor::quantize(&t, dtype)?.dequantize(&Device::Cpu)?;
        let t = match heads {
            Some(h) => permute_rows(&t, h, false)?,
            None => t,
        };
        out.insert(name, t);
    }
    Ok(out)
}

fn same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> Result<()> {
    ensure!(a.len() == b.len(), "{} tensors vs {}", a.len(), b.len());
    for (name, t) in a {
        let u = b.get(name).with_context(|| format!("missing {name}"))?;
        let d = max_diff(t, u)?;
        ensure!(d == 0.0, "{name}: max |diff| {d}");
    }
    Ok(())
}

#[test]
fn f32_round_trip_gives_back_the_model_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for tied in [true, false] {
        for version in [2, 3] {
            let cfg = tiny(tied);
            let model = source(&cfg, 7)?;
            let opts = GgufWriteOptions {
                version,
                ..GgufWriteOptions::f32()
            };
            let path = write(
                dir.path(),
                &format!("f32-{tied}-{version}.gguf"),
                &model,
                &opts,
            )?;
            let gguf = GgufFile::open(&path)?;
            ensure!(gguf.version() == version, "version {}", gguf.version());
            ensure!(
                gguf.config() == &as_read(&cfg),
                "config {:?}",
                gguf.config()
            );
            let back = gguf.load_dequantized(&Device::Cpu, DType::F32)?;
            same_tensors(&model.tensors(), &back.tensors())?;
            let x = ids()?;
            let d = max_diff(&logits(&model, &x)?, &logits(&back, &x)?)?;
            ensure!(d <= 1e-5, "tied={tied} v{version}: logits differ by {d}");
        }
    }
    Ok(())
}

#[test]
fn quantized_files_dequantize_to_the_quantized_source() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let x = ids()?;
    for (proj, emb) in [
        (GgmlDType::Q8_0, GgmlDType::Q8_0),
        (GgmlDType::Q4_1, GgmlDType::Q8_0),
        (GgmlDType::Q4_0, GgmlDType::Q4_1),
    ] {
        for tied in [true, false] {
            let cfg = tiny(tied);
            let model = source(&cfg, 11)?;
            let opts = GgufWriteOptions::typed(proj, emb);
            let path = write(dir.path(), &format!("{proj:?}-{tied}.gguf"), &model, &opts)?;
            let gguf = GgufFile::open(&path)?;
            let expected = quantize_dequantize(&model, &opts)?;
            same_tensors(
                &expected,
                &gguf.dequantized_tensors(&Device::Cpu, DType::F32)?,
            )?;
            let reference = Llama::from_tensors(gguf.config(), expected, &Device::Cpu, DType::F32)?;
            let back = gguf.load_dequantized(&Device::Cpu, DType::F32)?;
            let d = max_diff(&logits(&reference, &x)?, &logits(&back, &x)?)?;
            ensure!(d <= 1e-5, "{proj:?} tied={tied}: logits differ by {d}");
        }
    }
    Ok(())
}

/// The quantized model multiplies by the same blocks as the dequantized one (its weights are
/// equal, see below), but quantizes its activations to 8 bits per block of 32 first (candle's
/// CPU kernels, as llama.cpp's): the logits agree to that noise, amplified through this random
/// model. Measured (max |logit| 5.2-5.8): 0.143-0.165, i.e. at most 3.1% of the largest
/// logit, for Q8_0 and Q4_1 files alike (the activations' rounding dominates); asserted at 5%.
#[test]
fn quantized_model_agrees_with_the_dequantized_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let x = ids()?;
    for (proj, emb) in [
        (GgmlDType::Q8_0, GgmlDType::Q8_0),
        (GgmlDType::Q4_1, GgmlDType::Q8_0),
    ] {
        for tied in [true, false] {
            let model = source(&tiny(tied), 13)?;
            let opts = GgufWriteOptions::typed(proj, emb);
            let path = write(dir.path(), &format!("{proj:?}-{tied}.gguf"), &model, &opts)?;
            let gguf = GgufFile::open(&path)?;
            let q = gguf.load_quantized(&Device::Cpu)?;
            let f = gguf.load_dequantized(&Device::Cpu, DType::F32)?;
            ensure!(q.is_quantized() && !f.is_quantized());
            let (lq, lf) = (logits(&q, &x)?, logits(&f, &x)?);
            let d = max_diff(&lq, &lf)?;
            let spread = lf.abs()?.max_all()?.to_scalar::<f32>()?;
            println!("{proj:?} tied={tied}: max |quantized - dequantized| {d:.5} (max |logit| {spread:.2})");
            ensure!(
                d <= 0.05 * spread,
                "{proj:?} tied={tied}: logits differ by {d}"
            );
        }
    }
    Ok(())
}

#[test]
fn kv_cache_decoding_on_the_quantized_model_equals_its_full_forward() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = source(&tiny(true), 17)?;
    let path = write(
        dir.path(),
        "q.gguf",
        &model,
        &GgufWriteOptions::like_smollm2(),
    )?;
    // the kernel for every input: by default a full forward (5+ rows) multiplies dequantized
    // blocks while one-row steps use the kernel, which rounds activations to 8 bits
    let mut q = GgufFile::open(&path)?.load_quantized(&Device::Cpu)?;
    q.set_quantized_rows(QuantizedRows::Kernel);
    let x = ids()?;
    let full = logits(&q, &x)?;
    let mut cache = q.new_cache(2, 10, vec![0, 0])?;
    let prefill = q.forward(&q.embed(&x.narrow(1, 0, 6)?)?, Some(&mut cache), false)?;
    let mut worst = max_diff(&prefill, &full.narrow(1, 0, 6)?)?;
    for t in 6..10 {
        let step = q.forward(&q.embed(&x.narrow(1, t, 1)?)?, Some(&mut cache), false)?;
        worst = worst.max(max_diff(&step, &full.narrow(1, t, 1)?)?);
    }
    ensure!(worst <= 1e-4, "cached decoding differs by {worst}");
    Ok(())
}

#[test]
fn quantized_model_is_inference_only_and_dequantizes_its_tensors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = source(&tiny(false), 19)?;
    let path = write(
        dir.path(),
        "q.gguf",
        &model,
        &GgufWriteOptions::like_smollm2(),
    )?;
    let gguf = GgufFile::open(&path)?;
    let mut q = gguf.load_quantized(&Device::Cpu)?;
    let x = ids()?;
    let err = q
        .forward(&q.embed(&x)?, None, true)
        .err()
        .context("a quantized model trained")?;
    ensure!(err.to_string().contains("quantized"), "{err}");
    let dense = gguf.dequantized_tensors(&Device::Cpu, DType::F32)?;
    same_tensors(&dense, &q.try_tensors()?)?;
    same_tensors(&dense, &q.tensors())?;
    let before = logits(&q, &x)?;
    q.fuse_for_inference()?;
    ensure!(q.is_quantized());
    ensure!(
        max_diff(&before, &logits(&q, &x)?)? == 0.0,
        "fusing changed a quantized model"
    );
    // the grown vocabulary keeps the old rows (the untied head dequantized)
    let grown = q.grow_vocab(90, 1)?;
    ensure!(grown.len() == 2 && grown[1].1.dims() == [90, 64]);
    Ok(())
}

// ---- bad input ----

fn gguf_error(path: &Path) -> Result<String> {
    match GgufFile::open(path) {
        Ok(_) => anyhow::bail!("{} opened", path.display()),
        Err(e @ LmError::Gguf { .. }) => {
            let msg = e.to_string();
            ensure!(
                msg.contains(&path.display().to_string()),
                "the error does not name the path: {msg}"
            );
            Ok(msg)
        }
        Err(e) => anyhow::bail!("not a GGUF error: {e}"),
    }
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

fn valid_bytes(opts: &GgufWriteOptions) -> Result<Vec<u8>> {
    let model = source(&tiny(true), 23)?;
    Ok(llama_gguf_bytes(model.config(), &model.tensors(), opts)?)
}

#[test]
fn files_that_are_not_gguf_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let png = [
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H',
    ];
    for (name, bytes) in [
        ("image.png", &png[..]),
        ("notes.txt", &b"hello, this is a text file\n"[..]),
        ("empty.gguf", &b""[..]),
        ("short.gguf", &b"GG"[..]),
    ] {
        let msg = gguf_error(&file(dir.path(), name, bytes)?)?;
        ensure!(msg.contains("not a GGUF"), "{name}: {msg}");
    }
    let missing = dir.path().join("absent.gguf");
    ensure!(matches!(GgufFile::open(&missing), Err(LmError::Io { .. })));
    Ok(())
}

#[test]
fn unsupported_versions_are_refused_by_number() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut bytes = valid_bytes(&GgufWriteOptions::f32())?;
    for version in [1u32, 4, 0x0300_0000] {
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let msg = gguf_error(&file(dir.path(), "v.gguf", &bytes)?)?;
        ensure!(
            msg.contains(&format!("version {version} is not supported")),
            "{msg}"
        );
    }
    Ok(())
}

#[test]
fn truncated_files_are_refused_before_loading() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = valid_bytes(&GgufWriteOptions::like_smollm2())?;
    let n = bytes.len();
    // in the counts, the metadata, the tensor infos, the data, the last byte
    for cut in [6, 20, 60, 400, 2_000, n / 2, n - 1] {
        let msg = gguf_error(&file(dir.path(), "cut.gguf", &bytes[..cut])?)?;
        ensure!(msg.contains("truncated"), "cut at {cut} of {n}: {msg}");
    }
    Ok(())
}

#[test]
fn another_architecture_is_refused_by_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = GgufWriteOptions {
        metadata: vec![("general.architecture".into(), Value::String("qwen2".into()))],
        ..GgufWriteOptions::f32()
    };
    let msg = gguf_error(&file(dir.path(), "qwen.gguf", &valid_bytes(&opts)?)?)?;
    ensure!(
        msg.contains("architecture \"qwen2\" is not supported"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn wrong_shapes_and_missing_tensors_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // the metadata says 128-wide MLPs, the tensors are 96 wide
    let opts = GgufWriteOptions {
        metadata: vec![("llama.feed_forward_length".into(), Value::U32(128))],
        ..GgufWriteOptions::f32()
    };
    let msg = gguf_error(&file(dir.path(), "shape.gguf", &valid_bytes(&opts)?)?)?;
    ensure!(
        msg.contains("tensor \"blk.0.ffn_gate.weight\"")
            && msg.contains("has shape [96, 64], expected [128, 64]"),
        "{msg}"
    );
    // the metadata says 3 layers, the file holds 2
    let opts = GgufWriteOptions {
        metadata: vec![("llama.block_count".into(), Value::U32(3))],
        ..GgufWriteOptions::f32()
    };
    let msg = gguf_error(&file(dir.path(), "missing.gguf", &valid_bytes(&opts)?)?)?;
    ensure!(msg.contains("missing tensor \"blk.2."), "{msg}");
    Ok(())
}

#[test]
fn hyper_parameters_the_model_cannot_honour_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let one = |key: &str, value: Value| vec![(key.to_string(), value)];
    for (metadata, expect) in [
        (
            one("llama.rope.scaling.type", Value::String("yarn".into())),
            "plain RoPE only",
        ),
        (
            one("llama.rope.scaling.factor", Value::F32(4.0)),
            "plain RoPE only",
        ),
        (
            vec![
                ("llama.attention.key_length".into(), Value::U32(16)),
                ("llama.rope.dimension_count".into(), Value::U32(8)),
            ],
            "partial rotary",
        ),
        // a rotary width that is not width / heads is taken as the head width
        (
            one("llama.rope.dimension_count", Value::U32(8)),
            "has shape [64, 64], expected [32, 64]",
        ),
        (one("llama.expert_count", Value::U32(8)), "experts"),
        (
            one("llama.attention.head_count", Value::U32(0)),
            "hyper-parameters",
        ),
        (
            one("llama.embedding_length", Value::String("wide".into())),
            "not an integer",
        ),
        (
            one("llama.context_length", Value::U64(1 << 40)),
            "out of range",
        ),
    ] {
        let key = metadata[metadata.len() - 1].0.clone();
        let opts = GgufWriteOptions {
            metadata,
            ..GgufWriteOptions::f32()
        };
        let msg = gguf_error(&file(dir.path(), "hp.gguf", &valid_bytes(&opts)?)?)?;
        ensure!(msg.contains(expect), "{key}: {msg}");
    }
    Ok(())
}

/// A GGUF v3 header by hand: `kvs` metadata entries already encoded, no tensors.
fn header(kvs: &[Vec<u8>]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for kv in kvs {
        b.extend(kv);
    }
    b
}

fn key(name: &str, ty: u32) -> Vec<u8> {
    let mut b = (name.len() as u64).to_le_bytes().to_vec();
    b.extend(name.as_bytes());
    b.extend(ty.to_le_bytes());
    b
}

#[test]
fn declared_lengths_past_the_file_or_the_caps_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let array = |elem_ty: u32, len: u64| {
        let mut kv = key("tokenizer.ggml.tokens", 9);
        kv.extend(elem_ty.to_le_bytes());
        kv.extend(len.to_le_bytes());
        kv.extend([0u8; 64]);
        kv
    };
    let mut huge_string = key("tokenizer.chat_template", 8);
    huge_string.extend((1u64 << 62).to_le_bytes());
    let mut zero_align = key("general.alignment", 4);
    zero_align.extend(0u32.to_le_bytes());
    let mut counts = header(&[]);
    counts[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    for (name, bytes, expect) in [
        ("strings", header(&[array(8, 1 << 40)]), "declared length"),
        ("u8s", header(&[array(0, (1 << 23) + 1)]), "limit"),
        ("u32s", header(&[array(4, 1 << 20)]), "only"),
        ("string", header(&[huge_string]), "declared string length"),
        ("alignment", header(&[zero_align]), "power of two"),
        ("counts", counts, "tensors"),
    ] {
        let msg = gguf_error(&file(dir.path(), &format!("{name}.gguf"), &bytes)?)?;
        ensure!(msg.contains(expect), "{name}: {msg}");
    }
    Ok(())
}

/// Flipped bytes anywhere in a small valid file: `open` (and a load when it succeeds) returns,
/// never panics.
#[test]
fn corrupted_bytes_never_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = valid_bytes(&GgufWriteOptions::like_smollm2())?;
    let path = dir.path().join("fuzz.gguf");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let header_end = 3_000.min(bytes.len());
    let two = ids()?.i((.., 0..2))?;
    let mut opened = 0;
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % header_end;
            b[at] = next() as u8;
        }
        std::fs::write(&path, &b)?;
        if let Ok(g) = GgufFile::open(&path) {
            opened += 1;
            if let Ok(m) = g.load_quantized(&Device::Cpu) {
                let _ = m.embed(&two).and_then(|e| m.forward(&e, None, false));
            }
        }
    }
    println!("{opened} of 300 corrupted files still opened");
    Ok(())
}

/// The quantized form against candle-transformers' reading of the same file (interleaved RoPE
/// on the permuted rows there, rotate-half on the un-permuted rows here: the same arithmetic
/// up to the order of the head dimension's sums), both through candle's quantized kernel.
#[test]
fn quantized_model_equals_candle_transformers_quantized_llama() -> Result<()> {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let dir = tempfile::tempdir()?;
    let x = ids()?;
    for tied in [true, false] {
        let model = source(&tiny(tied), 29)?;
        let path = write(
            dir.path(),
            "q.gguf",
            &model,
            &GgufWriteOptions::like_smollm2(),
        )?;
        let mut ours = GgufFile::open(&path)?.load_quantized(&Device::Cpu)?;
        ours.set_quantized_rows(QuantizedRows::Kernel); // quantized_llama's numerics
        let mut reader = std::fs::File::open(&path)?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut reader)?;
        let mut theirs = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)?;
        let got = logits(&ours, &x)?.i((.., 9, ..))?;
        let mut d = 0f32;
        // one row at a time: its last-position slice is not contiguous for a batch
        for row in 0..2 {
            theirs.clear_kv_cache();
            let expected = theirs.forward(&x.i(row..row + 1)?, 0)?;
            d = d.max(max_diff(&expected, &got.i(row..row + 1)?)?);
        }
        println!("tied={tied}: max |ours - quantized_llama| {d:.2e}");
        ensure!(d <= 1e-4, "tied={tied}: logits differ by {d}");
    }
    Ok(())
}
