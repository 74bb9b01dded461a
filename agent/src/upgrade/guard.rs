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

/// What `shoal agent-guard` is run for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Start the watcher, detached, and return (the agent runs this).
    Start,
    /// Watch the trial (the watcher).
    Watch,
    /// Before an agent starts (systemd's ExecStartPre): a trial whose agent is gone was cut
    /// short by a reboot or a crash, with no guard left to end it; it is rolled back.
    Recover,
}

/// `shoal agent-guard STATE [--watch | --recover]`: without a flag, starts the watcher in a
/// process group of its own (not the agent's child, so the agent's exec leaves no zombie)
/// and returns. Returns the exit code.
pub fn main(state: &Path, mode: Mode) -> i32 {
    match mode {
        Mode::Watch => return watch(state),
        Mode::Recover => return recover(state),
        Mode::Start => {}
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

/// Whether the agent process `pid` still runs: there, and started at `ticks` (so not another
/// process that got its pid; 0 is any).
fn alive(pid: u32, ticks: u64) -> bool {
    match start_ticks(pid) {
        Some(t) => ticks == 0 || t == ticks,
        None => false,
    }
}

/// The agent the guard watches: its pid, and its start time as the guard saw it first (while
/// the agent waited for the guard to start). The time the agent recorded of itself is not
/// compared: a process reading its own /proc entry under qemu-user sees emulated values, so
/// an agent alive through its exec looked gone, and was rolled back under it.
struct Watched {
    pid: u32,
    ticks: u64,
}

impl Watched {
    /// The agent of `s`, as this process sees it now; `None` when it is gone.
    fn of(s: &State) -> Option<Watched> {
        Some(Watched {
            pid: s.pid,
            ticks: start_ticks(s.pid)?,
        })
    }

    fn alive(&self) -> bool {
        alive(self.pid, self.ticks)
    }
}

fn watch(path: &Path) -> i32 {
    let mut watched: Option<Watched> = None;
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
        if watched.as_ref().is_none_or(|w| w.pid != s.pid) {
            watched = Watched::of(&s);
        }
        if !watched.as_ref().is_some_and(Watched::alive) {
            let reason = format!(
                "the agent of {} exited before it reported Ready",
                s.order.version
            );
            return roll_back(path, s, reason, watched.as_ref(), true);
        }
        if now_secs() > s.deadline {
            let reason = format!(
                "the agent of {} did not report Ready within {}s",
                s.order.version, s.order.ready_timeout_seconds
            );
            return roll_back(path, s, reason, watched.as_ref(), true);
        }
    }
}

fn recover(path: &Path) -> i32 {
    match read_state(path) {
        // The agent's own record of its start: a reboot since leaves no process under the
        // pid, or another one.
        Some(s) if s.phase == TRIAL && !alive(s.pid, s.start_ticks) => {
            let reason = format!(
                "the node or its agent restarted before the agent of {} reported Ready",
                s.order.version
            );
            roll_back(path, s, reason, None, false)
        }
        _ => 0,
    }
}

/// Puts the previous binary back, ends the new agent (`watched`) if it still runs, and
/// records why; with `start`, starts the agent again unless systemd does.
fn roll_back(
    path: &Path,
    mut s: State,
    reason: String,
    watched: Option<&Watched>,
    start: bool,
) -> i32 {
    eprintln!("shoal agent-guard: {reason}; putting {} back", s.from);
    // The binary first: whoever starts the agent next (systemd, or this guard) starts the old.
    if let Err(e) = copy_executable(&s.previous, &s.exe) {
        eprintln!(
            "shoal agent-guard: cannot put the previous binary back: {}",
            shoal_transport::report(&e)
        );
        return 1;
    }
    if let Some(w) = watched {
        end(w);
    }
    s.phase = ROLLED_BACK.into();
    s.reason = reason;
    if let Err(e) = write_state(path, &s) {
        eprintln!("shoal agent-guard: {}", shoal_transport::report(&e));
    }
    if !start || std::env::var_os("INVOCATION_ID").is_some() {
        // systemd (Restart=always) starts the agent again.
        return 0;
    }
    // The binary is `exe` (the recorded argv[0] may name it another way): its arguments.
    let Some(args) = s.argv.get(1..) else {
        eprintln!("shoal agent-guard: no command line to start the agent with");
        return 1;
    };
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
fn end(w: &Watched) {
    if !w.alive() {
        return;
    }
    let Some(pid) = rustix::process::Pid::from_raw(w.pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let until = std::time::Instant::now() + END_GRACE;
    while w.alive() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    if w.alive() {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::UpgradeOrder;

    #[test]
    fn a_trial_cut_short_is_rolled_back_before_the_agent_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (exe, previous) = (dir.path().join("shoal"), dir.path().join("previous"));
        std::fs::write(&exe, "new").unwrap();
        std::fs::write(&previous, "old").unwrap();
        let mut state = State {
            order: UpgradeOrder {
                upgrade: "u1".into(),
                name: "fleet".into(),
                version: "0.2.0".into(),
                digest: "sha256:00".into(),
                ready_timeout_seconds: 60,
            },
            from: "0.1.0".into(),
            phase: TRIAL.into(),
            reason: String::new(),
            exe: exe.clone(),
            previous,
            argv: vec![],
            cwd: dir.path().into(),
            // This process: alive, so the trial is under way and left alone.
            pid: std::process::id(),
            start_ticks: 0,
            deadline: now_secs() + 60,
        };
        let path = dir.path().join("state.json");
        write_state(&path, &state).unwrap();
        assert_eq!(main(&path, Mode::Recover), 0);
        assert_eq!(std::fs::read_to_string(&exe).unwrap(), "new");
        // Its agent gone (a reboot): the old binary is back, and the state says why.
        state.pid = u32::MAX;
        write_state(&path, &state).unwrap();
        assert_eq!(main(&path, Mode::Recover), 0);
        assert_eq!(std::fs::read_to_string(&exe).unwrap(), "old");
        let after = read_state(&path).unwrap();
        assert_eq!(after.phase, ROLLED_BACK);
        assert!(
            after.reason.contains("restarted before"),
            "{}",
            after.reason
        );
    }
}
