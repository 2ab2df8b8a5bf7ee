//! Exact resume: 10 steps uninterrupted equal 6 steps + checkpoint + fresh process state + 4
//! steps, bit for bit.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vqrae_train::checkpoint;
use vqrae_train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

const CPU: Device = Device::Cpu;
const SEED: u64 = 7;
const N: usize = 64;
const D_IN: usize = 4;
const HIDDEN: usize = 16;
const BATCH: usize = 8;

fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// A 2-layer MLP's variables plus a frozen input scale, from a seeded generator.
fn init(seed: u64) -> HashMap<String, Var> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut var = |shape: &[usize], scale: f32| {
        let n = shape.iter().product();
        Var::from_vec(uniform(&mut rng, n, scale), shape, &CPU).unwrap()
    };
    HashMap::from([
        ("l1.weight".to_string(), var(&[D_IN, HIDDEN], 0.5)),
        ("l1.bias".to_string(), var(&[HIDDEN], 0.1)),
        ("l2.weight".to_string(), var(&[HIDDEN, 1], 0.5)),
        ("l2.bias".to_string(), var(&[1], 0.1)),
        ("frozen.scale".to_string(), var(&[D_IN], 1.0)),
    ])
}

struct Data {
    x: Tensor,
    y: Tensor,
}

fn data() -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 0xDA7A);
    let x = uniform(&mut rng, N * D_IN, 1.0);
    let y: Vec<f32> = x
        .chunks(D_IN)
        .map(|r| (r[0] * 2.0 - r[1]).sin() + r[2] * r[3])
        .collect();
    Data {
        x: Tensor::from_vec(x, (N, D_IN), &CPU).unwrap(),
        y: Tensor::from_vec(y, (N, 1), &CPU).unwrap(),
    }
}

/// The batch of a step depends only on the seed and the step, so a resumed run sees the same
/// batches.
fn batch(data: &Data, step: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED.wrapping_mul(1_000_003).wrapping_add(step));
    let idx: Vec<u32> = (0..BATCH).map(|_| rng.gen_range(0..N as u32)).collect();
    let idx = Tensor::new(idx.as_slice(), &CPU).unwrap();
    (
        data.x.index_select(&idx, 0).unwrap(),
        data.y.index_select(&idx, 0).unwrap(),
    )
}

fn optimizer(vars: &HashMap<String, Var>) -> AdamW {
    let l1 = ParamGroup::with_prefix(
        "l1",
        vars,
        "l1.",
        LrSchedule {
            peak_lr: 3e-2,
            min_lr: 1e-3,
            warmup_steps: 3,
            total_steps: 10,
        },
    );
    let l2 = ParamGroup::with_prefix(
        "l2",
        vars,
        "l2.",
        LrSchedule {
            peak_lr: 1e-2,
            min_lr: 0.0,
            warmup_steps: 2,
            total_steps: 10,
        },
    );
    let cfg = AdamWConfig {
        weight_decay: 1e-2,
        ..AdamWConfig::default()
    };
    AdamW::new(vec![l1, l2], cfg).unwrap()
}

/// Trains over `steps`; returns how many steps were clipped.
fn train(
    vars: &HashMap<String, Var>,
    opt: &mut AdamW,
    data: &Data,
    steps: std::ops::Range<u64>,
) -> usize {
    let mut clipped = 0;
    for step in steps {
        assert_eq!(opt.step_count(), step);
        let (x, y) = batch(data, step);
        let x = x.broadcast_mul(&vars["frozen.scale"]).unwrap();
        let h = x
            .matmul(&vars["l1.weight"])
            .unwrap()
            .broadcast_add(&vars["l1.bias"])
            .unwrap()
            .tanh()
            .unwrap();
        let out = h
            .matmul(&vars["l2.weight"])
            .unwrap()
            .broadcast_add(&vars["l2.bias"])
            .unwrap();
        let loss = (out - y).unwrap().sqr().unwrap().mean_all().unwrap();
        let mut grads = loss.backward().unwrap();
        // A small max norm so that clipping happens on some steps.
        let norm = clip_grad_norm(&mut grads, vars.values(), 1.0).unwrap();
        clipped += usize::from(norm > 1.0);
        let stats = opt.step(&grads).unwrap();
        assert!(stats.grad_norm <= 1.0 + 1e-5, "{stats:?}");
    }
    clipped
}

fn snapshot(vars: &HashMap<String, Var>) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<_> = vars
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn opt_snapshot(opt: &AdamW) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<_> = opt
        .state_tensors()
        .into_iter()
        .filter(|(k, _)| k != "step")
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn resume_is_bit_exact() {
    let data = data();

    // Uninterrupted.
    let vars = init(SEED);
    let mut opt = optimizer(&vars);
    let clipped = train(&vars, &mut opt, &data, 0..10);
    assert!(clipped > 0 && clipped < 10, "clipped {clipped} of 10 steps");
    let want = snapshot(&vars);
    let want_opt = opt_snapshot(&opt);

    // Interrupted after 6 steps.
    let run = tempfile::tempdir().unwrap();
    let at_six = {
        let vars = init(SEED);
        let mut opt = optimizer(&vars);
        train(&vars, &mut opt, &data, 0..6);
        let extra = json!({"seed": SEED, "next_batch": 6});
        checkpoint::save(run.path(), 6, &vars, &opt, &extra, checkpoint::DEFAULT_KEEP).unwrap();
        snapshot(&vars)
    };

    // A new process: everything built fresh (other initial values), then resumed.
    let vars = init(SEED + 1);
    let mut opt = optimizer(&vars);
    let (step, extra) = checkpoint::load_latest(run.path(), &vars, &mut opt)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(step, 6);
    assert_eq!(extra, json!({"seed": SEED, "next_batch": 6}));
    assert_eq!(opt.step_count(), 6);
    assert_eq!(snapshot(&vars), at_six, "loaded values are the saved ones");
    train(&vars, &mut opt, &data, step..10);
    let got = snapshot(&vars);

    assert_ne!(at_six, want, "training moved the weights");
    assert_eq!(
        got, want,
        "resumed parameters differ from the uninterrupted run"
    );
    assert_eq!(opt_snapshot(&opt), want_opt, "optimizer moments differ");

    // Control: resuming the weights but not the optimizer state does not match, so the test
    // above can tell an exact resume from a sloppy one.
    let vars = init(SEED + 1);
    let mut opt = optimizer(&vars);
    checkpoint::load_latest(run.path(), &vars, &mut opt).unwrap();
    let mut sloppy = optimizer(&vars);
    let fresh_state = sloppy.state_tensors();
    let mut state = fresh_state.clone();
    state.insert("step".into(), Tensor::new(6i64, &CPU).unwrap());
    sloppy.load_state(&state).unwrap();
    train(&vars, &mut sloppy, &data, 6..10);
    assert_ne!(snapshot(&vars), want);
    assert_eq!(fresh_state["m.l1.bias"].dtype(), DType::F32);
}
