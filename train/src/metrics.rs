//! A JSONL metrics log: one `{"step": .., "time": .., ...}` object per line.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// An append-only JSONL log of training metrics, flushed after every record.
///
/// `time` is seconds since the log was opened; on resume it continues from the last kept
/// record's time, so a resumed run's curve has no gap or overlap in `time`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    start: Instant,
    time_offset: f64,
}

/// One line of a log file, kept verbatim.
struct Line {
    text: String,
    record: Map<String, Value>,
}

impl MetricsLog {
    /// Opens the log at `path`. Without `resume_from_step` the file starts empty (a new run);
    /// with `Some(step)` the records with a larger step are dropped, so the resumed run writes
    /// them again without duplicates, and so is a line cut short by a killed process.
    pub fn open(path: &Path, resume_from_step: Option<u64>) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(TrainError::io(parent))?;
        }
        let mut time_offset = 0.0;
        match resume_from_step {
            Some(resume) if path.exists() => {
                let lines = read_lines(path)?;
                let total = lines.len();
                let kept: Vec<Line> = lines
                    .into_iter()
                    .filter(|l| record_step(&l.record).is_some_and(|s| s <= resume))
                    .collect();
                time_offset = kept
                    .last()
                    .and_then(|l| l.record.get("time"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let mut text = String::new();
                for l in &kept {
                    text.push_str(&l.text);
                    text.push('\n');
                }
                let on_disk = fs::read_to_string(path).map_err(TrainError::io(path))?;
                if text != on_disk {
                    tracing::info!(
                        path = %path.display(),
                        dropped = total - kept.len(),
                        "truncating the metrics log to step {resume}"
                    );
                    vqrae_data::fs::write_atomic(path, text.as_bytes())?;
                }
            }
            Some(_) => {}
            None => {
                File::create(path).map_err(TrainError::io(path))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(TrainError::io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            start: Instant::now(),
            time_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"step": step, "time": secs, ...values}`. `values` must be a JSON object
    /// without the keys `step` and `time`.
    pub fn log(&mut self, step: u64, values: &Value) -> Result<()> {
        let bad = |msg: String| TrainError::Metrics {
            path: self.path.clone(),
            msg,
        };
        let Value::Object(values) = values else {
            return Err(bad(format!("a record must be a JSON object, got {values}")));
        };
        let mut record = Map::new();
        record.insert("step".into(), step.into());
        let time = self.time_offset + self.start.elapsed().as_secs_f64();
        record.insert("time".into(), time.into());
        for (k, v) in values {
            if record.contains_key(k) {
                return Err(bad(format!("the key {k:?} is reserved")));
            }
            record.insert(k.clone(), v.clone());
        }
        let mut line =
            serde_json::to_string(&Value::Object(record)).map_err(TrainError::json(&self.path))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(TrainError::io(&self.path))
    }

    /// All records of the log at `path`. A last line cut short by a killed writer is skipped;
    /// any other malformed line is an error naming its line number.
    pub fn read(path: &Path) -> Result<Vec<Value>> {
        Ok(read_lines(path)?
            .into_iter()
            .map(|l| Value::Object(l.record))
            .collect())
    }
}

fn record_step(record: &Map<String, Value>) -> Option<u64> {
    record.get("step").and_then(Value::as_u64)
}

fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let text = fs::read_to_string(path).map_err(TrainError::io(path))?;
    let complete = text.ends_with('\n');
    let raw: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, line) in raw.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let is_last = i + 1 == raw.len();
        let parsed = serde_json::from_str::<Value>(line);
        let record = match parsed {
            Ok(Value::Object(m)) if record_step(&m).is_some() => m,
            _ if is_last && !complete => {
                tracing::warn!(path = %path.display(), "skipping an unfinished last line");
                continue;
            }
            Ok(_) => {
                return Err(TrainError::Metrics {
                    path: path.to_path_buf(),
                    msg: format!("line {}: not an object with an integer \"step\"", i + 1),
                })
            }
            Err(e) => {
                return Err(TrainError::Metrics {
                    path: path.to_path_buf(),
                    msg: format!("line {}: {e}", i + 1),
                })
            }
        };
        out.push(Line {
            text: line.to_string(),
            record,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_writes_step_time_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        log.log(1, &json!({"loss": 2.5})).unwrap();
        log.log(2, &json!({"loss": 1.5, "lr": 1e-3})).unwrap();
        let recs = MetricsLog::read(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["step"], 1);
        assert_eq!(recs[0]["loss"], 2.5);
        assert_eq!(recs[1]["lr"], 1e-3);
        assert!(recs[1]["time"].as_f64().unwrap() >= recs[0]["time"].as_f64().unwrap());
        // Flushed: another reader sees the lines while the log is still open.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);

        assert!(log.log(3, &json!([1, 2])).is_err());
        assert!(log.log(3, &json!({"step": 9})).is_err());
        assert!(log.log(3, &json!({"time": 9})).is_err());

        // A new run (no resume) starts an empty log.
        drop(log);
        MetricsLog::open(&path, None).unwrap();
        assert!(MetricsLog::read(&path).unwrap().is_empty());
    }

    #[test]
    fn resume_truncates_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        for step in 1..=10 {
            log.log(step, &json!({"loss": step as f64})).unwrap();
        }
        drop(log);
        // A killed process left half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"step": 11, "lo"#).unwrap();
        drop(f);
        assert_eq!(MetricsLog::read(&path).unwrap().len(), 10);

        let mut log = MetricsLog::open(&path, Some(6)).unwrap();
        let recs = MetricsLog::read(&path).unwrap();
        let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
        for step in 7..=10 {
            log.log(step, &json!({"loss": 0.0})).unwrap();
        }
        let recs = MetricsLog::read(&path).unwrap();
        let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(
            steps,
            (1..=10).collect::<Vec<_>>(),
            "no duplicates, no gaps"
        );
        assert_eq!(recs[5]["loss"], 6.0);
        assert_eq!(recs[6]["loss"], 0.0);
        // Time continues from the last kept record.
        let t6 = recs[5]["time"].as_f64().unwrap();
        assert!(recs[6]["time"].as_f64().unwrap() >= t6);

        // Resuming past the end keeps everything; resuming a missing log creates it.
        drop(log);
        MetricsLog::open(&path, Some(100)).unwrap();
        assert_eq!(MetricsLog::read(&path).unwrap().len(), 10);
        let fresh = dir.path().join("new.jsonl");
        MetricsLog::open(&fresh, Some(3)).unwrap();
        assert!(MetricsLog::read(&fresh).unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\": 1}\nnot json\n{\"step\": 3}\n").unwrap();
        let err = MetricsLog::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(MetricsLog::open(&path, Some(1)).is_err());
        fs::write(&path, "{\"step\": 1}\n{\"loss\": 3}\n").unwrap();
        let err = MetricsLog::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
