//! Container logs on disk: what a container writes goes through a pipe to a thread of ours,
//! which appends it to the container's log file as records in the CRI log format that kubelet
//! uses (`2026-12-06T10:00:00.123456789Z stdout F the line`), so a log can be read with the
//! time of each line, or from a time on. The previous run's log is kept beside it for
//! `logs --previous`.
//!
//! An OCI container's pipes are FIFOs in its bundle, held open by its wrapper process, so a
//! container outlives the agent without its writes failing: what it writes while no agent
//! reads waits in the pipe (up to [`PIPE_SIZE`], then the container's write waits), and the
//! next agent takes the FIFOs over. A line is timed when the agent reads it.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The longest a record's content gets: a longer line is split into partial records (`P`), as
/// kubelet's runtimes do at 16 KiB.
const MAX_RECORD: usize = 16 * 1024;

/// What a container's pipe holds while no one reads it (the kernel's default is 64 KiB).
pub const PIPE_SIZE: usize = 1024 * 1024;

/// The stream a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A time as records carry it: RFC 3339 in UTC with nanoseconds, always the same width, so
/// that times compare as strings.
pub fn time_of(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Turns one stream's bytes into records appended to a log.
pub struct Recorder {
    stream: Stream,
    /// The line begun and not yet ended.
    line: Vec<u8>,
    out: File,
}

impl Recorder {
    /// A recorder appending to the log at `path` (created if need be).
    pub fn open(stream: Stream, path: &Path) -> Result<Recorder> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Recorder {
            stream,
            line: Vec::new(),
            out,
        })
    }

    /// Records every whole line in `bytes`; the rest waits for its end (or [`MAX_RECORD`]).
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let room = MAX_RECORD - self.line.len();
            let take = bytes.len().min(room);
            match bytes[..take].iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    self.record(true)?;
                }
                None => {
                    self.line.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.line.len() == MAX_RECORD {
                        self.record(false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Records the line begun, if any (at the end of the stream), as a partial record: the
    /// output ended without a newline and is shown so, as kubelet shows it.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        self.record(false)
    }

    /// One record, in one write: records of the two streams never interleave.
    fn record(&mut self, full: bool) -> std::io::Result<()> {
        let time = time_of(chrono::Utc::now());
        let tag = if full { "F" } else { "P" };
        let mut r = Vec::with_capacity(time.len() + self.line.len() + 12);
        r.extend_from_slice(time.as_bytes());
        r.push(b' ');
        r.extend_from_slice(self.stream.name().as_bytes());
        r.push(b' ');
        r.extend_from_slice(tag.as_bytes());
        r.push(b' ');
        r.extend_from_slice(&self.line);
        r.push(b'\n');
        self.line.clear();
        self.out.write_all(&r)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The threads copying a container's pipes into its log.
pub struct Copiers {
    done: mpsc::Receiver<()>,
    count: usize,
}

impl Copiers {
    /// Waits until both pipes are drained to their end (every writer gone), for at most
    /// `limit`: a container's last lines are in its log before its end is reported.
    pub fn wait(self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        for _ in 0..self.count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.done.recv_timeout(left).is_err() {
                return;
            }
        }
    }
}

/// Starts a thread per stream copying `pipes` (stdout, stderr) into the log at `log`.
fn copy(pipes: [File; 2], log: &Path, id: &str) -> Result<Copiers> {
    let (tx, done) = mpsc::channel();
    for (pipe, stream) in pipes.into_iter().zip([Stream::Stdout, Stream::Stderr]) {
        let mut recorder = Recorder::open(stream, log)?;
        let tx = tx.clone();
        let mut pipe = pipe;
        std::thread::Builder::new()
            .name(format!("log-{id}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if let Err(e) = recorder.write(&buf[..n]) {
                                tracing::warn!(error = %e, "cannot write a container log");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = recorder.finish();
                let _ = tx.send(());
            })
            .map_err(|e| Error::Internal(format!("cannot start a log thread: {e}")))?;
    }
    Ok(Copiers { done, count: 2 })
}

/// The FIFOs of a container whose wrapper outlives us, in `dir`.
const FIFOS: [&str; 2] = ["stdout", "stderr"];

/// Makes the FIFOs of a container in `dir` and starts recording them into `log`: the write
/// ends, for the container's wrapper, and the copying threads. The wrapper holds the FIFOs
/// open for reading itself (see the module), so they outlive our read ends.
pub fn fifos(dir: &Path, log: &Path, id: &str) -> Result<([File; 2], Copiers)> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for name in FIFOS {
        let path = dir.join(name);
        mknodat(
            CWD,
            &path,
            FileType::Fifo,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .map_err(|e| Error::io(&path, e))?;
        // Read end first (not waiting for a writer), then the write end, which then opens at
        // once; the read end then blocks as usual.
        let reader = open_reader(&path)?;
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let _ = rustix::pipe::fcntl_setpipe_size(&reader, PIPE_SIZE);
        readers.push(reader);
        writers.push(writer);
    }
    let [out_w, err_w]: [File; 2] = writers
        .try_into()
        .map_err(|_| Error::Internal("two FIFOs".into()))?;
    let readers: [File; 2] = readers
        .try_into()
        .map_err(|_| Error::Internal("two FIFOs".into()))?;
    Ok(([out_w, err_w], copy(readers, log, id)?))
}

/// Takes over the FIFOs a container's wrapper holds in `dir` (left by an earlier agent);
/// `None` when the container has none (it was started by an agent that let it write its log
/// itself).
pub fn reattach(dir: &Path, log: &Path, id: &str) -> Result<Option<Copiers>> {
    if !dir.join(FIFOS[0]).exists() {
        return Ok(None);
    }
    let out = open_reader(&dir.join(FIFOS[0]))?;
    let err = open_reader(&dir.join(FIFOS[1]))?;
    copy([out, err], log, id).map(Some)
}

/// Opens a FIFO for reading without waiting for a writer, then makes its reads block.
fn open_reader(path: &Path) -> Result<File> {
    use rustix::fs::{fcntl_setfl, OFlags};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    fcntl_setfl(&file, OFlags::empty()).map_err(|e| Error::io(path, e))?;
    Ok(file)
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

/// How a log is shown: as `kubectl logs` asks for it.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Each line after the time it was written (`--timestamps`).
    pub timestamps: bool,
    /// Only lines written at or after this time, as [`time_of`] writes it (`--since`).
    pub since: Option<String>,
}

/// One line of a log file: a record, or a line written as it came (a log from before records,
/// which has no time).
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Record {
        time: &'a [u8],
        stderr: bool,
        full: bool,
        content: &'a [u8],
    },
    Raw(&'a [u8]),
}

fn parse(line: &[u8]) -> Line<'_> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tag), Some(content)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Line::Raw(line);
    };
    let timed =
        time.len() >= 20 && time.first().is_some_and(u8::is_ascii_digit) && time.ends_with(b"Z");
    if !timed || !matches!(stream, b"stdout" | b"stderr") || !matches!(tag, b"F" | b"P") {
        return Line::Raw(line);
    }
    Line::Record {
        time,
        stderr: stream == b"stderr",
        full: tag == b"F",
        content,
    }
}

/// Turns the records of a log into what its reader sees, line by line; a line split into
/// partial records is shown whole, with the time of its first part. It keeps where it is
/// between calls, so a log followed chunk by chunk reads as one read whole.
#[derive(Debug, Default)]
pub struct Renderer {
    view: View,
    /// For stdout and stderr: inside a line whose first part was shown (or skipped, when
    /// `skipping`).
    within: [bool; 2],
    skipping: [bool; 2],
}

impl Renderer {
    pub fn new(view: View) -> Renderer {
        Renderer {
            view,
            ..Renderer::default()
        }
    }

    /// Appends to `out` what the whole lines of `text` show.
    pub fn render(&mut self, text: &[u8], out: &mut Vec<u8>) {
        for line in text.split_inclusive(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            match parse(line) {
                Line::Record {
                    time,
                    stderr,
                    full,
                    content,
                } => {
                    let s = usize::from(stderr);
                    if !self.within[s] {
                        self.skipping[s] = self
                            .view
                            .since
                            .as_ref()
                            .is_some_and(|since| time < since.as_bytes());
                        if !self.skipping[s] && self.view.timestamps {
                            out.extend_from_slice(time);
                            out.push(b' ');
                        }
                    }
                    if !self.skipping[s] {
                        out.extend_from_slice(content);
                        if full {
                            out.push(b'\n');
                        }
                    }
                    self.within[s] = !full;
                }
                // Untimed: shown unless only lines from a time on are asked for.
                Line::Raw(raw) => {
                    self.within = [false; 2];
                    if self.view.since.is_none() {
                        out.extend_from_slice(raw);
                        out.push(b'\n');
                    }
                }
            }
        }
    }
}

/// The end of the last whole line in `bytes` (0 when there is none).
pub fn whole_lines(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

/// A log file as `view` shows it, its last `tail` lines only (all when `None`).
pub fn read(path: &Path, tail: Option<usize>, view: &View) -> Result<String> {
    Ok(read_whole(path, tail, view)?.text)
}

/// What [`read_whole`] showed, and where in which file it stopped: where following it goes on.
#[derive(Debug, Default)]
pub struct Shown {
    pub text: String,
    pub inode: u64,
    /// The end of the last whole line read.
    pub end: u64,
    /// Where the reading got to (inside a line split into parts, say): following goes on
    /// with it, so a line cut between the read and the follow is shown once, whole.
    pub renderer: Renderer,
}

/// [`read`], saying where it stopped.
pub fn read_whole(path: &Path, tail: Option<usize>, view: &View) -> Result<Shown> {
    use std::os::unix::fs::MetadataExt;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Shown::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let inode = file.metadata().map_err(|e| Error::io(path, e))?.ino();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let end = whole_lines(&bytes);
    let mut shown = Vec::with_capacity(end);
    let mut renderer = Renderer::new(view.clone());
    renderer.render(&bytes[..end], &mut shown);
    let from = match tail {
        None => 0,
        Some(0) => shown.len(),
        Some(n) => shown[..shown.len().saturating_sub(1)]
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .nth(n - 1)
            .map_or(0, |(i, _)| i + 1),
    };
    Ok(Shown {
        text: String::from_utf8_lossy(&shown[from..]).into_owned(),
        inode,
        end: end as u64,
        renderer,
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
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
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

    fn shown(log: &[u8], tail: Option<usize>, view: View) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, log).unwrap();
        read(&path, tail, &view).unwrap()
    }

    #[test]
    fn lines_are_recorded_with_their_time_and_stream_and_shown_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let before = time_of(chrono::Utc::now());
        let mut out = Recorder::open(Stream::Stdout, &path).unwrap();
        let mut err = Recorder::open(Stream::Stderr, &path).unwrap();
        out.write(b"one\ntw").unwrap();
        err.write(b"oops\n").unwrap();
        out.write(b"o\nthree").unwrap();
        drop(out);
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        let fields: Vec<_> = records.iter().map(|r| (r[1], r[2], r[3])).collect();
        assert_eq!(
            fields,
            [
                ("stdout", "F", "one"),
                ("stderr", "F", "oops"),
                ("stdout", "F", "two"),
                ("stdout", "P", "three"),
            ],
            "the line cut across writes is one record; the unended one is recorded at the close, as unended"
        );
        assert!(records
            .iter()
            .all(|r| r[0] >= before.as_str() && r[0].len() == 30));
        assert_eq!(
            read(&path, None, &View::default()).unwrap(),
            "one\noops\ntwo\nthree",
            "shown as written: no newline the container did not write"
        );
        let stamped = read(
            &path,
            Some(1),
            &View {
                timestamps: true,
                since: None,
            },
        )
        .unwrap();
        assert_eq!(stamped, format!("{} three", records[3][0]));
    }

    #[test]
    fn a_long_line_is_split_into_partial_records_and_shown_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let long = "x".repeat(MAX_RECORD * 2 + 10);
        let mut out = Recorder::open(Stream::Stdout, &path).unwrap();
        out.write(format!("{long}\nshort\n").as_bytes()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "P", "F", "F"]);
        let view = View {
            timestamps: true,
            since: None,
        };
        let shown = read(&path, None, &view).unwrap();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "one time per line");
        assert!(lines[0].ends_with(&format!(" {long}")));
        // Followed a record at a time, it reads the same.
        let mut r = Renderer::new(view);
        let mut followed = Vec::new();
        for record in text.split_inclusive('\n') {
            r.render(record.as_bytes(), &mut followed);
        }
        assert_eq!(String::from_utf8(followed).unwrap(), shown);
    }

    #[test]
    fn since_keeps_the_lines_written_from_then_on_and_tail_counts_what_is_shown() {
        let log = b"2026-12-06T10:00:00.000000000Z stdout F early\n\
2026-12-06T10:00:05.000000000Z stdout P la\n\
2026-12-06T10:00:06.000000000Z stdout F te\n\
2026-12-06T10:00:09.000000000Z stderr F later\n";
        let since = |t: &str| View {
            timestamps: false,
            since: Some(t.into()),
        };
        assert_eq!(
            shown(log, None, since("2026-12-06T10:00:05.000000000Z")),
            "late\nlater\n"
        );
        assert_eq!(
            shown(log, None, since("2026-12-06T10:00:05.500000000Z")),
            "later\n",
            "a line goes by its first part's time"
        );
        assert_eq!(shown(log, Some(2), View::default()), "late\nlater\n");
        assert_eq!(shown(log, Some(0), View::default()), "");
        assert_eq!(
            shown(log, Some(10), View::default()),
            "early\nlate\nlater\n"
        );
    }

    #[test]
    fn a_log_from_before_records_is_shown_as_it_was_written() {
        let log = b"plain line\n2026 is not a time\n";
        assert_eq!(
            shown(log, None, View::default()),
            "plain line\n2026 is not a time\n"
        );
        let view = View {
            timestamps: true,
            since: None,
        };
        assert_eq!(shown(log, Some(1), view), "2026 is not a time\n");
        let view = View {
            timestamps: false,
            since: Some("2000-01-01T00:00:00.000000000Z".into()),
        };
        assert_eq!(
            shown(log, None, view),
            "",
            "untimed lines are not known to be after a time"
        );
    }

    #[test]
    fn what_goes_into_a_containers_pipes_is_in_its_log_once_they_are_drained() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let ([mut out, mut err], copiers) = fifos(dir.path(), &log, "t").unwrap();
        // The wrapper's hold on the FIFOs: they stay readable while it lives.
        let held = open_reader(&dir.path().join("stdout")).unwrap();
        writeln!(err, "to stderr").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read(&log, None, &View::default()).unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "stderr recorded");
            std::thread::sleep(Duration::from_millis(10));
        }
        writeln!(out, "to stdout").unwrap();
        write!(out, "no newline").unwrap();
        drop((out, err, held));
        copiers.wait(Duration::from_secs(10));
        let text = read(&log, None, &View::default()).unwrap();
        assert_eq!(text, "to stderr\nto stdout\nno newline");
        // No wrapper left, nothing to take over: the FIFOs read as ended.
        let copiers = reattach(dir.path(), &log, "t").unwrap().expect("fifos");
        copiers.wait(Duration::from_secs(10));
        assert!(reattach(&dir.path().join("none"), &log, "t")
            .unwrap()
            .is_none());
    }
}
