//! The API service: every operation of the controller, behind identities and permissions,
//! independent of the door it is reached through (QUIC today; HTTP later calls the same code).

use crate::artifacts::{Artifacts, Blob};
use crate::error::{Error, Result};
use crate::precompiled::Precompiled;
use crate::store::{Change, ChangeType, ObjectKey, Op, Store, Watch};
use base64::Engine as _;
use shoal_api::validate::validate;
use shoal_api::Pod;
use shoal_api::{Kind, Namespace, Object, ObjectMeta, PropagationPolicy, Secret, Selector};
use shoal_transport::proto::{
    ApplyOutcome, ApplyResult, ErrorCode, EventType, Request, Response, WireError,
};
use shoal_transport::{Ca, Identity};
use std::sync::Arc;

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
    artifacts: Arc<Artifacts>,
    precompiled: Arc<Precompiled>,
    cluster_cidr: crate::ipam::ClusterCidr,
    service_cidr: crate::service_ips::ServiceCidr,
    /// Held while a Service's address and node ports are chosen and written, so two Services
    /// written at once never get the same.
    allocating: Arc<tokio::sync::Mutex<()>>,
}

fn bad_request(message: impl Into<String>) -> WireError {
    WireError {
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
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

/// The one field selector served: `spec.nodeName=NAME`.
fn parse_fields(fields: &str) -> std::result::Result<Option<String>, WireError> {
    let f = fields.trim();
    if f.is_empty() {
        return Ok(None);
    }
    let value = f
        .strip_prefix("spec.nodeName==")
        .or_else(|| f.strip_prefix("spec.nodeName="))
        .ok_or_else(|| {
            bad_request(format!(
                "field selector {f:?}: only spec.nodeName=NAME is supported"
            ))
        })?;
    Ok(Some(value.to_string()))
}

fn on_node(obj: &Object, node: Option<&str>) -> bool {
    match (node, obj) {
        (None, _) => true,
        (Some(n), Object::Pod(p)) => p.spec.node_name.as_deref() == Some(n),
        (Some(_), _) => false,
    }
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
    WireError {
        code: ErrorCode::Forbidden,
        message,
    }
}

/// Does a pod use this ConfigMap or Secret (env, envFrom or volume)?
fn pod_uses(pod: &Pod, kind: Kind, name: &str) -> bool {
    let s = &pod.spec;
    let volumes = s.volumes.iter().any(|v| match kind {
        Kind::ConfigMap => v.config_map.as_ref().is_some_and(|c| c.name == name),
        Kind::Secret => v.secret.as_ref().is_some_and(|c| c.secret_name == name),
        _ => false,
    });
    let env = s.containers.iter().any(|c| {
        c.env
            .iter()
            .filter_map(|e| e.value_from.as_ref())
            .any(|f| match kind {
                Kind::ConfigMap => f
                    .config_map_key_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name),
                Kind::Secret => f.secret_key_ref.as_ref().is_some_and(|r| r.name == name),
                _ => false,
            })
            || c.env_from.iter().any(|f| match kind {
                Kind::ConfigMap => f.config_map_ref.as_ref().is_some_and(|r| r.name == name),
                Kind::Secret => f.secret_ref.as_ref().is_some_and(|r| r.name == name),
                _ => false,
            })
    });
    let pull = kind == Kind::Secret && s.image_pull_secrets.iter().any(|r| r.name == name);
    volumes || env || pull
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
            artifacts,
            precompiled,
            cluster_cidr,
            service_cidr: Default::default(),
            allocating: Arc::default(),
        }
    }

    /// The range Services get their virtual address from (10.43.0.0/16 by default).
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
    pub fn precompile_for_nodes(&self, blob: &Blob) {
        let nodes = self
            .store
            .list_typed::<shoal_api::Node>(Kind::Node, None)
            .unwrap_or_default();
        let targets = crate::precompiled::wasm_targets(&nodes);
        if !targets.is_empty() && crate::precompiled::is_wasm(&blob.path) {
            self.precompiled.precompile(&blob.digest, targets);
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates what every cluster has from the start: the system namespace and the cluster
    /// DNS Service, which every agent serves for its pods.
    pub async fn bootstrap(&self) -> Result<()> {
        self.bootstrap_namespace().await?;
        let key = ObjectKey::new(Kind::Service, Some(SYSTEM_NAMESPACE), DNS_SERVICE);
        if self.store.get(&key)?.is_none() {
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
                Err(e) => tracing::warn!(error = %e, "cannot create the cluster DNS Service"),
            }
        }
        Ok(())
    }

    async fn bootstrap_namespace(&self) -> Result<()> {
        let key = ObjectKey::new(Kind::Namespace, None, SYSTEM_NAMESPACE);
        if self.store.get(&key)?.is_none() {
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

    /// Admins may do anything; a node may read what is bound to it and write its own status;
    /// an anonymous connection may only join.
    fn authorize(&self, who: &Identity, req: &Request) -> std::result::Result<(), WireError> {
        let node = match who {
            Identity::Admin(_) => return Ok(()),
            Identity::Anonymous => {
                return match req {
                    Request::WhoAmI | Request::Join { .. } => Ok(()),
                    _ => Err(WireError {
                        code: ErrorCode::Unauthenticated,
                        message: "this connection presented no client certificate: use the credential file the controller wrote (DATA_DIR/admin.conf) with --config or SHOAL_CONFIG".into(),
                    }),
                };
            }
            Identity::Node(n) => n.as_str(),
        };
        let own_pods = |kind: &str, fields: &str| {
            kind.parse::<Kind>().ok() == Some(Kind::Pod)
                && parse_fields(fields).ok().flatten().as_deref() == Some(node)
        };
        let allowed = match req {
            Request::WhoAmI
            | Request::PutNode { .. }
            | Request::Renew { .. }
            | Request::UpdateStatus { .. }
            | Request::Fetch { .. }
            | Request::FetchPrecompiled { .. }
            | Request::PeerCert { .. }
            | Request::RecordEvent { .. } => true,
            // The service proxy on every node follows every Service and its endpoints.
            Request::List { kind, fields, .. } | Request::Watch { kind, fields, .. } => {
                own_pods(kind, fields)
                    || matches!(
                        kind.parse::<Kind>(),
                        Ok(Kind::Service) | Ok(Kind::Endpoints) | Ok(Kind::Node)
                    )
            }
            Request::Get {
                kind,
                namespace,
                name,
            } => match kind.parse::<Kind>() {
                Ok(k @ (Kind::ConfigMap | Kind::Secret)) => {
                    self.node_uses(node, k, namespace.as_deref().unwrap_or("default"), name)
                }
                Ok(Kind::Node) => name == node,
                _ => false,
            },
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(format!(
                "node {node:?} may not perform this operation"
            )))
        }
    }

    /// Whether `who` may open a tunnel to `ip:port` on `node` (see [`shoal_api::tunnel_policy`]).
    pub fn authorize_tunnel(
        &self,
        who: &Identity,
        node: &str,
        ip: &str,
        port: u16,
        udp: bool,
    ) -> std::result::Result<(), WireError> {
        if matches!(who, Identity::Anonymous) {
            return Err(forbidden("only nodes may open service tunnels".into()));
        }
        let pods: Vec<Pod> = self.store.list_typed(Kind::Pod, None)?;
        let endpoints: Vec<shoal_api::Endpoints> = self.store.list_typed(Kind::Endpoints, None)?;
        match shoal_api::tunnel_policy::tunnel_refusal(node, ip, port, udp, &pods, &endpoints) {
            None => Ok(()),
            Some(why) => Err(forbidden(format!("{who} may not open this tunnel: {why}"))),
        }
    }

    /// Refuses a wasm target the node did not report in its own status.
    fn check_reported_target(
        &self,
        node: &str,
        target: &shoal_api::WasmTarget,
    ) -> std::result::Result<(), WireError> {
        let key = ObjectKey::new(Kind::Node, None, node);
        let reported = self
            .store
            .get(&key)?
            .and_then(|o| o.into_typed::<shoal_api::Node>().ok())
            .and_then(|n| n.status)
            .is_some_and(|s| {
                s.runtime_handlers
                    .iter()
                    .any(|h| h.wasm_target.as_ref() == Some(target))
            });
        if reported {
            Ok(())
        } else {
            Err(forbidden(format!(
                "node {node:?} asked for code compiled for {} ({}), which it did not report: a node gets code only for its own target",
                target.triple,
                target.features.join(",")
            )))
        }
    }

    fn node_uses(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        self.store
            .list(Kind::Pod, Some(namespace))
            .map(|(pods, _)| {
                pods.into_iter()
                    .filter_map(|o| o.into_typed::<Pod>().ok())
                    .any(|p| p.spec.node_name.as_deref() == Some(node) && pod_uses(&p, kind, name))
            })
            .unwrap_or(false)
    }

    async fn dispatch(
        &self,
        who: &Identity,
        req: Request,
    ) -> std::result::Result<Reply, WireError> {
        self.authorize(who, &req)?;
        let one = |r: Response| Ok(Reply::One(r));
        match req {
            Request::WhoAmI => one(Response::Identity(who.to_string())),
            Request::Apply { objects } => one(Response::Applied(self.apply(objects).await?)),
            Request::Get {
                kind,
                namespace,
                name,
            } => {
                let key = ObjectKey::new(parse_kind(&kind)?, namespace.as_deref(), &name);
                let obj = self
                    .store
                    .get(&key)?
                    .ok_or_else(|| Error::NotFound(key.to_string()))?;
                one(Response::Object(encode(&obj)?))
            }
            Request::List {
                kind,
                namespace,
                selector,
                fields,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let node = parse_fields(&fields)?;
                let (items, revision) = self.store.list(kind, namespace.as_deref())?;
                let items = items
                    .iter()
                    .filter(|o| {
                        selector.matches(&o.metadata().labels) && on_node(o, node.as_deref())
                    })
                    .map(encode)
                    .collect::<Result<Vec<_>>>()?;
                one(Response::List { items, revision })
            }
            Request::Watch {
                kind,
                namespace,
                selector,
                fields,
                revision,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let node = parse_fields(&fields)?;
                let from = if revision == 0 {
                    self.store.revision()
                } else {
                    revision
                };
                let watch = self.store.watch(from, Some(kind))?;
                Ok(Reply::Watch(WatchStream {
                    watch,
                    namespace,
                    selector,
                    node,
                }))
            }
            Request::Delete {
                kind,
                namespace,
                name,
                propagation,
            } => {
                let key = ObjectKey::new(parse_kind(&kind)?, namespace.as_deref(), &name);
                let changes = self.delete(&key, propagation).await?;
                one(Response::Deleted(
                    changes
                        .iter()
                        .map(|c| c.object.reference())
                        .take(1)
                        .collect(),
                ))
            }
            Request::DeleteSelected {
                kind,
                namespace,
                selector,
                propagation,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let (items, _) = self.store.list(kind, namespace.as_deref())?;
                let mut deleted = Vec::new();
                for obj in items
                    .iter()
                    .filter(|o| selector.matches(&o.metadata().labels))
                {
                    match self.delete(&ObjectKey::of(obj), propagation).await {
                        Ok(_) => deleted.push(obj.reference()),
                        Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                one(Response::Deleted(deleted))
            }
            Request::CreateToken {
                description,
                ttl_secs,
                usages,
            } => one(Response::Token(
                self.create_token(&description, None, ttl_secs, usages)
                    .await?,
            )),
            Request::ListTokens => one(json_answer(&self.list_tokens()?)?),
            Request::DeleteToken { id } => {
                self.delete_token(&id).await?;
                one(Response::Ok)
            }
            Request::IssueCredential {
                name,
                ttl_secs,
                csr_pem,
            } => one(self.issue_credential(&name, ttl_secs, &csr_pem).await?),
            Request::ListCredentials => one(json_answer(&self.list_credentials()?)?),
            Request::DeleteCredential { name } => {
                self.delete_credential(who, &name).await?;
                one(Response::Ok)
            }
            Request::Join {
                secret,
                node_name,
                csr_pem,
            } => one(self.join(&secret, &node_name, &csr_pem).await?),
            Request::Renew { csr_pem } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node renews its certificate this way; admins use `shoal cert rotate`"));
                };
                one(self.renew(me, &csr_pem)?)
            }
            Request::PeerCert { csr_pem } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node has a peer certificate"));
                };
                let cert_pem = self
                    .peer_ca
                    .sign_node_serving(&csr_pem, me, self.trust.node_cert_ttl)
                    .map_err(Error::from)?;
                one(self.joined(cert_pem))
            }
            Request::PutNode { object } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node may register itself"));
                };
                one(self.put_node(me, &object).await?)
            }
            Request::UpdateStatus { object } => one(self.update_status(who, &object).await?),
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
                    self.check_reported_target(me, &target)?;
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
            Request::Logs {
                ref namespace,
                ref pod,
                ..
            } => {
                let key = ObjectKey::new(Kind::Pod, Some(namespace), pod);
                let obj = self
                    .store
                    .get(&key)?
                    .ok_or_else(|| Error::NotFound(key.to_string()))?;
                let pod: Pod = obj.into_typed().map_err(Error::from)?;
                match pod.spec.node_name {
                    Some(node) => Ok(Reply::ToNode { node, request: req }),
                    None => Err(bad_request(format!(
                        "pod {:?} is not scheduled yet: it has no logs",
                        pod.metadata.name
                    ))),
                }
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
                if self.store.get(&key)?.is_none() {
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
                let mut about: shoal_api::ObjectReference = serde_json::from_slice(&about)
                    .map_err(|e| bad_request(format!("event object reference: {e}")))?;
                if reason.len() > EVENT_REASON_MAX {
                    return Err(bad_request(format!(
                        "an event reason is at most {EVENT_REASON_MAX} bytes, got {}",
                        reason.len()
                    )));
                }
                let message = truncated(&message, EVENT_MESSAGE_MAX);
                let host = match who {
                    Identity::Node(me) => {
                        let allowed = self
                            .event_budget
                            .lock()
                            .map(|mut b| b.take(me, std::time::Instant::now()))
                            .unwrap_or(false);
                        if !allowed {
                            return Err(WireError {
                                code: ErrorCode::TooManyRequests,
                                message: format!(
                                    "node {me:?} records events faster than {} a second: this one was dropped",
                                    crate::rate::EVENT_PER_SECOND
                                ),
                            });
                        }
                        let key = ObjectKey::new(
                            Kind::Pod,
                            about.namespace.as_deref(),
                            about.name.as_deref().unwrap_or(""),
                        );
                        let bound = self
                            .store
                            .get(&key)?
                            .and_then(|o| o.into_typed::<Pod>().ok())
                            .is_some_and(|p| p.spec.node_name.as_deref() == Some(me.as_str()));
                        let itself = about.kind.as_deref() == Some("Node")
                            && about.name.as_deref() == Some(me.as_str());
                        if !itself && (about.kind.as_deref() != Some("Pod") || !bound) {
                            return Err(forbidden(format!(
                                "node {me:?} may only record events about itself and its own pods"
                            )));
                        }
                        if itself {
                            // Events about a Node live in `default`, as in Kubernetes.
                            about.namespace = Some("default".into());
                        }
                        Some(me.clone())
                    }
                    _ => None,
                };
                crate::events::try_record(
                    &self.store,
                    &about,
                    &type_,
                    &reason,
                    &message,
                    "shoal-agent",
                    host.as_deref(),
                )
                .await?;
                one(Response::Ok)
            }
            Request::Push { .. } | Request::Chunk(_) | Request::Tunnel { .. } => Err(bad_request(
                "uploads and tunnels are handled by the connection, not here",
            )),
            Request::Dial { .. } => Err(bad_request(
                "nodes dial their pods; the controller does not",
            )),
        }
    }

    /// Creates or refreshes a node's own Node: its labels and status come from the node; its
    /// spec (cordon, taints) stays what the admins made it.
    async fn put_node(&self, me: &str, bytes: &[u8]) -> Result<Response> {
        let obj = self.admit_node(me, bytes)?;
        let key = ObjectKey::of(&obj);
        for _ in 0..5 {
            let result = match self.store.get(&key)? {
                None => {
                    let mut node: shoal_api::Node = obj.clone().into_typed()?;
                    // A new Node's spec is the admins' to set, not the node's.
                    node.spec = Default::default();
                    node.spec.pod_cidr = self.free_pod_cidr()?;
                    node.metadata.annotations = shoal_api::node_restriction::merge_annotations(
                        &node.metadata.annotations,
                        &Default::default(),
                    );
                    self.store.create(Object::Node(node)).await
                }
                Some(stored) => {
                    let mut next: shoal_api::Node = obj.clone().into_typed()?;
                    let stored_node: shoal_api::Node = stored.clone().into_typed()?;
                    keep_transition_times(&mut next, &stored_node);
                    next.spec = stored_node.spec;
                    if next.spec.pod_cidr.is_none() {
                        next.spec.pod_cidr = self.free_pod_cidr()?;
                    }
                    next.metadata.labels = shoal_api::node_restriction::merge_labels(
                        &next.metadata.labels,
                        &stored_node.metadata.labels,
                        &stored_node.metadata.annotations,
                    );
                    next.metadata.annotations = shoal_api::node_restriction::merge_annotations(
                        &next.metadata.annotations,
                        &stored_node.metadata.annotations,
                    );
                    let expected = Some(stored.metadata().revision());
                    self.store.update(Object::Node(next), expected).await
                }
            };
            match result {
                // The node learns what the cluster decided for it (its pod range).
                Ok(change) => return Ok(Response::Object(encode(&change.object)?)),
                Err(Error::Conflict(_)) | Err(Error::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!("node {me:?} kept changing")))
    }

    /// Sets labels on a Node as an admin does (they outlive the node's heartbeats), creating
    /// the Node if it has not registered yet.
    pub async fn label_node(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        use shoal_api::node_restriction::{admin_keys, ADMIN_LABELS};
        let key = ObjectKey::new(Kind::Node, None, name);
        for _ in 0..5 {
            let stored = self.store.get(&key)?;
            let mut node: shoal_api::Node = match &stored {
                Some(o) => o.clone().into_typed()?,
                None => shoal_api::Node {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    metadata: ObjectMeta {
                        name: name.into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            };
            let mut keys = admin_keys(&node.metadata.annotations);
            for (k, v) in labels {
                node.metadata.labels.insert(k.clone(), v.clone());
                keys.insert(k.clone());
            }
            let list: Vec<String> = keys.into_iter().collect();
            node.metadata
                .annotations
                .insert(ADMIN_LABELS.into(), list.join(","));
            let result = match stored {
                Some(o) => {
                    self.store
                        .update(Object::Node(node), Some(o.metadata().revision()))
                        .await
                }
                None => self.store.create(Object::Node(node)).await,
            };
            match result {
                Ok(_) => return Ok(()),
                Err(Error::Conflict(_)) | Err(Error::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!("node {name:?} kept changing")))
    }

    /// The Node a node writes about itself, if it may write it (NodeRestriction): its own,
    /// valid, with only the labels a node may set.
    pub fn admit_node(&self, me: &str, bytes: &[u8]) -> Result<Object> {
        let mut obj = Object::from_json(bytes)?;
        obj.normalize();
        if obj.kind() != Kind::Node || obj.name() != me {
            return Err(Error::Forbidden(format!(
                "node {me:?} may only write its own Node"
            )));
        }
        let errors = validate(&obj);
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(Error::Invalid(list.join("; ")));
        }
        shoal_api::node_restriction::check_node_labels(me, &obj.metadata().labels)
            .map_err(Error::Forbidden)?;
        Ok(obj)
    }

    /// A pod range no node holds yet; `None` (pods get no address) when the range is full.
    fn free_pod_cidr(&self) -> Result<Option<String>> {
        let nodes: Vec<shoal_api::Node> = self.store.list_typed(Kind::Node, None)?;
        let cidr = self
            .cluster_cidr
            .next_pod_cidr(nodes.iter().filter_map(|n| n.spec.pod_cidr.as_deref()));
        if cidr.is_none() {
            tracing::warn!("every pod range of the cluster is taken; a new node gets none");
        }
        Ok(cidr)
    }

    /// A pod's status from its node (or an admin); the spec is untouched.
    async fn update_status(&self, who: &Identity, bytes: &[u8]) -> Result<Response> {
        let mut obj = Object::from_json(bytes)?;
        obj.normalize();
        if obj.kind() != Kind::Pod {
            return Err(Error::Invalid(format!(
                "status updates are for pods, not {}",
                obj.kind()
            )));
        }
        let key = ObjectKey::of(&obj);
        let stored = self
            .store
            .get(&key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if let Identity::Node(me) = who {
            let pod: Pod = stored.into_typed()?;
            if pod.spec.node_name.as_deref() != Some(me.as_str()) {
                return Err(Error::Forbidden(format!(
                    "{key} is not bound to node {me:?}"
                )));
            }
        }
        self.store.update_status(obj, None).await?;
        Ok(Response::Ok)
    }

    async fn delete(&self, key: &ObjectKey, policy: PropagationPolicy) -> Result<Vec<Change>> {
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
            let errors = validate(&obj);
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

    /// Create, or replace what the manifest says while keeping what the cluster owns
    /// (status, uid, timestamps); retried on a concurrent write.
    async fn apply_one(&self, desired: Object) -> Result<ApplyResult> {
        let key = ObjectKey::of(&desired);
        let _allocating = match desired.kind() {
            Kind::Service => Some(self.allocating.lock().await),
            _ => None,
        };
        for _ in 0..5 {
            let stored = self.store.get(&key)?;
            let desired = self.allocate(&desired, stored.as_ref())?;
            let Some(stored) = stored else {
                match self.store.create(desired.clone()).await {
                    Ok(_) => return Ok(ApplyResult::Created),
                    Err(Error::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            let mut next = desired
                .with_status_of(&stored)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let sm = stored.metadata().clone();
            let m = next.metadata_mut();
            m.uid = sm.uid;
            m.creation_timestamp = sm.creation_timestamp;
            m.deletion_timestamp = sm.deletion_timestamp;
            m.generation = sm.generation;
            m.resource_version = sm.resource_version.clone();
            if m.owner_references.is_empty() {
                m.owner_references = sm.owner_references;
            }
            if m.finalizers.is_empty() {
                m.finalizers = sm.finalizers;
            }
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
    fn allocate(&self, desired: &Object, stored: Option<&Object>) -> Result<Object> {
        let Object::Service(svc) = desired else {
            return Ok(desired.clone());
        };
        let mut svc = svc.clone();
        let stored = match stored {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        };
        let others: Vec<shoal_api::Service> = self.store.list_typed(Kind::Service, None)?;
        crate::service_ips::assign(&mut svc, stored, &others, &self.service_cidr).map_err(|e| {
            Error::Invalid(format!("Service {:?} is invalid: {e}", svc.metadata.name))
        })?;
        Ok(Object::Service(svc))
    }
}

/// Kubernetes folds `stringData` into base64 `data` on write; so does Shoal.
fn fold_string_data(s: &mut Secret) {
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data
            .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    }
}

/// A watch filtered to what the client asked for.
pub struct WatchStream {
    watch: Watch,
    namespace: Option<String>,
    selector: Selector,
    node: Option<String>,
}

impl WatchStream {
    /// The next change as a response frame.
    pub async fn next(&mut self) -> Response {
        loop {
            let change = match self.watch.next().await {
                Ok(c) => c,
                Err(e) => return Response::Error(e.into()),
            };
            let obj = &change.object;
            if self
                .namespace
                .as_deref()
                .is_some_and(|ns| obj.namespace() != Some(ns))
            {
                continue;
            }
            if !self.selector.matches(&obj.metadata().labels) || !on_node(obj, self.node.as_deref())
            {
                continue;
            }
            let type_ = match change.type_ {
                ChangeType::Added => EventType::Added,
                ChangeType::Modified => EventType::Modified,
                ChangeType::Deleted => EventType::Deleted,
            };
            return match encode(obj) {
                Ok(object) => Response::Event {
                    type_,
                    revision: change.revision,
                    object,
                },
                Err(e) => Response::Error(e.into()),
            };
        }
    }
}

/// A heartbeat restates each condition; one whose status did not change keeps the time it
/// last changed, so lastTransitionTime means what it says (and a heartbeat alone changes
/// nothing the controller's loops act on).
fn keep_transition_times(next: &mut shoal_api::Node, stored: &shoal_api::Node) {
    let (Some(status), Some(before)) = (next.status.as_mut(), stored.status.as_ref()) else {
        return;
    };
    for c in &mut status.conditions {
        if let Some(old) = before
            .conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    async fn service() -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::load_or_create(dir.path()).unwrap());
        let peer_ca = Arc::new(Ca::load_or_create_peer(dir.path()).unwrap());
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let artifacts = Arc::new(Artifacts::open(dir.path()).unwrap());
        let s = Service::new(store, ca, peer_ca, artifacts, Default::default());
        s.bootstrap().await.unwrap();
        (dir, s)
    }

    fn json(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn pod(name: &str, node: &str, secret: &str) -> Vec<u8> {
        json(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}}),
        )
    }

    fn secret(name: &str) -> Vec<u8> {
        json(
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"k": "v"}}),
        )
    }

    async fn call(
        s: &Service,
        who: &Identity,
        req: Request,
    ) -> std::result::Result<Response, ErrorCode> {
        match s.handle(who, req).await {
            Reply::One(Response::Error(e)) => Err(e.code),
            Reply::One(r) => Ok(r),
            _ => Ok(Response::Ok),
        }
    }

    #[tokio::test]
    async fn a_node_reads_only_what_is_bound_to_it_and_writes_only_its_own_status() {
        let (_dir, s) = service().await;
        let admin = Identity::Admin("admin".into());
        let objects = vec![
            pod("mine", "pi-1", "used"),
            pod("theirs", "pi-2", "other"),
            secret("used"),
            secret("other"),
            secret("unused"),
        ];
        call(&s, &admin, Request::Apply { objects }).await.unwrap();
        let me = Identity::Node("pi-1".into());
        let list = |fields: &str| Request::List {
            kind: "Pod".into(),
            namespace: None,
            selector: String::new(),
            fields: fields.into(),
        };
        let get_secret = |name: &str| Request::Get {
            kind: "Secret".into(),
            namespace: Some("default".into()),
            name: name.into(),
        };
        let node_obj = |name: &str| {
            json(
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
            )
        };
        let status_of = |name: &str| {
            json(
                serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "status": {"phase": "Running"}}),
            )
        };

        match call(&s, &me, list("spec.nodeName=pi-1")).await {
            Ok(Response::List { items, .. }) => assert_eq!(items.len(), 1, "only its own pod"),
            other => panic!("{other:?}"),
        }
        let cases: Vec<(&str, Request, Option<ErrorCode>)> = vec![
            ("list every pod", list(""), Some(ErrorCode::Forbidden)),
            (
                "list another node's pods",
                list("spec.nodeName=pi-2"),
                Some(ErrorCode::Forbidden),
            ),
            ("a secret its pod uses", get_secret("used"), None),
            (
                "a secret another node's pod uses",
                get_secret("other"),
                Some(ErrorCode::Forbidden),
            ),
            (
                "a secret no pod uses",
                get_secret("unused"),
                Some(ErrorCode::Forbidden),
            ),
            (
                "register itself",
                Request::PutNode {
                    object: node_obj("pi-1"),
                },
                None,
            ),
            (
                "register as another node",
                Request::PutNode {
                    object: node_obj("pi-2"),
                },
                Some(ErrorCode::Forbidden),
            ),
            (
                "status of its pod",
                Request::UpdateStatus {
                    object: status_of("mine"),
                },
                None,
            ),
            (
                "status of another node's pod",
                Request::UpdateStatus {
                    object: status_of("theirs"),
                },
                Some(ErrorCode::Forbidden),
            ),
            (
                "apply",
                Request::Apply {
                    objects: vec![secret("mine")],
                },
                Some(ErrorCode::Forbidden),
            ),
            (
                "delete",
                Request::Delete {
                    kind: "Pod".into(),
                    namespace: None,
                    name: "theirs".into(),
                    propagation: Default::default(),
                },
                Some(ErrorCode::Forbidden),
            ),
            (
                "create a token",
                Request::CreateToken {
                    description: String::new(),
                    ttl_secs: None,
                    usages: None,
                },
                Some(ErrorCode::Forbidden),
            ),
        ];
        for (what, req, want) in cases {
            let got = call(&s, &me, req).await.err();
            assert_eq!(got, want, "{what}");
        }
    }

    #[tokio::test]
    async fn joining_needs_a_known_token_secret_and_the_ca_sets_the_name() {
        use shoal_transport::pki::{fingerprint_of_cert, node_key_and_csr, pem_to_der};
        let (_dir, s) = service().await;
        let token = s.create_token("test", None, None, None).await.unwrap();
        let token = shoal_transport::JoinToken::parse(&token).unwrap();
        let (_, csr_pem) = node_key_and_csr("pi-9").unwrap();
        let anon = Identity::Anonymous;
        let join = |secret: &str, name: &str, csr: &str| Request::Join {
            secret: secret.into(),
            node_name: name.into(),
            csr_pem: csr.into(),
        };
        assert_eq!(
            call(&s, &anon, join("wrong", "pi-9", &csr_pem)).await.err(),
            Some(ErrorCode::Forbidden)
        );
        let key = match call(&s, &anon, join(&token.secret, "pi-9", &csr_pem)).await {
            Ok(Response::Joined { cert_pem, .. }) => {
                let der = pem_to_der(&cert_pem).unwrap();
                assert_eq!(
                    shoal_transport::pki::identity_of(&der),
                    Identity::Node("pi-9".into())
                );
                fingerprint_of_cert(&der).unwrap()
            }
            other => panic!("{other:?}"),
        };
        let me = Identity::Node("pi-9".into());
        assert_eq!(s.authenticate(me.clone(), Some(&key)), Ok(me.clone()));
        // Another device may not take the name; the same key may join again.
        let (_, other_csr) = node_key_and_csr("pi-9").unwrap();
        assert_eq!(
            call(&s, &anon, join(&token.secret, "pi-9", &other_csr))
                .await
                .err(),
            Some(ErrorCode::Conflict)
        );
        assert!(call(&s, &anon, join(&token.secret, "pi-9", &csr_pem))
            .await
            .is_ok());
        for bad in ["Not_A_Name", "shoal-controller", "127.0.0.1", "localhost"] {
            assert_eq!(
                call(&s, &anon, join(&token.secret, bad, &csr_pem))
                    .await
                    .err(),
                Some(ErrorCode::Invalid),
                "{bad}"
            );
        }
        // Deleting the node revokes its certificate at once.
        let admin = Identity::Admin("admin".into());
        let node =
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pi-9"}});
        call(
            &s,
            &admin,
            Request::Apply {
                objects: vec![json(node)],
            },
        )
        .await
        .unwrap();
        call(
            &s,
            &admin,
            Request::Delete {
                kind: "Node".into(),
                namespace: None,
                name: "pi-9".into(),
                propagation: Default::default(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            s.authenticate(me, Some(&key)).map_err(|e| e.code),
            Err(ErrorCode::Unauthenticated)
        );
    }

    #[tokio::test]
    async fn a_token_used_up_or_deleted_joins_no_more() {
        use shoal_transport::pki::node_key_and_csr;
        let (_dir, s) = service().await;
        let token = s.create_token("once", None, None, Some(1)).await.unwrap();
        let secret = shoal_transport::JoinToken::parse(&token).unwrap().secret;
        let join = |name: &str| Request::Join {
            secret: secret.clone(),
            node_name: name.into(),
            csr_pem: node_key_and_csr(name).unwrap().1,
        };
        let anon = Identity::Anonymous;
        assert!(call(&s, &anon, join("a")).await.is_ok());
        match s.handle(&anon, join("b")).await {
            Reply::One(Response::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Forbidden);
                assert!(
                    e.message.contains("used up (1 of 1 joins)"),
                    "{}",
                    e.message
                );
            }
            _ => panic!("a used-up token joined a node"),
        }
        let again = s.create_token("any", None, None, None).await.unwrap();
        let t = shoal_transport::JoinToken::parse(&again).unwrap();
        let listed = s.list_tokens().unwrap();
        assert!(listed
            .iter()
            .any(|i| i.id == t.secret[..8] && i.usages.is_none()));
        s.delete_token(&t.secret[..8]).await.unwrap();
        let join = Request::Join {
            secret: t.secret.clone(),
            node_name: "c".into(),
            csr_pem: node_key_and_csr("c").unwrap().1,
        };
        assert_eq!(
            call(&s, &anon, join).await.err(),
            Some(ErrorCode::Forbidden)
        );
    }
}
