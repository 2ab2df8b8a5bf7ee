//! Installing the data sets into a data root (`vqrae data setup`): `scripts/setup-data.sh`,
//! embedded so that an installed binary can set data up anywhere, run by `bash`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{DataError, Result};

/// The setup script (idempotent: on an installed root it only checks and prints its summary).
pub(crate) const SETUP_SCRIPT: &str = include_str!("../../scripts/setup-data.sh");

/// Installs easy-VQA and Fashion-MNIST into `root` (created if missing), or checks an
/// installed root. The script's output goes to this process's stdout and stderr.
pub fn setup(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
    let root = root.canonicalize().map_err(|e| DataError::io(root, e))?;
    let mut child = Command::new("bash")
        .arg("-s")
        .env(crate::DATA_ENV, &root)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| DataError::io("bash (needed by the data setup)", e))?;
    let fed = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(SETUP_SCRIPT.as_bytes()),
        None => Err(std::io::Error::other("no stdin")),
    };
    // wait even when feeding failed: the child must not outlive its pipe unreaped
    let status = child
        .wait()
        .map_err(|e| DataError::io("bash (needed by the data setup)", e))?;
    fed.map_err(|e| DataError::io("bash: feeding the setup script", e))?;
    if !status.success() {
        return Err(DataError::Invalid {
            path: root,
            message: format!("data setup failed ({status})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_of_an_installed_root_only_checks_it() -> Result<()> {
        assert!(SETUP_SCRIPT.starts_with("#!/usr/bin/env bash"));
        assert!(SETUP_SCRIPT.contains("VQRAE_DATA"));
        setup(&crate::test_root())
    }
}
