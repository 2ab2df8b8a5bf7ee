//! The fused in-place AdamW pass (f32 variables on the CPU, the default) against the tensor
//! operations it replaces (`AdamW::set_fused(false)`): 100 steps of a least-squares problem
//! with weight decay, clipping that triggers, two groups on warm-up + cosine schedules and a
//! variable large enough to be split across threads give the same bits, variables and
//! moments; a checkpoint written by one path resumes in the other without changing a number;
//! and `AdamW::clip_and_step` (clipping folded into the update) is the two calls it replaces,
//! on either path.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqrae_train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;

const CPU: Device = Device::Cpu;
/// More than two of the fused pass's parallel chunks (16,384 elements), not a multiple of one.
const LARGE: usize = 40_000;

fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// Variables (a large vector, a matrix, a bias) and the problem's fixed targets and weights.
struct Problem {
    vars: Vec<(String, Var)>,
    targets: Vec<Tensor>,
    weights: Vec<Tensor>,
}

fn problem(seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes: [(&str, Vec<usize>); 3] =
        [("big", vec![LARGE]), ("w", vec![37, 13]), ("b", vec![13])];
    let mut vars = Vec::new();
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    for (name, shape) in shapes {
        let n = shape.iter().product();
        let t = |v: Vec<f32>| Tensor::from_vec(v, shape.as_slice(), &CPU).unwrap();
        vars.push((
            name.to_string(),
            Var::from_tensor(&t(uniform(&mut rng, n, 1.0))).unwrap(),
        ));
        targets.push(t(uniform(&mut rng, n, 2.0)));
        weights.push(t(uniform(&mut rng, n, 3.0)).abs().unwrap());
    }
    Problem {
        vars,
        targets,
        weights,
    }
}

/// loss = sum(w * (theta - target)^2): gradients that differ per element and change every step.
fn grads(p: &Problem) -> GradStore {
    let mut loss = Tensor::zeros((), DType::F32, &CPU).unwrap();
    for (((_, v), t), w) in p.vars.iter().zip(&p.targets).zip(&p.weights) {
        let d = (v.as_tensor() - t).unwrap();
        let term = (d.sqr().unwrap() * w).unwrap().sum_all().unwrap();
        loss = (loss + term).unwrap();
    }
    loss.backward().unwrap()
}

fn optimizer(p: &Problem, fused: bool) -> AdamW {
    let schedule = |peak: f64| LrSchedule {
        peak_lr: peak,
        min_lr: peak / 10.0,
        warmup_steps: 10,
        total_steps: 100,
    };
    let groups = vec![
        ParamGroup::new("big", p.vars[..1].to_vec(), schedule(3e-2)),
        ParamGroup::new("rest", p.vars[1..].to_vec(), schedule(1e-2)),
    ];
    let cfg = AdamWConfig {
        beta2: 0.95,
        weight_decay: 0.05,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(groups, cfg).unwrap();
    opt.set_fused(fused).unwrap();
    opt
}

/// `steps` steps clipped by `AdamW::clip_and_step`; the norms seen before clipping.
fn train_folded(p: &Problem, opt: &mut AdamW, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|_| opt.clip_and_step(&grads(p), 50.0).unwrap().0)
        .collect()
}

/// `steps` clipped steps; the clipping norms seen.
fn train(p: &Problem, opt: &mut AdamW, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|_| {
            let mut g = grads(p);
            let vars: Vec<Var> = p.vars.iter().map(|(_, v)| v.clone()).collect();
            let norm = clip_grad_norm(&mut g, vars.iter(), 50.0).unwrap();
            opt.step(&g).unwrap();
            norm
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &Problem, oa: &AdamW, b: &Problem, ob: &AdamW) {
    for ((name, va), (_, vb)) in a.vars.iter().zip(&b.vars) {
        assert!(
            bits(va.as_tensor()) == bits(vb.as_tensor()),
            "{name} differs"
        );
    }
    let (sa, sb): (HashMap<_, _>, HashMap<_, _>) = (oa.state_tensors(), ob.state_tensors());
    assert_eq!(sa.len(), sb.len());
    for (k, t) in &sa {
        if k != "step" {
            assert!(bits(t) == bits(&sb[k]), "optimizer state {k} differs");
        }
    }
    assert_eq!(oa.step_count(), ob.step_count());
}

#[test]
fn the_fused_pass_is_the_tensor_path_bit_for_bit_over_100_steps() {
    let (fp, tp) = (problem(3), problem(3));
    let (mut fo, mut to) = (optimizer(&fp, true), optimizer(&tp, false));
    let fused_norms = train(&fp, &mut fo, 100);
    let tensor_norms = train(&tp, &mut to, 100);
    assert_eq!(fused_norms, tensor_norms);
    // the clipping triggered early on and the problem was being solved
    assert!(fused_norms[0] > 50.0, "{}", fused_norms[0]);
    assert!(fused_norms[99] < fused_norms[0] / 4.0, "{fused_norms:?}");
    assert_same(&fp, &fo, &tp, &to);
}

#[test]
fn clipping_folded_into_the_step_is_clip_then_step_on_both_paths() {
    for fused in [true, false] {
        let (a, b) = (problem(4), problem(4));
        let (mut oa, mut ob) = (optimizer(&a, fused), optimizer(&b, fused));
        let folded = train_folded(&a, &mut oa, 100);
        assert_eq!(folded, train(&b, &mut ob, 100), "fused {fused}");
        assert!(
            folded[0] > 50.0,
            "the clipping never triggered: {}",
            folded[0]
        );
        assert_same(&a, &oa, &b, &ob);
    }
    // the step's statistics carry the norm it applied: at most the clipping bound
    let p = problem(4);
    let mut o = optimizer(&p, true);
    let (before, stats) = o.clip_and_step(&grads(&p), 50.0).unwrap();
    assert!(
        before > 50.0 && (stats.grad_norm - 50.0).abs() < 1e-3,
        "{stats:?}"
    );
    assert!(o.clip_and_step(&grads(&p), 0.0).is_err());
}

#[test]
fn a_checkpoint_of_either_path_resumes_in_the_other() {
    let (whole, mut whole_opt) = {
        let p = problem(5);
        let o = optimizer(&p, true);
        (p, o)
    };
    train(&whole, &mut whole_opt, 60);
    for first_fused in [true, false] {
        let p = problem(5);
        let mut first = optimizer(&p, first_fused);
        train(&p, &mut first, 35);
        let state = first.state_tensors();
        // a new optimizer of the other kind over the same variables, as after a restart
        let mut second = optimizer(&p, !first_fused);
        second.load_state(&state).unwrap();
        train(&p, &mut second, 25);
        assert_same(&whole, &whole_opt, &p, &second);
    }
}

#[test]
fn other_dtypes_keep_the_tensor_path() {
    // f64 variables: set_fused leaves them on tensor moments (state stays f64)
    let v = Var::from_vec(vec![1.0f64, -2.0, 3.0], 3, &CPU).unwrap();
    let group = ParamGroup::new(
        "g",
        vec![("v".into(), v.clone())],
        LrSchedule::constant(0.1),
    );
    let mut opt = AdamW::new(vec![group], AdamWConfig::default()).unwrap();
    opt.set_fused(true).unwrap();
    let loss = v.sqr().unwrap().sum_all().unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    assert_eq!(opt.state_tensors()["m.v"].dtype(), DType::F64);
}
