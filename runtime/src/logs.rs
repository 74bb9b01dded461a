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

/// Keeps a container's log under `max` bytes while the container writes to it: a file past
/// `max` keeps only its newest half, from the start of a line. It is done in place (as
/// logrotate's copytruncate), so the container's handle, opened for appending, writes on at the
/// new end; a line written between the copy and the truncation is lost. Returns the bytes
/// dropped.
pub fn bound(path: &Path, max: u64) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path, e)),
    };
    if len <= max {
        return Ok(0);
    }
    let io = |e| Error::io(path, e);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let keep = max / 2;
    file.seek(SeekFrom::Start(len - keep)).map_err(io)?;
    let mut tail = Vec::with_capacity(keep as usize);
    file.read_to_end(&mut tail).map_err(io)?;
    let from = tail.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
    file.set_len(0).map_err(io)?;
    let mut appending = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io)?;
    appending.write_all(&tail[from..]).map_err(io)?;
    Ok(len - (tail.len() - from) as u64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_its_bound_keeps_its_newest_whole_lines_and_the_writer_writes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.log");
        let (mut out, _) = open_output(&path).unwrap();
        for i in 0..3000 {
            writeln!(out, "line {i:05} of a chatty container").unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        let dropped = bound(&path, 16 * 1024).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert_eq!(before - dropped, after);
        assert!(after <= 8 * 1024, "{after} bytes left");
        writeln!(out, "after the bound").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("line "),
            "starts at a whole line: {:?}",
            &text[..40]
        );
        assert!(text.ends_with("line 02999 of a chatty container\nafter the bound\n"));
        assert_eq!(
            text.matches('\0').count(),
            0,
            "no hole where the old bytes were"
        );
        assert_eq!(
            bound(&path, 16 * 1024).unwrap(),
            0,
            "under the bound: untouched"
        );
    }
}
