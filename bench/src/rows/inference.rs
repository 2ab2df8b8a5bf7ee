//! The inference rows: tokenizer encode / decode, LM prefill, image generation with the KV
//! cache, and the cached step's profile. Each ends its timed call by reading a result back
//! to the host, so lazy or asynchronous work is inside the time.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use vqrae_generate::sample::{GenerationConfig, T2i};
use vqrae_lm::{Llama, SamplingConfig, TextTokenizer, UnifiedVocab};
use vqrae_tokenizer::Vqrae;

use super::timing::time;
use super::{Bench, Measured, PROMPT};

/// The LM as the server loads it: fused q/k/v and gate/up projections.
fn inference_lm(dir: &Path, device: &Device, dtype: DType) -> Result<Llama> {
    let mut lm = Llama::load(dir, device, dtype)?;
    lm.fuse_for_inference()?;
    Ok(lm)
}

/// Encode + quantize `batch` random images.
pub(crate) fn tok_encode(bench: &mut Bench) -> Result<Measured> {
    let (b, device, dtype) = (bench.batch, bench.device, bench.dtype);
    let model = Vqrae::load(&bench.tok_dir(), device, dtype)?;
    let s = model.config().image_size;
    let x = Tensor::randn(0f32, 1.0, (b, 3, s, s), device)?.to_dtype(dtype)?;
    let t = time(device, bench.timing, || {
        model.encode(&x)?.codes.to_vec2::<u32>()?;
        Ok(())
    })?;
    Ok(Measured::new("images/s", b, t))
}

/// Decode `batch` random code grids.
pub(crate) fn tok_decode(bench: &mut Bench) -> Result<Measured> {
    let (b, device) = (bench.batch, bench.device);
    let model = Vqrae::load(&bench.tok_dir(), device, bench.dtype)?;
    let grid = model.config().grid();
    let n = model.config().quantizer.codebook_size as u32;
    let codes = bench.random_tensor((b, bench.info.image_tokens), 0..n)?;
    let t = time(device, bench.timing, || {
        model
            .decode(&codes, grid)?
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok(Measured::new("images/s", b, t))
}

/// One forward over `batch` prompt + image sequences, the last position's logits.
pub(crate) fn lm_prefill(bench: &mut Bench) -> Result<Measured> {
    let (b, seq, device) = (bench.batch, bench.seq(), bench.device);
    let lm = inference_lm(&bench.lm_dir(), device, bench.dtype)?;
    let ids = bench.random_tensor((b, seq), 0..bench.info.code_end)?;
    let t = time(device, bench.timing, || {
        let h = lm.forward_hidden(&lm.embed(&ids)?, None, false)?;
        lm.logits(&h.narrow(1, seq - 1, 1)?.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        Ok(())
    })?;
    Ok(Measured::new("tokens/s", b * seq, t))
}

/// A full image's codes for `batch` images with the KV cache (guided when `batch` > 1).
pub(crate) fn lm_decode(bench: &mut Bench) -> Result<Measured> {
    let (b, device) = (bench.batch, bench.device);
    let (text_vocab, image_tokens) = (bench.info.text_vocab, bench.info.image_tokens);
    let codes = (bench.info.code_end - bench.info.code_start) as usize;
    let lm = inference_lm(&bench.lm_dir(), device, bench.dtype)?;
    let text = TextTokenizer::from_file(bench.lm_dir().join("tokenizer.json"))?;
    let vocab = UnifiedVocab::new(text_vocab, codes)?;
    let t2i = T2i {
        lm: &lm,
        text: &text,
        vocab: &vocab,
        image_tokens,
    };
    let guided = b > 1;
    // `<bos>`, a random caption, `<boi>`; with guidance as many unconditional prompts follow
    let (bos, boi) = (text.bos_id(), vocab.boi());
    let mut prompts = Vec::with_capacity(2 * b);
    for _ in 0..b {
        let mut p = vec![bos];
        p.extend(bench.random_ids(PROMPT - 2, 3..text_vocab as u32));
        p.push(boi);
        prompts.push(p);
    }
    if guided {
        prompts.extend((0..b).map(|_| vec![bos, boi]));
    }
    let seeds: Vec<u64> = (0..b as u64).collect();
    let gen = GenerationConfig {
        guidance: if guided { 2.0 } else { 1.0 },
        sampling: SamplingConfig::default(),
    };
    let t = time(device, bench.timing, || {
        t2i.sample_from_prompts(&prompts, &seeds, &gen)?;
        Ok(())
    })?;
    Ok(Measured::new("tokens/s", b * image_tokens, t))
}

/// The cached decoding step at every position of one image; adds each step's mean seconds
/// (`step_seconds`).
pub(crate) fn lm_step_profile(bench: &mut Bench) -> Result<Measured> {
    let (b, seq, device) = (bench.batch, bench.seq(), bench.device);
    let lm = inference_lm(&bench.lm_dir(), device, bench.dtype)?;
    let ids = bench.random_tensor((b, PROMPT), 0..bench.info.code_end)?;
    let code_start = bench.info.code_start;
    let mut steps = vec![0.0; bench.info.image_tokens];
    let mut profile = || -> Result<()> {
        let mut cache = lm.new_cache(b, seq + 1, vec![0; b])?;
        lm.forward_hidden(&lm.embed(&ids)?, Some(&mut cache), false)?;
        let next = Tensor::from_vec(vec![code_start; b], (b, 1), device)?;
        for s in steps.iter_mut() {
            let t = Instant::now();
            let h = lm.forward_hidden(&lm.embed(&next)?, Some(&mut cache), false)?;
            lm.logits(&h.squeeze(1)?)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            *s += t.elapsed().as_secs_f64();
        }
        Ok(())
    };
    let t = time(device, bench.timing, &mut profile)?;
    // the two untimed calls added to the sums too: average over all calls
    let calls = (t.0 + 2) as f64;
    let mut m = Measured::new("tokens/s", b * bench.info.image_tokens, t);
    m.extra.insert(
        "step_seconds".into(),
        steps.iter().map(|s| s / calls).collect::<Vec<_>>().into(),
    );
    Ok(m)
}
