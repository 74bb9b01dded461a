//! The DaemonSet reconciler: one pod on every eligible node (nodeSelector, taints, runtime),
//! none elsewhere; a template change replaces pods node by node within maxUnavailable.
//! DaemonSet pods are bound to their node here, not by the scheduler, and tolerate unreachable
//! and not-ready nodes, so a node's daemon stays while the node is away.

use crate::scheduler::{runtime_of_spec, tolerates};
use sha2::{Digest, Sha256};
use shoal_api::{
    DaemonSet, DaemonSetStatus, IntOrString, Node, OwnerReference, Pod, PodSpec, Toleration,
};

pub const HASH_LABEL: &str = "controller-revision-hash";

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create: Vec<String>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    pub status: Option<DaemonSetStatus>,
}

pub fn template_hash(ds: &DaemonSet) -> String {
    hex::encode(&Sha256::digest(serde_json::to_vec(&ds.spec.template).unwrap_or_default())[..5])
}

/// Does this node run the DaemonSet's pod?
pub fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let spec = &ds.spec.template.spec;
    let runtime_ok = node.status.as_ref().is_some_and(|s| {
        s.runtime_handlers
            .iter()
            .any(|h| h.name == runtime_of_spec(spec))
    });
    let selector_ok = spec
        .node_selector
        .iter()
        .all(|(k, v)| node.metadata.labels.get(k) == Some(v));
    let tolerations = daemon_tolerations(spec);
    let taints_ok = node
        .spec
        .taints
        .iter()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .all(|t| tolerates(&tolerations, t));
    runtime_ok && selector_ok && taints_ok
}

/// The pod's tolerations plus the ones every daemon has.
fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut t = spec.tolerations.clone();
    for key in [
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unschedulable",
    ] {
        t.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        });
    }
    t
}

pub fn new_pod(ds: &DaemonSet, node: &str) -> Pod {
    let t = &ds.spec.template;
    let mut pod = Pod {
        metadata: t.metadata.clone(),
        spec: t.spec.clone(),
        ..Default::default()
    };
    pod.metadata.name = String::new();
    pod.metadata.generate_name = format!("{}-", ds.metadata.name);
    pod.metadata.namespace = ds.metadata.namespace.clone();
    pod.metadata
        .labels
        .insert(HASH_LABEL.into(), template_hash(ds));
    pod.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.metadata.name.clone(),
        uid: ds.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    pod.spec.node_name = Some(node.into());
    pod.spec.tolerations = daemon_tolerations(&t.spec);
    pod
}

fn ready(p: &Pod) -> bool {
    super::replicaset::pod_ready(p)
}

/// `owned`: the pods whose controller is this DaemonSet.
pub fn reconcile(
    ds: &DaemonSet,
    nodes: &[Node],
    owned: &[Pod],
    now: chrono::DateTime<chrono::Utc>,
) -> Plan {
    let mut plan = Plan::default();
    let hash = template_hash(ds);
    let live: Vec<&Pod> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let on = |node: &str| -> Vec<&Pod> {
        live.iter()
            .copied()
            .filter(|p| p.spec.node_name.as_deref() == Some(node))
            .collect()
    };
    let mut desired = 0;
    let (mut current, mut updated, mut ready_n, mut misscheduled) = (0, 0, 0, 0);
    let mut available_n = 0;
    let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
    let mut outdated: Vec<&Pod> = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_str();
        let mut pods = on(name);
        if eligible(ds, node) {
            desired += 1;
            if pods.is_empty() {
                plan.create.push(name.to_string());
                continue;
            }
            current += 1;
            // One pod per node: keep the oldest, delete the rest.
            pods.sort_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            });
            plan.delete
                .extend(pods[1..].iter().map(|p| p.metadata.name.clone()));
            let keep = pods[0];
            if ready(keep) {
                ready_n += 1;
            }
            if super::replicaset::pod_available(keep, min_ready, now) {
                available_n += 1;
            }
            if keep.metadata.labels.get(HASH_LABEL) == Some(&hash) {
                updated += 1;
            } else {
                outdated.push(keep);
            }
        } else if !pods.is_empty() {
            misscheduled += 1;
            plan.delete
                .extend(pods.iter().map(|p| p.metadata.name.clone()));
        }
    }
    // Pods on nodes that no longer exist.
    for p in &live {
        let node = p.spec.node_name.as_deref().unwrap_or("");
        if !nodes.iter().any(|n| n.metadata.name == node) {
            plan.delete.push(p.metadata.name.clone());
        }
    }
    // Rolling update: replace outdated pods, no more than maxUnavailable down at once.
    let max_unavailable = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1))
        .scaled_value(desired, false)
        .unwrap_or(1)
        .max(1);
    let on_delete = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    if !on_delete {
        let unavailable = (desired - available_n).max(0);
        let mut room = (max_unavailable - unavailable).max(0);
        outdated.sort_by_key(|p| ready(p)); // not-ready ones cost nothing to replace
        for p in outdated {
            if !ready(p) {
                plan.delete.push(p.metadata.name.clone());
            } else if room > 0 {
                room -= 1;
                plan.delete.push(p.metadata.name.clone());
            }
        }
    }
    plan.delete.sort();
    plan.delete.dedup();
    let status = DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_ready: ready_n,
        number_available: available_n,
        number_misscheduled: misscheduled,
        updated_number_scheduled: updated,
        observed_generation: ds.metadata.generation,
    };
    if ds.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::*;

    fn ds() -> DaemonSet {
        let mut d = DaemonSet::default();
        d.metadata.name = "agent".into();
        d.metadata.uid = "ds-1".into();
        d.spec
            .template
            .metadata
            .labels
            .insert("app".into(), "agent".into());
        d.spec.template.spec.runtime_class_name = Some("wasm".into());
        d.spec.template.spec.containers = vec![Container {
            name: "c".into(),
            image: "x".into(),
            ..Default::default()
        }];
        d
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.metadata.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n.status = Some(NodeStatus {
            runtime_handlers: vec![RuntimeHandler {
                name: "wasm".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        n
    }

    fn pod_on(d: &DaemonSet, name: &str, node: &str, ready: bool) -> Pod {
        let mut p = new_pod(d, node);
        p.metadata.name = name.into();
        p.status = Some(PodStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let mut d = ds();
        d.spec
            .template
            .spec
            .node_selector
            .insert("role".into(), "edge".into());
        let mut tainted = node("c", &[("role", "edge")]);
        tainted.spec.taints.push(Taint {
            key: "dedicated".into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        });
        let mut unreachable = node("d", &[("role", "edge")]);
        unreachable.spec.taints.push(Taint {
            key: "node.kubernetes.io/unreachable".into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: None,
        });
        let nodes = [
            node("a", &[("role", "edge")]),
            node("b", &[("role", "core")]),
            tainted,
            unreachable,
        ];
        let plan = reconcile(&d, &nodes, &[pod_on(&d, "on-b", "b", true)], now());
        assert_eq!(
            plan.create,
            ["a", "d"],
            "daemons tolerate unreachable nodes, not other taints"
        );
        assert_eq!(plan.delete, ["on-b"], "b stopped matching");
        assert_eq!(plan.status.unwrap().desired_number_scheduled, 2);
    }

    #[test]
    fn pods_of_nodes_that_left_and_duplicates_go() {
        let d = ds();
        let mut old = pod_on(&d, "first", "a", true);
        old.metadata.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
        let mut dup = pod_on(&d, "second", "a", true);
        dup.metadata.creation_timestamp = Some("2026-01-01T00:00:05Z".into());
        let plan = reconcile(
            &d,
            &[node("a", &[])],
            &[old, dup, pod_on(&d, "orphaned", "gone", true)],
            now(),
        );
        assert_eq!(plan.delete, ["orphaned", "second"]);
        assert!(plan.create.is_empty());
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    #[test]
    fn a_template_change_replaces_pods_within_max_unavailable() {
        let before = ds();
        let mut after = ds();
        after.spec.template.spec.containers[0].image = "y".into();
        let nodes = [node("a", &[]), node("b", &[]), node("c", &[])];
        let pods = [
            pod_on(&before, "pa", "a", true),
            pod_on(&before, "pb", "b", true),
            pod_on(&before, "pc", "c", true),
        ];
        assert_eq!(
            reconcile(&after, &nodes, &pods, now()).delete.len(),
            1,
            "one at a time by default"
        );
        let mut waiting = pods.clone();
        waiting[0] = pod_on(&after, "pa2", "a", false);
        assert!(
            reconcile(&after, &nodes, &waiting, now()).delete.is_empty(),
            "wait for the new pod to be ready"
        );
    }
}
