//! Container logs on disk: each container appends to its log file; the previous run's log is
//! kept beside it for `logs --previous`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The container's stdout and stderr: two handles on its log file, opened for appending.
pub fn open_output(path: &Path) -> Result<(std::fs::File, std::fs::File)> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let err = out.try_clone().map_err(|e| Error::io(path, e))?;
    Ok((out, err))
}

/// The log of the run before the current one.
pub fn previous_path(current: &Path) -> PathBuf {
    current.with_extension("previous.log")
}

/// Keeps the last run's log as the previous one, and starts an empty current log.
pub fn rotate(current: &Path) -> Result<()> {
    if current.exists() {
        std::fs::rename(current, previous_path(current)).map_err(|e| Error::io(current, e))?;
    }
    Ok(())
}

/// The last `tail` lines (all when `None`) of a log file.
pub fn read(path: &Path, tail: Option<usize>) -> Result<String> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    Ok(match tail {
        None => text,
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut out = lines[start..].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out
        }
    })
}
