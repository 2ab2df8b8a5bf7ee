//! The record that lets a referee judge: its accuracy on real test images, kept beside its
//! weights.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::report::RefereeReport;
use crate::error::{EvalError, Result};

/// Share of real test images (colour and shape both right) a referee must reach before its
/// verdicts on generated images count.
pub const REQUIRED_ACCURACY: f64 = 0.99;

/// The file in a referee checkpoint directory that records its accuracy on real images.
pub(crate) const QUALIFICATION_FILE: &str = "qualification.json";

/// A referee's accuracy on a real split, kept beside its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Qualification {
    /// The split it was measured on (`test`: images it never trained on).
    pub split: String,
    pub report: RefereeReport,
}

impl Qualification {
    /// Measured on held-out real images and at least [`REQUIRED_ACCURACY`] both-right.
    pub fn qualified(&self) -> bool {
        self.split == "test" && self.report.both >= REQUIRED_ACCURACY
    }
}

/// Writes `dir/`[`QUALIFICATION_FILE`] atomically (temp file + rename).
pub(crate) fn write_qualification(dir: &Path, q: &Qualification) -> Result<()> {
    let path = dir.join(QUALIFICATION_FILE);
    let tmp = dir.join(format!(".{QUALIFICATION_FILE}.tmp-{}", std::process::id()));
    let json = serde_json::to_string_pretty(q).map_err(|source| EvalError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&tmp, json + "\n").map_err(|source| EvalError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| EvalError::Io {
        path: path.clone(),
        source,
    })
}

/// The qualification recorded in a referee directory, if any.
pub fn read_qualification(dir: &Path) -> Result<Option<Qualification>> {
    let path = dir.join(QUALIFICATION_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| EvalError::Json { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use vqrae_train::init::SeededVarMap;

    use crate::referee::{Referee, RefereeConfig};

    #[test]
    fn only_a_referee_with_99_percent_on_real_test_images_may_judge() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let vars = SeededVarMap::new(0);
        let cfg = RefereeConfig {
            image_size: 16,
            channels: [2, 2, 2, 2],
            ..Default::default()
        };
        let referee = Referee::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("ref");
        referee.save(&dir, &vars)?;
        let err = Referee::load_qualified(&dir, &dev)
            .err()
            .expect("no record");
        assert!(err.to_string().contains(QUALIFICATION_FILE), "{err}");
        let report = |both| RefereeReport {
            images: 1000,
            color: 1.0,
            shape: both,
            both,
        };
        for (split, both, ok) in [
            ("test", 0.985, false),
            ("train", 1.0, false),
            ("test", 0.99, true),
        ] {
            let q = Qualification {
                split: split.into(),
                report: report(both),
            };
            write_qualification(&dir, &q)?;
            assert_eq!(read_qualification(&dir)?, Some(q));
            assert_eq!(
                Referee::load_qualified(&dir, &dev).is_ok(),
                ok,
                "{split} {both}"
            );
        }
        // saving again (a retrained referee) drops the old record
        referee.save(&dir, &vars)?;
        assert_eq!(read_qualification(&dir)?, None);
        Ok(())
    }
}
