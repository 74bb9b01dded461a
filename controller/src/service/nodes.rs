//! Nodes as they write about themselves (registration, heartbeats, their pods' status, within
//! NodeRestriction), and as admins label them.

use super::{encode, Service};
use crate::error::{Error, Result};
use crate::store::ObjectKey;
use shoal_api::validate::validate;
use shoal_api::{Kind, Object, ObjectMeta, Pod};
use shoal_transport::proto::Response;
use shoal_transport::Identity;

/// Runtime handlers a node may report (wasm and runc today).
const MAX_RUNTIME_HANDLERS: usize = 4;

impl Service {
    /// Creates or refreshes a node's own Node: its labels and status come from the node; its
    /// spec (cordon, taints) stays what the admins made it.
    pub(super) async fn put_node(&self, me: &str, bytes: &[u8]) -> Result<Response> {
        let obj = self.admit_node(me, bytes)?;
        let key = ObjectKey::of(&obj);
        // A node that needs a pod range takes it under the allocation lock, so two nodes
        // registering at once never get the same one; a heartbeat takes no lock.
        let ranged = (self.store.get(&key).await?)
            .and_then(|o| o.into_typed::<shoal_api::Node>().ok())
            .is_some_and(|n| n.spec.pod_cidr.is_some());
        let _allocating = match ranged {
            true => None,
            false => Some(self.allocating.lock().await),
        };
        for _ in 0..5 {
            let result = match self.store.get(&key).await? {
                None => {
                    let mut node: shoal_api::Node = obj.clone().into_typed()?;
                    // A new Node's spec is the admins' to set, not the node's.
                    node.spec = Default::default();
                    node.spec.pod_cidr = self.free_pod_cidr().await?;
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
                        next.spec.pod_cidr = self.free_pod_cidr().await?;
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
            let stored = self.store.get(&key).await?;
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
        let mut obj = decode_body(bytes, "the Node")?;
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
        // Each wasm target a node reports is one the controller compiles every push for.
        if let Object::Node(n) = &obj {
            let handlers = n.status.as_ref().map_or(0, |s| s.runtime_handlers.len());
            if handlers > MAX_RUNTIME_HANDLERS {
                return Err(Error::Invalid(format!(
                    "node {me:?} reports {handlers} runtime handlers; at most {MAX_RUNTIME_HANDLERS}"
                )));
            }
        }
        Ok(obj)
    }

    /// A pod range no node holds yet; `None` (pods get no address) when the range is full.
    pub(super) async fn free_pod_cidr(&self) -> Result<Option<String>> {
        let nodes: Vec<shoal_api::Node> = self.store.list_typed(Kind::Node, None).await?;
        let cidr = self
            .cluster_cidr
            .next_pod_cidr(nodes.iter().filter_map(|n| n.spec.pod_cidr.as_deref()));
        if cidr.is_none() {
            tracing::warn!("every pod range of the cluster is taken; a new node gets none");
        }
        Ok(cidr)
    }

    /// A pod's status from its node (or an admin); the spec is untouched.
    pub(super) async fn update_status(&self, who: &Identity, bytes: &[u8]) -> Result<Response> {
        let mut obj = decode_body(bytes, "the pod status")?;
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
            .get(&key)
            .await?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if let Identity::Node(me) = who {
            let pod: Pod = stored.into_typed()?;
            if pod.spec.node_name.as_deref() != Some(me.as_str()) {
                return Err(Error::Forbidden(format!(
                    "{key} is not bound to node {me:?}"
                )));
            }
            // A static pod's status goes on its mirror, never on a pod of the same name.
            let reported: Option<Pod> = obj.clone().into_typed().ok();
            if reported.is_some_and(|r| r.is_static()) && !pod.is_mirror() {
                return Err(Error::Forbidden(format!(
                    "{key} is not the mirror pod of node {me:?}'s static pod"
                )));
            }
        }
        self.store.update_status(obj, None).await?;
        Ok(Response::Ok)
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

/// An object a peer sent: one that does not decode is the sender's mistake (Invalid, with
/// what was wrong), not the controller's.
fn decode_body(bytes: &[u8], what: &str) -> Result<Object> {
    Object::from_json(bytes)
        .map_err(|e| Error::Invalid(format!("{what} sent does not decode: {e}")))
}
