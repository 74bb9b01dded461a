//! A pod's life: prepared (retried with back-off while it cannot be), its containers run and
//! restarted by the pod's restart policy, its sandbox removed when it is deleted.

use super::events::event;
use super::prepare::{prepare, ToRun};
use super::probes::probe_container;
use super::sandbox::{publish_host_ports, remove_sandbox};
use super::state::{self, Phase, RestartPolicy, Terminated};
use super::status::report;
use super::{Inner, PodRun, Slot, Supervisor};
use crate::config::Link;
use crate::sync::lock;
use chrono::Utc;
use shoal_api::RuntimeClass;
use shoal_runtime::ContainerSpec;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(super) async fn run_pod(
    inner: Arc<Inner>,
    state: Arc<Mutex<PodRun>>,
    dir: PathBuf,
    cancel: CancellationToken,
) {
    let pod = lock(&state).pod.clone();
    let seen = std::time::Instant::now();
    let Some(prepared) = prepare_retrying(&inner, &state, &pod, &dir, &cancel).await else {
        return remove_sandbox(&inner, &pod, &dir).await;
    };
    {
        let mut s = lock(&state);
        s.pod_ip = prepared.pod_ip.map(|ip| ip.to_string());
        s.images = prepared.images.clone();
        s.timing = Some(super::StartTiming {
            seen,
            prepared: seen.elapsed(),
            sandbox: prepared.sandbox_time,
        });
    }
    if !prepared.images.is_empty() {
        let supervisor = Supervisor(inner.clone());
        inner
            .tracker
            .spawn(async move { supervisor.collect_images().await });
    }
    if let Some(ip) = prepared.pod_ip {
        publish_host_ports(&inner, &pod, ip, &cancel).await;
    }
    let policy = RestartPolicy::parse(pod.spec.restart_policy.as_deref());
    let grace = Duration::from_secs(
        pod.spec
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64,
    );
    // A runc pod whose containers a previous agent left running has had its init
    // containers run: they are not run again (the kubelet does not either).
    let adopted = inner.runc.as_ref().is_some_and(|r| {
        pod.runtime_class() == RuntimeClass::Runc
            && prepared.specs.iter().any(|c| r.has(&c.spec.key))
    });
    // A container runc still holds is taken back, not restarted: no run of it was lost.
    if let (Some(r), RuntimeClass::Runc) = (&inner.runc, pod.runtime_class()) {
        let mut s = lock(&state);
        let held = |to_run: &ToRun| r.has(&to_run.spec.key);
        for (i, to_run) in prepared.init.iter().enumerate() {
            if held(to_run) {
                s.init[i].lost = None;
            }
        }
        for (i, to_run) in prepared.specs.iter().enumerate() {
            if held(to_run) {
                s.containers[i].lost = None;
            }
        }
    }
    let init = InitContainers {
        inner: &inner,
        state: &state,
        grace,
        cancel: &cancel,
    };
    let mut sidecars = Sidecars::default();
    // `false`: stopped, or an init container failed for good (the pod is Failed).
    let initialized = if adopted {
        init.adopt(prepared.init, &mut sidecars);
        true
    } else {
        init.run_all(prepared.init, policy, &mut sidecars).await
    };
    if initialized {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, to_run) in prepared.specs.into_iter().enumerate() {
            let run = init.one(Slot { init: false, i }, &to_run, cancel.clone());
            tasks.spawn(keep_running(run, to_run.workload, policy));
        }
        while tasks.join_next().await.is_some() {}
    }
    // The sidecars outlive the containers: stopped once those are done for good (a Job's
    // pod) or stopped, last started first.
    sidecars.stop().await;
    if !cancel.is_cancelled() {
        // Done for good (a finished Job's pod): its devices are free for others, as the
        // kubelet frees a terminated pod's.
        inner.devices.release(&pod.metadata.uid);
    }
    // The pod's sandbox (network namespace, volumes) lasts until the pod is deleted, also
    // after its containers have ended (a finished Job's pod).
    cancel.cancelled().await;
    remove_sandbox(&inner, &pod, &dir).await;
}

/// Prepares the pod, retrying with back-off: ErrImagePull becomes ImagePullBackOff while it
/// waits, and a link to the controller coming back cuts the wait short (a fetch it broke
/// resumes). `None` when the pod is stopped first.
async fn prepare_retrying(
    inner: &Arc<Inner>,
    state: &Arc<Mutex<PodRun>>,
    pod: &shoal_api::Pod,
    dir: &std::path::Path,
    cancel: &CancellationToken,
) -> Option<super::prepare::Prepared> {
    let mut attempt = 0u32;
    let mut link = inner.link.clone();
    loop {
        match prepare(inner, pod, dir).await {
            Ok(p) => return Some(p),
            Err((reason, message)) => {
                attempt += 1;
                tracing::warn!(pod = %pod.metadata.name, %reason, %message, "pod not ready to start");
                set_waiting(state, &reason, Some(message.clone()));
                event(
                    inner,
                    pod,
                    "Warning",
                    "Failed",
                    format!("{reason}: {message}"),
                )
                .await;
                report(inner, state).await;
                let delay = crate::backoff::Backoff::PREPARE.delay(attempt);
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = link_back(&mut link) => continue,
                }
                if reason == "ErrImagePull" {
                    set_waiting(
                        state,
                        "ImagePullBackOff",
                        Some(format!("Back-off pulling image: {message}")),
                    );
                    report(inner, state).await;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(delay.saturating_sub(Duration::from_secs(2))) => {}
                    _ = link_back(&mut link) => {}
                }
            }
        }
    }
}

/// Resolves when the link to the controller comes up again (never, once the agent stops).
async fn link_back(link: &mut Link) {
    loop {
        if link.changed().await.is_err() {
            return std::future::pending().await;
        }
        if link.borrow_and_update().is_some() {
            return;
        }
    }
}

fn container_name(spec: &ContainerSpec) -> &str {
    spec.id.rsplit('/').next().unwrap_or(&spec.id)
}

/// One container's life within its pod: started, watched, and restarted by `policy` with
/// back-off, until the pod (for a sidecar: the containers) is stopped or the container is
/// done for good.
async fn keep_running(
    run: OneContainer,
    workload: Arc<dyn shoal_runtime::Workload>,
    policy: RestartPolicy,
) {
    loop {
        if run.cancel.is_cancelled() {
            return;
        }
        let mut started = run.restarting();
        let starting = std::time::Instant::now();
        let exit = match run.start(&workload).await {
            None => return,
            Some(Ok(handle)) => {
                // As its executor knows it: a container taken back keeps its start.
                started = handle.start_time().map_or(started, Into::into);
                match run.watch(handle, started, starting.elapsed()).await {
                    Some(exit) => exit,
                    None => return,
                }
            }
            Some(Err(exit)) => exit,
        };
        let Some(wait) = run.exited(exit, started, policy).await else {
            return;
        };
        tokio::select! {
            _ = run.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The pod's sidecars as they were started, each with what stops it.
#[derive(Default)]
struct Sidecars(Vec<(CancellationToken, tokio::task::JoinHandle<()>)>);

impl Sidecars {
    /// Runs a sidecar beside the pod: restarted whenever it exits, until [`Sidecars::stop`].
    fn start(
        &mut self,
        inner: &Inner,
        run: OneContainer,
        workload: Arc<dyn shoal_runtime::Workload>,
    ) {
        let stop = run.cancel.clone();
        let task = inner
            .tracker
            .spawn(keep_running(run, workload, RestartPolicy::Always));
        self.0.push((stop, task));
    }

    /// Stops them one at a time, the last started first, as the kubelet does.
    async fn stop(self) {
        for (stop, task) in self.0.into_iter().rev() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// The pod's init containers, run one after another before the containers, each until it
/// succeeds: a failed one is restarted with back-off, or (restartPolicy Never) fails the pod.
struct InitContainers<'a> {
    inner: &'a Arc<Inner>,
    state: &'a Arc<Mutex<PodRun>>,
    grace: Duration,
    cancel: &'a CancellationToken,
}

impl InitContainers<'_> {
    /// The container in `slot`, to be run until `cancel`.
    fn one(&self, slot: Slot, to_run: &ToRun, cancel: CancellationToken) -> OneContainer {
        OneContainer {
            inner: self.inner.clone(),
            state: self.state.clone(),
            slot,
            sidecar: slot.init && lock(self.state).slot(slot).sidecar,
            spec: to_run.spec.clone(),
            subpaths: to_run.subpaths.clone(),
            grace: self.grace,
            cancel,
        }
    }

    /// Runs them all, in order; a sidecar is started (into `sidecars`) and the next one
    /// waits only until it has. `false` when the pod is stopped or fails first.
    async fn run_all(
        &self,
        init: Vec<ToRun>,
        policy: RestartPolicy,
        sidecars: &mut Sidecars,
    ) -> bool {
        // An init container is run again only after a failure, as the kubelet does.
        let policy = match policy {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        };
        for (i, to_run) in init.into_iter().enumerate() {
            let slot = Slot { init: true, i };
            let one = self.one(slot, &to_run, CancellationToken::new());
            if one.sidecar {
                sidecars.start(self.inner, one, to_run.workload);
                if !self.started(slot).await {
                    return false;
                }
                continue;
            }
            let one = OneContainer {
                cancel: self.cancel.clone(),
                ..one
            };
            loop {
                if self.cancel.is_cancelled() {
                    return false;
                }
                let mut started = one.restarting();
                let exit = match one.start(&to_run.workload).await {
                    None => return false,
                    Some(Ok(handle)) => {
                        started = handle.start_time().map_or(started, Into::into);
                        match one.watch_to_end(handle, started).await {
                            Some(exit) => exit,
                            None => return false,
                        }
                    }
                    Some(Err(exit)) => exit,
                };
                let succeeded = exit.code == 0;
                let wait = one.exited(exit, started, policy).await;
                if succeeded {
                    break;
                }
                let Some(wait) = wait else {
                    return false;
                };
                tokio::select! {
                    _ = self.cancel.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        true
    }

    /// Waits until the sidecar in `slot` has started (past its startup probe); `false` when
    /// the pod is stopped first.
    async fn started(&self, slot: Slot) -> bool {
        let mut changed = lock(self.state).changed.subscribe();
        loop {
            if lock(self.state).slot(slot).has_started() {
                return true;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                gone = changed.changed() => if gone.is_err() {
                    return false;
                },
            }
        }
    }

    /// The pod's containers were found running: its init containers have succeeded, and its
    /// sidecars (found running too) are watched again.
    fn adopt(&self, init: Vec<ToRun>, sidecars: &mut Sidecars) {
        let now = Utc::now();
        for (i, to_run) in init.into_iter().enumerate() {
            let one = self.one(Slot { init: true, i }, &to_run, CancellationToken::new());
            if one.sidecar {
                sidecars.start(self.inner, one, to_run.workload);
                continue;
            }
            let done = Terminated {
                exit_code: 0,
                reason: "Completed".into(),
                message: None,
                started: now,
                finished: now,
            };
            lock(self.state).init[i].exited(done, RestartPolicy::Never, now);
        }
    }
}

/// A container of a pod, as [`keep_running`] and [`InitContainers`] run it.
struct OneContainer {
    inner: Arc<Inner>,
    state: Arc<Mutex<PodRun>>,
    slot: Slot,
    /// An init container with `restartPolicy: Always`: probed, and its exit recorded when
    /// it is stopped (the pod's containers are done).
    sidecar: bool,
    spec: ContainerSpec,
    /// Resolved at each start, into the copy of `spec` that start is given.
    subpaths: Vec<crate::subpath::Pending>,
    grace: Duration,
    cancel: CancellationToken,
}

impl OneContainer {
    fn name(&self) -> &str {
        container_name(&self.spec)
    }

    /// Its state in the pod's.
    fn slot<'a>(&self, s: &'a mut PodRun) -> &'a mut state::Container {
        s.slot(self.slot)
    }

    /// Before a start: the last run's log is kept as the previous one. Returns the start time.
    fn restarting(&self) -> chrono::DateTime<Utc> {
        let ran_before = {
            let mut s = lock(&self.state);
            let c = self.slot(&mut s);
            c.last.is_some() || c.lost.is_some()
        };
        if ran_before {
            let _ = shoal_runtime::logs::rotate(&self.spec.log_path);
        }
        Utc::now()
    }

    /// Starts it through its runtime; a start that fails is an exit (code 128, the reason).
    /// A container that cannot be configured (a subPath that does not resolve) waits in
    /// CreateContainerConfigError, retried with back-off, as the kubelet has it; `None` when
    /// the pod is stopped meanwhile.
    async fn start(
        &self,
        workload: &Arc<dyn shoal_runtime::Workload>,
    ) -> Option<Result<shoal_runtime::Handle, shoal_runtime::Exit>> {
        let mut failures = 0;
        loop {
            let message = match self.try_start(workload).await {
                Ok(started) => return Some(started),
                Err(message) => message,
            };
            failures += 1;
            tracing::warn!(container = %self.spec.id, %message, "container not configured");
            let pod = {
                let mut s = lock(&self.state);
                self.slot(&mut s).phase = state::Phase::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message.clone()),
                };
                s.pod.clone()
            };
            report(&self.inner, &self.state).await;
            let why = format!("Error: {message}");
            event(&self.inner, &pod, "Warning", "Failed", why).await;
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(crate::backoff::Backoff::PREPARE.delay(failures)) => {}
            }
        }
    }

    /// One start: `Err` with why when its subPaths do not resolve.
    async fn try_start(
        &self,
        workload: &Arc<dyn shoal_runtime::Workload>,
    ) -> Result<Result<shoal_runtime::Handle, shoal_runtime::Exit>, String> {
        let (w, mut s) = (workload.clone(), self.spec.clone());
        let subpaths = self.subpaths.clone();
        let started = tokio::task::spawn_blocking(move || {
            for p in &subpaths {
                p.apply(&mut s)?;
            }
            Ok::<_, String>(w.start(s))
        })
        .await
        .unwrap_or_else(|e| {
            Ok(Err(shoal_runtime::Error::Start {
                id: self.spec.id.clone(),
                message: e.to_string(),
            }))
        })?;
        Ok(started.map_err(|e| shoal_runtime::Exit {
            code: 128,
            reason: shoal_runtime::ExitReason::Error,
            message: Some(shoal_transport::report(&e).to_string()),
        }))
    }

    /// Watches an init container until it exits, or the pod is stopped (`None`).
    async fn watch_to_end(
        &self,
        handle: shoal_runtime::Handle,
        started: chrono::DateTime<Utc>,
    ) -> Option<shoal_runtime::Exit> {
        let pod = {
            let mut s = lock(&self.state);
            self.slot(&mut s).started(started);
            s.pod.clone()
        };
        report(&self.inner, &self.state).await;
        let message = format!("Started container {}", self.name());
        event(&self.inner, &pod, "Normal", "Started", message).await;
        tokio::select! {
            exit = handle.wait() => Some(exit),
            _ = self.cancel.cancelled() => {
                self.stop(&handle, &pod).await;
                None
            }
        }
    }

    /// Stops it because the pod is stopping (an event says so); waits for it to end.
    async fn stop(
        &self,
        handle: &shoal_runtime::Handle,
        pod: &shoal_api::Pod,
    ) -> shoal_runtime::Exit {
        let message = format!("Stopping container {}", self.name());
        event(&self.inner, pod, "Normal", "Killing", message).await;
        // The deletion's own grace period, when it gave one.
        let grace = lock(&self.state).stop_grace.unwrap_or(self.grace);
        handle.stop(grace);
        handle.wait().await
    }

    /// Watches a started container, with its probes, until it exits (its exit) or the pod
    /// is stopped (`None`, once it is). A failed liveness or startup probe stops it.
    async fn watch(
        &self,
        handle: shoal_runtime::Handle,
        started: chrono::DateTime<Utc>,
        start_call: Duration,
    ) -> Option<shoal_runtime::Exit> {
        let (inner, state) = (&self.inner, &self.state);
        let pod = {
            let mut s = lock(state);
            let probes = s.spec_of(self.slot);
            let (startup, readiness) = (
                probes.is_some_and(|c| c.startup_probe.is_some()),
                probes.is_some_and(|c| c.readiness_probe.is_some()),
            );
            let c = s.slot(self.slot);
            c.started(started);
            c.startup_passed = !startup;
            c.probe_ready = !readiness;
            s.pod.clone()
        };
        let probing = self.cancel.child_token();
        let (unhealthy, mut restart) = tokio::sync::mpsc::channel::<String>(1);
        inner.tracker.spawn(probe_container(
            inner.clone(),
            state.clone(),
            self.slot,
            self.spec.key.clone(),
            probing.clone(),
            unhealthy,
        ));
        let _stop_probing = probing.drop_guard();
        let reporting = std::time::Instant::now();
        report(inner, state).await;
        log_start_timing(state, start_call, reporting.elapsed());
        let message = format!("Started container {}", self.name());
        event(inner, &pod, "Normal", "Started", message).await;
        tokio::select! {
            exit = handle.wait() => Some(exit),
            Some(why) = restart.recv() => {
                let message = format!("Container {} {why}, will be restarted", self.name());
                event(inner, &pod, "Normal", "Killing", message).await;
                handle.stop(self.grace);
                Some(handle.wait().await)
            }
            _ = self.cancel.cancelled() => {
                let exit = self.stop(&handle, &pod).await;
                if self.sidecar {
                    self.exited(exit, started, RestartPolicy::Never).await;
                }
                None
            }
        }
    }

    /// Records an exit and reports it; returns how long to wait before the restart, or
    /// `None` when the container is done for good.
    async fn exited(
        &self,
        exit: shoal_runtime::Exit,
        started: chrono::DateTime<Utc>,
        policy: RestartPolicy,
    ) -> Option<Duration> {
        let now = Utc::now();
        let code = exit.code;
        let term = Terminated {
            exit_code: exit.code,
            reason: match exit.reason {
                shoal_runtime::ExitReason::Completed if exit.code == 0 => "Completed".into(),
                r => r.as_str().to_string(),
            },
            message: exit.message,
            started,
            finished: now,
        };
        tracing::info!(container = %self.spec.id, code = term.exit_code, reason = %term.reason, "container exited");
        let restart_at = {
            let mut s = lock(&self.state);
            let c = self.slot(&mut s);
            c.exited(term, policy, now);
            c.restart_at()
        };
        report(&self.inner, &self.state).await;
        let at = restart_at?;
        if code != 0 {
            let pod = lock(&self.state).pod.clone();
            let message = format!("Back-off restarting failed container {}", self.name());
            event(&self.inner, &pod, "Warning", "BackOff", message).await;
        }
        Some((at - Utc::now()).to_std().unwrap_or_default())
    }
}

/// Logs how the pod's first start went, once: where the time from seeing the pod to its
/// first container reported running went (`benches/oci.rs` prints these).
fn log_start_timing(state: &Arc<Mutex<PodRun>>, start_call: Duration, report: Duration) {
    let (pod, timing) = {
        let mut s = lock(state);
        (s.pod.metadata.name.clone(), s.timing.take())
    };
    let Some(t) = timing else { return };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::info!(
        %pod,
        prepare_ms = ms(t.prepared),
        sandbox_ms = ms(t.sandbox),
        start_ms = ms(start_call),
        report_ms = ms(report),
        total_ms = ms(t.seen.elapsed()),
        "pod started"
    );
}

fn set_waiting(state: &Arc<Mutex<PodRun>>, reason: &str, message: Option<String>) {
    let mut s = lock(state);
    let s = &mut *s;
    {
        for c in s.init.iter_mut().chain(&mut s.containers) {
            if matches!(c.phase, Phase::Waiting { .. }) {
                c.phase = Phase::Waiting {
                    reason: reason.into(),
                    message: message.clone(),
                };
            }
        }
    }
}
