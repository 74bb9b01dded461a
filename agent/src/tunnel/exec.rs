//! `kubectl exec` on the node: runs the command with `runc exec` in the pod's container and
//! relays its input, terminal size, output and exit as [`ExecFrame`]s over the stream the
//! controller opened. Only the controller reaches this, for an admin it authorized.

use super::Pods;
use shoal_transport::frame;
use shoal_transport::proto::{ErrorCode, ExecFrame, Request, Response, WireError};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long a command gets to end once its caller went away (runc passes SIGTERM on to it)
/// before runc is killed.
const GRACE: Duration = Duration::from_secs(5);

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A started command: its process (runc), where its input goes, where its output comes from
/// (each with whether it is stderr), and the terminal's master side when it has one.
struct Started {
    child: tokio::process::Child,
    input: Option<Writer>,
    outputs: Vec<(Reader, bool)>,
    terminal: Option<OwnedFd>,
}

/// Serves one [`Request::Exec`]: refused before it starts (no such pod or container here, a
/// wasm pod), or [`Response::Ok`] and then the command's frames until its exit.
pub(crate) async fn exec<P: Pods>(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    pods: &P,
    request: Request,
) {
    let Request::Exec {
        namespace,
        pod,
        container,
        command,
        stdin,
        tty,
    } = request
    else {
        return;
    };
    let started = pods
        .exec_command(&namespace, &pod, container.as_deref(), &command, tty)
        .and_then(|cmd| start(cmd, stdin, tty).map_err(|e| format!("starting runc exec: {e}")));
    let mut started = match started {
        Ok(s) => s,
        Err(message) => {
            let refusal = Response::Error(WireError::new(ErrorCode::NotFound, message));
            let _ = frame::write(&mut send, &refusal).await;
            let _ = send.finish();
            return;
        }
    };
    tracing::info!(%namespace, %pod, container = ?container, tty, "exec");
    if frame::write(&mut send, &Response::Ok).await.is_err() {
        end(&mut started.child).await;
        return;
    }
    let (out_tx, mut out_rx) = mpsc::channel::<ExecFrame>(8);
    for (reader, is_stderr) in std::mem::take(&mut started.outputs) {
        tokio::spawn(pump(reader, is_stderr, out_tx.clone()));
    }
    drop(out_tx);
    let pid = started.child.id();
    let mut input = tokio::spawn(feed(recv, started.input.take(), started.terminal, pid));
    let mut caller_here = true;
    loop {
        tokio::select! {
            frame = out_rx.recv() => match frame {
                Some(f) => {
                    if frame::write(&mut send, &f).await.is_err() {
                        caller_here = false;
                        break;
                    }
                }
                None => break,
            },
            _ = &mut input, if caller_here => caller_here = false,
        }
        if !caller_here {
            break;
        }
    }
    input.abort();
    if !caller_here {
        tracing::info!(%namespace, %pod, "exec: the caller went away; ending the command");
        end(&mut started.child).await;
        return;
    }
    let code = match started.child.wait().await {
        Ok(status) => exit_code(status),
        Err(_) => -1,
    };
    let _ = frame::write(&mut send, &ExecFrame::Exit(code)).await;
    let _ = send.finish();
}

/// The shell's convention: the code, or 128 and the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Spawns runc with pipes, or with a terminal it relays to the process's own.
fn start(mut cmd: std::process::Command, stdin: bool, tty: bool) -> std::io::Result<Started> {
    if tty {
        let (master, slave) = pty()?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn()?;
        drop(cmd);
        let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        return Ok(Started {
            child,
            input: stdin.then(|| Box::new(writer) as Writer),
            outputs: vec![(Box::new(reader), false)],
            terminal: Some(master),
        });
    }
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut outputs: Vec<(Reader, bool)> = Vec::new();
    if let Some(out) = child.stdout.take() {
        outputs.push((Box::new(out), false));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push((Box::new(err), true));
    }
    let input = child.stdin.take().map(|i| Box::new(i) as Writer);
    Ok(Started {
        child,
        input,
        outputs,
        terminal: None,
    })
}

/// A new pseudo-terminal: its master side for us, its other side for runc.
fn pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((master, slave))
}

/// Passes one output on in frames until it ends (a terminal's master reads EIO then).
async fn pump(mut reader: Reader, is_stderr: bool, out: mpsc::Sender<ExecFrame>) {
    let mut buf = vec![0u8; ExecFrame::MAX_DATA];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf[..n].to_vec();
        let frame = if is_stderr {
            ExecFrame::Stderr(data)
        } else {
            ExecFrame::Stdout(data)
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}

/// Takes the caller's frames: input for the command, the end of it, terminal sizes. Returns
/// when the caller's side of the stream ends: it went away.
async fn feed(
    mut recv: quinn::RecvStream,
    mut input: Option<Writer>,
    terminal: Option<OwnedFd>,
    runc: Option<u32>,
) {
    loop {
        match frame::read::<ExecFrame, _>(&mut recv, ExecFrame::MAX_FRAME).await {
            Ok(Some(ExecFrame::Stdin(data))) => {
                if let Some(w) = input.as_mut() {
                    if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                        input = None;
                    }
                }
            }
            Ok(Some(ExecFrame::StdinClosed)) => {
                // A terminal's input ends with the caller's ^D, which the process reads
                // itself; a pipe ends by closing.
                if terminal.is_none() {
                    input = None;
                }
            }
            Ok(Some(ExecFrame::Resize { width, height })) => {
                if let Some(t) = &terminal {
                    resize(t, width, height, runc);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Sets the terminal's size and tells runc, which passes it on to the container's terminal.
fn resize(terminal: &OwnedFd, width: u16, height: u16, runc: Option<u32>) {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    if rustix::termios::tcsetwinsize(terminal, size).is_err() {
        return;
    }
    if let Some(pid) = runc.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
    }
}

/// Ends a command whose caller went away: SIGTERM through runc, which passes it on, then
/// SIGKILL to runc after [`GRACE`].
async fn end(child: &mut tokio::process::Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
