//! The real SmolLM2-135M-Instruct Q4_1 GGUF (installed by `scripts/setup-smollm2.sh`; path
//! overridable with `VQRAE_SMOLLM2_GGUF`): its config, our quantized model against
//! candle-transformers' `quantized_llama` on the same file, and the dequantized f32 model
//! against the quantized one (reported, not asserted equal: Q4_1 flips near-ties).

mod common;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::{max_diff, smollm2_path};
use vqrae_lm::fuse::QuantizedRows;
use vqrae_lm::gguf::{llama_gguf_bytes, GgufFile, GgufWriteOptions};
use vqrae_lm::{Llama, LlamaConfig};

/// "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging
/// Face<|im_end|>\n<|im_start|>user\n..." style ids, all below the vocabulary of 49,152.
const IDS: [u32; 18] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11, 3365, 411, 314, 5713, 2, 198, 1, 4093, 198,
];
const STEPS: usize = 16;
/// How far below the reference's best logit our greedy pick may score: the 8-bit activation
/// rounding moves these logits by up to ~2 (measured, below).
const NEAR_TIE: f32 = 1.0;

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
}

/// Last-position logits of the prompt and the greedy continuation, with our KV cache.
fn ours(model: &Llama) -> Result<(Tensor, Vec<u32>)> {
    let dev = model.device().clone();
    let mut cache = model.new_cache(1, IDS.len() + STEPS, vec![0])?;
    let prompt = Tensor::new(&IDS[..], &dev)?.unsqueeze(0)?;
    let hidden = model.forward_hidden(&model.embed(&prompt)?, Some(&mut cache), false)?;
    let last = model
        .logits(&hidden.i((.., IDS.len() - 1, ..))?)?
        .flatten_all()?;
    let mut out = vec![argmax(&last)?];
    while out.len() < STEPS {
        let id = Tensor::new(&out[out.len() - 1..], &dev)?.unsqueeze(0)?;
        let step = model.forward(&model.embed(&id)?, Some(&mut cache), false)?;
        out.push(argmax(&step)?);
    }
    Ok((last, out))
}

/// The same with candle-transformers' model and cache, and the logits of every step.
fn theirs(model: &mut ModelWeights) -> Result<(Tensor, Vec<u32>, Vec<Tensor>)> {
    let prompt = Tensor::new(&IDS[..], &Device::Cpu)?.unsqueeze(0)?;
    let last = model.forward(&prompt, 0)?.flatten_all()?;
    let mut out = vec![argmax(&last)?];
    let mut steps = vec![last.clone()];
    while out.len() < STEPS {
        let id = Tensor::new(&out[out.len() - 1..], &Device::Cpu)?.unsqueeze(0)?;
        let logits = model
            .forward(&id, IDS.len() + out.len() - 1)?
            .flatten_all()?;
        out.push(argmax(&logits)?);
        steps.push(logits);
    }
    Ok((last, out, steps))
}

/// Our greedy pick at every step of a given continuation (teacher-forced: each step is fed
/// `given`'s token, not our own pick), with our KV cache.
fn ours_forced(model: &Llama, given: &[u32]) -> Result<Vec<u32>> {
    let dev = model.device().clone();
    let mut cache = model.new_cache(1, IDS.len() + given.len(), vec![0])?;
    let prompt = Tensor::new(&IDS[..], &dev)?.unsqueeze(0)?;
    let hidden = model.forward_hidden(&model.embed(&prompt)?, Some(&mut cache), false)?;
    let mut picks = vec![argmax(&model.logits(&hidden.i((
        ..,
        IDS.len() - 1,
        ..,
    ))?)?)?];
    for &id in &given[..given.len() - 1] {
        let id = Tensor::new(&[id], &dev)?.unsqueeze(0)?;
        picks.push(argmax(&model.forward(
            &model.embed(&id)?,
            Some(&mut cache),
            false,
        )?)?);
    }
    Ok(picks)
}

#[test]
fn config_is_the_published_shape() -> Result<()> {
    let gguf = GgufFile::open(smollm2_path()?)?;
    let expected = LlamaConfig {
        vocab_size: 49_152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        initializer_range: 0.02,
    };
    ensure!(gguf.config() == &expected, "{:?}", gguf.config());
    ensure!(gguf.version() == 3 && gguf.file_size() == 98_362_432);
    Ok(())
}

/// The same blocks through the same candle kernels, rows reordered, but the logits are not
/// bit-equal: candle quantizes every matmul's activations to 8 bits first, and that rounding
/// turns the ~1e-7 float differences of the two attention implementations (ours: one batched
/// matmul per KV head group; theirs: `repeat_kv`) into flipped roundings. Measured on these 18
/// ids: bit-identical logits for prompts of up to 5 tokens, then max |diff| 0.33-1.63 for 6 to
/// 18 (0.96 at 18, logits up to ~33), the same argmax at every length and the same 16-token
/// greedy continuation. With `CANDLE_DEQUANTIZE_ALL=1` (dequantized weights, no activation
/// rounding) the two agree within 1e-4 at every length. Asserted: |diff| <= 2 at the last
/// position and the same greedy continuation. Our prefill runs the kernel too here
/// (`QuantizedRows::Kernel`); by default it dequantizes (the next test).
///
/// Since the fused attention kernel (issue 25: scores, softmax and product per block of
/// queries, another summation order again) the free-running continuations part at step 10 of
/// 16, on a near-tie: so the greedy check is teacher-forced, both models fed the reference's
/// tokens, and every one of our picks must score within `NEAR_TIE` of the reference's best
/// under the reference's own logits (measured: the same pick at 14 of 16 steps, the other two
/// 0.29 and 0.14 below; the last-position logits 0.78 apart).
#[test]
fn quantized_model_equals_candle_transformers_on_the_real_file() -> Result<()> {
    let path = smollm2_path()?;
    let mut model = GgufFile::open(&path)?.load_quantized(&Device::Cpu)?;
    model.set_quantized_rows(QuantizedRows::Kernel);
    let mut reader = std::fs::File::open(&path)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader)?;
    let mut reference = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)?;
    let (l_ours, _) = ours(&model)?;
    let (l_ref, ids_ref, steps) = theirs(&mut reference)?;
    let d = max_diff(&l_ours, &l_ref)?;
    println!("quantized vs quantized_llama: max |diff| {d:.3e}");
    ensure!(d <= 2.0, "last-position logits differ by {d}");
    let picks = ours_forced(&model, &ids_ref)?;
    for (step, ((&ours, &best), logits)) in picks.iter().zip(&ids_ref).zip(&steps).enumerate() {
        let logits = logits.to_vec1::<f32>()?;
        let gap = logits[best as usize] - logits[ours as usize];
        println!("step {step}: ours {ours}, theirs {best}, {gap:.3} below their best");
        ensure!(
            gap <= NEAR_TIE,
            "step {step}: we pick {ours}, {gap} below the reference's {best}"
        );
    }
    Ok(())
}

/// The dequantized f32 model against the reference reading of the same weights: the tensors
/// it holds, written back as an F32 GGUF by our writer in memory (llama.cpp's row order), read by
/// `quantized_llama` (dense f32 matmuls for F32 tensors). Measured: max |diff| 6.9e-5 at the
/// last position, the same 16-token greedy continuation; asserted at 1e-3. Then the f32 model
/// against the quantized one, reported, not asserted equal (the issue: Q4_1's activation
/// rounding flips a near-tie).
#[test]
fn dequantized_f32_model_against_the_reference_and_the_quantized_one() -> Result<()> {
    let gguf = GgufFile::open(smollm2_path()?)?;
    let tensors = gguf.dequantized_tensors(&Device::Cpu, DType::F32)?;
    // The 540 MB copy stays in memory: CI machines may have less free disk than RAM.
    let copy = llama_gguf_bytes(gguf.config(), &tensors, &GgufWriteOptions::f32())?;
    let f = Llama::from_tensors(gguf.config(), tensors, &Device::Cpu, DType::F32)?;
    let (lf, i_f) = ours(&f)?;
    let mut reader = std::io::Cursor::new(copy);
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader)?;
    let mut reference = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)?;
    drop(reader);
    let (lr, i_r, _) = theirs(&mut reference)?;
    drop(reference);
    let dr = max_diff(&lf, &lr)?;
    println!("dequantized f32 vs quantized_llama on its f32 copy: max |diff| {dr:.2e}");
    ensure!(dr <= 1e-3, "last-position logits differ by {dr}");
    ensure!(
        i_f == i_r,
        "greedy continuations differ: {i_f:?} vs {i_r:?}"
    );

    // By default a quantized prefill multiplies dequantized copies of the blocks, which are the
    // f32 model's weights: its hidden states are the f32 model's (measured: bit-identical);
    // the logits differ by the output head's 8-bit activations (one row: the kernel over the
    // Q8_0 embedding; measured 0.31).
    let mut q = gguf.load_quantized(&Device::Cpu)?;
    let prefill = |m: &Llama| -> Result<Tensor> {
        let prompt = Tensor::new(&IDS[..], &Device::Cpu)?.unsqueeze(0)?;
        Ok(m.forward_hidden(&m.embed(&prompt)?, None, false)?)
    };
    let dh = max_diff(&prefill(&q)?, &prefill(&f)?)?;
    println!("hidden states, f32 vs quantized with dequantized prefill: max |diff| {dh:.2e}");
    ensure!(
        dh <= 1e-3,
        "a dequantizing prefill is not the f32 model's: {dh}"
    );

    q.set_quantized_rows(QuantizedRows::Kernel);
    let (lq, iq) = ours(&q)?;
    let d = max_diff(&lq, &lf)?;
    let top = |l: &Tensor| -> Result<f32> { Ok(l.max_all()?.to_scalar::<f32>()?) };
    let first_diff = iq.iter().zip(&i_f).position(|(a, b)| a != b);
    println!(
        "dequantized f32 vs quantized (kernel only): max |diff| {d:.4} (top logit {:.2} vs \
         {:.2}); greedy first differs at step {first_diff:?}\n  f32: {i_f:?}\n  q:   {iq:?}",
        top(&lf)?,
        top(&lq)?,
    );
    ensure!(d.is_finite() && d < 5.0, "the two forms are far apart: {d}");
    Ok(())
}
