//! Checkpoint directories: atomic writes, pruning after completion, killed writers, strict
//! loading.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use candle_core::{Device, Var};
use serde_json::json;
use vqrae_train::checkpoint::{self, MODEL_FILE, OPTIMIZER_FILE, STATE_DIR, TRAINER_FILE};
use vqrae_train::optim::{AdamW, AdamWConfig, ParamGroup};
use vqrae_train::schedule::LrSchedule;
use vqrae_train::TrainError;

const CPU: Device = Device::Cpu;

fn vars(fill: f32) -> HashMap<String, Var> {
    HashMap::from([
        (
            "w".to_string(),
            Var::from_vec(vec![fill; 6], (2, 3), &CPU).unwrap(),
        ),
        (
            "frozen".to_string(),
            Var::from_vec(vec![fill * 10.0], 1, &CPU).unwrap(),
        ),
    ])
}

fn opt(vars: &HashMap<String, Var>) -> AdamW {
    let g = ParamGroup::new(
        "w",
        vec![("w".to_string(), vars["w"].clone())],
        LrSchedule::constant(0.1),
    );
    AdamW::new(vec![g], AdamWConfig::default()).unwrap()
}

/// Takes one optimizer step so that the saved state is not all zeros.
fn step(vars: &HashMap<String, Var>, opt: &mut AdamW) {
    let loss = vars["w"].sqr().unwrap().sum_all().unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
}

/// A run directory holding the checkpoint of step 1 (one optimizer step from `vars(1.0)`,
/// keeping 2), with those vars and their optimizer.
fn saved_step_1() -> (tempfile::TempDir, HashMap<String, Var>, AdamW) {
    let dir = tempfile::tempdir().unwrap();
    let v = vars(1.0);
    let mut o = opt(&v);
    step(&v, &mut o);
    checkpoint::save(dir.path(), 1, &v, &o, &json!({}), 2).unwrap();
    (dir, v, o)
}

fn w(vars: &HashMap<String, Var>) -> Vec<f32> {
    vars["w"].flatten_all().unwrap().to_vec1().unwrap()
}

fn steps_on_disk(run: &Path) -> Vec<u64> {
    checkpoint::list(run)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn entries(run: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(run.join(STATE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn save_load_and_keep_last_k() {
    let run = tempfile::tempdir().unwrap();
    let run = run.path();
    assert_eq!(checkpoint::latest(run).unwrap(), None);
    let v = vars(1.0);
    let mut o = opt(&v);
    for s in 1..=3 {
        step(&v, &mut o);
        let dir = checkpoint::save(run, s, &v, &o, &json!({"epoch": s}), 2).unwrap();
        assert_eq!(dir, checkpoint::step_dir(run, s));
        for f in [MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE] {
            assert!(dir.join(f).is_file(), "{f}");
        }
    }
    assert_eq!(steps_on_disk(run), vec![2, 3]);
    assert_eq!(
        entries(run),
        vec!["step-2", "step-3"],
        "no temporary dirs left"
    );
    assert_eq!(
        checkpoint::latest(run).unwrap(),
        Some(checkpoint::step_dir(run, 3))
    );

    let trainer: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(checkpoint::step_dir(run, 3).join(TRAINER_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(trainer, json!({"step": 3, "extra": {"epoch": 3}}));

    let fresh = vars(-5.0);
    let mut fo = opt(&fresh);
    let (s, extra) = checkpoint::load_latest(run, &fresh, &mut fo)
        .unwrap()
        .unwrap();
    assert_eq!((s, extra), (3, json!({"epoch": 3})));
    assert_eq!(w(&fresh), w(&v));
    assert_eq!(
        fresh["frozen"].to_vec1::<f32>().unwrap(),
        vec![10.0],
        "frozen vars are saved too"
    );
    assert_eq!(fo.step_count(), 3);

    // Saving the same step again replaces it; keep = 1 prunes the rest.
    step(&v, &mut o);
    checkpoint::save(run, 3, &v, &o, &json!("again"), 1).unwrap();
    assert_eq!(steps_on_disk(run), vec![3]);
    let (_, extra) = checkpoint::load_latest(run, &fresh, &mut fo)
        .unwrap()
        .unwrap();
    assert_eq!(extra, json!("again"));
    assert_eq!(w(&fresh), w(&v));

    assert!(matches!(
        checkpoint::save(run, 4, &v, &o, &json!(null), 0),
        Err(TrainError::Config(_))
    ));
    // The VarMap helper shares storage with the map.
    let vm = candle_nn::VarMap::new();
    let _ = vm
        .get(
            (2, 3),
            "w",
            candle_nn::Init::Const(0.0),
            candle_core::DType::F32,
            &CPU,
        )
        .unwrap();
    let _ = vm
        .get(
            1,
            "frozen",
            candle_nn::Init::Const(0.0),
            candle_core::DType::F32,
            &CPU,
        )
        .unwrap();
    let mv = checkpoint::var_map_vars(&vm).unwrap();
    let mut mo = opt(&mv);
    checkpoint::load_latest(run, &mv, &mut mo).unwrap().unwrap();
    let from_map = vm.data().lock().unwrap()["w"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(from_map, w(&v));
}

#[test]
fn killed_writes_leave_the_last_good_checkpoint() {
    let (dir, v, mut o) = saved_step_1();
    let run = dir.path();
    step(&v, &mut o);
    checkpoint::save(run, 2, &v, &o, &json!({}), 2).unwrap();
    let good = w(&v);
    let state = run.join(STATE_DIR);

    // A writer killed while writing step 3: a temporary dir with a partial model file and no
    // trainer.json.
    let model2 = fs::read(checkpoint::step_dir(run, 2).join(MODEL_FILE)).unwrap();
    let tmp = state.join(".tmp-step-3-12345-1");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join(MODEL_FILE), &model2[..model2.len() / 2]).unwrap();
    // A damaged dir under a final name: trainer.json fine, model truncated.
    let bad = checkpoint::step_dir(run, 4);
    fs::create_dir(&bad).unwrap();
    fs::write(bad.join(MODEL_FILE), &model2[..model2.len() - 3]).unwrap();
    fs::copy(
        checkpoint::step_dir(run, 2).join(OPTIMIZER_FILE),
        bad.join(OPTIMIZER_FILE),
    )
    .unwrap();
    fs::write(bad.join(TRAINER_FILE), r#"{"step": 4, "extra": {}}"#).unwrap();
    // Stray names are not checkpoints.
    fs::create_dir(state.join("step-007")).unwrap();
    fs::write(state.join("step-9"), "a file").unwrap();

    assert_eq!(steps_on_disk(run), vec![1, 2]);
    assert_eq!(
        checkpoint::latest(run).unwrap(),
        Some(checkpoint::step_dir(run, 2))
    );
    let fresh = vars(0.0);
    let mut fo = opt(&fresh);
    let (s, _) = checkpoint::load_latest(run, &fresh, &mut fo)
        .unwrap()
        .unwrap();
    assert_eq!(s, 2);
    assert_eq!(w(&fresh), good);

    // A save that fails before its rename (a file sits where step-3 must go) prunes nothing.
    fs::write(state.join("step-3"), "in the way").unwrap();
    step(&v, &mut o);
    let err = checkpoint::save(run, 3, &v, &o, &json!({}), 2);
    assert!(err.is_err());
    assert_eq!(
        steps_on_disk(run),
        vec![1, 2],
        "old checkpoints kept when the new one failed"
    );
    assert!(
        !entries(run)
            .iter()
            .any(|e| e.starts_with(".tmp-step-3-") && e != ".tmp-step-3-12345-1"),
        "the failed save cleaned up its temporary dir: {:?}",
        entries(run)
    );

    // Once the way is clear the save completes, then step 1 is pruned and the stale temp dir
    // of the killed writer is removed.
    fs::remove_file(state.join("step-3")).unwrap();
    checkpoint::save(run, 3, &v, &o, &json!({}), 2).unwrap();
    assert_eq!(steps_on_disk(run), vec![2, 3]);
    assert!(!tmp.exists());
    assert_eq!(
        checkpoint::latest(run).unwrap(),
        Some(checkpoint::step_dir(run, 3))
    );
}

#[test]
fn load_is_strict_and_changes_nothing_on_mismatch() {
    let (dir, _, _) = saved_step_1();
    let run = dir.path();

    let check = |target: HashMap<String, Var>, name: &str| {
        let mut to = AdamW::new(
            vec![ParamGroup::new(
                "w",
                target
                    .iter()
                    .filter(|(k, _)| k.as_str() == "w")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                LrSchedule::constant(0.1),
            )],
            AdamWConfig::default(),
        )
        .unwrap();
        let before: HashMap<String, Vec<f32>> = target
            .iter()
            .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        let err = checkpoint::load_latest(run, &target, &mut to).unwrap_err();
        assert!(
            matches!(&err, TrainError::StateMismatch { name: n, .. } if n == name),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
        for (k, v) in &target {
            assert_eq!(
                before[k],
                v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{k} changed"
            );
        }
        assert_eq!(to.step_count(), 0);
    };
    // Missing in the checkpoint.
    let mut more = vars(0.0);
    more.insert(
        "extra_var".into(),
        Var::from_vec(vec![0f32], 1, &CPU).unwrap(),
    );
    check(more, "extra_var");
    // In the checkpoint but not in the model.
    let mut fewer = vars(0.0);
    fewer.remove("frozen");
    check(fewer, "frozen");
    // Wrong shape.
    let mut shape = vars(0.0);
    shape.insert(
        "w".into(),
        Var::from_vec(vec![0f32; 6], (3, 2), &CPU).unwrap(),
    );
    check(shape, "w");
    // Optimizer state of a variable the checkpoint's optimizer did not have.
    let v2 = vars(0.0);
    let g = ParamGroup::new(
        "all",
        v2.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        LrSchedule::constant(0.1),
    );
    let mut o2 = AdamW::new(vec![g], AdamWConfig::default()).unwrap();
    let err = checkpoint::load_latest(run, &v2, &mut o2).unwrap_err();
    assert!(err.to_string().contains("m.frozen"), "{err}");
    assert!(err.to_string().contains(OPTIMIZER_FILE), "{err}");
    assert_eq!(
        w(&v2),
        vec![0.0; 6],
        "model vars unchanged when the optimizer state fails"
    );

    // A missing run directory has no checkpoint.
    let v3 = vars(0.0);
    let mut o3 = opt(&v3);
    assert_eq!(
        checkpoint::load_latest(&run.join("nope"), &v3, &mut o3).unwrap(),
        None
    );
}

/// What a test's tracing subscriber wrote.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `f` with the log captured; returns its result and the log text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let cap = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(cap.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    (out, text)
}

/// Rewrites one tensor of a checkpoint file with NaN, keeping the file intact (its header
/// matches its size), as a run that diverged just before saving leaves it.
fn poison(file: &Path, name: &str) {
    let mut tensors = candle_core::safetensors::load(file, &CPU).unwrap();
    let t = &tensors[name];
    let nan = candle_core::Tensor::full(f32::NAN, t.shape(), &CPU).unwrap();
    tensors.insert(name.to_string(), nan);
    candle_core::safetensors::save(&tensors, file).unwrap();
}

#[test]
fn a_checkpoint_with_nan_weights_falls_back_to_the_previous_one() {
    let (dir, v, mut o) = saved_step_1();
    let run = dir.path();
    let good = w(&v);
    step(&v, &mut o);
    checkpoint::save(run, 2, &v, &o, &json!({"at": 2}), 2).unwrap();
    let step2 = checkpoint::step_dir(run, 2);
    poison(&step2.join(MODEL_FILE), "w");
    // the damage is inside the tensors: the listing still sees two complete checkpoints
    assert_eq!(steps_on_disk(run), vec![1, 2]);

    let fresh = vars(0.0);
    let mut fo = opt(&fresh);
    let (loaded, log) = logged(|| checkpoint::load_latest(run, &fresh, &mut fo));
    let (s, _) = loaded.unwrap().unwrap();
    assert_eq!(s, 1, "resumed from the checkpoint before the poisoned one");
    assert_eq!(w(&fresh), good);
    assert_eq!(fo.step_count(), 1);
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains(&step2.display().to_string()), "{log}");
    assert!(log.contains("NaN or infinite"), "{log}");
    assert!(
        step2.is_dir(),
        "the skipped checkpoint stays for inspection"
    );

    // The optimizer's state is checked too, and the trainer-built-optimizer variant skips alike.
    poison(&checkpoint::step_dir(run, 1).join(OPTIMIZER_FILE), "m.w");
    let fresh = vars(0.0);
    let mut built = 0;
    let err = checkpoint::load_latest_with(run, &fresh, |_, _| {
        built += 1;
        Ok::<_, TrainError>(opt(&fresh))
    })
    .err()
    .unwrap();
    assert_eq!(built, 2, "both checkpoints were tried");
    let msg = err.to_string();
    assert!(
        msg.contains("every checkpoint holds NaN or infinite"),
        "{msg}"
    );
    assert!(msg.contains("step-1") && msg.contains("step-2"), "{msg}");
    assert_eq!(
        w(&fresh),
        vec![0.0; 6],
        "nothing loaded from a poisoned checkpoint"
    );

    // load refuses a poisoned checkpoint directly, naming the file and the tensor.
    let err = checkpoint::load(&step2, &fresh, &mut opt(&fresh)).unwrap_err();
    assert!(
        matches!(&err, TrainError::NonFinite { name, .. } if name == "w"),
        "{err}"
    );
    assert!(err.to_string().contains(MODEL_FILE), "{err}");
}
