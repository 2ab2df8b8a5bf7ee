//! The `Vqrae` model end to end at a tiny size: encode/decode shapes, checkpoints that round
//! trip, clear errors on broken checkpoints, and gradients to every trainable tensor.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use vqrae_tokenizer::checkpoint::{save_checkpoint, varmap_tensors, CONFIG_FILE, WEIGHTS_FILE};
use vqrae_tokenizer::encoder::{load_hf_encoder, EncoderConfig};
use vqrae_tokenizer::init::seeded_randn;
use vqrae_tokenizer::{Vqrae, VqraeConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny() -> Result<VqraeConfig> {
    Ok(VqraeConfig::from_toml_file(
        &repo().join("configs/tiny.toml"),
    )?)
}

fn input(b: usize, s: usize) -> Result<Tensor> {
    Ok(seeded_randn((b, 3, s, s), 0.0, 1.0, 14, &Device::Cpu)?)
}

#[test]
fn encode_gives_features_and_codes_decode_gives_pixels() -> Result<()> {
    let cfg = tiny()?;
    let (model, _) = Vqrae::init(&cfg, None, 0, &Device::Cpu)?;
    let x = input(2, 32)?;
    let enc = model.encode(&x)?;
    assert_eq!(enc.grid, (4, 4));
    assert_eq!(enc.features.dims(), &[2, 16, 32]);
    assert_eq!(enc.codes.dims(), &[2, 16]);
    assert_eq!(enc.codes.dtype(), DType::U32);
    let max = enc.codes.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    assert!(max < 64);
    let y = model.decode(&enc.codes, enc.grid)?;
    assert_eq!(y.dims(), &[2, 3, 32, 32]);
    assert_eq!(model.output_to_images(&y)?.len(), 2);
    // codes outside the codebook are an error, not a panic
    let bad = Tensor::full(64u32, (1, 16), &Device::Cpu)?;
    assert!(model.decode(&bad, (4, 4)).is_err());
    Ok(())
}

#[test]
fn same_seed_same_model() -> Result<()> {
    let cfg = tiny()?;
    let x = input(1, 32)?;
    let a = Vqrae::init(&cfg, None, 5, &Device::Cpu)?
        .0
        .reconstruct(&x)?;
    let b = Vqrae::init(&cfg, None, 5, &Device::Cpu)?
        .0
        .reconstruct(&x)?;
    let c = Vqrae::init(&cfg, None, 6, &Device::Cpu)?
        .0
        .reconstruct(&x)?;
    assert_eq!(
        a.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?
    );
    assert_ne!(
        a.flatten_all()?.to_vec1::<f32>()?,
        c.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn checkpoint_round_trips() -> Result<()> {
    let cfg = tiny()?;
    let (model, vars) = Vqrae::init(&cfg, None, 1, &Device::Cpu)?;
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("tok");
    model.save(&ckpt, &vars)?;
    let loaded = Vqrae::load(&ckpt, &Device::Cpu, DType::F32)?;
    assert_eq!(loaded.config(), &cfg);
    let x = input(2, 32)?;
    let (a, b) = (model.encode(&x)?, loaded.encode(&x)?);
    assert_eq!(a.codes.to_vec2::<u32>()?, b.codes.to_vec2::<u32>()?);
    let diff = (model.reconstruct(&x)? - loaded.reconstruct(&x)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-6);
    Ok(())
}

fn broken_checkpoint(
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) -> Result<String> {
    let cfg = tiny()?;
    let (_, vars) = Vqrae::init(&cfg, None, 1, &Device::Cpu)?;
    let mut tensors = varmap_tensors(&vars.varmap)?;
    edit(&mut tensors);
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("tok");
    save_checkpoint(&ckpt, &cfg, &tensors)?;
    match Vqrae::load(&ckpt, &Device::Cpu, DType::F32) {
        Ok(_) => anyhow::bail!("a broken checkpoint loaded"),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn missing_tensor_is_a_clear_error() -> Result<()> {
    let msg = broken_checkpoint(|t| {
        t.remove("decoder.blocks.1.attn.q.weight");
    })?;
    eprintln!("{msg}");
    assert!(
        msg.contains("decoder.blocks.1.attn.q.weight") && msg.contains(WEIGHTS_FILE),
        "{msg}"
    );
    Ok(())
}

#[test]
fn wrong_shape_is_a_clear_error() -> Result<()> {
    let msg = broken_checkpoint(|t| {
        t.insert(
            "proj_in.weight".into(),
            Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
    })?;
    eprintln!("{msg}");
    assert!(
        msg.contains("proj_in.weight") && msg.contains("shape"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn unknown_config_field_and_corrupt_weights_are_clear_errors() -> Result<()> {
    let cfg = tiny()?;
    let (model, vars) = Vqrae::init(&cfg, None, 1, &Device::Cpu)?;
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("tok");
    model.save(&ckpt, &vars)?;
    let path = ckpt.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)?.replacen("\"image_size\"", "\"imag_size\"", 1);
    std::fs::write(&path, text)?;
    let msg = Vqrae::load(&ckpt, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("imag_size") && msg.contains(CONFIG_FILE),
        "{msg}"
    );

    model.save(&ckpt, &vars)?;
    std::fs::write(ckpt.join(WEIGHTS_FILE), b"not safetensors")?;
    let msg = Vqrae::load(&ckpt, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(WEIGHTS_FILE), "{msg}");
    let msg = Vqrae::load(&dir.path().join("nope"), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope"), "{msg}");
    Ok(())
}

#[test]
fn every_trainable_tensor_gets_a_gradient() -> Result<()> {
    let cfg = tiny()?;
    let (model, vars) = Vqrae::init(&cfg, None, 2, &Device::Cpu)?;
    let x = input(2, 32)?;
    let out = model.forward(&x, true)?;
    let rec = (&out.reconstruction - &x)?.sqr()?.mean_all()?;
    let loss = (rec + &out.quantized.loss)?;
    let grads = loss.backward()?;
    let frozen = model.frozen_names();
    let data = vars.varmap.data().lock().unwrap();
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        let has = grads
            .get(var.as_tensor())
            .map(|g| {
                g.abs()
                    .and_then(|a| a.sum_all())
                    .and_then(|s| s.to_scalar::<f32>())
                    .unwrap_or(0.0)
                    > 0.0
            })
            .unwrap_or(false);
        if frozen.contains(name) {
            continue;
        }
        if !has {
            missing.push(name.clone());
        }
    }
    assert!(missing.is_empty(), "no gradient reaches: {missing:?}");
    Ok(())
}

#[test]
fn init_takes_the_encoder_from_a_hugging_face_directory() -> Result<()> {
    let hf_dir = repo().join("tokenizer/tests/fixtures/dinov2_tiny");
    let dev = Device::Cpu;
    let hf = load_hf_encoder(&hf_dir, &dev, DType::F32)?;
    let mut cfg = tiny()?;
    cfg.image_size = 16;
    cfg.encoder = hf.config.clone();
    assert!(matches!(cfg.encoder, EncoderConfig::Dinov2(_)));
    let (model, _) = Vqrae::init(&cfg, Some(&hf_dir), 0, &dev)?;
    let x = input(2, 16)?;
    let ours = model.encode(&x)?.features;
    let theirs = hf.encoder.patch_tokens(&x, false)?;
    let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-6, "encoder weights were not copied (diff {diff})");
    // a mismatching encoder config is refused
    let wrong = tiny()?;
    assert!(Vqrae::init(&wrong, Some(&hf_dir), 0, &dev).is_err());
    Ok(())
}
