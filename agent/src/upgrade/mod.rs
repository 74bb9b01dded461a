//! Over-the-air upgrades of this agent: the controller's order (a Node annotation, see
//! [`shoal_api::UpgradeOrder`]) is fetched by digest over the node's own link, swapped in for
//! the running binary (one rename), and the agent restarts into it in the same process (exec),
//! leaving its pods running as any restart does.
//!
//! Before the swap the old binary is kept (`DATA_DIR/upgrade/previous`) and a guard is started
//! from it ([`guard`]): unless the new agent reports Ready within the order's time, having
//! exited or not, the guard puts the old binary back and starts it again, with or without a
//! controller. What happened is written to `DATA_DIR/upgrade/state.json` and reported on the
//! Node ([`shoal_api::UPGRADE_STATE`], and its `AgentUpgrade` condition).

pub mod guard;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use shoal_api::{UpgradeOrder, UpgradeReport};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub const TRIAL: &str = "Trial";
pub const UPGRADED: &str = "Upgraded";
pub const UPGRADING: &str = "Upgrading";
pub const ROLLED_BACK: &str = "RolledBack";
pub const FAILED: &str = "Failed";

/// One upgrade, as the agents on both sides of it and the guard between them see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub order: UpgradeOrder,
    /// The version the agent had before.
    pub from: String,
    /// `Trial` (the new binary is in place and must report Ready), `Upgraded`, `RolledBack`
    /// or `Failed` (nothing was swapped).
    pub phase: String,
    #[serde(default)]
    pub reason: String,
    /// The binary the agent runs as, replaced by the upgrade.
    pub exe: PathBuf,
    /// The binary it had before.
    pub previous: PathBuf,
    /// How the agent was started (the guard starts the previous one so again).
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The agent's process (kept through the exec) and its start time in clock ticks since
    /// boot, so a reused PID is not taken for it.
    pub pid: u32,
    pub start_ticks: u64,
    /// Seconds since the epoch by which the new agent must have reported Ready.
    pub deadline: u64,
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("upgrade").join("state.json")
}

pub fn read_state(path: &Path) -> Option<State> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes the state atomically: a crash leaves the old one or the new one.
pub fn write_state(path: &Path, state: &State) -> Result<()> {
    let text = serde_json::to_vec_pretty(state).map_err(|e| Error::Internal(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(path, e))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process's start time (clock ticks since boot), `None` when it is gone or a zombie.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    // starttime is field 22 of the line; `rest` starts at field 3.
    fields.get(19)?.parse().ok()
}

/// The binary this process runs, as a path that names it (not `... (deleted)` after the file
/// was replaced).
fn current_exe() -> Result<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| Error::io(Path::new("/proc/self/exe"), e))?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// The agent's side of upgrades: what it reports, and the order it is carrying out.
#[derive(Clone)]
pub struct Upgrader(Arc<Inner>);

struct Inner {
    data_dir: PathBuf,
    version: String,
    /// How to start this agent again; `None` when it cannot upgrade itself (inside `shoal up`).
    relaunch: Option<Vec<String>>,
    state: Mutex<Option<State>>,
    /// An order being fetched and staged.
    busy: Mutex<bool>,
    /// Set once the new binary is in place: the agent stops and execs it.
    staged: Mutex<Option<PathBuf>>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Upgrader {
    /// `stop` ends the agent, as a signal does, once a new binary is in place.
    pub fn load(config: &crate::AgentConfig, stop: CancellationToken) -> Upgrader {
        let relaunch = config.relaunch.clone();
        Upgrader::open(&config.data_dir, &config.version, relaunch, stop)
    }

    fn open(
        data_dir: &Path,
        version: &str,
        relaunch: Option<Vec<String>>,
        stop: CancellationToken,
    ) -> Upgrader {
        let mut state = read_state(&state_path(data_dir));
        if let Some(s) = state.as_mut().filter(|s| s.phase == TRIAL) {
            if s.order.version == version {
                tracing::info!(from = %s.from, to = %version, "on trial after an upgrade: the node must report Ready");
            } else {
                // The guard put the old binary back but could not say so.
                s.phase = ROLLED_BACK.into();
                s.reason = format!(
                    "the agent started as {version} while {} was on trial",
                    s.order.version
                );
            }
        }
        Upgrader(Arc::new(Inner {
            data_dir: data_dir.to_path_buf(),
            version: version.to_string(),
            relaunch,
            state: Mutex::new(state),
            busy: Mutex::new(false),
            staged: Mutex::new(None),
            stop,
        }))
    }

    /// Whether this agent is a new binary that has yet to report Ready.
    pub fn on_trial(&self) -> bool {
        lock(&self.0.state)
            .as_ref()
            .is_some_and(|s| s.phase == TRIAL)
    }

    /// The new binary to exec, once the agent has stopped for an upgrade.
    pub fn staged(&self) -> Option<PathBuf> {
        lock(&self.0.staged).clone()
    }

    /// What the Node says of the last upgrade ([`shoal_api::UPGRADE_STATE`]).
    pub fn report(&self) -> Option<UpgradeReport> {
        let state = lock(&self.0.state).clone()?;
        let phase = match state.phase.as_str() {
            TRIAL => UPGRADING,
            p => p,
        };
        Some(UpgradeReport {
            upgrade: state.order.upgrade,
            version: state.order.version,
            digest: state.order.digest,
            state: phase.to_string(),
            reason: state.reason,
        })
    }

    /// The human account of the last upgrade, for the Node's `AgentUpgrade` condition:
    /// (status, reason, message).
    pub fn condition(&self) -> Option<(&'static str, String, String)> {
        let s = lock(&self.0.state).clone()?;
        let (to, from, name) = (&s.order.version, &s.from, &s.order.name);
        Some(match s.phase.as_str() {
            UPGRADED => (
                "True",
                "Upgraded".into(),
                format!("upgraded from {from} to {to} (AgentUpgrade {name})"),
            ),
            ROLLED_BACK => (
                "False",
                "RolledBack".into(),
                format!(
                    "went back to {from} from {to} (AgentUpgrade {name}): {}",
                    s.reason
                ),
            ),
            FAILED => (
                "False",
                "UpgradeFailed".into(),
                format!(
                    "did not upgrade to {to} (AgentUpgrade {name}): {}",
                    s.reason
                ),
            ),
            _ => (
                "Unknown",
                "Upgrading".into(),
                format!(
                    "upgrading from {from} to {to} (AgentUpgrade {name}): {}",
                    s.reason
                ),
            ),
        })
    }

    fn set(&self, state: State) {
        let path = state_path(&self.0.data_dir);
        let written = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
            None => Ok(()),
        };
        if let Err(e) = written.and_then(|_| write_state(&path, &state)) {
            tracing::warn!(error = %shoal_transport::report(&e), "cannot record the upgrade's state");
        }
        *lock(&self.0.state) = Some(state);
    }

    /// The Node was stored: a trial that got this far is over (the node reports Ready on the
    /// new version), and an order not yet carried out starts. Returns the order to carry out.
    pub fn after_heartbeat(&self, order: Option<UpgradeOrder>) -> Option<UpgradeOrder> {
        let current = lock(&self.0.state).clone();
        if let Some(mut s) = current.clone().filter(|s| s.phase == TRIAL) {
            s.phase = UPGRADED.into();
            s.reason = String::new();
            tracing::info!(from = %s.from, to = %s.order.version, "upgraded: the node reported Ready on the new version");
            self.set(s);
        }
        let order = order.filter(|o| o.version != self.0.version)?;
        // An order this node already carried out (and went back from, or could not) is not
        // tried again: the rollout is paused until the upgrade changes.
        let same = |s: &State| {
            (s.phase == ROLLED_BACK || s.phase == FAILED)
                && (s.order.upgrade == order.upgrade)
                && (s.order.version == order.version)
                && (s.order.digest == order.digest)
        };
        if current.as_ref().is_some_and(same) {
            return None;
        }
        let mut busy = lock(&self.0.busy);
        if *busy {
            return None;
        }
        *busy = true;
        Some(order)
    }

    /// Fetches the order's binary and puts it in place of this one, then stops the agent to
    /// exec it. A failure before the swap is reported and leaves everything as it was.
    pub async fn carry_out(
        &self,
        order: UpgradeOrder,
        cache: &crate::artifacts::ArtifactCache,
        client: &shoal_transport::Client,
    ) {
        tracing::info!(version = %order.version, digest = %order.digest, upgrade = %order.name, "upgrading this agent: fetching the binary");
        let path = match cache.get(Some(client), &order.digest).await {
            Ok(path) => path,
            Err(e) => {
                // A link that dropped, most likely: the next heartbeat tries again, and the
                // fetch resumes where this one stopped.
                tracing::warn!(version = %order.version, error = %shoal_transport::report(&e), "cannot fetch the upgrade's binary; trying again");
                *lock(&self.0.busy) = false;
                return;
            }
        };
        let staged = {
            let this = self.clone();
            let order = order.clone();
            tokio::task::spawn_blocking(move || this.stage(order, &path))
                .await
                .map_err(|e| Error::Internal(e.to_string()))
                .and_then(|r| r)
        };
        match staged {
            Ok(exe) => {
                tracing::info!(version = %order.version, "the new binary is in place; restarting into it, pods keep running");
                *lock(&self.0.staged) = Some(exe);
                self.0.stop.cancel();
            }
            Err(e) => {
                let reason = shoal_transport::report(&e).to_string();
                tracing::warn!(version = %order.version, %reason, "cannot upgrade this agent");
                self.set(self.failed(order, reason));
                *lock(&self.0.busy) = false;
            }
        }
    }

    fn failed(&self, order: UpgradeOrder, reason: String) -> State {
        State {
            order,
            from: self.0.version.clone(),
            phase: FAILED.into(),
            reason,
            exe: PathBuf::new(),
            previous: PathBuf::new(),
            argv: Vec::new(),
            cwd: PathBuf::new(),
            pid: std::process::id(),
            start_ticks: 0,
            deadline: 0,
        }
    }

    /// Keeps the running binary, puts `fetched` in its place, records the trial and starts
    /// the guard. Returns the binary to exec.
    fn stage(&self, order: UpgradeOrder, fetched: &Path) -> Result<PathBuf> {
        let Some(argv) = self.0.relaunch.clone() else {
            return Err(Error::Config(
                "this agent runs inside `shoal up`, which upgrades as a whole; run `shoal agent` to upgrade agents over the air".into(),
            ));
        };
        let mut head = [0u8; 64];
        let read = std::fs::File::open(fetched)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|e| Error::io(fetched, e))?;
        let arch = crate::node::arch();
        match shoal_api::elf_platform(&head[..read]) {
            Some(p) if shoal_api::platform_runs_on(p, arch) => {}
            Some(p) => {
                return Err(Error::Config(format!(
                    "the binary is for {p}, this node is linux/{arch}"
                )))
            }
            None => return Err(Error::Config("the binary is not a Linux executable".into())),
        }
        let exe = current_exe()?;
        let dir = self.0.data_dir.join("upgrade");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let previous = dir.join("previous");
        copy_executable(&exe, &previous)?;
        let pid = std::process::id();
        let state = State {
            order: order.clone(),
            from: self.0.version.clone(),
            phase: TRIAL.into(),
            reason: "restarting into the new binary".into(),
            exe: exe.clone(),
            previous: previous.clone(),
            argv,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            deadline: now_secs() + order.ready_timeout_seconds,
        };
        // The swap: a copy beside the binary, then one rename over it.
        let beside = exe.with_file_name(".shoal-upgrade");
        copy_executable(fetched, &beside)?;
        self.set(state);
        std::fs::rename(&beside, &exe).map_err(|e| Error::io(&exe, e))?;
        // No restart without a guard: the old binary goes back if it cannot start.
        if let Err(e) = guard::start(&previous, &state_path(&self.0.data_dir)) {
            copy_executable(&previous, &exe)?;
            return Err(e);
        }
        Ok(exe)
    }
}

/// Copies an executable, mode 0755, synced to disk.
pub fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Its own name: the guard and a recovery may put the same binary back at once.
    let tmp = to.with_extension(format!("partial-{}", std::process::id()));
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, to))
        .map_err(|e| Error::io(to, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(upgrade: &str, version: &str) -> UpgradeOrder {
        UpgradeOrder {
            upgrade: upgrade.into(),
            name: "fleet".into(),
            version: version.into(),
            digest: "sha256:00".into(),
            ready_timeout_seconds: 60,
        }
    }

    fn trial(dir: &Path, to: &str) -> State {
        let mut s = Upgrader::open(dir, "0.1.0", None, CancellationToken::new())
            .failed(order("u1", to), String::new());
        s.phase = TRIAL.into();
        s
    }

    #[test]
    fn an_order_is_taken_once_and_one_that_failed_is_not_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let up = Upgrader::open(dir.path(), "0.1.0", None, CancellationToken::new());
        assert_eq!(
            up.after_heartbeat(Some(order("u1", "0.1.0"))),
            None,
            "already there"
        );
        assert!(up.after_heartbeat(Some(order("u1", "0.2.0"))).is_some());
        assert_eq!(
            up.after_heartbeat(Some(order("u1", "0.2.0"))),
            None,
            "under way"
        );
        // It could not be carried out: not again for the same upgrade, but for a new one.
        up.set(up.failed(order("u1", "0.2.0"), "read-only".into()));
        *lock(&up.0.busy) = false;
        assert_eq!(up.after_heartbeat(Some(order("u1", "0.2.0"))), None);
        let report = up.report().unwrap();
        assert_eq!(
            (report.state.as_str(), report.reason.as_str()),
            (FAILED, "read-only")
        );
        assert!(up.after_heartbeat(Some(order("u2", "0.2.0"))).is_some());
    }

    #[test]
    fn a_trial_ends_with_the_first_heartbeat_of_the_new_version_or_was_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("upgrade")).unwrap();
        write_state(&state_path(dir.path()), &trial(dir.path(), "0.2.0")).unwrap();
        let new = Upgrader::open(dir.path(), "0.2.0", None, CancellationToken::new());
        assert!(new.on_trial());
        assert_eq!(new.report().unwrap().state, UPGRADING);
        assert_eq!(new.after_heartbeat(Some(order("u1", "0.2.0"))), None);
        assert!(!new.on_trial());
        assert_eq!(read_state(&state_path(dir.path())).unwrap().phase, UPGRADED);
        assert_eq!(new.condition().unwrap().0, "True");

        // Started as the old version while the new one was on trial: it went back.
        write_state(&state_path(dir.path()), &trial(dir.path(), "0.3.0")).unwrap();
        let old = Upgrader::open(dir.path(), "0.2.0", None, CancellationToken::new());
        assert!(!old.on_trial());
        assert_eq!(old.report().unwrap().state, ROLLED_BACK);
        assert_eq!(old.after_heartbeat(Some(order("u1", "0.3.0"))), None);
    }

    #[test]
    fn this_process_has_a_start_time_and_a_missing_one_none() {
        assert!(start_ticks(std::process::id()).is_some_and(|t| t > 0));
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
