//! A sweep run resumes exactly: interrupted after a checkpoint and started again, it ends with
//! the same weights and the same validation curve as a run that was never interrupted.

use candle_core::Device;
use rand::{Rng, SeedableRng};
use vqrae_lm::{TextTokenizer, UnifiedVocab};
use vqrae_scaling::codes::{Captioned, CodeSet};
use vqrae_scaling::run::{self, RunInputs, LM_DIR};
use vqrae_scaling::ScalingConfig;

const CONFIG: &str = r#"
name = "t"
seed = 3
tokenizer = "unused"
text_vocab_size = 280
caption_dropout = 0.2
batch_size = 4
warmup_steps = 2
min_lr_ratio = 0.1
grad_clip = 1.0
evals = 4
checkpoint_every = 5
budget = { tokens = 2000 }
[data]
val_images = 6
[quality]
referee = "unused"
guidance = 2.0
images_per_caption = 1
[[sizes]]
name = "a"
hidden_size = 16
num_hidden_layers = 1
num_attention_heads = 2
lr = 3e-3
[[sizes]]
name = "b"
hidden_size = 24
num_hidden_layers = 1
num_attention_heads = 2
lr = 3e-3
[[sizes]]
name = "c"
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
lr = 3e-3
[predict]
name = "d"
hidden_size = 48
num_hidden_layers = 2
num_attention_heads = 4
lr = 3e-3
[smoke]
budget_tokens = 100
train_limit = 4
val_images = 2
images_per_caption = 1
"#;

/// Codes that depend on the caption, so that there is something to learn.
fn codes(n: usize, seed: u64) -> Vec<Captioned> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let captions = ["a red circle", "a blue triangle", "a green rectangle"];
    (0..n)
        .map(|i| {
            let k = i % captions.len();
            Captioned {
                caption: captions[k].into(),
                codes: (0..8)
                    .map(|_| (k as u32 * 4 + rng.gen_range(0..4)) % 16)
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights_and_curve() -> anyhow::Result<()> {
    let cfg: ScalingConfig = toml::from_str(CONFIG)?;
    cfg.validate()?;
    let set = CodeSet {
        image_tokens: 8,
        codebook_size: 16,
        train: codes(40, 1),
        val: codes(6, 2),
    };
    let text = TextTokenizer::train_bpe(set.train.iter().map(|c| c.caption.as_str()), 280)?;
    let vocab = UnifiedVocab::new(text.vocab_size(), 16)?;
    let inputs = RunInputs {
        cfg: &cfg,
        codes: &set,
        tokenizer_dir: std::path::Path::new("unused"),
        tokenizer_sha256: "0123",
        text: &text,
        vocab: &vocab,
        context: 24,
    };
    let size = &cfg.sizes[1];
    let steps = inputs.steps(size)?;
    assert!(
        steps > 7,
        "the run must outlast the interruption: {steps} steps"
    );
    let dev = Device::Cpu;
    let dir = tempfile::tempdir()?;
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");

    let a = run::train(&inputs, size, &whole, &dev, None)?.expect("finished");
    // stop after step 7 (checkpointed there, between the regular checkpoints at 5 and 10)
    assert!(run::train(&inputs, size, &parts, &dev, Some(7))?.is_none());
    // while another trainer holds the run directory, a second one is refused at once
    let held = vqrae_train::lock::RunLock::acquire(&parts)?;
    let err = run::train(&inputs, size, &parts, &dev, None).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("in use by another trainer"), "{msg}");
    drop(held);
    let b = run::train(&inputs, size, &parts, &dev, None)?.expect("finished");

    let weights = |d: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(d.join(LM_DIR).join("model.safetensors"))?)
    };
    assert_eq!(
        weights(&whole)?,
        weights(&parts)?,
        "same weights, bit for bit"
    );
    let losses = |r: &run::RunResult| -> Vec<(u64, f64, f64)> {
        r.curve
            .iter()
            .map(|p| (p.step, p.tokens, p.val_loss))
            .collect()
    };
    assert_eq!(losses(&a.result), losses(&b.result));
    assert_eq!(
        a.result.curve.len(),
        run::eval_steps(steps, cfg.evals).len()
    );
    assert!(a.result.val_loss < a.result.curve[0].val_loss, "it learns");

    // a finished run is reused, not trained again
    let c = run::train(&inputs, size, &whole, &dev, None)?.expect("finished");
    assert_eq!(c.result, a.result);
    assert_eq!(a.result.tokenizer_sha256.as_deref(), Some("0123"));
    // but not when the tokenizer at the same path now holds other weights
    let other = RunInputs {
        tokenizer_sha256: "4567",
        ..inputs
    };
    let err = run::train(&other, size, &whole, &dev, None).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("sha256 0123") && msg.contains("4567"), "{msg}");
    // a result from before hashes were kept takes the hash of the tokenizer at its path
    let file = whole.join("result.json");
    let mut old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    old.as_object_mut().map(|o| o.remove("tokenizer_sha256"));
    std::fs::write(&file, old.to_string())?;
    let d = run::train(&other, size, &whole, &dev, None)?.expect("finished");
    assert_eq!(d.result.tokenizer_sha256.as_deref(), Some("4567"));
    Ok(())
}
