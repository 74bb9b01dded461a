//! The pod supervisor: one task per pod bound to this node. It fetches the pod's artifacts,
//! resolves its env and volumes, runs each container through the runtime, restarts it by the
//! pod's policy with back-off (decided in `pod_state`), and reports status to the controller.

use crate::artifacts::ArtifactCache;
use crate::error::{Error, Result};
use crate::pod_state::{self, Container, Phase, RestartPolicy, Terminated};
use crate::{AgentConfig, Link};
use base64::Engine as _;
use chrono::Utc;
use shoal_api::{Condition, Kind, Object, Pod, PodStatus, Secret};
use shoal_runtime::oci::image::Platform;
use shoal_runtime::oci::netns::{self, PodNetwork, Subnet};
use shoal_runtime::oci::{Runc, RuncRuntime};
use shoal_runtime::wasm::WasmRuntime;
use shoal_runtime::{ContainerSpec, Mount, Network, Security, Workload};
use shoal_transport::proto::{EventType, Request, Response};
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
    held_events: Mutex<HeldEvents>,
    tracker: TaskTracker,
}

#[derive(Clone)]
pub struct Supervisor(Arc<Inner>);

/// How often image garbage collection looks at the disk (the kubelet's is 5 minutes); it also
/// runs after each new image.
const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// Events held while the controller is out of reach: the newest [`HELD_EVENTS`], and how many
/// older ones were dropped to keep to that.
#[derive(Default)]
struct HeldEvents {
    events: std::collections::VecDeque<(shoal_api::ObjectReference, String, String, String)>,
    dropped: usize,
}

const HELD_EVENTS: usize = 256;

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

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
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
        }));
        // The range the controller gave this node last time: pods get addresses also when
        // the agent starts with the controller out of reach.
        if let Ok(cidr) = std::fs::read_to_string(config.data_dir.join("pod-cidr")) {
            supervisor.set_pod_cidr(cidr.trim());
        }
        // Logs stay bounded on disk, with or without the controller.
        let max = config.container_log_max_size;
        supervisor.every(LOG_CHECK_PERIOD, move |s| async move {
            let dirs: Vec<PathBuf> = match s.0.pods.lock() {
                Ok(m) => m.values().map(|r| r.dir.join("logs")).collect(),
                Err(_) => return,
            };
            let _ = tokio::task::spawn_blocking(move || bound_logs(&dirs, max)).await;
        });
        if supervisor.0.runc.is_some() {
            supervisor.every(IMAGE_GC_PERIOD, |s| async move { s.collect_images().await });
        }
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
                every.tick().await;
                if me.0.tracker.is_closed() {
                    break;
                }
                task(me.clone()).await;
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
        let Ok(mut current) = self.0.network.lock() else {
            return;
        };
        if current.as_ref().is_some_and(|n| n.subnet() == subnet) {
            return;
        }
        match PodNetwork::new(&self.0.pod_bridge, subnet, &self.0.data_dir) {
            Ok(n) => {
                tracing::info!(pod_cidr = %subnet, bridge = %self.0.pod_bridge, "pod network ready");
                *current = Some(Arc::new(n));
                let file = self.0.data_dir.join("pod-cidr");
                if let Err(e) = std::fs::write(&file, subnet.to_string()) {
                    tracing::warn!(error = %e, "cannot remember the pod range");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pods get no address: no pod network"),
        }
    }

    /// The container images this node holds, as JSON for `shoal images`: each with whether a
    /// pod here uses it.
    pub async fn images(&self) -> Result<Vec<u8>> {
        let Some(runc) = self.0.runc.clone() else {
            return Ok(b"[]".to_vec());
        };
        let in_use = self.images_in_use();
        let listed = tokio::task::spawn_blocking(move || runc.images().list())
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let out: Vec<serde_json::Value> = listed
            .into_iter()
            .map(|i| {
                let used = in_use.contains(&i.digest);
                let mut v = serde_json::to_value(&i).unwrap_or_default();
                v["inUse"] = used.into();
                v
            })
            .collect();
        serde_json::to_vec(&out).map_err(|e| Error::Internal(e.to_string()))
    }

    /// The images pods here run, and those the pods in the node's local state will run: an
    /// image a node needs to start its pods offline is never collected.
    fn images_in_use(&self) -> std::collections::HashSet<String> {
        let mut in_use: std::collections::HashSet<String> = self
            .0
            .pods
            .lock()
            .map(|m| {
                m.values()
                    .filter_map(|r| r.state.lock().ok().map(|s| s.images.clone()))
                    .flatten()
                    .collect()
            })
            .unwrap_or_default();
        if let Some(runc) = &self.0.runc {
            let kept: Vec<Pod> = self.0.local.list_typed(Kind::Pod);
            for p in kept.iter().filter(|p| !terminal(p)) {
                in_use.extend(
                    p.spec
                        .containers
                        .iter()
                        .filter_map(|c| runc.images().recorded(&c.image)),
                );
            }
        }
        in_use
    }

    /// Image garbage collection, as the kubelet's: when the disk holding the image store is
    /// fuller than the high threshold, images no pod here uses are removed, least recently
    /// used first, until it is down to the low threshold.
    pub async fn collect_images(&self) {
        let Some(runc) = self.0.runc.clone() else {
            return;
        };
        let (high, low) = self.0.image_gc;
        let in_use = self.images_in_use();
        let done = tokio::task::spawn_blocking(move || {
            let store = runc.images();
            let fs = rustix::fs::statvfs(store.dir()).map_err(|e| Error::io(store.dir(), e))?;
            let total = fs.f_blocks.saturating_mul(fs.f_frsize);
            let available = fs.f_bavail.saturating_mul(fs.f_frsize);
            let Some(need) = shoal_runtime::oci::image::gc_need(total, available, high, low) else {
                return Ok((vec![], 0));
            };
            let plan = shoal_runtime::oci::image::plan_gc(&store.list()?, &in_use, need);
            let freed = store.remove(&plan)?;
            Ok::<_, Error>((plan, freed))
        })
        .await;
        match done {
            Ok(Ok((removed, freed))) if !removed.is_empty() => {
                let names: Vec<&str> = removed.iter().map(|i| i.reference.as_str()).collect();
                tracing::info!(removed = ?names, freed, "image garbage collection");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
            _ => {}
        }
    }

    /// runc's version when this node runs OCI containers.
    pub fn runc_version(&self) -> Option<&str> {
        self.0.runc_version.as_deref()
    }

    /// Makes the running set match `pods` (after a list), and reports every status again.
    /// Containers a previous agent left running for pods that are gone are removed.
    pub async fn sync(&self, pods: Vec<Pod>) {
        let keep: Vec<String> = pods.iter().map(|p| p.metadata.uid.clone()).collect();
        if let Some(runc) = self.0.runc.clone() {
            let keys: Vec<String> = pods
                .iter()
                .filter(|p| !terminal(p))
                .flat_map(|p| {
                    p.spec
                        .containers
                        .iter()
                        .map(|c| container_key(p, &c.name))
                        .collect::<Vec<_>>()
                })
                .collect();
            match tokio::task::spawn_blocking(move || runc.remove_except(&keys)).await {
                Ok(Ok(removed)) if !removed.is_empty() => {
                    tracing::info!(?removed, "removed containers of pods no longer here")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot list runc containers"),
                _ => {}
            }
        }
        let gone: Vec<String> = match self.0.pods.lock() {
            Ok(m) => m
                .keys()
                .filter(|uid| !keep.contains(uid))
                .cloned()
                .collect(),
            Err(_) => vec![],
        };
        for uid in gone {
            self.stop(&uid);
        }
        // What the controller listed is what this node has: pods kept for a node that was
        // away, and deleted meanwhile, are forgotten. Finished ones stay (for their logs),
        // and are not run again.
        let listed: Vec<Object> = pods.iter().map(|p| Object::Pod(p.clone())).collect();
        if let Err(e) = self.0.local.replace(Kind::Pod, &listed) {
            tracing::warn!(error = %e, "cannot keep the pods in the node's local state");
        }
        for pod in pods {
            self.observe(EventType::Modified, pod).await;
        }
        self.report_all().await;
    }

    /// Starts the pods the node's local state holds, before the controller is reached: after a
    /// reboot, or an agent restart, while the controller is out of reach. OCI containers that
    /// outlived the agent are taken back, not restarted. Returns how many pods it started.
    pub async fn start_local(&self) -> usize {
        let pods: Vec<Pod> = self.0.local.list_typed(Kind::Pod);
        let pods: Vec<Pod> = pods.into_iter().filter(|p| !terminal(p)).collect();
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

    /// Sends the events held while the controller was out of reach. Returns how many.
    pub async fn send_held_events(&self, client: &shoal_transport::Client) -> usize {
        let (events, dropped) = match self.0.held_events.lock() {
            Ok(mut held) => (
                std::mem::take(&mut held.events),
                std::mem::take(&mut held.dropped),
            ),
            Err(_) => return 0,
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "older events from while disconnected were not kept"
            );
        }
        let n = events.len();
        for (about, type_, reason, message) in events {
            crate::record_event(client, &about, &type_, &reason, message).await;
        }
        n
    }

    /// Reports every pod's status again (after a reconnect: what changed offline).
    pub async fn report_all(&self) {
        let states: Vec<Arc<Mutex<PodRun>>> = match self.0.pods.lock() {
            Ok(m) => m.values().map(|r| r.state.clone()).collect(),
            Err(_) => vec![],
        };
        for s in states {
            report(&self.0, &s).await;
        }
    }

    pub async fn observe(&self, type_: EventType, pod: Pod) {
        let uid = pod.metadata.uid.clone();
        if type_ == EventType::Deleted || pod.metadata.deletion_timestamp.is_some() {
            self.stop(&uid);
            return;
        }
        let known = self
            .0
            .pods
            .lock()
            .map(|m| m.contains_key(&uid))
            .unwrap_or(true);
        if known || terminal(&pod) || pod.spec.node_name.as_deref() != Some(self.0.node.as_str()) {
            return;
        }
        let dir = self.0.data_dir.join("pods").join(&uid);
        let cancel = CancellationToken::new();
        let containers = pod
            .spec
            .containers
            .iter()
            .map(|c| Container::new(&c.name, &c.image))
            .collect();
        let state = Arc::new(Mutex::new(PodRun {
            pod: pod.clone(),
            containers,
            started: crate::node::now(),
            readiness: None,
            pod_ip: None,
            reported_ip: None,
            images: Vec::new(),
            reporting: Arc::default(),
            kept_finished: false,
        }));
        if let Ok(mut m) = self.0.pods.lock() {
            m.insert(
                uid,
                Running {
                    namespace: pod.metadata.namespace_or_default().to_string(),
                    name: pod.metadata.name.clone(),
                    dir: dir.clone(),
                    cancel: cancel.clone(),
                    state: state.clone(),
                },
            );
        }
        self.0.local.keep(&Object::Pod(pod.clone()));
        tracing::info!(pod = %pod.metadata.name, namespace = %pod.metadata.namespace_or_default(), "starting pod");
        let inner = self.0.clone();
        self.0.tracker.spawn(run_pod(inner, state, dir, cancel));
    }

    fn stop(&self, uid: &str) {
        self.0.local.forget(&format!("Pod/{uid}"));
        if let Some(r) = self.0.pods.lock().ok().and_then(|mut m| m.remove(uid)) {
            tracing::info!(pod = %r.name, namespace = %r.namespace, "stopping pod");
            r.cancel.cancel();
        }
    }

    /// The log file of a container of a pod running here.
    pub fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> std::result::Result<PathBuf, String> {
        let running = self
            .0
            .pods
            .lock()
            .map_err(|_| "supervisor lock poisoned".to_string())?
            .values()
            .find(|r| r.namespace == namespace && r.name == pod)
            .and_then(|r| r.state.lock().ok().map(|s| (r.dir.clone(), s.pod.clone())));
        // A pod that has finished (or ran before the agent restarted) keeps its logs until
        // it is deleted, as the kubelet keeps a terminated container's.
        let (dir, spec) = match running {
            Some(found) => found,
            None => self
                .0
                .local
                .list_typed::<Pod>(Kind::Pod)
                .into_iter()
                .find(|p| p.metadata.namespace_or_default() == namespace && p.metadata.name == pod)
                .map(|p| (self.0.data_dir.join("pods").join(&p.metadata.uid), p))
                .filter(|(dir, _)| dir.join("logs").is_dir())
                .ok_or_else(|| format!("pod {pod:?} is not on node {:?}", self.0.node))?,
        };
        let names: Vec<String> = spec
            .spec
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let name = match container {
            Some(c) if names.iter().any(|n| n == c) => c.to_string(),
            Some(c) => {
                return Err(format!(
                    "container {c:?} is not valid for pod {pod:?} (its containers: {})",
                    names.join(", ")
                ))
            }
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(format!(
                    "pod {pod:?} has several containers: choose one of {} with -c",
                    names.join(", ")
                ))
            }
        };
        let current = dir.join("logs").join(format!("{name}.log"));
        Ok(if previous {
            shoal_runtime::logs::previous_path(&current)
        } else {
            current
        })
    }

    /// How many pods run here.
    pub fn count(&self) -> usize {
        self.0.pods.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Is this pod still running here?
    pub fn has(&self, namespace: &str, pod: &str) -> bool {
        self.0
            .pods
            .lock()
            .map(|m| {
                m.values()
                    .any(|r| r.namespace == namespace && r.name == pod)
            })
            .unwrap_or(false)
    }

    /// Whether a pod running here has the address `ip` (as last reported).
    /// Whether a tunnel may connect to `ip:port` here: the address of a pod of this node, on
    /// any port of an address of its own and only a declared port of one it shares with the
    /// node (see [`shoal_api::tunnel_policy`]), so the node's own services stay out of reach.
    pub fn serves_at(&self, ip: std::net::IpAddr, port: u16, udp: bool) -> bool {
        let ip = ip.to_string();
        self.0
            .pods
            .lock()
            .map(|m| {
                m.values().any(|r| {
                    r.state.lock().is_ok_and(|s| {
                        s.reported_ip.as_deref() == Some(ip.as_str())
                            && shoal_api::tunnel_policy::pod_accepts(&s.pod, port, udp)
                    })
                })
            })
            .unwrap_or(false)
    }

    /// Stops every pod (agent shutdown) and waits for their tasks.
    pub async fn shutdown(&self) {
        if let Ok(m) = self.0.pods.lock() {
            for r in m.values() {
                r.cancel.cancel();
            }
        }
        self.0.tracker.close();
        self.0.tracker.wait().await;
    }
}

/// The name the OCI executor knows a container by: stable across agent restarts.
fn container_key(pod: &Pod, container: &str) -> String {
    format!("{}-{container}", pod.metadata.uid)
}

/// The pod's network namespace, shared by its OCI containers.
fn netns_name(pod: &Pod) -> String {
    format!("shoal-{}", pod.metadata.uid)
}

fn uses_runc(pod: &Pod) -> bool {
    pod.spec.runtime_class_name.as_deref() != Some("wasm")
}

fn client(inner: &Inner) -> Option<Arc<shoal_transport::Client>> {
    inner.link.borrow().clone()
}

/// Sends the pod's status as the containers' states make it; a lost link is fine (the next
/// session reports everything again).
async fn report(inner: &Inner, state: &Arc<Mutex<PodRun>>) {
    keep_if_finished(inner, state);
    let Some(client) = client(inner) else { return };
    // One report of a pod at a time, each taken when it gets its turn: containers report at
    // once, and an older picture sent last would stay the pod's status.
    let turn = match state.lock() {
        Ok(s) => s.reporting.clone(),
        Err(_) => return,
    };
    let _turn = turn.lock().await;
    let host_ip =
        crate::node::source_ip(client.connection().remote_address()).map(|ip| ip.to_string());
    let pod = match state.lock() {
        Ok(mut s) => {
            let statuses: Vec<_> = s.containers.iter().map(Container::status).collect();
            let all_ready = !statuses.is_empty() && statuses.iter().all(|c| c.ready);
            let since = match &s.readiness {
                Some((was, since)) if *was == all_ready => since.clone(),
                _ => crate::node::now(),
            };
            s.readiness = Some((all_ready, since.clone()));
            // Wasm pods use the node's network, as hostNetwork pods do.
            // An OCI pod's address outlives the agent (its lease is on disk): until a returning
            // agent has taken the pod back, the address stored stays, so a restart of the agent
            // never takes the pod out of its Services' endpoints.
            let reported_ip = if s.pod.spec.host_network || !uses_runc(&s.pod) {
                host_ip.clone()
            } else {
                s.pod_ip
                    .clone()
                    .or_else(|| s.pod.status.as_ref().and_then(|st| st.pod_ip.clone()))
            };
            s.reported_ip = reported_ip.clone();
            let cond = |ty: &str, ok: bool| Condition {
                type_: ty.into(),
                status: if ok { "True" } else { "False" }.into(),
                last_transition_time: ty.ends_with("Ready").then(|| since.clone()),
                ..Default::default()
            };
            let mut p = Pod {
                metadata: s.pod.metadata.clone(),
                ..Default::default()
            };
            p.status = Some(PodStatus {
                phase: Some(pod_state::pod_phase(&s.containers).to_string()),
                conditions: vec![
                    cond("PodScheduled", true),
                    cond("Initialized", true),
                    cond("ContainersReady", all_ready),
                    cond("Ready", all_ready),
                ],
                host_ip: host_ip.clone(),
                pod_ip: reported_ip.clone(),
                start_time: Some(s.started.clone()),
                container_statuses: statuses,
                ..Default::default()
            });
            p
        }
        Err(_) => return,
    };
    let mut obj = Object::Pod(pod);
    obj.normalize();
    let Ok(object) = serde_json::to_vec(&obj) else {
        return;
    };
    if let Err(e) = client
        .call(&Request::UpdateStatus { object })
        .await
        .map_err(Error::from)
        .and_then(crate::expect_ok)
    {
        tracing::debug!(error = %e, "status report failed");
    }
}

/// A pod whose containers are all done for good is kept on the node as finished: a restart of
/// the agent, with or without the controller, does not run a completed Job's pod again.
fn keep_if_finished(inner: &Inner, state: &Arc<Mutex<PodRun>>) {
    let Ok(mut s) = state.lock() else { return };
    let phase = pod_state::pod_phase(&s.containers);
    if s.kept_finished || !matches!(phase, "Succeeded" | "Failed") {
        return;
    }
    s.kept_finished = true;
    let mut pod = s.pod.clone();
    pod.status = Some(PodStatus {
        phase: Some(phase.to_string()),
        ..Default::default()
    });
    inner.local.keep(&Object::Pod(pod));
}

/// Records an Event about `pod` (best effort: a lost link loses the event, not the pod).
/// Without the controller the event is held (the newest few hundred) and sent on reconnect,
/// saying when it happened.
async fn event(inner: &Inner, pod: &Pod, type_: &str, reason: &str, message: String) {
    let about = shoal_api::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.metadata.namespace_or_default().to_string()),
        name: Some(pod.metadata.name.clone()),
        uid: Some(pod.metadata.uid.clone()),
    };
    match client(inner) {
        Some(client) => crate::record_event(&client, &about, type_, reason, message).await,
        None => {
            let Ok(mut held) = inner.held_events.lock() else {
                return;
            };
            if held.events.len() == HELD_EVENTS {
                held.events.pop_front();
                held.dropped += 1;
            }
            let message = format!("{message} (at {}, while disconnected)", crate::node::now());
            held.events
                .push_back((about, type_.to_string(), reason.to_string(), message));
        }
    }
}

fn set_waiting(state: &Arc<Mutex<PodRun>>, reason: &str, message: Option<String>) {
    if let Ok(mut s) = state.lock() {
        for c in &mut s.containers {
            if matches!(c.phase, Phase::Waiting { .. }) {
                c.phase = Phase::Waiting {
                    reason: reason.into(),
                    message: message.clone(),
                };
            }
        }
    }
}

/// A ConfigMap or Secret a pod uses: from the controller, kept on the node as it comes; the
/// copy kept when the controller cannot be asked. What the controller says is gone is gone.
/// A ConfigMap's data and binaryData, or a Secret's data decoded: `None` when the controller
/// (or the node's local state) has no such object.
async fn fetch_data(
    inner: &Inner,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Option<std::collections::BTreeMap<String, Vec<u8>>>> {
    let decode = |m: std::collections::BTreeMap<String, String>| {
        m.into_iter().filter_map(|(k, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .map(|b| (k, b))
        })
    };
    match get_object(inner, kind, ns, name).await {
        Ok(Object::ConfigMap(cm)) => {
            let mut d: std::collections::BTreeMap<String, Vec<u8>> = cm
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            d.extend(decode(cm.binary_data));
            Ok(Some(d))
        }
        Ok(Object::Secret(s)) => Ok(Some(decode(s.data).collect())),
        Ok(other) => Err(Error::Internal(format!(
            "asked for a {kind}, got a {}",
            other.kind()
        ))),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The files of a ConfigMap or Secret volume ([`crate::volume`]); none for other sources.
async fn volume_files(
    inner: &Inner,
    ns: &str,
    v: &shoal_api::Volume,
) -> std::result::Result<Vec<crate::volume::File>, (String, String)> {
    let config = |m: String| ("CreateContainerConfigError".to_string(), m);
    let (what, kind, name, items, default_mode, optional) = match (&v.config_map, &v.secret) {
        (Some(c), _) => (
            "configmap",
            Kind::ConfigMap,
            &c.name,
            &c.items,
            c.default_mode,
            c.optional,
        ),
        (None, Some(s)) => (
            "secret",
            Kind::Secret,
            &s.secret_name,
            &s.items,
            s.default_mode,
            s.optional,
        ),
        (None, None) => return Ok(Vec::new()),
    };
    let data = fetch_data(inner, kind, ns, name)
        .await
        .map_err(|e| config(format!("{what} {name:?}: {e}")))?;
    crate::volume::files(what, name, data.as_ref(), items, default_mode, optional)
        .map_err(|m| config(format!("volume {}: {m}", v.name)))
}

/// Writes a volume's files under `dir`, with their modes.
fn write_volume_files(dir: &std::path::Path, files: &[crate::volume::File]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// The ConfigMaps and Secrets a container's env refers to, fetched (`None`: there is no such
/// object; whether that is an error depends on `optional`, see [`crate::env`]).
async fn env_sources(
    inner: &Inner,
    ns: &str,
    c: &shoal_api::Container,
) -> std::result::Result<crate::env::Sources, (String, String)> {
    let (config_maps, secrets) = crate::env::references(c);
    let mut sources = crate::env::Sources::default();
    let text = |d: std::collections::BTreeMap<String, Vec<u8>>| {
        d.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    for (kind, names) in [(Kind::ConfigMap, config_maps), (Kind::Secret, secrets)] {
        for name in names {
            let data = fetch_data(inner, kind, ns, &name).await.map_err(|e| {
                (
                    "CreateContainerConfigError".to_string(),
                    format!("{} {name:?}: {e}", kind.name().to_ascii_lowercase()),
                )
            })?;
            let into = match kind {
                Kind::ConfigMap => &mut sources.config_maps,
                _ => &mut sources.secrets,
            };
            into.insert(name, data.map(text));
        }
    }
    Ok(sources)
}

async fn get_object(inner: &Inner, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
    let asked = match client(inner) {
        Some(client) => client
            .call(&Request::Get {
                kind: kind.name().into(),
                namespace: Some(namespace.into()),
                name: name.into(),
            })
            .await
            .map_err(Error::from),
        None => Err(Error::Server("not connected to the controller".into())),
    };
    let key = crate::local::key(kind, Some(namespace), name);
    match asked {
        Ok(Response::Object(b)) => {
            let obj = Object::from_json(&b).map_err(|e| Error::Internal(e.to_string()))?;
            inner.local.keep(&obj);
            Ok(obj)
        }
        Ok(Response::Error(e)) => {
            if e.code == shoal_transport::proto::ErrorCode::NotFound {
                inner.local.forget(&key);
                return Err(Error::NotFound(e.message));
            }
            Err(Error::Server(e.message))
        }
        Ok(other) => Err(Error::Internal(format!("unexpected answer {other:?}"))),
        Err(why) => match inner.local.get(&key) {
            Ok(Some(obj)) => Ok(obj),
            _ => Err(why),
        },
    }
}

/// Everything a container needs from the pod, resolved: artifact paths, env and mounts, and
/// the executor that runs it.
struct Prepared {
    specs: Vec<ToRun>,
    /// The manifest digests of its container images.
    images: Vec<String>,
    /// The pod's address on the node's pod bridge.
    pod_ip: Option<std::net::Ipv4Addr>,
}

/// One container, resolved, and the executor that runs it.
struct ToRun {
    spec: ContainerSpec,
    workload: Arc<dyn Workload>,
}

async fn prepare(
    inner: &Inner,
    pod: &Pod,
    dir: &std::path::Path,
) -> std::result::Result<Prepared, (String, String)> {
    let ns = pod.metadata.namespace_or_default().to_string();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
    // Volumes.
    let mut volume_paths: HashMap<String, PathBuf> = HashMap::new();
    for v in &pod.spec.volumes {
        let path = if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else {
            let mut p = dir.join("volumes").join(&v.name);
            let made = if v.secret.is_some() {
                // A Secret's files never touch the node's disk.
                crate::secret_volume::prepare(&p, &pod.metadata.uid, &v.name).map(|at| p = at)
            } else {
                std::fs::create_dir_all(&p)
            };
            made.map_err(|e| {
                (
                    "CreateContainerConfigError".to_string(),
                    format!("volume {}: {e}", v.name),
                )
            })?;
            let files = volume_files(inner, &ns, v).await?;
            write_volume_files(&p, &files).map_err(|e| {
                (
                    "CreateContainerConfigError".to_string(),
                    format!("volume {}: {e}", v.name),
                )
            })?;
            p
        };
        volume_paths.insert(v.name.clone(), path);
    }
    let runc = match (uses_runc(pod), &inner.runc) {
        (false, _) => None,
        (true, Some(r)) => Some(r.clone()),
        (true, None) => {
            return Err((
                "CreateContainerError".to_string(),
                "this node cannot run OCI containers (no runc, or the agent is not root); \
                 set runtimeClassName: wasm for a wasm pod"
                    .to_string(),
            ))
        }
    };
    // The pod's network: its own namespace (with an address on the node's pod bridge when the
    // node has a pod range), or the node's.
    let mut pod_ip = None;
    let sandbox = match &runc {
        Some(_) if !pod.spec.host_network => {
            let name = netns_name(pod);
            let uid = pod.metadata.uid.clone();
            let network = inner.network.lock().ok().and_then(|n| n.clone());
            let (path, ip) = tokio::task::spawn_blocking(move || {
                let path = netns::create(&name)?;
                let ip = match network {
                    Some(n) => Some(n.attach(&name, &uid)?),
                    None => None,
                };
                Ok::<_, shoal_runtime::Error>((path, ip))
            })
            .await
            .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?
            .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
            pod_ip = ip;
            let dns = inner.proxy.dns_address();
            let etc = etc_files(pod, dir, ip, dns).map_err(|e| {
                (
                    "CreateContainerError".to_string(),
                    format!("/etc files: {e}"),
                )
            })?;
            Some((path, etc))
        }
        _ => None,
    };
    // What `fieldRef` reads: the pod's address (its node's for wasm and hostNetwork pods).
    let host_ip = client(inner)
        .and_then(|c| crate::node::source_ip(c.connection().remote_address()))
        .map(|ip| ip.to_string())
        .or_else(|| pod.status.as_ref().and_then(|s| s.host_ip.clone()));
    let placement = crate::env::Placement {
        node: inner.node.clone(),
        pod_ip: match pod_ip {
            Some(ip) => Some(ip.to_string()),
            None => host_ip.clone(),
        },
        host_ip,
    };
    let mut specs = Vec::new();
    let mut images_used = Vec::new();
    for c in &pod.spec.containers {
        let client = client(inner);
        let (artifact, image) =
            container_image(inner, pod, &ns, c, client.as_deref(), runc.as_ref()).await?;
        images_used.extend(image);
        event(
            inner,
            pod,
            "Normal",
            "Pulled",
            format!("Successfully pulled image {:?}", c.image),
        )
        .await;
        let workload: Arc<dyn Workload> = match &runc {
            Some(r) => Arc::new(Runc(r.clone())),
            None => inner.wasm.clone(),
        };
        let w = workload.clone();
        let check = artifact.clone();
        tokio::task::spawn_blocking(move || w.prepare(&check))
            .await
            .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?
            .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
        // The Services of the pod's namespace first, so the container's own env wins.
        let services = crate::proxy::service_env(&inner.proxy.services_in(&ns));
        let sources = env_sources(inner, &ns, c).await?;
        let env = crate::env::container_env(c, pod, &placement, services, &sources)
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        if !env.skipped.is_empty() {
            let message = format!(
                "Keys [{}] from the EnvFrom of container {:?} were skipped since they are invalid environment variable names",
                env.skipped.join(", "),
                c.name
            );
            event(
                inner,
                pod,
                "Warning",
                "InvalidEnvironmentVariableNames",
                message,
            )
            .await;
        }
        let (command, args) = crate::env::command_line(c, &env);
        let env = env.vars;
        let mut argv: Vec<String> = if command.is_empty() {
            vec![c.name.clone()]
        } else {
            command.clone()
        };
        argv.extend(args.iter().cloned());
        let mut mounts: Vec<Mount> = c
            .volume_mounts
            .iter()
            .filter_map(|m| {
                volume_paths.get(&m.name).map(|p| Mount {
                    host_path: p.clone(),
                    guest_path: m.mount_path.clone(),
                    read_only: m.read_only,
                })
            })
            .collect();
        let network = match (&runc, &sandbox) {
            (None, _) => Network::Isolated,
            (Some(_), None) => Network::Host,
            (Some(_), Some((path, etc))) => {
                mounts.extend(etc.iter().cloned());
                Network::Pod(path.clone())
            }
        };
        let security = security(c.security_context.as_ref())
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        specs.push(ToRun {
            spec: ContainerSpec {
                id: format!("{ns}/{}/{}", pod.metadata.name, c.name),
                key: container_key(pod, &c.name),
                artifact,
                argv,
                command,
                args,
                cpu_request_millis: c
                    .resources
                    .requests
                    .get("cpu")
                    .map(|q| q.milli_value().max(0) as u64),
                pids_limit: None,
                security,
                network,
                hostname: pod
                    .spec
                    .hostname
                    .clone()
                    .unwrap_or_else(|| pod.metadata.name.clone()),
                env,
                working_dir: c.working_dir.clone(),
                mounts,
                memory_limit: c
                    .resources
                    .limits
                    .get("memory")
                    .map(|q| q.value().max(0) as u64),
                cpu_limit_millis: c
                    .resources
                    .limits
                    .get("cpu")
                    .map(|q| q.milli_value().max(0) as u64),
                log_path: logs.join(format!("{}.log", c.name)),
                // Wasm pods resolve the cluster's names through the proxy.
                resolver: (!uses_runc(pod)).then(|| {
                    let (proxy, ns) = (inner.proxy.clone(), ns.clone());
                    shoal_runtime::Resolver(Arc::new(move |name: &str| proxy.resolve(name, &ns)))
                }),
                ports: c
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some(shoal_runtime::Port {
                            port: u16::try_from(p.container_port).ok()?,
                            udp: p.protocol.as_deref() == Some("UDP"),
                        })
                    })
                    .collect(),
            },
            workload,
        });
    }
    Ok(Prepared {
        specs,
        pod_ip,
        images: images_used,
    })
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf for a pod with its own network, written in
/// the pod's directory and bind-mounted into each container, as the kubelet does.
fn etc_files(
    pod: &Pod,
    dir: &std::path::Path,
    ip: Option<std::net::Ipv4Addr>,
    cluster_dns: Option<std::net::Ipv4Addr>,
) -> std::io::Result<Vec<Mount>> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let hostname = pod
        .spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone());
    let own = ip
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.1.1".into());
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n"
    );
    // The cluster's resolver when the node knows it (pods' default dnsPolicy, ClusterFirst),
    // else the node's own.
    let resolv = match cluster_dns {
        Some(dns) if pod.spec.dns_policy.as_deref() != Some("Default") => {
            crate::dns::resolv_conf(dns, pod.metadata.namespace_or_default())
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    let mut mounts = Vec::new();
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let path = etc.join(name);
        std::fs::write(&path, text)?;
        mounts.push(Mount {
            host_path: path,
            guest_path: format!("/etc/{name}"),
            read_only: false,
        });
    }
    Ok(mounts)
}

/// A container's securityContext as the runtime takes it; ids must fit in 32 bits.
fn security(sc: Option<&shoal_api::SecurityContext>) -> std::result::Result<Security, String> {
    let Some(sc) = sc else {
        return Ok(Security::default());
    };
    let id = |what: &str, v: Option<i64>| {
        v.map(|n| {
            u32::try_from(n).map_err(|_| format!("securityContext.{what} {n} is not a valid id"))
        })
        .transpose()
    };
    Ok(Security {
        run_as_user: id("runAsUser", sc.run_as_user)?,
        run_as_group: id("runAsGroup", sc.run_as_group)?,
        run_as_non_root: sc.run_as_non_root.unwrap_or(false),
        read_only_root_filesystem: sc.read_only_root_filesystem.unwrap_or(false),
        privileged: sc.privileged.unwrap_or(false),
        allow_privilege_escalation: sc.allow_privilege_escalation.unwrap_or(false),
        capabilities_add: sc
            .capabilities
            .as_ref()
            .map(|c| c.add.clone())
            .unwrap_or_default(),
        capabilities_drop: sc
            .capabilities
            .as_ref()
            .map(|c| c.drop.clone())
            .unwrap_or_default(),
    })
}

/// The container's image on local disk: for wasm the module, for OCI the image manifest in
/// the node's store (and its digest, kept from garbage collection). From the controller or a
/// registry, by the container's imagePullPolicy.
async fn container_image(
    inner: &Inner,
    pod: &Pod,
    ns: &str,
    c: &shoal_api::Container,
    client: Option<&shoal_transport::Client>,
    runc: Option<&Arc<RuncRuntime>>,
) -> std::result::Result<(PathBuf, Option<String>), (String, String)> {
    use crate::registry::PullPolicy;
    let policy = PullPolicy::of(c.image_pull_policy.as_deref(), &c.image);
    let registry = crate::registry::names_a_registry(&c.image);
    let auth = if registry {
        pull_auth(inner, pod, ns, &c.image).await
    } else {
        oci_client::secrets::RegistryAuth::Anonymous
    };
    let failed = |e: Error| {
        let reason = if policy == PullPolicy::Never && registry {
            "ErrImageNeverPull"
        } else {
            "ErrImagePull"
        };
        (reason.to_string(), e.to_string())
    };
    let Some(runc) = runc else {
        let path = if registry {
            let always = policy == PullPolicy::Always;
            inner.artifacts.pull(&c.image, &auth, always).await
        } else {
            inner.artifacts.get(client, &c.image).await
        };
        let path = path.map_err(failed)?;
        if let (false, Some(client)) = (registry, client) {
            precompiled(inner, client, &path).await;
        }
        return Ok((path, None));
    };
    let images = runc.images().clone();
    let platform = Platform::host();
    let fetched = match (registry, client) {
        (true, _) => {
            let registries = inner.artifacts.registries();
            crate::registry::pull_image(&c.image, &auth, &images, &platform, policy, registries)
                .await
        }
        (false, Some(client)) => {
            crate::images::fetch(&inner.artifacts, client, &images, &c.image, &platform).await
        }
        (false, None) => Err(Error::Artifact {
            reference: c.image.clone(),
            message: "not connected to the controller".into(),
        }),
    };
    // Out of reach of the controller or the registry, the image this node ran last under the
    // name keeps the pod running (the kubelet would fail it with ErrImagePull).
    let digest = match fetched {
        Ok(d) => d,
        Err(e) => match images.recorded(&c.image) {
            Some(d) => {
                tracing::info!(image = %c.image, error = %e, "using the image this node has");
                d
            }
            None => return Err(failed(e)),
        },
    };
    if let Err(e) = images.record(&c.image, &digest) {
        tracing::warn!(image = %c.image, error = %e, "cannot record the image");
    }
    let path = images
        .blob_path(&digest)
        .map_err(|e| failed(Error::from(e)))?;
    Ok((path, Some(digest)))
}

/// Takes the controller's precompiled code for the wasm artifact at `artifact` (kept by its
/// digest), unless it is compiled here already. Whatever goes wrong only means compiling it
/// here, so it is logged, not returned.
async fn precompiled(inner: &Inner, client: &shoal_transport::Client, artifact: &std::path::Path) {
    let Some(digest) = artifact.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    if inner.wasm.is_compiled(digest) {
        return;
    }
    let target = inner.wasm.target();
    let reference = format!("sha256:{digest}");
    let code = match inner
        .artifacts
        .get_precompiled(client, &reference, target)
        .await
    {
        Ok(code) => code,
        Err(e) => {
            tracing::info!(artifact = %reference, error = %e, "no precompiled code from the controller; compiling here");
            return;
        }
    };
    let (wasm, source, fetched) = (inner.wasm.clone(), artifact.to_path_buf(), code.clone());
    let installed =
        tokio::task::spawn_blocking(move || wasm.install_precompiled(&source, &fetched))
            .await
            .map_err(|e| shoal_runtime::Error::Internal(e.to_string()))
            .and_then(|r| r);
    match installed {
        Ok(()) => tracing::info!(
            artifact = %reference,
            target = %target.triple,
            "loaded code precompiled by the controller; nothing compiled here"
        ),
        Err(e) => tracing::warn!(artifact = %reference, error = %e, "compiling here instead"),
    }
    // The cache keeps its own copy; this one was only the transfer's.
    let _ = std::fs::remove_file(&code);
}

/// Registry credentials for `image` from the pod's imagePullSecrets.
async fn pull_auth(
    inner: &Inner,
    pod: &Pod,
    ns: &str,
    image: &str,
) -> oci_client::secrets::RegistryAuth {
    let registry = image.split_once('/').map(|(r, _)| r).unwrap_or_default();
    let mut docs = Vec::new();
    for r in &pod.spec.image_pull_secrets {
        match get_object(inner, Kind::Secret, ns, &r.name)
            .await
            .and_then(|o| {
                o.into_typed::<Secret>()
                    .map_err(|e| Error::Internal(e.to_string()))
            }) {
            Ok(secret) => {
                if let Some(b) = secret.data.get(".dockerconfigjson") {
                    docs.push(
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .unwrap_or_default(),
                    );
                }
            }
            Err(e) => tracing::warn!(secret = %r.name, error = %e, "imagePullSecret unavailable"),
        }
    }
    crate::registry::auth_for(registry, &docs)
}

async fn run_pod(
    inner: Arc<Inner>,
    state: Arc<Mutex<PodRun>>,
    dir: PathBuf,
    cancel: CancellationToken,
) {
    let pod = match state.lock() {
        Ok(s) => s.pod.clone(),
        Err(_) => return,
    };
    // Prepare, retrying with back-off: ErrImagePull becomes ImagePullBackOff while it waits.
    // A link to the controller coming back cuts the wait short (a fetch it broke resumes).
    let mut attempt = 0u32;
    let mut link = inner.link.clone();
    let prepared = loop {
        match prepare(&inner, &pod, &dir).await {
            Ok(p) => break p,
            Err((reason, message)) => {
                attempt += 1;
                tracing::warn!(pod = %pod.metadata.name, %reason, %message, "pod not ready to start");
                set_waiting(&state, &reason, Some(message.clone()));
                event(
                    &inner,
                    &pod,
                    "Warning",
                    "Failed",
                    format!("{reason}: {message}"),
                )
                .await;
                report(&inner, &state).await;
                let delay = pod_state::backoff(attempt).min(Duration::from_secs(60));
                tokio::select! {
                    _ = cancel.cancelled() => return remove_sandbox(&inner, &pod, &dir).await,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = link_back(&mut link) => continue,
                }
                if reason == "ErrImagePull" {
                    set_waiting(
                        &state,
                        "ImagePullBackOff",
                        Some(format!("Back-off pulling image: {message}")),
                    );
                    report(&inner, &state).await;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return remove_sandbox(&inner, &pod, &dir).await,
                    _ = tokio::time::sleep(delay.saturating_sub(Duration::from_secs(2))) => {}
                    _ = link_back(&mut link) => {}
                }
            }
        }
    };
    if let Ok(mut s) = state.lock() {
        s.pod_ip = prepared.pod_ip.map(|ip| ip.to_string());
        s.images = prepared.images.clone();
    }
    if !prepared.images.is_empty() {
        let supervisor = Supervisor(inner.clone());
        tokio::spawn(async move { supervisor.collect_images().await });
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
    let mut tasks = tokio::task::JoinSet::new();
    for (i, to_run) in prepared.specs.into_iter().enumerate() {
        tasks.spawn(run_container(
            inner.clone(),
            state.clone(),
            i,
            to_run,
            policy,
            grace,
            cancel.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    // The pod's sandbox (network namespace, volumes) lasts until the pod is deleted, also
    // after its containers have ended (a finished Job's pod).
    cancel.cancelled().await;
    remove_sandbox(&inner, &pod, &dir).await;
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

/// Forwards each container port with a hostPort from the node to the pod, for as long as the
/// pod lives. A port the node cannot bind is reported as an event, not fatal.
async fn publish_host_ports(
    inner: &Arc<Inner>,
    pod: &Pod,
    ip: std::net::Ipv4Addr,
    cancel: &CancellationToken,
) {
    for c in &pod.spec.containers {
        for p in &c.ports {
            let Some(host_port) = p.host_port.and_then(|h| u16::try_from(h).ok()) else {
                continue;
            };
            let Ok(container_port) = u16::try_from(p.container_port) else {
                continue;
            };
            if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
                let message = format!(
                    "hostPort {host_port}/{}: only TCP host ports are forwarded",
                    p.protocol.as_deref().unwrap_or_default()
                );
                event(inner, pod, "Warning", "HostPortUnsupported", message).await;
                continue;
            }
            let host_ip: std::net::IpAddr = p
                .host_ip
                .as_deref()
                .and_then(|h| h.parse().ok())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let listen = std::net::SocketAddr::new(host_ip, host_port);
            match tokio::net::TcpListener::bind(listen).await {
                Ok(listener) => {
                    let to = std::net::SocketAddr::new(ip.into(), container_port);
                    inner
                        .tracker
                        .spawn(crate::ports::forward_tcp(listener, to, cancel.clone()));
                }
                Err(e) => {
                    let message = format!("hostPort {listen} cannot be bound: {e}");
                    event(inner, pod, "Warning", "HostPortUnavailable", message).await;
                }
            }
        }
    }
}

/// Removes what a pod had beside its containers: volumes, its network namespace and address.
async fn remove_sandbox(inner: &Inner, pod: &Pod, dir: &std::path::Path) {
    crate::secret_volume::release(&dir.join("volumes"), &pod.metadata.uid);
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    if uses_runc(pod) && !pod.spec.host_network {
        let name = netns_name(pod);
        let network = inner.network.lock().ok().and_then(|n| n.clone());
        let uid = pod.metadata.uid.clone();
        let _ = tokio::task::spawn_blocking(move || {
            netns::delete(&name);
            if let Some(n) = network {
                n.release(&uid);
            }
        })
        .await;
    }
}

fn container_name(spec: &ContainerSpec) -> &str {
    spec.id.rsplit('/').next().unwrap_or(&spec.id)
}

async fn run_container(
    inner: Arc<Inner>,
    state: Arc<Mutex<PodRun>>,
    i: usize,
    ToRun { spec, workload }: ToRun,
    policy: RestartPolicy,
    grace: Duration,
    cancel: CancellationToken,
) {
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let restarting = state
            .lock()
            .map(|s| s.containers[i].last.is_some())
            .unwrap_or(false);
        if restarting {
            let _ = shoal_runtime::logs::rotate(&spec.log_path);
        }
        let started = Utc::now();
        let starting = {
            let (w, s) = (workload.clone(), spec.clone());
            tokio::task::spawn_blocking(move || w.start(s))
                .await
                .unwrap_or_else(|e| {
                    Err(shoal_runtime::Error::Start {
                        id: spec.id.clone(),
                        message: e.to_string(),
                    })
                })
        };
        let exit = match starting {
            Ok(handle) => {
                let pod = match state.lock() {
                    Ok(mut s) => {
                        let probes = s.pod.spec.containers.get(i);
                        let (startup, readiness) = (
                            probes.is_some_and(|c| c.startup_probe.is_some()),
                            probes.is_some_and(|c| c.readiness_probe.is_some()),
                        );
                        let c = &mut s.containers[i];
                        c.started(started);
                        c.startup_passed = !startup;
                        c.probe_ready = !readiness;
                        Some(s.pod.clone())
                    }
                    Err(_) => None,
                };
                let probing = cancel.child_token();
                let (unhealthy, mut restart) = tokio::sync::mpsc::channel::<String>(1);
                tokio::spawn(probe_container(
                    inner.clone(),
                    state.clone(),
                    i,
                    spec.key.clone(),
                    probing.clone(),
                    unhealthy,
                ));
                let _stop_probing = probing.drop_guard();
                report(&inner, &state).await;
                if let Some(pod) = &pod {
                    event(
                        &inner,
                        pod,
                        "Normal",
                        "Started",
                        format!("Started container {}", container_name(&spec)),
                    )
                    .await;
                }
                tokio::select! {
                    exit = handle.wait() => exit,
                    Some(why) = restart.recv() => {
                        if let Some(pod) = &pod {
                            let message = format!("Container {} {why}, will be restarted", container_name(&spec));
                            event(&inner, pod, "Normal", "Killing", message).await;
                        }
                        handle.stop(grace);
                        handle.wait().await
                    }
                    _ = cancel.cancelled() => {
                        if let Some(pod) = &pod {
                            event(&inner, pod, "Normal", "Killing", format!("Stopping container {}", container_name(&spec))).await;
                        }
                        handle.stop(grace);
                        let _ = handle.wait().await;
                        return;
                    }
                }
            }
            Err(e) => shoal_runtime::Exit {
                code: 128,
                reason: shoal_runtime::ExitReason::Error,
                message: Some(e.to_string()),
            },
        };
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
        tracing::info!(container = %spec.id, code = term.exit_code, reason = %term.reason, "container exited");
        let restart_at = match state.lock() {
            Ok(mut s) => {
                s.containers[i].exited(term, policy, now);
                s.containers[i].restart_at()
            }
            Err(_) => None,
        };
        report(&inner, &state).await;
        let Some(at) = restart_at else { return };
        if code != 0 {
            if let Some(pod) = state.lock().ok().map(|s| s.pod.clone()) {
                let message = format!(
                    "Back-off restarting failed container {}",
                    container_name(&spec)
                );
                event(&inner, &pod, "Warning", "BackOff", message).await;
            }
        }
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs a container's probes while it runs: the startup probe until it passes, then liveness
/// and readiness side by side. Readiness changes the container's ready state and reports it;
/// a liveness (or startup) failure sends why on `unhealthy`, and the container is restarted.
async fn probe_container(
    inner: Arc<Inner>,
    state: Arc<Mutex<PodRun>>,
    i: usize,
    key: String,
    cancel: CancellationToken,
    unhealthy: tokio::sync::mpsc::Sender<String>,
) {
    use crate::probe::{Kind, Settings, Tracker};
    let Some((pod, container, ip)) = state.lock().ok().and_then(|s| {
        let c = s.pod.spec.containers.get(i)?.clone();
        // Pods with a network of their own are probed at their address; the rest (wasm,
        // hostNetwork) on the node's loopback.
        let ip = s
            .pod_ip
            .as_deref()
            .filter(|_| !s.pod.spec.host_network)
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        Some((s.pod.clone(), c, ip))
    }) else {
        return;
    };
    if container.startup_probe.is_none()
        && container.liveness_probe.is_none()
        && container.readiness_probe.is_none()
    {
        return;
    }
    let runc = inner.runc.clone().filter(|_| uses_runc(&pod));
    let exec = |argv: Vec<String>| {
        let runc = runc.clone();
        let key = key.clone();
        async move {
            let Some(runc) = runc else {
                return Err(
                    "exec probes run in OCI containers; a wasm pod has no processes to exec into"
                        .to_string(),
                );
            };
            let mut cmd = tokio::process::Command::from(runc.exec_command(&key, &argv));
            cmd.kill_on_drop(true);
            let out = cmd.output().await.map_err(|e| format!("runc exec: {e}"))?;
            let mut text = String::from_utf8_lossy(&out.stdout).to_string();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.code().unwrap_or(-1), text))
        }
    };
    // One probe's loop: each try's outcome goes to `on_change` when the verdict changes.
    let probe_loop = |kind: Kind, probe: shoal_api::Probe| {
        let (inner, state, pod, container) =
            (inner.clone(), state.clone(), pod.clone(), container.clone());
        let (cancel, unhealthy) = (cancel.clone(), unhealthy.clone());
        async move {
            let settings = Settings::of(&probe, kind);
            let mut tracker = Tracker::new(settings.clone(), kind);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(settings.initial_delay) => {}
            }
            loop {
                let outcome =
                    crate::probe::run(&probe, &container, ip, settings.timeout, exec).await;
                if let Err(why) = &outcome {
                    let message = format!("{} probe failed: {why}", kind.name());
                    event(&inner, &pod, "Warning", "Unhealthy", message).await;
                }
                match (kind, tracker.observe(outcome.is_ok())) {
                    (Kind::Startup, Some(true)) => {
                        if let Ok(mut s) = state.lock() {
                            s.containers[i].startup_passed = true;
                        }
                        report(&inner, &state).await;
                        return;
                    }
                    (Kind::Readiness, Some(ready)) => {
                        if let Ok(mut s) = state.lock() {
                            s.containers[i].probe_ready = ready;
                        }
                        report(&inner, &state).await;
                    }
                    (Kind::Startup, Some(false)) => {
                        let _ = unhealthy.send("failed startup probe".into()).await;
                        return;
                    }
                    (Kind::Liveness, Some(false)) => {
                        let _ = unhealthy.send("failed liveness probe".into()).await;
                        return;
                    }
                    _ => {}
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(settings.period) => {}
                }
            }
        }
    };
    if let Some(p) = container.startup_probe.clone() {
        probe_loop(Kind::Startup, p).await;
        let passed = state.lock().is_ok_and(|s| s.containers[i].startup_passed);
        if !passed || cancel.is_cancelled() {
            return;
        }
    }
    let liveness = container.liveness_probe.clone();
    let readiness = container.readiness_probe.clone();
    tokio::join!(
        async {
            if let Some(p) = liveness {
                probe_loop(Kind::Liveness, p).await
            }
        },
        async {
            if let Some(p) = readiness {
                probe_loop(Kind::Readiness, p).await
            }
        },
    );
}
