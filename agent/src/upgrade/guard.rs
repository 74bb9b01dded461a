//! The guard of an upgrade (`shoal agent-guard STATE`): a small process run from the previous
//! binary that watches the agent through its trial. When the new agent exits before it reports
//! Ready, or has not within the order's time, the guard puts the previous binary back, ends
//! the new agent if it still runs, and starts the previous one again (under systemd, whose
//! `Restart=always` starts it, it only puts the binary back). It needs no controller.

use super::{
    copy_executable, now_secs, read_state, start_ticks, write_state, State, ROLLED_BACK, TRIAL,
};
use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The hidden subcommand that runs [`main`].
pub const SUBCOMMAND: &str = "agent-guard";

/// How often the guard looks at the agent.
const LOOK: Duration = Duration::from_millis(200);
/// How long a new agent that is ended is given to stop before it is killed.
const END_GRACE: Duration = Duration::from_secs(10);

/// Starts the guard from `binary`; returns once it watches, detached from the agent.
pub fn start(binary: &Path, state: &Path) -> Result<()> {
    let status = Command::new(binary)
        .arg(SUBCOMMAND)
        .arg(state)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| Error::io(binary, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "the upgrade's guard ({}) did not start: {status}",
            binary.display()
        )))
    }
}

/// `shoal agent-guard STATE [--watch]`: without `--watch`, starts the watcher in a process
/// group of its own (not the agent's child, so the agent's exec leaves no zombie) and
/// returns; with it, watches. Returns the exit code.
pub fn main(state: &Path, watch: bool) -> i32 {
    if watch {
        return self::watch(state);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("shoal agent-guard: cannot find its own binary: {e}");
            return 1;
        }
    };
    let spawned = Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(state)
        .arg("--watch")
        .stdin(Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("shoal agent-guard: cannot start the watcher: {e}");
            1
        }
    }
}

fn alive(s: &State) -> bool {
    match start_ticks(s.pid) {
        Some(t) => s.start_ticks == 0 || t == s.start_ticks,
        None => false,
    }
}

fn watch(path: &Path) -> i32 {
    loop {
        std::thread::sleep(LOOK);
        let Some(s) = read_state(path) else {
            eprintln!(
                "shoal agent-guard: {} is gone or unreadable; nothing to guard",
                path.display()
            );
            return 1;
        };
        if s.phase != TRIAL {
            return 0;
        }
        if !alive(&s) {
            let reason = format!(
                "the agent of {} exited before it reported Ready",
                s.order.version
            );
            return roll_back(path, s, reason);
        }
        if now_secs() > s.deadline {
            let reason = format!(
                "the agent of {} did not report Ready within {}s",
                s.order.version, s.order.ready_timeout_seconds
            );
            return roll_back(path, s, reason);
        }
    }
}

fn roll_back(path: &Path, mut s: State, reason: String) -> i32 {
    eprintln!("shoal agent-guard: {reason}; putting {} back", s.from);
    // The binary first: whoever starts the agent next (systemd, or this guard) starts the old.
    if let Err(e) = copy_executable(&s.previous, &s.exe) {
        eprintln!(
            "shoal agent-guard: cannot put the previous binary back: {}",
            shoal_transport::report(&e)
        );
        return 1;
    }
    end(&s);
    s.phase = ROLLED_BACK.into();
    s.reason = reason;
    if let Err(e) = write_state(path, &s) {
        eprintln!("shoal agent-guard: {}", shoal_transport::report(&e));
    }
    if std::env::var_os("INVOCATION_ID").is_some() {
        // systemd (Restart=always) starts the agent again.
        return 0;
    }
    let Some((program, args)) = s.argv.split_first() else {
        eprintln!("shoal agent-guard: no command line to start the agent with");
        return 1;
    };
    let _ = program;
    match Command::new(&s.exe)
        .args(args)
        .current_dir(&s.cwd)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(child) => {
            eprintln!(
                "shoal agent-guard: started the agent of {} again (pid {})",
                s.from,
                child.id()
            );
            0
        }
        Err(e) => {
            eprintln!("shoal agent-guard: cannot start the agent again: {e}");
            1
        }
    }
}

/// Ends the new agent if it still runs: SIGTERM (it leaves its pods), then SIGKILL.
fn end(s: &State) {
    if !alive(s) {
        return;
    }
    let Some(pid) = rustix::process::Pid::from_raw(s.pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let until = std::time::Instant::now() + END_GRACE;
    while alive(s) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(s) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}
