//! The OCI executor: containers from OCI images, run by runc.
//!
//! Each container gets a bundle under `containers/<key>/`: its root filesystem (overlayfs over
//! the image's unpacked layers, or a copy of them where overlayfs is not available) and a
//! `config.json` made by [`spec::runtime_spec`]. A small shell process, in its own process
//! group, runs `runc run --keep` with the container's stdout and stderr going to FIFOs in the
//! bundle that the agent records into the log file ([`crate::logs`]), and writes runc's exit status into the bundle when the container ends. That
//! process outlives the agent: a restarted agent finds the container in `runc list` and
//! follows it again instead of starting a duplicate.

pub mod build;
pub mod collect;
pub mod image;
pub mod layer;
pub mod nat;
pub mod netns;
pub mod rtnl;
pub mod seccomp;
pub mod spec;
pub mod tun;

use crate::error::{Error, Result};
use crate::handle::{Exit, ExitReason, Handle};
use crate::{ContainerSpec, Workload};
use image::ImageStore;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the exit of a followed container is noticed when it is not our child.
const POLL: Duration = Duration::from_millis(100);

pub struct RuncRuntime {
    runc: PathBuf,
    /// runc's `--root`: its state for our containers only.
    state: PathBuf,
    bundles: PathBuf,
    images: Arc<ImageStore>,
    /// Copy the image's layers into each root filesystem instead of mounting overlayfs (what
    /// happens by itself where overlayfs is missing; settable to exercise that path).
    copy_rootfs: bool,
}

/// What `runc state` says of a container.
#[derive(Debug, serde::Deserialize)]
struct State {
    status: String,
    /// Its init process, while it runs.
    #[serde(default)]
    pid: Option<i32>,
    /// When it was created (RFC 3339).
    #[serde(default)]
    created: Option<String>,
}

/// How often an adopted container is looked at when its init cannot be waited on directly
/// (a kernel without pidfds).
const ADOPTED_POLL: Duration = Duration::from_secs(1);

/// How long an ended container's last lines may take to reach its log before its end is
/// reported anyway (a process it left behind may hold its output open).
const LAST_LINES: Duration = Duration::from_secs(2);

/// How long a stopped container may go without its exit status before it is taken as gone.
const STOPPED_WITHOUT_STATUS: Duration = Duration::from_secs(5);

/// Blocks until process `pid` (not our child) has exited; `false` when it cannot be waited
/// on this way.
fn await_exit_of(pid: i32) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    if pid <= 0 {
        return false;
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return false;
    };
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

/// The runc binary, if this node can run OCI containers: runc on PATH (or `SHOAL_RUNC`) and
/// root privileges.
pub fn find_runc() -> std::result::Result<PathBuf, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("OCI containers need root (runc runs them as the node's root)".into());
    }
    if let Some(p) = std::env::var_os("SHOAL_RUNC") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
        .ok_or_else(|| "runc is not installed (apt-get install runc)".into())
}

/// The most a start waits for runc to have started the container before it is reported as
/// running anyway (runc's own failure ends the wait at once).
const START_WAIT: Duration = Duration::from_secs(10);

/// Container ids runc accepts: letters, digits, `_`, `-`, `.`.
fn container_id(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl RuncRuntime {
    pub fn new(runc: PathBuf, data_dir: &Path, images: Arc<ImageStore>) -> Result<RuncRuntime> {
        let state = data_dir.join("runc");
        let bundles = data_dir.join("containers");
        for d in [&state, &bundles] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(RuncRuntime {
            runc,
            state,
            bundles,
            images,
            copy_rootfs: false,
        })
    }

    /// Root filesystems as copies of the image's layers, never overlayfs.
    pub fn copying_rootfs(mut self) -> RuncRuntime {
        self.copy_rootfs = true;
        self
    }

    /// runc's version, as `runc --version` prints it (`1.1.5+ds1`).
    pub fn version(&self) -> String {
        let out = self.call(&["--version"]).unwrap_or_default();
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("runc version "))
            .unwrap_or("unknown")
            .trim()
            .to_string()
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(&self.state);
        c.stdin(Stdio::null());
        c
    }

    /// Runs runc with `args`; its stderr becomes the error.
    fn call(&self, args: &[&str]) -> std::result::Result<Vec<u8>, String> {
        let out = self
            .runc()
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.runc.display()))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn state(&self, id: &str) -> Option<State> {
        // runc keeps each container's state in a directory of its own under its root: none
        // there is no container, known without starting runc (a few milliseconds, asked
        // three times for each new container's start).
        if !self.state.join(id).exists() {
            return None;
        }
        let out = self.call(&["state", id]).ok()?;
        serde_json::from_slice(&out).ok()
    }

    /// `runc exec` of `argv` in the container `key` (an exec probe, `kubectl exec`), for the
    /// caller to run; with `tty`, runc gives the process a terminal and relays it to its own
    /// stdio, which must then be a terminal too.
    pub fn exec_command(&self, key: &str, argv: &[String], tty: bool) -> Command {
        let mut c = self.runc();
        c.arg("exec");
        if tty {
            c.arg("--tty");
        }
        c.arg(container_id(key)).args(argv);
        c
    }

    /// The keys of every container runc knows under this agent.
    pub fn containers(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Listed {
            id: String,
        }
        let out = self
            .call(&["list", "--format", "json"])
            .map_err(|m| Error::Runc(format!("runc list: {m}")))?;
        if out.iter().all(u8::is_ascii_whitespace) || out.starts_with(b"null") {
            return Ok(vec![]);
        }
        let listed: Vec<Listed> =
            serde_json::from_slice(&out).map_err(|e| Error::Runc(format!("runc list: {e}")))?;
        Ok(listed.into_iter().map(|l| l.id).collect())
    }

    /// Kills and removes the container `key` and its bundle, if there is one.
    pub fn remove(&self, key: &str) {
        let id = container_id(key);
        if self.state(&id).is_some() {
            let _ = self.call(&["kill", "--all", &id, "KILL"]);
            let _ = self.call(&["delete", "--force", &id]);
        }
        let bundle = self.bundles.join(&id);
        unmount_rootfs(&bundle);
        let _ = std::fs::remove_dir_all(&bundle);
    }

    /// Removes every container of this agent whose key is not in `keep` (a pod that went away
    /// while the agent was down).
    pub fn remove_except(&self, keep: &[String]) -> Result<Vec<String>> {
        let keep: Vec<String> = keep.iter().map(|k| container_id(k)).collect();
        let mut removed = Vec::new();
        for id in self.containers()? {
            if !keep.contains(&id) {
                self.remove(&id);
                removed.push(id);
            }
        }
        Ok(removed)
    }

    /// Builds the bundle: root filesystem and config.json.
    fn make_bundle(&self, spec: &ContainerSpec, bundle: &Path, id: &str) -> Result<()> {
        let start_err = |message: String| Error::Start {
            id: spec.id.clone(),
            message,
        };
        let digest = spec
            .artifact
            .file_name()
            .and_then(|n| n.to_str())
            .map(|hex| format!("sha256:{hex}"))
            .ok_or_else(|| start_err(format!("{} is not an image", spec.artifact.display())))?;
        let image = self.images.image(&digest)?;
        let rootfs = bundle.join("rootfs");
        for d in [&rootfs, &bundle.join("upper"), &bundle.join("work")] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let mut lower = Vec::new();
        for l in image.layers.iter().rev() {
            lower.push(self.images.layer_dir(l)?.display().to_string());
        }
        if lower.is_empty() {
            // overlayfs needs a lower directory; an image with no layers has an empty root.
            let empty = bundle.join("empty");
            std::fs::create_dir_all(&empty).map_err(|e| Error::io(&empty, e))?;
            lower.push(empty.display().to_string());
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            bundle.join("upper").display(),
            bundle.join("work").display()
        );
        let options = std::ffi::CString::new(options)
            .map_err(|_| start_err("a layer path holds a NUL byte".into()))?;
        let mounted = if self.copy_rootfs {
            Err("copies asked for".to_string())
        } else {
            rustix::mount::mount(
                "overlay",
                &rootfs,
                "overlay",
                rustix::mount::MountFlags::empty(),
                options.as_c_str(),
            )
            .map_err(|e| e.to_string())
        };
        if let Err(why) = mounted {
            tracing::info!(container = %spec.id, %why, "no overlayfs: copying the image's layers");
            self.images.copy_rootfs(&image, &rootfs)?;
        }
        let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_default();
        let run = image.config.config().clone().unwrap_or_default();
        let user = spec::resolve_user(
            run.user().as_deref(),
            spec.security.run_as_user,
            spec.security.run_as_group,
            &read("etc/passwd"),
            &read("etc/group"),
        )
        .map_err(start_err)?;
        if spec.security.run_as_non_root && user.uid == 0 {
            return Err(start_err(
                "runAsNonRoot is set but the container would run as root (uid 0)".into(),
            ));
        }
        let config =
            spec::runtime_spec(spec, &run, &user, &format!("/shoal/{id}")).map_err(start_err)?;
        let path = bundle.join("config.json");
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| start_err(e.to_string()))?;
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))
    }

    /// Follows a running container to its end: `child` when we started it, else the exit
    /// file alone. Its end is reported once `copiers` have its last lines in its log.
    fn follow(
        self: &Arc<Self>,
        id: String,
        bundle: PathBuf,
        child: Option<std::process::Child>,
        copiers: Option<crate::logs::Copiers>,
    ) -> Result<Handle> {
        let stopping = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let (handle, sender) = {
            let (this, id, stopping, ended) =
                (self.clone(), id.clone(), stopping.clone(), ended.clone());
            Handle::new(move |grace, _| {
                stopping.store(true, Ordering::SeqCst);
                let (this, id, ended) = (this.clone(), id.clone(), ended.clone());
                std::thread::spawn(move || {
                    let _ = this.call(&["kill", &id, "TERM"]);
                    let deadline = std::time::Instant::now() + grace;
                    while !ended.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                        std::thread::sleep(POLL);
                    }
                    if !ended.load(Ordering::SeqCst) {
                        let _ = this.call(&["kill", "--all", &id, "KILL"]);
                    }
                });
            })
        };
        let this = self.clone();
        std::thread::Builder::new()
            .name(format!("runc-{id}"))
            .spawn(move || {
                let exit_file = bundle.join("exit");
                match child {
                    // The wrapper writes the exit file as it ends.
                    Some(mut child) => {
                        let _ = child.wait();
                    }
                    // Adopted: the wrapper of a previous agent writes it once the container's
                    // init ends; wait on that process instead of asking runc every moment.
                    None => {
                        if let Some(pid) = this.state(&id).and_then(|s| s.pid) {
                            await_exit_of(pid);
                        }
                    }
                }
                // A container stopped with no wrapper left to write its status (someone
                // killed it) is given a few seconds, then reported as vanished.
                let (mut period, mut stopped_for) = (POLL, Duration::ZERO);
                while !exit_file.exists() && stopped_for < STOPPED_WITHOUT_STATUS {
                    match this.state(&id) {
                        None => break,
                        Some(s) if s.status == "stopped" => stopped_for += period,
                        Some(_) => stopped_for = Duration::ZERO,
                    }
                    std::thread::sleep(period);
                    period = (period * 2).min(ADOPTED_POLL);
                }
                let code = std::fs::read_to_string(&exit_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                let oom = oom_killed(&id);
                if let Some(copiers) = copiers {
                    copiers.wait(LAST_LINES);
                }
                ended.store(true, Ordering::SeqCst);
                let _ = this.call(&["delete", "--force", &id]);
                unmount_rootfs(&bundle);
                let _ = std::fs::remove_dir_all(&bundle);
                let exit = match code {
                    _ if oom => Exit {
                        code: 137,
                        reason: ExitReason::OOMKilled,
                        message: Some("the container went over its memory limit".into()),
                    },
                    Some(0) => Exit {
                        code: 0,
                        reason: ExitReason::Completed,
                        message: None,
                    },
                    Some(c) if stopping.load(Ordering::SeqCst) => Exit {
                        code: c,
                        reason: ExitReason::Killed,
                        message: None,
                    },
                    Some(c) => Exit {
                        code: c,
                        reason: ExitReason::Error,
                        message: None,
                    },
                    None if stopping.load(Ordering::SeqCst) => Exit {
                        code: 137,
                        reason: ExitReason::Killed,
                        message: None,
                    },
                    None => Exit {
                        code: 255,
                        reason: ExitReason::Error,
                        message: Some("the container vanished without an exit status".into()),
                    },
                };
                sender.send(exit);
            })
            .map_err(|e| Error::Internal(format!("cannot start a container thread: {e}")))?;
        Ok(handle)
    }

    /// Whether runc holds the container `key` (running, or stopped and not yet removed).
    pub fn has(&self, key: &str) -> bool {
        self.state(&container_id(key)).is_some()
    }

    /// Starts the container (or picks up the one a previous agent left running).
    pub fn run(self: &Arc<Self>, spec: ContainerSpec) -> Result<Handle> {
        let id = container_id(&spec.key);
        if id.is_empty() {
            return Err(Error::Start {
                id: spec.id,
                message: "the container has no key".into(),
            });
        }
        let bundle = self.bundles.join(&id);
        if let Some(state) = self.state(&id) {
            if state.status == "running" || bundle.join("exit").exists() {
                tracing::info!(container = %spec.id, status = %state.status, "found the container running; following it");
                let copiers = crate::logs::reattach(&bundle, &spec.log_path, &id)?;
                // Its start as the first agent recorded it, else as runc did.
                let started = std::fs::read_to_string(bundle.join("started"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .map(|ns| std::time::UNIX_EPOCH + Duration::from_nanos(ns))
                    .or_else(|| {
                        let created = state.created.as_deref()?;
                        let created = chrono::DateTime::parse_from_rfc3339(created).ok()?;
                        Some(created.into())
                    });
                return Ok(self.follow(id, bundle, None, copiers)?.started_at(started));
            }
            self.remove(&id);
        } else if bundle.exists() {
            unmount_rootfs(&bundle);
            let _ = std::fs::remove_dir_all(&bundle);
        }
        std::fs::create_dir_all(&bundle).map_err(|e| Error::io(&bundle, e))?;
        let begun = std::time::Instant::now();
        let made = self
            .make_bundle(&spec, &bundle, &id)
            .and_then(|()| crate::logs::fifos(&bundle, &spec.log_path, &id));
        // A container that cannot start leaves no mounted root behind.
        let undo = |e: Error| {
            unmount_rootfs(&bundle);
            let _ = std::fs::remove_dir_all(&bundle);
            e
        };
        let ([out, err], copiers) = made.map_err(undo)?;
        let bundled = begun.elapsed();
        // `$0` is the bundle, the rest is the runc command line: no quoting to get wrong. The
        // wrapper holds its FIFOs open for reading (fds 3 and 4, not passed on to runc), so
        // the container's writes to them never fail while no agent reads.
        let script = r#"exec 3<"$0/stdout" 4<"$0/stderr"; "$@" 3<&- 4<&-; echo $? > "$0/exit.tmp" && mv "$0/exit.tmp" "$0/exit""#;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg(&bundle)
            .arg(&self.runc)
            .arg("--root")
            .arg(&self.state)
            .args(["run", "--keep", "--pid-file"])
            .arg(bundle.join("pid"))
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Start {
                id: spec.id.clone(),
                message: format!("cannot run {}: {e}", self.runc.display()),
            })
            .map_err(undo)?;
        let spawned = begun.elapsed();
        // Running once runc has started it (runc writes the pid file after the start), as
        // the kubelet says Running once the container started: not when runc was only asked.
        // A runc that ends first failed, which the exit file reports.
        let pid_file = bundle.join("pid");
        let deadline = std::time::Instant::now() + START_WAIT;
        while !pid_file.exists()
            && matches!(child.try_wait(), Ok(None))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Its start, for an agent that takes it back to report the same.
        let started = std::time::SystemTime::now();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::debug!(
            container = %spec.id,
            bundle_ms = ms(bundled),
            spawn_ms = ms(spawned.saturating_sub(bundled)),
            runc_ms = ms(begun.elapsed().saturating_sub(spawned)),
            "container bundle made (root file system, config.json, FIFOs), runc ran it"
        );
        let nanos = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let _ = std::fs::write(bundle.join("started"), nanos.to_string());
        Ok(self
            .follow(id, bundle, Some(child), Some(copiers))?
            .started_at(Some(started)))
    }
}

/// Did the kernel's OOM killer act in the container's cgroup (v1 or v2)?
fn oom_killed(id: &str) -> bool {
    let count = |path: String, key: &str| {
        std::fs::read_to_string(path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    };
    count(
        format!("/sys/fs/cgroup/memory/shoal/{id}/memory.oom_control"),
        "oom_kill ",
    )
    .or_else(|| {
        count(
            format!("/sys/fs/cgroup/shoal/{id}/memory.events"),
            "oom_kill ",
        )
    })
    .is_some_and(|n| n > 0)
}

fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    // Detach: a process still holding it open must not keep the bundle from going.
    let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
}

/// The executor behind the [`Workload`] trait.
pub struct Runc(pub Arc<RuncRuntime>);

impl Workload for Runc {
    fn name(&self) -> &'static str {
        "runc"
    }

    fn prepare(&self, artifact: &Path) -> Result<()> {
        let digest = artifact
            .file_name()
            .and_then(|n| n.to_str())
            .map(|hex| format!("sha256:{hex}"))
            .unwrap_or_default();
        let image = self.0.images.image(&digest)?;
        for l in &image.layers {
            self.0.images.layer_dir(l)?;
        }
        Ok(())
    }

    fn start(&self, spec: ContainerSpec) -> Result<Handle> {
        self.0.run(spec)
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
