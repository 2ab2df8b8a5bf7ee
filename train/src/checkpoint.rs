//! Training-state checkpoints with exact resume.
//!
//! A run directory holds `state/step-<N>/` directories, each with
//!
//! - `model.safetensors`: every model variable (trainable and frozen) by name,
//! - `optimizer.safetensors`: [`AdamW::state_tensors`],
//! - `trainer.json`: `{"step": N, "extra": ...}`, where `extra` is whatever the caller needs to
//!   continue exactly (data-sampler position, epoch, seed, the run's config).
//!
//! A checkpoint is written into a hidden temporary sibling (`state/.tmp-step-<N>-...`), synced,
//! and renamed into place, so a `step-<N>` directory is always complete; a process killed while
//! writing leaves only a temporary directory, which [`latest`] ignores and the next [`save`]
//! removes. Older checkpoints are pruned only after the new one is in place. [`latest`] also
//! checks each candidate (the safetensors headers against the file sizes, the trainer JSON)
//! and falls back to an older checkpoint if the newest is damaged. A checkpoint can also be
//! intact on disk yet hold NaN or infinite weights (a run that diverged just before saving);
//! [`load`] refuses it ([`TrainError::NonFinite`]) before changing anything, and
//! [`load_latest`] / [`load_latest_with`] then skip it with a warning naming its directory and
//! resume from the previous checkpoint (an error when none is finite). The skipped checkpoint
//! stays on disk for inspection and is replaced when the run reaches its step again.
//!
//! This is not the model's inference checkpoint format, which the model crates own.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, TrainError};
use crate::optim::AdamW;

/// Subdirectory of a run directory that holds the checkpoints.
pub const STATE_DIR: &str = "state";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_FILE: &str = "trainer.json";
/// How many checkpoints [`save`] keeps unless told otherwise.
pub const DEFAULT_KEEP: usize = 2;

const STEP_PREFIX: &str = "step-";
const TMP_PREFIX: &str = ".tmp-step-";
const OLD_PREFIX: &str = ".old-step-";

/// Contents of `trainer.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    pub step: u64,
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// `run_dir/state/step-<step>`.
pub fn step_dir(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(STATE_DIR).join(format!("{STEP_PREFIX}{step}"))
}

/// The variables of a candle `VarMap`, by name. The `Var`s share storage with the map's, so
/// [`load`] sets the map's variables.
pub fn var_map_vars(map: &VarMap) -> Result<HashMap<String, Var>> {
    let data = map.data().lock().map_err(|_| TrainError::Checkpoint {
        path: PathBuf::new(),
        msg: "variable map lock poisoned".into(),
    })?;
    Ok(data.clone())
}

/// Writes checkpoint `step` of `vars` and `opt` with `extra` into `run_dir`, atomically, then
/// keeps the newest `keep` checkpoints (the new one always among them). Returns its directory.
/// A checkpoint of the same step is replaced.
pub fn save(
    run_dir: &Path,
    step: u64,
    vars: &HashMap<String, Var>,
    opt: &AdamW,
    extra: &serde_json::Value,
    keep: usize,
) -> Result<PathBuf> {
    if keep == 0 {
        return Err(TrainError::Config(
            "checkpoint keep must be >= 1 (the checkpoint just written)".into(),
        ));
    }
    let state = run_dir.join(STATE_DIR);
    fs::create_dir_all(&state).map_err(TrainError::io(&state))?;
    let tag = unique_tag();
    let tmp = state.join(format!("{TMP_PREFIX}{step}-{tag}"));
    fs::create_dir(&tmp).map_err(TrainError::io(&tmp))?;
    let written = write_contents(&tmp, step, vars, opt, extra).and_then(|()| {
        let target = step_dir(run_dir, step);
        replace_dir(
            &tmp,
            &target,
            &state.join(format!("{OLD_PREFIX}{step}-{tag}")),
        )?;
        sync_dir(&state)?;
        Ok(target)
    });
    let target = match written {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    tracing::info!(step, dir = %target.display(), "saved training checkpoint");
    prune(&state, step, keep);
    Ok(target)
}

fn unique_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn write_contents(
    dir: &Path,
    step: u64,
    vars: &HashMap<String, Var>,
    opt: &AdamW,
    extra: &serde_json::Value,
) -> Result<()> {
    let model: HashMap<&str, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_detached_tensor()))
        .collect();
    let model_path = dir.join(MODEL_FILE);
    candle_core::safetensors::save(&model, &model_path)
        .ctx(|| format!("writing {}", model_path.display()))?;
    sync_file(&model_path)?;

    let opt_path = dir.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&opt.state_tensors(), &opt_path)
        .ctx(|| format!("writing {}", opt_path.display()))?;
    sync_file(&opt_path)?;

    let trainer_path = dir.join(TRAINER_FILE);
    let trainer = TrainerState {
        step,
        extra: extra.clone(),
    };
    let json = serde_json::to_vec_pretty(&trainer).map_err(TrainError::json(&trainer_path))?;
    let mut f = File::create(&trainer_path).map_err(TrainError::io(&trainer_path))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(TrainError::io(&trainer_path))?;
    sync_dir(dir)
}

/// Renames `tmp` to `target`; an existing directory at `target` is first moved to `old` and
/// removed after the rename.
fn replace_dir(tmp: &Path, target: &Path, old: &Path) -> Result<()> {
    let had_old = target.is_dir();
    if had_old {
        fs::rename(target, old).map_err(TrainError::io(target))?;
    }
    fs::rename(tmp, target).map_err(TrainError::io(target))?;
    if had_old {
        if let Err(e) = fs::remove_dir_all(old) {
            tracing::warn!(dir = %old.display(), "could not remove a replaced checkpoint: {e}");
        }
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(TrainError::io(path))
}

/// Makes a rename or a new file in `dir` durable. Not every platform can open a directory;
/// there the sync is skipped.
fn sync_dir(dir: &Path) -> Result<()> {
    if let Ok(f) = File::open(dir) {
        f.sync_all().map_err(TrainError::io(dir))?;
    }
    Ok(())
}

/// Keeps `keep` complete checkpoints (the one of `current_step` and the newest others) and
/// removes the rest, plus temporary directories left by killed writers. Failures only warn:
/// the new checkpoint is already safe.
fn prune(state: &Path, current_step: u64, keep: usize) {
    let mut others = match list_in(state) {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("could not list checkpoints to prune: {e}");
            return;
        }
    };
    others.retain(|(s, _)| *s != current_step);
    if others.iter().any(|(s, _)| *s > current_step) {
        tracing::warn!(
            current_step,
            "newer checkpoints exist in {}; `latest` will prefer them",
            state.display()
        );
    }
    others.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
    for (_, dir) in others.into_iter().skip(keep - 1) {
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "could not remove an old checkpoint: {e}");
        }
    }
    if let Ok(entries) = fs::read_dir(state) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) || name.starts_with(OLD_PREFIX) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// All complete checkpoints of a run, oldest first. A missing run or state directory has none.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    list_in(&run_dir.join(STATE_DIR))
}

fn list_in(state: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(state) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(state)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(TrainError::io(state))?;
        let name = entry.file_name();
        let Some(step) = parse_step_dir(&name.to_string_lossy()) else {
            continue;
        };
        let dir = entry.path();
        match check_complete(&dir, step) {
            Ok(()) => out.push((step, dir)),
            Err(why) => {
                tracing::warn!(dir = %dir.display(), "ignoring an incomplete checkpoint: {why}")
            }
        }
    }
    out.sort_by_key(|(s, _)| *s);
    Ok(out)
}

fn parse_step_dir(name: &str) -> Option<u64> {
    let step: u64 = name.strip_prefix(STEP_PREFIX)?.parse().ok()?;
    // Only the canonical spelling, so "step-007" and "step-7" cannot both claim step 7.
    (format!("{STEP_PREFIX}{step}") == name).then_some(step)
}

/// The newest complete checkpoint directory of a run, if any. Complete means intact on disk;
/// whether its tensors are finite is [`load`]'s check (see [`load_latest`]).
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop().map(|(_, dir)| dir))
}

fn check_complete(dir: &Path, step: u64) -> std::result::Result<(), String> {
    if !dir.is_dir() {
        return Err("not a directory".into());
    }
    let trainer = read_trainer(&dir.join(TRAINER_FILE)).map_err(|e| e.to_string())?;
    if trainer.step != step {
        return Err(format!("{TRAINER_FILE} says step {}", trainer.step));
    }
    for file in [MODEL_FILE, OPTIMIZER_FILE] {
        check_safetensors(&dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
    }
    Ok(())
}

fn read_trainer(path: &Path) -> Result<TrainerState> {
    let bytes = fs::read(path).map_err(TrainError::io(path))?;
    serde_json::from_slice(&bytes).map_err(TrainError::json(path))
}

/// Checks a safetensors file's header against its size without reading the tensors, which
/// catches a truncated file.
fn check_safetensors(path: &Path) -> std::result::Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| format!("header length: {e}"))?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(format!(
            "header length {n} does not fit a file of {len} bytes"
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| format!("header: {e}"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("header: {e}"))?;
    let mut end = 0u64;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| o.get(1))
            .and_then(|o| o.as_u64())
            .ok_or_else(|| format!("tensor {name} has no data offsets"))?;
        end = end.max(offsets);
    }
    if 8 + n + end != len {
        return Err(format!(
            "data ends at byte {} but the file has {len} bytes (truncated?)",
            8 + n + end
        ));
    }
    Ok(())
}

/// Loads the checkpoint in `dir` into `vars` (set in place, strictly: the same names and
/// shapes, no extra tensors) and `opt`, and returns its step and extra JSON. On a mismatch
/// nothing is changed.
pub fn load(
    dir: &Path,
    vars: &HashMap<String, Var>,
    opt: &mut AdamW,
) -> Result<(u64, serde_json::Value)> {
    let trainer = read_trainer(&dir.join(TRAINER_FILE))?;
    let model_path = dir.join(MODEL_FILE);
    let model = candle_core::safetensors::load(&model_path, &Device::Cpu)
        .ctx(|| format!("reading {}", model_path.display()))?;
    let what = model_path.display().to_string();
    let mismatch = |name: &str, msg: String| TrainError::StateMismatch {
        what: what.clone(),
        name: name.to_string(),
        msg,
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut values = Vec::with_capacity(names.len());
    for name in names {
        let var = &vars[name];
        let t = model
            .get(name)
            .ok_or_else(|| mismatch(name, "missing".into()))?;
        if t.dims() != var.dims() {
            return Err(mismatch(
                name,
                format!("shape {:?}, the model's is {:?}", t.dims(), var.dims()),
            ));
        }
        check_finite(&model_path, name, t)?;
        if t.dtype() != var.dtype() {
            tracing::warn!(
                name = name.as_str(),
                "checkpoint dtype {:?} converted to {:?}",
                t.dtype(),
                var.dtype()
            );
        }
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .ctx(|| format!("loading {name} from {what}"))?;
        values.push((name, var, t));
    }
    let mut extra: Vec<&String> = model.keys().filter(|k| !vars.contains_key(*k)).collect();
    extra.sort();
    if let Some(k) = extra.first() {
        return Err(mismatch(k, "not a variable of the model".into()));
    }

    let opt_path = dir.join(OPTIMIZER_FILE);
    let opt_state = candle_core::safetensors::load(&opt_path, &Device::Cpu)
        .ctx(|| format!("reading {}", opt_path.display()))?;
    let mut opt_names: Vec<&String> = opt_state.keys().collect();
    opt_names.sort();
    for name in opt_names {
        check_finite(&opt_path, name, &opt_state[name])?;
    }
    opt.load_state(&opt_state).map_err(|e| match e {
        TrainError::StateMismatch { name, msg, .. } => TrainError::StateMismatch {
            what: opt_path.display().to_string(),
            name,
            msg,
        },
        other => other,
    })?;
    for (name, var, t) in values {
        var.set(&t).ctx(|| format!("setting {name} from {what}"))?;
    }
    tracing::info!(step = trainer.step, dir = %dir.display(), "resumed from checkpoint");
    Ok((trainer.step, trainer.extra))
}

/// Checks that a loaded tensor holds no NaN or infinity (integer tensors always pass).
fn check_finite(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    let what = || format!("checking {name} of {}", path.display());
    let finite = match t.dtype() {
        DType::F64 => t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .ctx(what)?
            .iter()
            .all(|x| x.is_finite()),
        d if d.is_float() => t
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .ctx(what)?
            .iter()
            .all(|x| x.is_finite()),
        _ => true,
    };
    if finite {
        Ok(())
    } else {
        Err(TrainError::NonFinite {
            path: path.to_path_buf(),
            name: name.to_string(),
        })
    }
}

/// Loads the newest complete checkpoint of `run_dir` (see [`load`]); `None` when there is none.
/// A checkpoint with NaN or infinite tensors is skipped with a warning for the one before it;
/// when every checkpoint is, the error says so.
pub fn load_latest(
    run_dir: &Path,
    vars: &HashMap<String, Var>,
    opt: &mut AdamW,
) -> Result<Option<(u64, serde_json::Value)>> {
    newest_loadable(run_dir, |dir| Ok::<_, TrainError>(load(dir, vars, opt)))
}

/// A checkpoint [`load_latest_with`] resumed from.
pub struct Resumed {
    pub dir: PathBuf,
    pub step: u64,
    pub extra: serde_json::Value,
    /// The optimizer `optimizer_for` built, with the checkpoint's state loaded.
    pub opt: AdamW,
}

/// [`load_latest`] for a trainer whose optimizer depends on the checkpoint (the joint trainer's
/// phases): `optimizer_for` builds it from a candidate's directory and trainer state, then the
/// checkpoint is loaded into `vars` and it. Non-finite checkpoints are skipped as there.
pub fn load_latest_with<E: From<TrainError>>(
    run_dir: &Path,
    vars: &HashMap<String, Var>,
    mut optimizer_for: impl FnMut(&Path, &TrainerState) -> std::result::Result<AdamW, E>,
) -> std::result::Result<Option<Resumed>, E> {
    newest_loadable(run_dir, |dir| {
        let trainer = read_trainer(&dir.join(TRAINER_FILE))?;
        let mut opt = optimizer_for(dir, &trainer)?;
        Ok(load(dir, vars, &mut opt).map(|(step, extra)| Resumed {
            dir: dir.to_path_buf(),
            step,
            extra,
            opt,
        }))
    })
}

/// Runs `attempt` on the run's complete checkpoints, newest first, until one loads. An outer
/// error stops at once; an inner [`TrainError::NonFinite`] skips to the previous checkpoint
/// with a warning naming the skipped directory; any other inner error stops.
fn newest_loadable<T, E: From<TrainError>>(
    run_dir: &Path,
    mut attempt: impl FnMut(&Path) -> std::result::Result<Result<T>, E>,
) -> std::result::Result<Option<T>, E> {
    let mut skipped: Vec<String> = Vec::new();
    for (_, dir) in list(run_dir)?.into_iter().rev() {
        match attempt(&dir)? {
            Ok(t) => {
                if !skipped.is_empty() {
                    tracing::warn!(
                        dir = %dir.display(),
                        skipped = skipped.join(", "),
                        "resumed from an older checkpoint: the newer ones hold NaN or infinite \
                         weights"
                    );
                }
                return Ok(Some(t));
            }
            Err(e @ TrainError::NonFinite { .. }) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "skipping a checkpoint with non-finite weights ({e}); falling back to the \
                     previous one"
                );
                skipped.push(dir.display().to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if skipped.is_empty() {
        return Ok(None);
    }
    let state = run_dir.join(STATE_DIR);
    Err(TrainError::Checkpoint {
        msg: format!(
            "every checkpoint holds NaN or infinite weights ({}); the run diverged before its \
             first finite save: remove {} to start it afresh, or lower the learning rate",
            skipped.join(", "),
            state.display()
        ),
        path: state,
    }
    .into())
}
