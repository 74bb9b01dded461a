//! The API service: every operation of the controller, behind identities and permissions,
//! independent of the door it is reached through (QUIC, and the Kubernetes API over HTTPS in
//! `crate::http`, which turns each HTTP request into one of these).

use crate::artifacts::{Artifacts, Blob};
use crate::error::{Error, Result};
use crate::precompiled::Precompiled;
use crate::store::{Change, ObjectKey, Op, Store};
use base64::Engine as _;
use shoal_api::validate::validate;
use shoal_api::Pod;
use shoal_api::{Kind, Namespace, Object, ObjectMeta, PropagationPolicy, Secret, Selector};
use shoal_transport::proto::{ApplyOutcome, ApplyResult, Request, Response, WireError};
use shoal_transport::{Ca, Identity};
use std::sync::Arc;

mod authz;
mod cron;
mod fields;
mod managed;
mod nodes;
mod requests;
mod streams;
#[cfg(test)]
mod tests;
mod watch;
mod writes;

pub use watch::WatchStream;

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The namespace Shoal keeps its own objects in (join tokens), as Kubernetes' kube-system.
pub const SYSTEM_NAMESPACE: &str = "shoal-system";
/// The cluster DNS Service, in the system namespace.
pub const DNS_SERVICE: &str = "shoal-dns";
/// The longest reason and message of an Event a node records, in bytes (the kubelet cuts
/// messages at 1 KiB too).
const EVENT_REASON_MAX: usize = 128;
const EVENT_MESSAGE_MAX: usize = 1024;

/// What an operation answers: one response, a stream of watch events, an artifact to send,
/// or a request the door must relay to the node that can answer it.
pub enum Reply {
    One(Response),
    Watch(WatchStream),
    Fetch { blob: Blob, offset: u64 },
    ToNode { node: String, request: Request },
}

#[derive(Clone)]
pub struct Service {
    store: Store,
    ca: Arc<Ca>,
    /// Signs only the certificates nodes serve each other with.
    peer_ca: Arc<Ca>,
    trust: crate::trust::TrustConfig,
    /// Says which identity just lost (or changed) its binding, so the doors close its
    /// connections.
    revocations: tokio::sync::broadcast::Sender<Identity>,
    /// Events each node may still record now (a token bucket per node).
    event_budget: Arc<std::sync::Mutex<crate::rate::Buckets>>,
    /// Modules each node may still have compiled now (`Request::Compile`).
    compile_budget: Arc<std::sync::Mutex<crate::rate::Buckets>>,
    artifacts: Arc<Artifacts>,
    precompiled: Arc<Precompiled>,
    cluster_cidr: crate::ipam::ClusterCidr,
    service_cidr: crate::service_ips::ServiceCidr,
    /// Held while a Service's address and node ports are chosen and written, so two Services
    /// written at once never get the same.
    allocating: Arc<tokio::sync::Mutex<()>>,
    /// Held while a join token's use is counted, so a fleet joining at once with one token
    /// is counted one by one instead of refused with a conflict.
    pub(crate) spending: Arc<tokio::sync::Mutex<()>>,
}

fn bad_request(message: impl Into<String>) -> WireError {
    Error::BadRequest(message.into()).into()
}

/// The node a pod was scheduled to, for what only its node can serve (logs, exec).
fn scheduled(pod: &Pod, unscheduled: &str) -> std::result::Result<String, WireError> {
    pod.spec.node_name.clone().ok_or_else(|| {
        bad_request(format!(
            "pod {:?} is not scheduled yet: {unscheduled}",
            pod.metadata.name
        ))
    })
}

fn parse_kind(kind: &str) -> std::result::Result<Kind, WireError> {
    kind.parse::<Kind>().map_err(|e| bad_request(e.to_string()))
}

fn parse_selector(s: &str) -> std::result::Result<Selector, WireError> {
    Selector::parse(s).map_err(|e| bad_request(e.to_string()))
}

fn encode(obj: &Object) -> Result<Vec<u8>> {
    obj.to_json().map_err(|e| Error::Internal(e.to_string()))
}

/// An answer that is not an API object, as JSON.
fn json_answer<T: serde::Serialize>(value: &T) -> std::result::Result<Response, WireError> {
    serde_json::to_vec(value)
        .map(Response::Json)
        .map_err(|e| Error::Internal(e.to_string()).into())
}

/// `s` cut to at most `max` bytes, on a character boundary, marked as cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn forbidden(message: String) -> WireError {
    Error::Forbidden(message).into()
}

impl Service {
    pub fn new(
        store: Store,
        ca: Arc<Ca>,
        peer_ca: Arc<Ca>,
        artifacts: Arc<Artifacts>,
        cluster_cidr: crate::ipam::ClusterCidr,
    ) -> Self {
        let precompiled = Arc::new(Precompiled::new(
            artifacts.clone(),
            crate::precompiled::DEFAULT_LIMIT,
        ));
        Service {
            store,
            ca,
            peer_ca,
            trust: Default::default(),
            revocations: tokio::sync::broadcast::channel(64).0,
            event_budget: Arc::new(std::sync::Mutex::new(crate::rate::Buckets::new(
                crate::rate::EVENT_BURST,
                crate::rate::EVENT_PER_SECOND,
            ))),
            compile_budget: Arc::new(std::sync::Mutex::new(crate::rate::Buckets::new(
                crate::rate::COMPILE_BURST,
                crate::rate::COMPILE_PER_SECOND,
            ))),
            artifacts,
            precompiled,
            cluster_cidr,
            service_cidr: Default::default(),
            allocating: Arc::default(),
            spending: Arc::default(),
        }
    }

    /// The range Services get their virtual address from (10.43.0.0/16 by default).
    /// The range Services' cluster IPs come from.
    pub fn service_cidr(&self) -> &crate::service_ips::ServiceCidr {
        &self.service_cidr
    }

    pub fn with_service_cidr(mut self, cidr: crate::service_ips::ServiceCidr) -> Self {
        self.service_cidr = cidr;
        self
    }

    /// How certificates are issued: node certificate lifetime, names reserved for the
    /// controller.
    pub fn with_trust(mut self, trust: crate::trust::TrustConfig) -> Self {
        self.trust = trust;
        self
    }

    pub fn artifacts(&self) -> &Arc<Artifacts> {
        &self.artifacts
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn peer_ca(&self) -> &Ca {
        &self.peer_ca
    }

    pub fn trust(&self) -> &crate::trust::TrustConfig {
        &self.trust
    }

    /// Identities whose binding just ended or changed: a door re-checks (and closes) the
    /// connections that hold one.
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<Identity> {
        self.revocations.subscribe()
    }

    pub(crate) fn revoked(&self, who: Identity) {
        let _ = self.revocations.send(who);
    }

    pub fn precompiled(&self) -> &Arc<Precompiled> {
        &self.precompiled
    }

    /// After a push: if `blob` is a wasm artifact, compiles it in the background for every
    /// wasm target the cluster's nodes report, so their pods start without compiling.
    pub async fn precompile_for_nodes(&self, blob: &Blob) {
        let nodes = self
            .store
            .list_typed::<shoal_api::Node>(Kind::Node, None)
            .await
            .unwrap_or_default();
        let targets = crate::precompiled::wasm_targets(&nodes);
        if !targets.is_empty() && crate::precompiled::is_wasm(&blob.path) {
            self.precompiled.precompile(&blob.digest, targets);
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates what every cluster has from the start: the system namespace, the default
    /// StorageClass (`local-path`) and the cluster DNS Service, which every agent serves for
    /// its pods.
    pub async fn bootstrap(&self) -> Result<()> {
        self.bootstrap_namespace().await?;
        let class = crate::reconcile::volumes::local_path_class();
        let key = ObjectKey::new(Kind::StorageClass, None, &class.metadata.name);
        if self.store.get(&key).await?.is_none() {
            match self.store.create(Object::StorageClass(class)).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let key = ObjectKey::new(Kind::Service, Some(SYSTEM_NAMESPACE), DNS_SERVICE);
        if self.store.get(&key).await?.is_none() {
            let port = |name: &str, protocol: &str| shoal_api::ServicePort {
                name: Some(name.into()),
                protocol: Some(protocol.into()),
                port: 53,
                ..Default::default()
            };
            let dns = shoal_api::Service {
                api_version: "v1".into(),
                kind: "Service".into(),
                metadata: ObjectMeta {
                    name: DNS_SERVICE.into(),
                    namespace: Some(SYSTEM_NAMESPACE.into()),
                    labels: [("shoal.dev/cluster-service".to_string(), "dns".to_string())].into(),
                    ..Default::default()
                },
                spec: shoal_api::ServiceSpec {
                    cluster_ip: Some(self.service_cidr.dns_address().to_string()),
                    ports: vec![port("dns", "UDP"), port("dns-tcp", "TCP")],
                    ..Default::default()
                },
                status: None,
            };
            match self.apply_one(Object::Service(dns)).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %shoal_transport::report(&e), "cannot create the cluster DNS Service")
                }
            }
        }
        Ok(())
    }

    async fn bootstrap_namespace(&self) -> Result<()> {
        let key = ObjectKey::new(Kind::Namespace, None, SYSTEM_NAMESPACE);
        if self.store.get(&key).await?.is_none() {
            let ns = Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: SYSTEM_NAMESPACE.into(),
                    ..Default::default()
                },
                ..Default::default()
            });
            match self.store.create(ns).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Handles one request from `who`. Errors come back as [`Response::Error`].
    pub async fn handle(&self, who: &Identity, req: Request) -> Reply {
        match self.dispatch(who, req).await {
            Ok(r) => r,
            Err(e) => Reply::One(Response::Error(e)),
        }
    }

    async fn dispatch(
        &self,
        who: &Identity,
        req: Request,
    ) -> std::result::Result<Reply, WireError> {
        self.authorize(who, &req).await?;
        let one = |r: Response| Ok(Reply::One(r));
        match req {
            Request::WhoAmI => one(Response::Identity(who.to_string())),
            Request::Apply { objects } => one(Response::Applied(self.apply(objects).await?)),
            Request::Create { .. } | Request::Update { .. } | Request::Patch { .. } => {
                one(self.write(req).await?)
            }
            Request::Get { .. }
            | Request::List { .. }
            | Request::Watch { .. }
            | Request::Delete { .. }
            | Request::DeleteSelected { .. } => self.objects(req).await,
            Request::CreateToken { .. }
            | Request::ListTokens
            | Request::DeleteToken { .. }
            | Request::IssueCredential { .. }
            | Request::ListCredentials
            | Request::DeleteCredential { .. }
            | Request::Join { .. }
            | Request::Renew { .. }
            | Request::PeerCert { .. } => self.credentials(who, req).await,
            Request::PutNode { object } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node may register itself"));
                };
                one(self.put_node(me, &object).await?)
            }
            Request::UpdateStatus { object } => one(self.update_status(who, &object).await?),
            Request::PinnedCronJobs => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node has CronJobs pinned to it"));
                };
                one(self.pinned_cronjobs(me).await?)
            }
            Request::ReportCronRun { report } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node reports the runs it started"));
                };
                one(self.report_cron_run(me, &report).await?)
            }
            Request::Fetch { reference, offset } => {
                let blob = self.artifacts.resolve(&reference)?;
                if offset > blob.size {
                    return Err(bad_request(format!(
                        "offset {offset} is past the end of {reference} ({} bytes)",
                        blob.size
                    )));
                }
                Ok(Reply::Fetch { blob, offset })
            }
            Request::FetchPrecompiled {
                reference,
                target,
                offset,
            } => {
                if let Identity::Node(me) = who {
                    // Compiling costs the controller CPU: only for what the node runs on.
                    self.check_reported_target(me, &target).await?;
                }
                let blob = self.precompiled.get(&reference, &target).await?;
                if offset > blob.size {
                    return Err(bad_request(format!(
                        "offset {offset} is past the end of {reference} precompiled for {} ({} bytes)",
                        target.triple, blob.size
                    )));
                }
                Ok(Reply::Fetch { blob, offset })
            }
            Request::Logs { .. } | Request::Exec { .. } | Request::PortForward { .. } => {
                self.reach_pod(req).await
            }
            Request::Missing { digests } => {
                let missing: Vec<&String> = digests
                    .iter()
                    .filter(|d| self.artifacts.resolve(d).is_err())
                    .collect();
                let json = serde_json::to_vec(&missing).map_err(|e| bad_request(e.to_string()))?;
                one(Response::Json(json))
            }
            Request::Images { ref node } => {
                let key = ObjectKey::new(Kind::Node, None, node);
                if self.store.get(&key).await?.is_none() {
                    return Err(Error::NotFound(format!("node {node:?}")).into());
                }
                Ok(Reply::ToNode {
                    node: node.clone(),
                    request: req,
                })
            }
            Request::RecordEvent {
                about,
                type_,
                reason,
                message,
            } => {
                self.record_event(who, &about, &type_, &reason, &message)
                    .await
            }
            Request::Push { .. }
            | Request::Chunk(_)
            | Request::Tunnel { .. }
            | Request::Compile { .. } => Err(bad_request(
                "uploads and tunnels are handled by the connection, not here",
            )),
            Request::Dial { .. } => Err(bad_request(
                "nodes dial their pods; the controller does not",
            )),
        }
    }

    /// A pod, or NotFound.
    async fn pod(&self, namespace: &str, pod: &str) -> Result<Pod> {
        let key = ObjectKey::new(Kind::Pod, Some(namespace), pod);
        let obj = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        obj.into_typed().map_err(Error::from)
    }

    async fn delete(
        &self,
        key: &ObjectKey,
        policy: PropagationPolicy,
        grace: Option<i64>,
    ) -> Result<Vec<Change>> {
        if let Some(g) = grace.filter(|g| *g < 0) {
            return Err(Error::BadRequest(format!(
                "gracePeriodSeconds={g}: a grace period is 0 or more seconds"
            )));
        }
        if key.kind == Kind::Namespace {
            if key.name == "default" || key.name == SYSTEM_NAMESPACE {
                return Err(Error::Forbidden(format!(
                    "namespace {:?} may not be deleted",
                    key.name
                )));
            }
            self.store
                .write(vec![Op::DeleteNamespace {
                    name: key.name.clone(),
                }])
                .await
                .map(|mut c| {
                    // The namespace itself is the last change; report it first.
                    c.rotate_right(1);
                    c
                })
        } else {
            let changes = self
                .store
                .write(vec![Op::DeleteWith {
                    key: key.clone(),
                    policy,
                    // Only a pod's deletion is graceful; for anything else it means nothing,
                    // as in Kubernetes.
                    grace: grace.filter(|_| key.kind == Kind::Pod),
                }])
                .await?;
            if key.kind == Kind::Node {
                // A deleted node's certificates stop working at once (it joins again only
                // with a new token).
                self.unbind_node(&key.name).await?;
            }
            // Orphaning also rewrites the dependents; the deleted owner is the last change.
            Ok(changes.into_iter().rev().take(1).collect())
        }
    }

    /// Decodes and checks every object before writing any, so a bad manifest changes nothing.
    fn admit(objects: Vec<Vec<u8>>) -> Result<Vec<Object>> {
        let mut admitted = Vec::with_capacity(objects.len());
        let mut problems = Vec::new();
        for (i, bytes) in objects.iter().enumerate() {
            let mut obj = match Object::from_json(bytes) {
                Ok(o) => o,
                Err(e) => {
                    problems.push(format!("object {}: {e}", i + 1));
                    continue;
                }
            };
            obj.normalize();
            if let Object::Secret(s) = &mut obj {
                fold_string_data(s);
            }
            let mut errors = validate(&obj);
            errors.extend(crate::reconcile::cronjob::admission_errors(&obj));
            if errors.is_empty() {
                admitted.push(obj);
            } else {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                problems.push(format!(
                    "{} {:?} is invalid: {}",
                    obj.kind(),
                    obj.name(),
                    list.join("; ")
                ));
            }
        }
        if !problems.is_empty() {
            const SHOWN: usize = 20;
            let more = problems.len().saturating_sub(SHOWN);
            problems.truncate(SHOWN);
            if more > 0 {
                problems.push(format!("... and {more} more objects with problems"));
            }
            return Err(Error::Invalid(format!(
                "nothing was applied:\n{}",
                problems.join("\n")
            )));
        }
        // Namespaces first, so objects in a new namespace can follow in the same manifest.
        admitted.sort_by_key(|o| o.kind() != Kind::Namespace);
        Ok(admitted)
    }

    async fn apply(&self, objects: Vec<Vec<u8>>) -> Result<Vec<ApplyOutcome>> {
        let admitted = Self::admit(objects)?;
        let mut outcomes = Vec::with_capacity(admitted.len());
        for obj in admitted {
            let result = self.apply_one(obj.clone()).await?;
            outcomes.push(ApplyOutcome {
                reference: obj.reference(),
                namespace: obj.namespace().map(str::to_string),
                result,
            });
        }
        Ok(outcomes)
    }

    /// Create, or merge the manifest into what is stored as `kubectl apply` does (see
    /// [`writes::applied`]) while keeping what the cluster owns (status, uid, timestamps);
    /// retried on a concurrent write.
    async fn apply_one(&self, desired: Object) -> Result<ApplyResult> {
        let key = ObjectKey::of(&desired);
        let _allocating = match desired.kind() {
            Kind::Service => Some(self.allocating.lock().await),
            _ => None,
        };
        for _ in 0..5 {
            let stored = self.store.get(&key).await?;
            let desired = writes::applied(&desired, stored.as_ref())?;
            let desired = self.allocate(&desired, stored.as_ref()).await?;
            let Some(stored) = stored else {
                match self.store.create(desired.clone()).await {
                    Ok(_) => return Ok(ApplyResult::Created),
                    Err(Error::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            let next = writes::replaced(&desired, &stored, true)?;
            if next == stored {
                return Ok(ApplyResult::Unchanged);
            }
            match self
                .store
                .update(next, Some(stored.metadata().revision()))
                .await
            {
                Ok(_) => return Ok(ApplyResult::Configured),
                Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "{key} kept changing while it was applied; try again"
        )))
    }

    /// A Service with what the cluster chose for it (its cluster IP, its node ports), kept from
    /// `stored`; any other object as it is.
    async fn allocate(&self, desired: &Object, stored: Option<&Object>) -> Result<Object> {
        self.admit_network_policy(desired).await?;
        if let (Object::PersistentVolumeClaim(c), None) = (desired, stored) {
            return Ok(Object::PersistentVolumeClaim(self.new_claim(c).await?));
        }
        if let (Object::PersistentVolume(v), None) = (desired, stored) {
            let mut v = v.clone();
            protect(&mut v.metadata, shoal_api::PV_PROTECTION_FINALIZER);
            return Ok(Object::PersistentVolume(v));
        }
        let Object::Service(svc) = desired else {
            return Ok(desired.clone());
        };
        let mut svc = svc.clone();
        let stored = match stored {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        };
        let others: Vec<shoal_api::Service> = self.store.list_typed(Kind::Service, None).await?;
        crate::service_ips::assign(&mut svc, stored, &others, &self.service_cidr).map_err(|e| {
            Error::Invalid(format!("Service {:?} is invalid: {e}", svc.metadata.name))
        })?;
        Ok(Object::Service(svc))
    }
}

impl Service {
    /// NetworkPolicy admission: a pod on its node's network (wasm, hostNetwork) that a policy
    /// would isolate where it cannot be enforced is refused, and so is a policy that would
    /// isolate such a pod already there; the message names both.
    async fn admit_network_policy(&self, desired: &Object) -> Result<()> {
        let ns = desired.namespace().unwrap_or("default");
        let refusal = match desired {
            Object::Pod(p) if p.uses_node_network() => {
                let policies: Vec<shoal_api::NetworkPolicy> =
                    self.store.list_typed(Kind::NetworkPolicy, Some(ns)).await?;
                shoal_api::policy::node_network_refusal(&policies, p)
            }
            Object::NetworkPolicy(np) => {
                let pods: Vec<shoal_api::Pod> = self.store.list_typed(Kind::Pod, Some(ns)).await?;
                let one = std::slice::from_ref(np);
                pods.iter()
                    .filter(|p| !p.is_terminal())
                    .find_map(|p| shoal_api::policy::node_network_refusal(one, p))
            }
            _ => None,
        };
        match refusal {
            Some(why) => Err(Error::Invalid(why)),
            None => Ok(()),
        }
    }

    /// A claim as it is created: the default StorageClass when it names none (Kubernetes'
    /// DefaultStorageClass admission), and Pending.
    async fn new_claim(
        &self,
        claim: &shoal_api::PersistentVolumeClaim,
    ) -> Result<shoal_api::PersistentVolumeClaim> {
        let mut claim = claim.clone();
        if claim.spec.storage_class_name.is_none() {
            let classes: Vec<shoal_api::StorageClass> =
                self.store.list_typed(Kind::StorageClass, None).await?;
            claim.spec.storage_class_name = classes
                .iter()
                .find(|c| c.is_default())
                .map(|c| c.metadata.name.clone());
        }
        claim.status = Some(shoal_api::PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        protect(&mut claim.metadata, shoal_api::PVC_PROTECTION_FINALIZER);
        Ok(claim)
    }
}

/// Adds the finalizer that keeps a claim or volume in use from going (Kubernetes'
/// StorageObjectInUseProtection admission); the binder takes it away once it is free.
fn protect(meta: &mut ObjectMeta, finalizer: &str) {
    if !meta.finalizers.iter().any(|f| f == finalizer) {
        meta.finalizers.push(finalizer.into());
    }
}

/// Kubernetes folds `stringData` into base64 `data` on write; so does Shoal.
fn fold_string_data(s: &mut Secret) {
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data
            .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    }
}
