//! The pod supervisor: one task per pod bound to this node. This module holds what the node
//! runs and its public face; the work is in the submodules, one concern each:
//!
//! - [`prepare`]: a pod's volumes, env and container specs, resolved before anything runs;
//! - [`sources`]: the ConfigMaps and Secrets it reads, from the controller or the local copy;
//! - [`image`]: its images and wasm artifacts, pulled or fetched, and image garbage collection;
//! - [`sandbox`]: its network namespace, /etc files and host ports;
//! - [`run`]: its containers run, restarted by the pod's policy with back-off;
//! - [`probes`]: startup, liveness and readiness probes;
//! - [`status`]: the status reported, computed by a pure function from [`state`];
//! - [`events`]: Events about it, held while the controller is out of reach.

mod claims;
mod events;
mod image;
mod prepare;
mod probes;
mod run;
mod sandbox;
mod sources;
pub mod state;
mod status;
mod tunneled;

pub(crate) use sandbox::mount_points_beneath;

use crate::artifacts::ArtifactCache;
use crate::config::{AgentConfig, Link};
use crate::error::Result;
use crate::sync::lock;
use shoal_api::{Kind, Object, Pod, RuntimeClass};
use shoal_runtime::oci::netns::{self, PodNetwork, Subnet};
use shoal_runtime::oci::RuncRuntime;
use shoal_runtime::wasm::WasmRuntime;
use shoal_transport::proto::EventType;
use state::Container;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Running {
    namespace: String,
    name: String,
    dir: PathBuf,
    cancel: CancellationToken,
    state: Arc<Mutex<PodRun>>,
}

/// What a pod's task knows of it, shared with the status reporter.
struct PodRun {
    pod: Pod,
    /// The init containers, run one after another before the containers.
    init: Vec<Container>,
    containers: Vec<Container>,
    started: String,
    /// Readiness as last reported, and since when: the Ready condition's
    /// lastTransitionTime, from which the controller counts minReadySeconds.
    readiness: Option<(bool, String)>,
    /// The pod's address: on the pod bridge, or the node's with hostNetwork.
    pod_ip: Option<String>,
    /// The address last reported as the pod's (wasm and hostNetwork pods: the node's), which
    /// tunnels from other nodes' service proxies may dial.
    reported_ip: Option<String>,
    /// The manifest digests of the container images it runs: kept from garbage collection.
    images: Vec<String>,
    /// Held while a status report is taken and sent.
    reporting: Arc<tokio::sync::Mutex<()>>,
    /// Whether the node's local state holds it as finished (so a restart does not run it again).
    kept_finished: bool,
    /// Told of each change of the containers' states (with each report): the init sequence
    /// waits on it for a sidecar to start.
    changed: Arc<tokio::sync::watch::Sender<()>>,
    /// The grace period its deletion gave (`--grace-period`), instead of the spec's.
    stop_grace: Option<std::time::Duration>,
    /// Where the node keeps its containers' restart counts and running starts, for the next
    /// agent ([`state::Kept`]), and what was last written there.
    kept_file: PathBuf,
    kept: Vec<state::Kept>,
    /// How its first start went, phase by phase, until it is logged (once a container of it
    /// has started and been reported).
    timing: Option<StartTiming>,
}

/// The phases of a pod's first start, from when this node saw it.
struct StartTiming {
    seen: std::time::Instant,
    /// Until its volumes, env, images and sandbox were ready.
    prepared: Duration,
    /// Its sandbox (the network namespace, veth and address), made beside the rest.
    sandbox: Duration,
}

/// Which of a pod's containers: the `i`th of its init containers, or of its containers.
#[derive(Clone, Copy, Debug)]
struct Slot {
    init: bool,
    i: usize,
}

impl PodRun {
    /// The state of the container in `slot`.
    fn slot(&mut self, slot: Slot) -> &mut Container {
        if slot.init {
            &mut self.init[slot.i]
        } else {
            &mut self.containers[slot.i]
        }
    }

    /// The spec of the container in `slot`.
    fn spec_of(&self, slot: Slot) -> Option<&shoal_api::Container> {
        let spec = &self.pod.spec;
        if slot.init {
            spec.init_containers.get(slot.i)
        } else {
            spec.containers.get(slot.i)
        }
    }
}

struct Inner {
    node: String,
    data_dir: PathBuf,
    wasm: Arc<WasmRuntime>,
    /// The OCI executor, when this node has runc and root.
    runc: Option<Arc<RuncRuntime>>,
    runc_version: Option<String>,
    /// The pod bridge and address leases, once the node knows its pod range.
    network: Mutex<Option<Arc<PodNetwork>>>,
    pod_bridge: String,
    /// Disk use (percent) past which unused images are removed, and down to which.
    image_gc: (u8, u8),
    artifacts: ArtifactCache,
    link: Link,
    /// The node's service proxy: what Services exist, for the pods' environment.
    proxy: crate::proxy::Proxy,
    pods: Mutex<HashMap<String, Running>>,
    /// What this node was told to run, on disk: started from when the controller is away.
    local: Arc<crate::local::Local>,
    /// Events that happened while the controller was out of reach, sent on reconnect.
    held_events: Mutex<events::HeldEvents>,
    tracker: TaskTracker,
    /// Cancelled when the agent stops: what runs every so often ends at once.
    stopping: CancellationToken,
    /// Set when the agent stops: pods stopped then keep their directories (their logs) for
    /// the next agent, as they are not deleted.
    shutting_down: std::sync::atomic::AtomicBool,
    /// The uids of the static pods (from `--manifests`): no listing of the controller's
    /// stops them.
    statics: Mutex<std::collections::HashSet<String>>,
    /// The uids of the pods of CronJob runs this node started while cut off from the
    /// controller and has not reported yet (the agent's cron module): no listing stops them.
    unreported: Mutex<std::collections::HashSet<String>>,
    /// The host devices the node gives pods, and which pod holds which.
    devices: crate::devices::Devices,
}

#[derive(Clone)]
pub struct Supervisor(Arc<Inner>);

/// How often image garbage collection looks at the disk (the kubelet's is 5 minutes); it also
/// runs after each new image.
const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// How often the data of released local volumes is looked for, to delete (reclaim policy
/// Delete).
const RECLAIM_PERIOD: Duration = Duration::from_secs(10);

/// How often containers' logs are held to their bound.
const LOG_CHECK_PERIOD: Duration = Duration::from_secs(10);

fn bound_logs(dirs: &[PathBuf], max: u64) {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            match shoal_runtime::logs::bound(&e.path(), max) {
                Ok(0) => {}
                Ok(dropped) => {
                    tracing::info!(log = %e.path().display(), dropped, "log past its bound: its oldest half dropped")
                }
                Err(err) => tracing::warn!(error = %err, "cannot bound a container log"),
            }
        }
    }
}

impl Supervisor {
    pub fn new(
        config: &AgentConfig,
        wasm: Arc<WasmRuntime>,
        runc: Option<Arc<RuncRuntime>>,
        link: Link,
        proxy: crate::proxy::Proxy,
        local: Arc<crate::local::Local>,
    ) -> Result<Supervisor> {
        let artifacts = ArtifactCache::new(
            &config.data_dir,
            crate::registry::Registries {
                insecure: config.insecure_registries.clone(),
            },
        )?;
        let runc_version = runc.as_ref().map(|r| r.version());
        let supervisor = Supervisor(Arc::new(Inner {
            node: config.name.clone(),
            data_dir: config.data_dir.clone(),
            wasm,
            runc,
            runc_version,
            network: Mutex::new(None),
            pod_bridge: config.pod_bridge.clone(),
            image_gc: (
                config.image_gc_high_threshold,
                config.image_gc_low_threshold,
            ),
            artifacts,
            link,
            proxy,
            pods: Mutex::new(HashMap::new()),
            local,
            held_events: Mutex::default(),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            statics: Mutex::default(),
            unreported: Mutex::default(),
            devices: crate::devices::Devices::new(config.devices.clone(), &config.data_dir),
        }));
        // The range the controller gave this node last time: pods get addresses also when
        // the agent starts with the controller out of reach.
        if let Ok(cidr) = std::fs::read_to_string(config.data_dir.join("pod-cidr")) {
            supervisor.set_pod_cidr(cidr.trim());
        }
        // Logs stay bounded on disk, with or without the controller.
        let max = config.container_log_max_size;
        supervisor.every(LOG_CHECK_PERIOD, move |s| async move {
            let dirs: Vec<PathBuf> = lock(&s.0.pods)
                .values()
                .map(|r| r.dir.join("logs"))
                .collect();
            let _ = tokio::task::spawn_blocking(move || bound_logs(&dirs, max)).await;
        });
        if supervisor.0.runc.is_some() {
            supervisor.every(IMAGE_GC_PERIOD, |s| async move { s.collect_images().await });
        }
        supervisor.every(RECLAIM_PERIOD, |s| async move {
            let pods: Vec<Pod> = lock(&s.0.pods)
                .values()
                .map(|r| lock(&r.state).pod.clone())
                .collect();
            claims::reclaim(&s.0, &pods).await;
        });
        Ok(supervisor)
    }

    /// Runs `task` every `period` until the supervisor shuts down.
    fn every<F, Fut>(&self, period: Duration, task: F)
    where
        F: Fn(Supervisor) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let me = self.clone();
        self.0.tracker.spawn(async move {
            // The first run one period from now, once the node's pods are under way.
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    _ = me.0.stopping.cancelled() => break,
                    _ = every.tick() => {}
                }
                tokio::select! {
                    _ = me.0.stopping.cancelled() => break,
                    _ = task(me.clone()) => {}
                }
            }
        });
    }

    /// The node's pod range, as the controller assigned it: sets up the pod bridge (once) and
    /// remembers the range on disk.
    pub fn set_pod_cidr(&self, cidr: &str) {
        if self.0.runc.is_none() {
            return;
        }
        let subnet: Subnet = match cidr.parse() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the controller gave a pod range this node cannot use");
                return;
            }
        };
        self.0.proxy.policies().set_gateway(subnet.gateway());
        // Pods of the range ran here before (the bridge is there): they are reached from
        // other nodes again at once. Otherwise the first such pod starts it.
        if netns::ip(&["link", "show", &self.0.pod_bridge]).is_ok() {
            self.0.proxy.start_pod_network(&self.0.pod_bridge);
        }
        let mut current = lock(&self.0.network);
        if current.as_ref().is_some_and(|n| n.subnet() == subnet) {
            return;
        }
        match PodNetwork::new(&self.0.pod_bridge, subnet, &self.0.data_dir) {
            Ok(n) => {
                tracing::info!(pod_cidr = %subnet, bridge = %self.0.pod_bridge, "pod network ready");
                *current = Some(Arc::new(n));
                let file = self.0.data_dir.join("pod-cidr");
                if let Err(e) = std::fs::write(&file, subnet.to_string()) {
                    tracing::warn!(error = %shoal_transport::report(&e), "cannot remember the pod range");
                }
            }
            Err(e) => {
                tracing::warn!(error = %shoal_transport::report(&e), "pods get no address: no pod network")
            }
        }
    }

    /// Where the node keeps what it fetched from the controller.
    pub fn artifacts(&self) -> &ArtifactCache {
        &self.0.artifacts
    }

    /// runc's version when this node runs OCI containers.
    pub fn runc_version(&self) -> Option<&str> {
        self.0.runc_version.as_deref()
    }

    /// Makes the running set match `pods` (after a list), and reports every status again.
    /// Containers a previous agent left running for pods that are gone are removed; a pod
    /// still running here is stopped by its task instead, with its grace period and its
    /// sidecars last.
    pub async fn sync(&self, pods: Vec<Pod>) {
        let mut keep: Vec<String> = pods.iter().map(|p| p.metadata.uid.clone()).collect();
        keep.extend(lock(&self.0.statics).iter().cloned());
        let unreported: Vec<String> = lock(&self.0.unreported).iter().cloned().collect();
        keep.extend(unreported.iter().cloned());
        if let Some(runc) = self.0.runc.clone() {
            let keys_of = |p: &Pod| -> Vec<String> {
                p.spec
                    .init_containers
                    .iter()
                    .chain(&p.spec.containers)
                    .map(|c| container_key(p, &c.name))
                    .collect()
            };
            let mut keys: Vec<String> = pods
                .iter()
                .filter(|p| !p.is_terminal())
                .flat_map(keys_of)
                .collect();
            for r in lock(&self.0.pods).values() {
                keys.extend(keys_of(&lock(&r.state).pod));
            }
            match tokio::task::spawn_blocking(move || runc.remove_except(&keys)).await {
                Ok(Ok(removed)) if !removed.is_empty() => {
                    tracing::info!(?removed, "removed containers of pods no longer here")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %shoal_transport::report(&e), "cannot list runc containers")
                }
                _ => {}
            }
        }
        let gone: Vec<String> = lock(&self.0.pods)
            .keys()
            .filter(|uid| !keep.contains(uid))
            .cloned()
            .collect();
        for uid in &gone {
            self.stop(uid, None);
        }
        self.sweep_leftovers(&keep, &gone).await;
        // What the controller listed is what this node has: pods kept for a node that was
        // away, and deleted meanwhile, are forgotten. Finished ones stay (for their logs),
        // and are not run again.
        let mut listed: Vec<Object> = pods.iter().map(|p| Object::Pod(p.clone())).collect();
        // Runs started while cut off, not reported yet, stay too.
        listed.extend(
            unreported
                .iter()
                .filter_map(|uid| self.0.local.get(&format!("Pod/{uid}")).ok().flatten()),
        );
        if let Err(e) = self.0.local.replace(Kind::Pod, &listed) {
            tracing::warn!(error = %shoal_transport::report(&e), "cannot keep the pods in the node's local state");
        }
        for pod in pods {
            self.observe(EventType::Modified, pod).await;
        }
        self.report_all().await;
    }

    /// Pod directories of pods that are neither listed (`keep`), nor running here, nor being
    /// stopped by their task (`stopping`): deleted while no agent ran. Their volumes, subPath
    /// binds, namespaces and addresses are removed.
    async fn sweep_leftovers(&self, keep: &[String], stopping: &[String]) {
        let Ok(entries) = std::fs::read_dir(self.0.data_dir.join("pods")) else {
            return;
        };
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().to_string();
            let known = keep.contains(&uid)
                || stopping.contains(&uid)
                || lock(&self.0.pods).contains_key(&uid);
            if !known {
                sandbox::sweep_leftover(&self.0, &uid, &e.path()).await;
            }
        }
    }

    /// Starts the pods the node's local state holds, before the controller is reached: after a
    /// reboot, or an agent restart, while the controller is out of reach. OCI containers that
    /// outlived the agent are taken back, not restarted. Returns how many pods it started.
    pub async fn start_local(&self) -> usize {
        let pods: Vec<Pod> = self.0.local.list_typed(Kind::Pod);
        let pods: Vec<Pod> = pods.into_iter().filter(|p| !p.is_terminal()).collect();
        let n = pods.len();
        if n > 0 {
            tracing::info!(
                pods = n,
                "starting the pods this node ran, from its local state"
            );
        }
        for pod in pods {
            self.observe(EventType::Modified, pod).await;
        }
        n
    }

    /// Makes the static pods running here exactly `pods` (from the manifests directory): new
    /// ones start, those no longer there (a removed or changed file) stop.
    pub async fn set_static(&self, pods: Vec<Pod>) {
        let uids: std::collections::HashSet<String> =
            pods.iter().map(|p| p.metadata.uid.clone()).collect();
        let gone: Vec<String> = {
            let mut statics = lock(&self.0.statics);
            let gone = statics.difference(&uids).cloned().collect();
            *statics = uids;
            gone
        };
        for uid in &gone {
            self.stop(uid, None);
        }
        for pod in pods {
            if !lock(&self.0.pods).contains_key(&pod.metadata.uid) {
                self.observe(EventType::Added, pod).await;
            }
        }
    }

    /// Starts the pod of a CronJob run this node started while cut off from the controller:
    /// it runs, and stays through listings, until [`Supervisor::reported`].
    pub async fn start_unreported(&self, pod: Pod) {
        lock(&self.0.unreported).insert(pod.metadata.uid.clone());
        self.observe(EventType::Added, pod).await;
    }

    /// Holds the pods of runs a previous agent started and did not report, before they run
    /// again from the node's local state.
    pub fn hold_unreported(&self, uids: impl IntoIterator<Item = String>) {
        lock(&self.0.unreported).extend(uids);
    }

    /// The run's pod is in the API now: it is the controller's, as any other.
    pub fn reported(&self, uid: &str) {
        lock(&self.0.unreported).remove(uid);
    }

    /// A run that will never be reported (its CronJob is gone, or a later run replaced it):
    /// its pod stops.
    pub fn drop_unreported(&self, uid: &str) {
        lock(&self.0.unreported).remove(uid);
        self.stop(uid, None);
    }

    /// Ends the pod `uid` here (a Job a CronJob's later run replaces); the controller is told
    /// with the run's report.
    pub fn end(&self, uid: &str) {
        self.stop(uid, None);
    }

    /// The pod `uid` with its status as it is now: running here, or kept as finished.
    pub fn pod_now(&self, uid: &str) -> Option<Pod> {
        let state = lock(&self.0.pods).get(uid).map(|r| r.state.clone());
        if let Some(state) = state {
            let s = lock(&state);
            let report = status::pod_status(&s, None, &crate::node::now());
            let mut pod = s.pod.clone();
            pod.status = Some(report.status);
            return Some(pod);
        }
        self.0
            .local
            .get(&format!("Pod/{uid}"))
            .ok()
            .flatten()
            .and_then(|o| o.into_typed::<Pod>().ok())
    }

    /// The pods here of Jobs in `namespace` named `PREFIX<digits>` (a CronJob's): uid, Job
    /// name, and whether it has finished.
    pub fn job_pods(&self, namespace: &str, prefix: &str) -> Vec<(String, String, bool)> {
        lock(&self.0.pods)
            .iter()
            .filter(|(_, r)| r.namespace == namespace)
            .filter_map(|(uid, r)| {
                let s = lock(&r.state);
                let job = s.pod.metadata.owner_references.iter().find(|o| {
                    o.kind == "Job"
                        && o.name.strip_prefix(prefix).is_some_and(|rest| {
                            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                        })
                })?;
                let done = state::pod_phase_of(&s.init, &s.containers).is_terminal();
                Some((uid.clone(), job.name.clone(), done))
            })
            .collect()
    }

    /// Reports the status of the pod `uid` again, if it runs here (a static pod whose mirror
    /// was just made).
    pub async fn report_pod(&self, uid: &str) {
        let state = lock(&self.0.pods).get(uid).map(|r| r.state.clone());
        if let Some(state) = state {
            status::report(&self.0, &state).await;
        }
    }

    /// Reports every pod's status again (after a reconnect: what changed offline).
    pub async fn report_all(&self) {
        let states: Vec<Arc<Mutex<PodRun>>> = lock(&self.0.pods)
            .values()
            .map(|r| r.state.clone())
            .collect();
        for s in states {
            status::report(&self.0, &s).await;
        }
    }

    pub async fn observe(&self, type_: EventType, pod: Pod) {
        // A mirror pod is a static pod's face in the API: the static pod is what runs.
        if pod.is_mirror() {
            return;
        }
        let uid = pod.metadata.uid.clone();
        if type_ == EventType::Deleted || pod.metadata.deletion_timestamp.is_some() {
            let grace = (pod.metadata.deletion_grace_period_seconds)
                .map(|g| std::time::Duration::from_secs(g.max(0) as u64));
            self.stop(&uid, grace);
            return;
        }
        let known = lock(&self.0.pods)
            .get(&uid)
            .map(|r| (r.dir.clone(), r.state.clone()));
        if let Some((dir, state)) = known {
            // The controller marks a silent node's pods not ready; once this node is heard
            // again, what holds here is said again.
            let theirs = pod.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.is_true())
            });
            let stale = lock(&state)
                .readiness
                .as_ref()
                .is_some_and(|(mine, _)| *mine != theirs);
            if stale {
                status::report(&self.0, &state).await;
            }
            return self.relabel(pod, &dir, &state).await;
        }
        if pod.is_terminal() || pod.spec.node_name.as_deref() != Some(self.0.node.as_str()) {
            return;
        }
        let dir = self.0.data_dir.join("pods").join(&uid);
        let cancel = CancellationToken::new();
        // With init containers to run first, the containers wait on them.
        let first = if pod.spec.init_containers.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let mut containers: Vec<Container> = pod
            .spec
            .containers
            .iter()
            .map(|c| Container::waiting(&c.name, &c.image, first))
            .collect();
        let mut init: Vec<Container> = pod
            .spec
            .init_containers
            .iter()
            .map(|c| Container {
                sidecar: c.is_sidecar(),
                ..Container::waiting(&c.name, &c.image, "PodInitializing")
            })
            .collect();
        // What an earlier agent ran of it: its restart counts go on, and a run that ended
        // with that agent is a restart.
        let kept_file = dir.join(status::KEPT_FILE);
        let kept = status::read_kept(&kept_file);
        let now = chrono::Utc::now();
        for k in &kept {
            let list = if k.init { &mut init } else { &mut containers };
            if let Some(c) = list.iter_mut().find(|c| c.name == k.name) {
                c.resume(k, now);
            }
        }
        let state = Arc::new(Mutex::new(PodRun {
            pod: pod.clone(),
            init,
            containers,
            started: crate::node::now(),
            readiness: None,
            pod_ip: None,
            reported_ip: None,
            images: Vec::new(),
            reporting: Arc::default(),
            kept_finished: false,
            changed: Arc::new(tokio::sync::watch::Sender::new(())),
            stop_grace: None,
            kept_file,
            kept,
            timing: None,
        }));
        lock(&self.0.pods).insert(
            uid.clone(),
            Running {
                namespace: pod.metadata.namespace_or_default().to_string(),
                name: pod.metadata.name.clone(),
                dir: dir.clone(),
                cancel: cancel.clone(),
                state: state.clone(),
            },
        );
        // A static pod comes from its file, not from what the controller said.
        if !pod.is_static() {
            self.0.local.keep(&Object::Pod(pod.clone()));
        }
        tracing::info!(pod = %pod.metadata.name, namespace = %pod.metadata.namespace_or_default(), "starting pod");
        let inner = self.0.clone();
        self.0
            .tracker
            .spawn(run::run_pod(inner, state, dir, cancel));
    }

    /// A running pod's labels or annotations changed: its downward API files say so, as the
    /// kubelet rewrites them (the rest of a pod's spec cannot change).
    async fn relabel(&self, pod: Pod, dir: &std::path::Path, state: &Arc<Mutex<PodRun>>) {
        {
            let mut s = lock(state);
            let m = &mut s.pod.metadata;
            if m.labels == pod.metadata.labels && m.annotations == pod.metadata.annotations {
                return;
            }
            m.labels = pod.metadata.labels.clone();
            m.annotations = pod.metadata.annotations.clone();
        }
        let pod = lock(state).pod.clone();
        self.0.local.keep(&Object::Pod(pod.clone()));
        let volumes = dir.join("volumes");
        let refreshed =
            tokio::task::spawn_blocking(move || sources::refresh_downward(&volumes, &pod)).await;
        if let Ok(Err(e)) = refreshed {
            tracing::warn!(dir = %dir.display(), error = %e, "downward API files not refreshed");
        }
    }

    fn stop(&self, uid: &str, grace: Option<std::time::Duration>) {
        self.0.local.forget(&format!("Pod/{uid}"));
        let removed = lock(&self.0.pods).remove(uid);
        if let Some(r) = removed {
            tracing::info!(pod = %r.name, namespace = %r.namespace, ?grace, "stopping pod");
            lock(&r.state).stop_grace = grace;
            r.cancel.cancel();
        }
    }

    /// How many pods run here.
    pub fn count(&self) -> usize {
        lock(&self.0.pods).len()
    }

    /// The agent stops. With `drain`, every pod is stopped (within its grace period) and
    /// waited for. Without, the pods are left as they are: OCI containers run on, outside
    /// this process, and the next agent takes them back; wasm pods end with the process and
    /// are started again by the next agent. Either way what runs every so often ends now.
    pub async fn shutdown(&self, drain: bool) {
        (self.0.shutting_down).store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.stopping.cancel();
        self.0.tracker.close();
        if !drain {
            let pods = lock(&self.0.pods).len();
            tracing::info!(
                pods,
                "leaving the pods running for the next agent (--drain-on-stop stops them)"
            );
            return;
        }
        let pods = lock(&self.0.pods).len();
        tracing::info!(pods, "stopping every pod (--drain-on-stop)");
        for r in lock(&self.0.pods).values() {
            r.cancel.cancel();
        }
        self.0.tracker.wait().await;
    }
}

/// The name the OCI executor knows a container by: stable across agent restarts.
fn container_key(pod: &Pod, container: &str) -> String {
    format!("{}-{container}", pod.metadata.uid)
}

/// The pod's network namespace, shared by its OCI containers.
fn netns_name(pod: &Pod) -> String {
    crate::policy::netns_of(&pod.metadata.uid)
}

fn client(inner: &Inner) -> Option<Arc<shoal_transport::Client>> {
    inner.link.borrow().clone()
}
