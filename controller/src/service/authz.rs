//! Authorization: what each identity may do, decided before any request is served (Kubernetes'
//! Node authorizer is the model for nodes), and where a service tunnel may go.

use super::fields::Fields;
use super::{forbidden, Service};
use crate::store::ObjectKey;
use crate::Error;
use shoal_api::{Kind, Pod};
use shoal_transport::proto::{Request, WireError};
use shoal_transport::Identity;

/// The most a node may write in one request, by what it writes: its Node (status, labels),
/// a pod's status, an Event's object reference. (Event messages are cut to 1 KiB.)
const NODE_OBJECT_MAX: usize = 64 * 1024;
const POD_STATUS_MAX: usize = 256 * 1024;
const EVENT_REFERENCE_MAX: usize = 4 * 1024;

/// What a node's write is, how large, and the most it may be.
fn node_write_size(req: &Request) -> Option<(&'static str, usize, usize)> {
    match req {
        Request::PutNode { object } => Some(("a Node", object.len(), NODE_OBJECT_MAX)),
        Request::UpdateStatus { object } => Some(("a pod status", object.len(), POD_STATUS_MAX)),
        Request::Create { object, .. } => Some(("a mirror pod", object.len(), POD_STATUS_MAX)),
        Request::ReportCronRun { report } => {
            Some(("a CronJob run's report", report.len(), POD_STATUS_MAX))
        }
        Request::RecordEvent { about, .. } => Some((
            "an event's object reference",
            about.len(),
            EVENT_REFERENCE_MAX,
        )),
        _ => None,
    }
}

impl Service {
    /// Admins may do anything; a node may read what is bound to it and write its own status;
    /// an anonymous connection may only join.
    pub(super) async fn authorize(
        &self,
        who: &Identity,
        req: &Request,
    ) -> std::result::Result<(), WireError> {
        let node = match who {
            Identity::Admin(_) => return Ok(()),
            Identity::Anonymous => {
                return match req {
                    Request::WhoAmI | Request::Join { .. } => Ok(()),
                    _ => Err(Error::Unauthenticated("this connection presented no client certificate: use the credential file the controller wrote (DATA_DIR/admin.conf) with --config or SHOAL_CONFIG".into()).into()),
                };
            }
            Identity::Node(n) => n.as_str(),
        };
        if let Some((what, size, max)) = node_write_size(req).filter(|(_, n, max)| n > max) {
            return Err(Error::BadRequest(format!(
                "node {node:?}: {what} of {size} bytes is more than the {max} a node may write"
            ))
            .into());
        }
        let own_pods = |kind: &str, fields: &str| {
            kind.parse::<Kind>().ok() == Some(Kind::Pod)
                && Fields::parse(fields, Kind::Pod).is_ok_and(|f| f.node() == Some(node))
        };
        // Its own pods' resolved NetworkPolicies, and no other node's.
        let own_policy = |kind: &str, namespace: &Option<String>, fields: &str| {
            kind.parse::<Kind>().ok() == Some(Kind::ConfigMap)
                && namespace.as_deref() == Some(shoal_api::policy::POLICY_NAMESPACE)
                && Fields::parse(fields, Kind::ConfigMap).is_ok_and(|f| {
                    f.name() == Some(shoal_api::policy::policy_config_map(node).as_str())
                })
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
            // Only the CronJobs pinned to it, and runs of those: checked where they are served.
            Request::PinnedCronJobs | Request::ReportCronRun { .. } => true,
            // The service proxy on every node follows every Service and its endpoints.
            Request::List {
                kind,
                namespace,
                fields,
                ..
            }
            | Request::Watch {
                kind,
                namespace,
                fields,
                ..
            } => {
                own_pods(kind, fields)
                    || own_policy(kind, namespace, fields)
                    || matches!(
                        kind.parse::<Kind>(),
                        Ok(Kind::Service) | Ok(Kind::Endpoints) | Ok(Kind::Node)
                    )
            }
            // Its static pods' mirrors: made and removed by the node that runs them.
            Request::Create { object, .. } => {
                if let Err(why) = mirror_pod_of(node, object) {
                    return Err(forbidden(format!(
                        "node {node:?} may create only mirror pods of its static pods: {why}"
                    )));
                }
                true
            }
            Request::Delete {
                kind,
                namespace,
                name,
                ..
            } => match kind.parse::<Kind>() {
                Ok(Kind::Pod) => {
                    self.is_mirror_on(node, namespace.as_deref().unwrap_or("default"), name)
                        .await
                }
                // A released local volume of its own, once it has deleted the data.
                Ok(Kind::PersistentVolume) => self.reclaims_volume(node, name).await,
                _ => false,
            },
            Request::Get {
                kind,
                namespace,
                name,
            } => match kind.parse::<Kind>() {
                Ok(k @ (Kind::ConfigMap | Kind::Secret | Kind::PersistentVolumeClaim)) => {
                    self.node_uses(node, k, namespace.as_deref().unwrap_or("default"), name)
                        .await
                }
                Ok(Kind::PersistentVolume) => self.reaches_volume(node, name).await,
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
    pub async fn authorize_tunnel(
        &self,
        who: &Identity,
        node: &str,
        ip: &str,
        port: u16,
        udp: bool,
        from: &str,
    ) -> std::result::Result<(), WireError> {
        if matches!(who, Identity::Anonymous) {
            return Err(forbidden("only nodes may open service tunnels".into()));
        }
        if let Identity::Node(me) = who {
            self.speaks_for(me, from).await?;
        }
        let pods: Vec<Pod> = self.store.list_typed(Kind::Pod, None).await?;
        let endpoints: Vec<shoal_api::Endpoints> =
            self.store.list_typed(Kind::Endpoints, None).await?;
        match shoal_api::tunnel_policy::tunnel_refusal(node, ip, port, udp, &pods, &endpoints) {
            None => Ok(()),
            Some(why) => Err(forbidden(format!("{who} may not open this tunnel: {why}"))),
        }
    }

    /// Whether `who` may upload a module of `size` bytes for the controller to compile for
    /// `target`: a node only, for its own target, within [`crate::precompiled::MAX_UPLOAD`],
    /// only while a wasm pod whose image names a registry is bound to it (what it pulled
    /// itself), and within its budget ([`crate::rate::COMPILE_BURST`], then one a minute).
    /// A stolen node's worst is the controller's compile queue, one module at a
    /// time; it learns nothing it did not send.
    pub async fn authorize_compile<'w>(
        &self,
        who: &'w Identity,
        size: u64,
        target: &shoal_api::WasmTarget,
    ) -> std::result::Result<&'w str, WireError> {
        let Identity::Node(node) = who else {
            return Err(forbidden(format!(
                "{who} may not have a module compiled: only a node, for a module it pulled (an admin pushes it with `shoal push`)"
            )));
        };
        let max = crate::precompiled::MAX_UPLOAD;
        if size > max {
            return Err(Error::BadRequest(format!(
                "node {node:?}: a module of {size} bytes is more than the {max} a node may have compiled"
            ))
            .into());
        }
        self.check_reported_target(node, target).await?;
        let pods: Vec<Pod> = self.store.list_typed(Kind::Pod, None).await?;
        if !pods.iter().any(|p| pulls_wasm_itself(p, node)) {
            return Err(forbidden(format!(
                "node {node:?} runs no wasm pod whose image names a registry: it has only pushed artifacts compiled, which the controller holds"
            )));
        }
        let allowed = self
            .compile_budget
            .lock()
            .map(|mut b| b.take(node, std::time::Instant::now()))
            .unwrap_or(false);
        if !allowed {
            return Err(Error::TooManyRequests(format!(
                "node {node:?} had {} modules compiled lately: one a minute more at most",
                crate::rate::COMPILE_BURST
            ))
            .into());
        }
        Ok(node)
    }

    /// The pod ranges node `node`'s packets are relayed by (`shoal_api::pod_routes`): each
    /// packet must come from its own pods and go to another node's; refused for a node that
    /// is not registered.
    pub async fn pod_routes(
        &self,
        node: &str,
    ) -> std::result::Result<shoal_api::pod_routes::Routes, WireError> {
        let nodes: Vec<shoal_api::Node> = self.store.list_typed(Kind::Node, None).await?;
        if !nodes.iter().any(|n| n.metadata.name == node) {
            return Err(forbidden(format!(
                "node {node:?} is not registered: its packets are not relayed"
            )));
        }
        let ranges = nodes
            .iter()
            .map(|n| (n.metadata.name.as_str(), n.spec.pod_cidr.as_deref()));
        Ok(shoal_api::pod_routes::Routes::new(ranges))
    }

    /// Refuses a tunnel's client address that a node may not give: not an address at all, or
    /// one in another node's pod range (a node speaks for its own pods, and for clients
    /// beyond the cluster's pods, never for another node's pods).
    async fn speaks_for(&self, me: &str, from: &str) -> std::result::Result<(), WireError> {
        let Ok(ip) = from.parse::<std::net::IpAddr>() else {
            return Err(forbidden(format!(
                "node {me:?} gave the tunnel's client as {from:?}, which is not an address"
            )));
        };
        let nodes: Vec<shoal_api::Node> = self.store.list_typed(Kind::Node, None).await?;
        let owner = nodes.iter().find(|n| {
            (n.spec.pod_cidr.as_deref())
                .and_then(|c| c.parse::<shoal_api::policy::Cidr>().ok())
                .is_some_and(|c| c.contains(ip))
        });
        match owner {
            Some(n) if n.metadata.name != me => Err(forbidden(format!(
                "node {me:?} may not open a tunnel for {ip}, an address of node {:?}'s pods",
                n.metadata.name
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a wasm target the node did not report in its own status.
    pub(super) async fn check_reported_target(
        &self,
        node: &str,
        target: &shoal_api::WasmTarget,
    ) -> std::result::Result<(), WireError> {
        let key = ObjectKey::new(Kind::Node, None, node);
        let reported = self
            .store
            .get(&key)
            .await?
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

    async fn volume(&self, name: &str) -> Option<shoal_api::PersistentVolume> {
        let key = ObjectKey::new(Kind::PersistentVolume, None, name);
        let stored = self.store.get(&key).await.ok().flatten()?;
        stored.into_typed().ok()
    }

    /// Whether `node` may read the volume `name`: one on the node, or bound to a claim a pod
    /// on the node mounts. That there is no such volume it may learn (its agent asks after
    /// the volumes whose directories it holds).
    async fn reaches_volume(&self, node: &str, name: &str) -> bool {
        let Some(v) = self.volume(name).await else {
            return true;
        };
        if v.node() == Some(node) {
            return true;
        }
        match v.spec.claim_ref.as_ref() {
            Some(r) => {
                let (ns, claim) = (
                    r.namespace.as_deref().unwrap_or("default"),
                    r.name.as_deref().unwrap_or_default(),
                );
                self.node_uses(node, Kind::PersistentVolumeClaim, ns, claim)
                    .await
            }
            None => false,
        }
    }

    /// Whether `node` may delete the volume `name`: one Shoal provisioned on it, Released,
    /// whose reclaim policy is Delete.
    async fn reclaims_volume(&self, node: &str, name: &str) -> bool {
        self.volume(name).await.is_some_and(|v| {
            v.node() == Some(node)
                && crate::reconcile::volumes::provisioned_here(&v)
                && v.phase() == "Released"
                && v.reclaim_policy() == "Delete"
        })
    }

    /// Whether the pod `namespace/name` is a mirror pod bound to `node`.
    async fn is_mirror_on(&self, node: &str, namespace: &str, name: &str) -> bool {
        let key = ObjectKey::new(Kind::Pod, Some(namespace), name);
        let stored = self.store.get(&key).await.ok().flatten();
        stored
            .and_then(|o| o.into_typed::<Pod>().ok())
            .is_some_and(|p| p.is_mirror() && p.spec.node_name.as_deref() == Some(node))
    }

    pub(super) async fn node_uses(
        &self,
        node: &str,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> bool {
        self.store
            .list(Kind::Pod, Some(namespace))
            .await
            .map(|(pods, _)| {
                pods.into_iter()
                    .filter_map(|o| o.into_typed::<Pod>().ok())
                    .any(|p| p.spec.node_name.as_deref() == Some(node) && pod_uses(&p, kind, name))
            })
            .unwrap_or(false)
    }
}

/// Whether `pod` is a wasm pod bound to `node` with a container whose image the node pulls
/// from a registry itself.
fn pulls_wasm_itself(pod: &Pod, node: &str) -> bool {
    pod.spec.node_name.as_deref() == Some(node)
        && crate::scheduler::runtime_of(pod) == "wasm"
        && (pod.spec.init_containers.iter())
            .chain(&pod.spec.containers)
            .any(|c| shoal_api::names_a_registry(&c.image))
}

/// Whether `bytes` is a mirror pod `node` may create: a Pod annotated as a mirror, bound to
/// the node, owned by nothing but it, and using no other API object (a static pod may not).
fn mirror_pod_of(node: &str, bytes: &[u8]) -> std::result::Result<(), String> {
    let obj = shoal_api::Object::from_json(bytes).map_err(|e| e.to_string())?;
    let pod: Pod = obj
        .into_typed()
        .map_err(|_| "the object is not a Pod".to_string())?;
    if !pod.is_mirror() {
        return Err(format!("it has no {} annotation", shoal_api::CONFIG_MIRROR));
    }
    if pod.spec.node_name.as_deref() != Some(node) {
        return Err("it is not bound to the node".into());
    }
    if let Some(o) =
        (pod.metadata.owner_references.iter()).find(|o| o.kind != "Node" || o.name != node)
    {
        return Err(format!(
            "it names an owner other than its node: {} {}",
            o.kind, o.name
        ));
    }
    if let Some(what) = pod.uses_api_objects() {
        return Err(format!("it uses {what}"));
    }
    Ok(())
}

/// Does a pod use this ConfigMap or Secret (env, envFrom or volume), or PersistentVolumeClaim?
fn pod_uses(pod: &Pod, kind: Kind, name: &str) -> bool {
    let s = &pod.spec;
    let projected = |v: &shoal_api::Volume| {
        v.projected.iter().flat_map(|p| &p.sources).any(|src| {
            let o = match kind {
                Kind::ConfigMap => src.config_map.as_ref(),
                Kind::Secret => src.secret.as_ref(),
                _ => None,
            };
            o.is_some_and(|o| o.name == name)
        })
    };
    let volumes = s.volumes.iter().any(|v| {
        projected(v)
            || match kind {
                Kind::ConfigMap => v.config_map.as_ref().is_some_and(|c| c.name == name),
                Kind::Secret => v.secret.as_ref().is_some_and(|c| c.secret_name == name),
                Kind::PersistentVolumeClaim => v
                    .persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name),
                _ => false,
            }
    });
    let env = s.init_containers.iter().chain(&s.containers).any(|c| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Who may have a module compiled: a node, for a wasm pod bound to it whose image (of
    /// any container, init ones too) names a registry.
    #[test]
    fn a_node_has_compiled_only_what_its_wasm_pods_pull_from_a_registry() {
        let pod = |node: &str, runtime: Option<&str>, init: &str, image: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {
                    "nodeName": node,
                    "runtimeClassName": runtime,
                    "initContainers": [{"name": "i", "image": init}],
                    "containers": [{"name": "c", "image": image}]
                }
            }))
            .expect("a pod")
        };
        for (node, runtime, init, image, allowed) in [
            ("n1", Some("wasm"), "hello:1", "reg.io/app:1", true),
            ("n1", Some("wasm"), "127.0.0.1:5000/init:1", "hello:1", true),
            ("n1", Some("wasm"), "hello:1", "team/hello:1", false),
            ("n2", Some("wasm"), "hello:1", "reg.io/app:1", false),
            ("n1", None, "hello:1", "reg.io/app:1", false),
        ] {
            assert_eq!(
                pulls_wasm_itself(&pod(node, runtime, init, image), "n1"),
                allowed,
                "{node} {runtime:?} {init} {image}"
            );
        }
    }

    #[test]
    fn what_an_init_container_reads_is_the_pods_too() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "image": "x",
                    "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "token", "key": "k"}}}],
                    "envFrom": [{"configMapRef": {"name": "setup"}}]}],
                "containers": [{"name": "c", "image": "x"}]
            }
        }))
        .expect("a pod");
        assert!(pod_uses(&pod, Kind::Secret, "token"));
        assert!(pod_uses(&pod, Kind::ConfigMap, "setup"));
        assert!(!pod_uses(&pod, Kind::Secret, "other"));
    }

    #[test]
    fn what_a_projected_volume_reads_is_the_pods_too() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "x"}],
                "volumes": [{"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "cfg"}}, {"secret": {"name": "sec"}}]}}]
            }
        }))
        .expect("a pod");
        assert!(pod_uses(&pod, Kind::ConfigMap, "cfg"));
        assert!(pod_uses(&pod, Kind::Secret, "sec"));
        assert!(
            !pod_uses(&pod, Kind::Secret, "cfg"),
            "a ConfigMap's name is no Secret's"
        );
    }
}
