//! Behaviour of the model beyond parity: the training path's gradients, agreement of the two
//! paths, GQA against explicitly repeated kv heads, growing the vocabulary, checkpoints, and
//! the errors a caller can run into.

mod common;

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use common::max_diff;
use vqrae_lm::checkpoint::{save_checkpoint, tensor_shapes};
use vqrae_lm::{Llama, LlamaConfig};
use vqrae_train::init::SeededVarMap;

/// A tiny GQA model; `initializer_range` large enough that logits are far from uniform.
fn tiny(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
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

fn fresh(cfg: &LlamaConfig, seed: u64) -> Result<(Llama, SeededVarMap)> {
    let vars = SeededVarMap::new(seed);
    let model = Llama::new(cfg, vars.var_builder(DType::F32, &Device::Cpu))?;
    Ok((model, vars))
}

fn ids(rows: &[&[u32]]) -> Result<Tensor> {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu)?)
}

const PROMPT: [&[u32]; 2] = [
    &[3, 14, 15, 9, 26, 53, 5, 8, 9, 7],
    &[2, 7, 18, 28, 18, 28, 45, 9, 0, 4],
];

#[test]
fn every_trainable_tensor_gets_a_gradient_in_train_mode() -> Result<()> {
    for tied in [false, true] {
        let cfg = tiny(tied);
        let (model, vars) = fresh(&cfg, 1)?;
        let x = ids(&PROMPT)?;
        let loss_of = |train: bool| -> Result<Tensor> {
            let logits = model.forward(&model.embed(&x.narrow(1, 0, 9)?)?, None, train)?;
            let targets = x.narrow(1, 1, 9)?.flatten_all()?;
            Ok(candle_nn::loss::cross_entropy(
                &logits.reshape((18, cfg.vocab_size))?,
                &targets,
            )?)
        };
        let grads = loss_of(true)?.backward()?;
        let data = vars
            .varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?;
        ensure!(
            data.len() == tensor_shapes(&cfg).len(),
            "variables: {}",
            data.len()
        );
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .with_context(|| format!("no gradient for {name} (tied={tied})"))?;
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            ensure!(norm > 0.0, "zero gradient for {name} (tied={tied})");
        }
        // Why the switch exists: the fused inference kernels silently cut the graph, so the
        // norm weights get no gradient at all in inference mode.
        let grads = loss_of(false)?.backward()?;
        let missing = data
            .iter()
            .filter(|(_, v)| grads.get(v.as_tensor()).is_none())
            .count();
        ensure!(
            missing > 0,
            "fused path unexpectedly carried every gradient"
        );
    }
    Ok(())
}

#[test]
fn train_and_inference_paths_agree() -> Result<()> {
    for tied in [false, true] {
        let (model, _) = fresh(&tiny(tied), 2)?;
        let embeds = model.embed(&ids(&PROMPT)?)?;
        let a = model.forward(&embeds, None, true)?;
        let b = model.forward(&embeds, None, false)?;
        let diff = max_diff(&a, &b)?;
        ensure!(diff < 1e-5, "train vs inference: {diff}");
        let spread = a.flatten_all()?.var(0)?.to_scalar::<f32>()?;
        ensure!(
            spread > 0.1,
            "logits too flat ({spread}) to make the comparison meaningful"
        );
    }
    Ok(())
}

#[test]
fn seeded_init_is_reproducible() -> Result<()> {
    let x = ids(&PROMPT)?;
    let run = |seed| -> Result<Tensor> {
        let (m, _) = fresh(&tiny(false), seed)?;
        Ok(m.forward(&m.embed(&x)?, None, false)?)
    };
    ensure!(max_diff(&run(5)?, &run(5)?)? == 0.0);
    ensure!(max_diff(&run(5)?, &run(6)?)? > 0.0);
    Ok(())
}

/// GQA must equal MHA whose kv heads are repeated the way HF's `repeat_kv` does (query head
/// `h` reads kv head `h / groups`), here by repeating the rows of `k_proj` and `v_proj`.
#[test]
fn gqa_equals_mha_with_repeated_kv_heads() -> Result<()> {
    let cfg = tiny(false);
    let (gqa, _) = fresh(&cfg, 3)?;
    let groups = cfg.kv_groups();
    let (kv, hd, d) = (cfg.num_key_value_heads, cfg.head_dim(), cfg.hidden_size);
    let repeat_kv = |w: &Tensor| -> Result<Tensor> {
        Ok(w.reshape((kv, 1, hd, d))?
            .repeat((1, groups, 1, 1))?
            .reshape((kv * groups * hd, d))?)
    };
    let mut tensors = HashMap::new();
    for (name, t) in gqa.tensors() {
        let t = if name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
            repeat_kv(&t)?
        } else {
            t
        };
        tensors.insert(name, t);
    }
    let mha_cfg = LlamaConfig {
        num_key_value_heads: cfg.num_attention_heads,
        ..cfg.clone()
    };
    let mha = Llama::from_tensors(&mha_cfg, tensors, &Device::Cpu, DType::F32)?;
    let embeds = gqa.embed(&ids(&PROMPT)?)?;
    for train in [false, true] {
        let a = gqa.forward(&embeds, None, train)?;
        let b = mha.forward(&embeds, None, train)?;
        let diff = max_diff(&a, &b)?;
        ensure!(
            diff < 1e-5,
            "GQA vs repeated-kv MHA (train={train}): {diff}"
        );
    }
    Ok(())
}

/// Greedy continuation of each prompt row, with the cache.
fn greedy(model: &Llama, prompt: &Tensor, steps: usize) -> Result<Vec<Vec<u32>>> {
    let (b, t) = prompt.dims2()?;
    let mut cache = model.new_cache(b, t + steps, vec![0; b])?;
    let hidden = model.forward_hidden(&model.embed(prompt)?, Some(&mut cache), false)?;
    let mut logits = model.logits(&hidden.i((.., t - 1..t, ..))?)?;
    let mut out = vec![Vec::new(); b];
    for _ in 0..steps {
        let next = logits.argmax(D::Minus1)?; // (b, 1) u32
        for (row, id) in next
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .enumerate()
        {
            out[row].push(id);
        }
        logits = model.forward(&model.embed(&next)?, Some(&mut cache), false)?;
    }
    Ok(out)
}

#[test]
fn grow_vocab_keeps_text_logits_and_greedy_decoding() -> Result<()> {
    for tied in [false, true] {
        let cfg = tiny(tied);
        let (model, _) = fresh(&cfg, 4)?;
        let new_vocab = cfg.vocab_size + 37;
        let mut tensors = model.tensors();
        let grown_parts = model.grow_vocab(new_vocab, 9)?;
        ensure!(grown_parts.len() == if tied { 1 } else { 2 });
        for (name, t) in grown_parts {
            ensure!(
                t.dims() == [new_vocab, cfg.hidden_size],
                "{name}: {:?}",
                t.dims()
            );
            tensors.insert(name, t);
        }
        let grown_cfg = LlamaConfig {
            vocab_size: new_vocab,
            ..cfg.clone()
        };
        let grown = Llama::from_tensors(&grown_cfg, tensors, &Device::Cpu, DType::F32)?;
        let x = ids(&PROMPT)?;
        let old = model.forward(&model.embed(&x)?, None, false)?;
        let new = grown.forward(&grown.embed(&x)?, None, false)?;
        let diff = max_diff(&old, &new.narrow(D::Minus1, 0, cfg.vocab_size)?)?;
        ensure!(diff < 1e-6, "old logits changed by {diff} (tied={tied})");
        if !tied {
            // new rows score the mean of the old logits: never the argmax
            let new_max = new.narrow(D::Minus1, cfg.vocab_size, 37)?.max(D::Minus1)?;
            let old_max = old.max(D::Minus1)?;
            ensure!(
                (old_max - new_max)?
                    .flatten_all()?
                    .min(0)?
                    .to_scalar::<f32>()?
                    > 0.0
            );
            ensure!(greedy(&model, &x, 6)? == greedy(&grown, &x, 6)?);
        }
        // the new embedding rows differ from each other (seeded noise) but stay near the mean
        let e = &grown.tensors()["model.embed_tokens.weight"];
        let fresh_rows = e.narrow(0, cfg.vocab_size, 37)?;
        ensure!(max_diff(&fresh_rows.i(0)?, &fresh_rows.i(1)?)? > 0.0);
        // same seed, same rows
        let again = model.grow_vocab(new_vocab, 9)?;
        ensure!(max_diff(&again[0].1, e)? == 0.0);
    }
    let (model, _) = fresh(&tiny(false), 4)?;
    let err = model.grow_vocab(10, 0).unwrap_err().to_string();
    ensure!(err.contains("must be between"), "{err}");
    Ok(())
}

#[test]
fn appended_rows_embed_and_score_as_their_own_ids() -> Result<()> {
    let cfg = tiny(true);
    let (model, _) = fresh(&cfg, 4)?;
    let rows = Tensor::randn(0f32, 0.3, (5, cfg.hidden_size), &Device::Cpu)?;
    let mut grown = fresh(&cfg, 4)?.0;
    grown.append_vocab_rows(&rows)?;
    ensure!(grown.config().vocab_size == cfg.vocab_size + 5);
    // the new ids embed as the rows
    let new_ids = Tensor::new(&[[61u32, 65]], &Device::Cpu)?;
    let e = grown.embed(&new_ids)?.squeeze(0)?;
    ensure!(max_diff(&e.i(0)?, &rows.i(0)?)? == 0.0);
    ensure!(max_diff(&e.i(1)?, &rows.i(4)?)? == 0.0);
    // old logits unchanged; new ones are the hidden state against the rows
    let x = ids(&PROMPT)?;
    let hidden = grown.forward_hidden(&grown.embed(&x)?, None, false)?;
    let logits = grown.logits(&hidden)?;
    let old = model.forward(&model.embed(&x)?, None, false)?;
    ensure!(max_diff(&old, &logits.narrow(D::Minus1, 0, cfg.vocab_size)?)? < 1e-6);
    let expected = hidden.broadcast_matmul(&rows.t()?)?;
    ensure!(max_diff(&expected, &logits.narrow(D::Minus1, cfg.vocab_size, 5)?)? < 1e-5);
    // a row of the wrong width, and an untied model, are refused
    let mut other = fresh(&cfg, 4)?.0;
    let err = other
        .append_vocab_rows(&Tensor::zeros((2, 7), DType::F32, &Device::Cpu)?)
        .unwrap_err();
    ensure!(err.to_string().contains("expected (n, 32)"), "{err}");
    let mut untied = fresh(&tiny(false), 4)?.0;
    let err = untied.append_vocab_rows(&rows).unwrap_err();
    ensure!(err.to_string().contains("tied"), "{err}");
    Ok(())
}

/// A cloned cache continues independently of its original.
#[test]
fn cache_clone_is_independent() -> Result<()> {
    let (model, _) = fresh(&tiny(false), 13)?;
    let x = ids(&PROMPT)?;
    let embeds = model.embed(&x)?;
    let mut a = model.new_cache(2, 10, vec![0, 0])?;
    model.forward(&embeds.narrow(1, 0, 6)?, Some(&mut a), false)?;
    let mut b = a.try_clone()?;
    let other = model.embed(&ids(&[&[1], &[2]])?)?;
    let from_b = model.forward(&other, Some(&mut b), false)?;
    let from_a = model.forward(&embeds.narrow(1, 6, 1)?, Some(&mut a), false)?;
    let full = model.forward(&embeds.narrow(1, 0, 7)?, None, false)?;
    ensure!(
        max_diff(&from_a, &full.narrow(1, 6, 1)?)? < 1e-5,
        "original disturbed"
    );
    let alt = Tensor::cat(&[&embeds.narrow(1, 0, 6)?, &other], 1)?;
    let full_b = model.forward(&alt, None, false)?;
    ensure!(
        max_diff(&from_b, &full_b.narrow(1, 6, 1)?)? < 1e-5,
        "clone wrong"
    );
    ensure!(a.len() == 7 && b.len() == 7);
    Ok(())
}

#[test]
fn checkpoint_files_are_replaced_in_place() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("lm");
    let (a, _) = fresh(&tiny(false), 7)?;
    a.save(&dir)?;
    // a tokenizer saved beside the weights survives the next save
    std::fs::write(dir.join("tokenizer.json"), "{}")?;
    let (b, _) = fresh(&tiny(false), 8)?;
    b.save(&dir)?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    ensure!(
        names == ["config.json", "model.safetensors", "tokenizer.json"],
        "{names:?}"
    );
    let back = Llama::load(&dir, &Device::Cpu, DType::F32)?;
    let x = ids(&PROMPT)?;
    let want = b.forward(&b.embed(&x)?, None, false)?;
    ensure!(max_diff(&back.forward(&back.embed(&x)?, None, false)?, &want)? == 0.0);
    Ok(())
}

#[test]
fn sharded_checkpoints_load() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let cfg = tiny(false);
    let (model, _) = fresh(&cfg, 10)?;
    model.save(dir)?;
    std::fs::remove_file(dir.join("model.safetensors"))?;
    let mut shards = [HashMap::new(), HashMap::new()];
    let mut weight_map = serde_json::Map::new();
    for (name, t) in model.tensors() {
        let s = usize::from(name.contains("layers.1") || name.starts_with("lm_head"));
        let file = format!("model-0000{}-of-00002.safetensors", s + 1);
        weight_map.insert(name.clone(), file.into());
        shards[s].insert(name, t);
    }
    for (s, shard) in shards.iter().enumerate() {
        let path = dir.join(format!("model-0000{}-of-00002.safetensors", s + 1));
        candle_core::safetensors::save(shard, path)?;
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
    let back = Llama::load(dir, &Device::Cpu, DType::F32)?;
    let x = ids(&PROMPT)?;
    let a = model.forward(&model.embed(&x)?, None, false)?;
    ensure!(max_diff(&a, &back.forward(&back.embed(&x)?, None, false)?)? == 0.0);
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let cfg = tiny(false);
    let (model, _) = fresh(&cfg, 11)?;
    let dev = Device::Cpu;
    let msg = |r: vqrae_lm::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();

    ensure!(msg(model.embed(&ids(&[&[1, 61]])?)).contains("outside the vocabulary"));
    ensure!(msg(model.embed(&Tensor::zeros((1, 2), DType::I64, &dev)?)).contains("u32"));
    let embeds = model.embed(&ids(&PROMPT)?)?;
    ensure!(msg(model.forward(&embeds.to_dtype(DType::F64)?, None, false)).contains("F64"));
    let narrow = Tensor::zeros((1, 2, 8), DType::F32, &dev)?;
    ensure!(msg(model.forward(&narrow, None, false)).contains("width 8"));
    let empty = Tensor::zeros((1, 0, 32), DType::F32, &dev)?;
    ensure!(msg(model.forward(&empty, None, false)).contains("empty input"));
    let long = Tensor::zeros((1, 65, 32), DType::F32, &dev)?;
    ensure!(msg(model.forward(&long, None, false)).contains("max_position_embeddings"));

    let mut cache = model.new_cache(2, 12, vec![0, 0])?;
    let e = msg(model.forward(&embeds, Some(&mut cache), true));
    ensure!(e.contains("training mode"), "{e}");
    model.forward(&embeds, Some(&mut cache), false)?;
    let e = msg(model.forward(&embeds, Some(&mut cache), false));
    ensure!(e.contains("KV cache full"), "{e}");
    ensure!(
        cache.len() == 10,
        "a refused step must not advance the cache"
    );
    let e = msg(model.forward(&embeds.i(0..1)?, Some(&mut cache), false));
    ensure!(e.contains("batch"), "{e}");

    // a broken checkpoint directory names the file
    let tmp = tempfile::tempdir()?;
    let e = Llama::load(tmp.path(), &dev, DType::F32)
        .unwrap_err()
        .to_string();
    ensure!(e.contains("config.json"), "{e}");
    model.save(tmp.path())?;
    let bad = serde_json::to_string(&LlamaConfig {
        num_key_value_heads: 3,
        ..cfg.clone()
    })?;
    std::fs::write(tmp.path().join("config.json"), bad)?;
    let e = Llama::load(tmp.path(), &dev, DType::F32)
        .unwrap_err()
        .to_string();
    ensure!(
        e.contains("config.json") && e.contains("num_key_value_heads 3"),
        "{e}"
    );
    let other = serde_json::to_string(&LlamaConfig {
        hidden_size: 64,
        num_key_value_heads: 2,
        ..cfg.clone()
    })?;
    std::fs::write(tmp.path().join("config.json"), other)?;
    let e = Llama::load(tmp.path(), &dev, DType::F32)
        .unwrap_err()
        .to_string();
    ensure!(
        e.contains("model.safetensors") && e.contains("shape"),
        "{e}"
    );

    // saving refuses a tensor set that does not match the config
    let mut tensors = model.tensors();
    tensors.insert(
        "projector.weight".into(),
        Tensor::zeros(3, DType::F32, &dev)?,
    );
    let e = save_checkpoint(tmp.path(), &cfg, &tensors)
        .unwrap_err()
        .to_string();
    ensure!(e.contains("projector.weight"), "{e}");
    tensors.remove("projector.weight");
    tensors.remove("lm_head.weight");
    let e = save_checkpoint(tmp.path(), &cfg, &tensors)
        .unwrap_err()
        .to_string();
    ensure!(e.contains("lm_head.weight is missing"), "{e}");
    Ok(())
}

/// Writes a Rust-saved checkpoint plus inputs and logits to `target/lm-hf-check/` for
/// `python scripts/lm_fixtures.py check target/lm-hf-check` (transformers loads it and compares).
/// Ignored: it needs Python and writes outside a temp directory.
#[test]
#[ignore]
fn export_for_hf_check() -> Result<()> {
    let cfg = LlamaConfig {
        head_dim: Some(12),
        ..tiny(false)
    };
    let (model, _) = fresh(&cfg, 12)?;
    let mut tensors = model.tensors();
    tensors.extend(model.grow_vocab(70, 1)?);
    let grown_cfg = LlamaConfig {
        vocab_size: 70,
        ..cfg
    };
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lm-hf-check");
    save_checkpoint(&dir, &grown_cfg, &tensors)?;
    let model = Llama::load(&dir, &Device::Cpu, DType::F32)?;
    let x = ids(&[&[1, 65, 3, 69, 0, 7, 8]])?;
    let logits = model.forward(&model.embed(&x)?, None, false)?;
    let io = HashMap::from([
        ("input_ids".to_string(), x.to_dtype(DType::I64)?),
        ("logits".to_string(), logits),
    ]);
    candle_core::safetensors::save(&io, dir.join("io.safetensors"))?;
    println!("wrote {}", dir.display());
    Ok(())
}

#[test]
fn fused_inference_computes_what_the_separate_projections_do() -> Result<()> {
    let (model, _) = fresh(&tiny(false), 21)?;
    let mut fused = model.clone();
    fused.fuse_for_inference()?;
    let x = ids(&PROMPT)?;
    // full forward, and cached decoding of the same sequences
    let full = model.forward(&model.embed(&x)?, None, false)?;
    let full_fused = fused.forward(&fused.embed(&x)?, None, false)?;
    let err = max_diff(&full, &full_fused)?;
    ensure!(err < 1e-5, "full forward: max diff {err}");
    assert_eq!(greedy(&model, &x, 12)?, greedy(&fused, &x, 12)?);
    // the same weights under the same names: saving is unchanged
    let (a, b) = (model.tensors(), fused.tensors());
    ensure!(a.len() == b.len());
    for (name, t) in &a {
        ensure!(max_diff(t, &b[name])? == 0.0, "{name} changed");
    }
    // the stacked matrices are copies of the variables: training on them would learn nothing
    let err = fused
        .forward_hidden(&fused.embed(&x)?, None, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("fused"), "training a fused model: {err:?}");
    Ok(())
}
