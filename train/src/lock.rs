//! One trainer per run directory.
//!
//! Two trainers writing the same run directory interleave checkpoints, metrics lines and the
//! final model, and each resumes from the other's state. A trainer therefore holds an exclusive
//! OS file lock ([`std::fs::File::try_lock`]) on `RUN/run.lock` for its whole life; a second
//! trainer on the same directory fails at once with [`TrainError::RunLocked`], which names the
//! directory and the pid written into the file by the holder.
//!
//! The OS releases the lock when the handle closes, including when the process is killed, so a
//! crashed trainer never leaves a stale lock behind. The file itself stays (removing it would
//! let a third process lock a fresh file while a second still holds the old one); only the
//! lock on it means anything.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// Longest holder description read back from a lock file; the file is ours, but anyone can
/// write into it.
const MAX_HOLDER_BYTES: u64 = 256;

/// The exclusive lock of a run directory, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    // Held for its lock: closing the file releases it.
    _file: File,
    dir: PathBuf,
    path: PathBuf,
}

impl RunLock {
    /// Creates `run_dir` if needed and locks `run_dir/run.lock`, writing this process's pid
    /// into it. Fails at once (never waits) with [`TrainError::RunLocked`] when another
    /// handle, in this process or another, holds the lock.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        fs::create_dir_all(run_dir).map_err(TrainError::io(run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(TrainError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainError::RunLocked {
                    dir: run_dir.to_path_buf(),
                    holder: holder(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io(&path)(e)),
        }
        let pid = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(TrainError::io(&path))?;
        Ok(Self {
            _file: file,
            dir: run_dir.to_path_buf(),
            path,
        })
    }

    /// The run directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the holder wrote into the lock file ("pid N"), printable, or a placeholder.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(MAX_HOLDER_BYTES).read_to_string(&mut text));
    let text: String = text.trim().chars().filter(|c| !c.is_control()).collect();
    match read {
        Ok(_) if !text.is_empty() => text,
        _ => "pid unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_handle_is_refused_until_the_first_is_dropped() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(TrainError::io("tempdir"))?;
        let run = tmp.path().join("run");
        let first = RunLock::acquire(&run)?;
        assert_eq!(first.path(), run.join(LOCK_FILE));
        assert_eq!(first.dir(), run);
        let err = RunLock::acquire(&run).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TrainError::RunLocked { .. }), "{msg}");
        assert!(msg.contains(&run.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        // the OS lock went with the handle; the file stays and is locked again
        let again = RunLock::acquire(&run)?;
        assert!(again.path().is_file());
        Ok(())
    }

    #[test]
    fn another_directory_has_its_own_lock() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(TrainError::io("tempdir"))?;
        let _a = RunLock::acquire(&tmp.path().join("a"))?;
        let _b = RunLock::acquire(&tmp.path().join("b"))?;
        Ok(())
    }

    #[test]
    fn an_unreadable_holder_is_reported_as_unknown() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(TrainError::io("tempdir"))?;
        let run = tmp.path();
        let _held = RunLock::acquire(run)?;
        // a holder that wrote control characters only
        fs::write(run.join(LOCK_FILE), "\u{1b}\u{7}\0\n").map_err(TrainError::io(run))?;
        let msg = RunLock::acquire(run).unwrap_err().to_string();
        assert!(
            msg.contains("pid unknown") && !msg.contains('\u{1b}'),
            "{msg}"
        );
        Ok(())
    }
}
