//! Node lifecycle: a node whose heartbeat stops is marked NotReady once the grace period has
//! passed, so `get nodes` tells the truth and the scheduler stops placing pods there.
//! The decision is a pure function of the node and `now`; the loop around it is thin.
//! A NotReady node is tainted `node.kubernetes.io/unreachable:NoExecute`; its pods are evicted
//! once they have tolerated that for their `tolerationSeconds` (or the cluster's default, which
//! may be never), so their controllers run them elsewhere.
//!
//! An evicted pod is marked lost, not deleted: its node may only be cut off, and its agent keeps
//! running it. The mark (the `DisruptionTarget` condition, reason `NodeLost`) takes it out of
//! its ReplicaSet's count, so a replacement starts elsewhere; when the agent comes back and
//! reports the pod, the mark is gone and the ReplicaSet resolves the duplicates by its
//! [`OnReconnect`](crate::reconcile::replicaset::OnReconnect) policy. The `shoal.dev/lost-at`
//! annotation remembers which pods were lost until then.

use crate::error::Error;
use crate::store::Store;
use chrono::{DateTime, Utc};
use shoal_api::{Condition, Kind, Node, Object, Pod, Taint};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Silence after which a node is NotReady (Kubernetes' node-monitor-grace-period).
pub const GRACE_PERIOD: Duration = Duration::from_secs(40);

/// Silence after which a node whose agent said it was restarting (an upgrade, a `systemctl
/// restart`) is NotReady: long enough for a slow device to start again.
pub const RESTART_GRACE: Duration = Duration::from_secs(5 * 60);

/// The Ready condition this node should have now, if it must change.
pub fn ready_update(node: &Node, now: DateTime<Utc>, grace: Duration) -> Option<Condition> {
    let ready = node
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if !ready.is_true() {
        return None;
    }
    // An agent that said it restarts, leaving its pods running, is given longer to return.
    let restarting = ready.reason.as_deref() == Some(shoal_api::AGENT_RESTARTING);
    let grace = if restarting {
        grace.max(RESTART_GRACE)
    } else {
        grace
    };
    let beat = ready
        .last_heartbeat_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    let silent = (now - beat).to_std().unwrap_or_default();
    if silent <= grace {
        return None;
    }
    Some(Condition {
        type_: "Ready".into(),
        status: "Unknown".into(),
        reason: Some("NodeStatusUnknown".into()),
        message: Some(if restarting {
            format!(
                "the agent said it was restarting {}s ago and has not come back",
                silent.as_secs()
            )
        } else {
            format!("the agent stopped posting status {}s ago", silent.as_secs())
        }),
        last_heartbeat_time: ready.last_heartbeat_time.clone(),
        last_transition_time: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        last_update_time: None,
    })
}

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// When a pod was marked lost with its node; cleared once its ReplicaSet has settled it.
pub const LOST_AT: &str = "shoal.dev/lost-at";
/// The condition a lost pod carries until its agent reports it again.
pub const DISRUPTION: &str = "DisruptionTarget";
pub const NODE_LOST: &str = "NodeLost";

/// Whether `pod` is marked lost with its node (and not reported since).
pub fn lost(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == DISRUPTION && c.is_true() && c.reason.as_deref() == Some(NODE_LOST))
    })
}

/// Whether `pod` was marked lost at some point and has not been settled since.
pub fn was_lost(pod: &Pod) -> bool {
    pod.metadata.annotations.contains_key(LOST_AT)
}

/// `pod` marked lost at `now`: not ready, its DisruptionTarget condition set, and annotated.
pub fn mark_lost(pod: &Pod, node: &str, now: DateTime<Utc>) -> Pod {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut p = pod.clone();
    p.metadata.annotations.insert(LOST_AT.into(), at.clone());
    let status = p.status.get_or_insert_with(Default::default);
    status.reason = Some(NODE_LOST.into());
    status.message = Some(format!("node {node} is unreachable"));
    status
        .conditions
        .retain(|c| c.type_ != DISRUPTION && c.type_ != "Ready" && c.type_ != "ContainersReady");
    let not_ready = |ty: &str| Condition {
        type_: ty.into(),
        status: "False".into(),
        reason: Some(NODE_LOST.into()),
        message: Some(format!("node {node} is unreachable")),
        last_transition_time: Some(at.clone()),
        ..Default::default()
    };
    status.conditions.push(not_ready("ContainersReady"));
    status.conditions.push(not_ready("Ready"));
    status.conditions.push(Condition {
        status: shoal_api::ConditionStatus::True.as_str().into(),
        ..not_ready(DISRUPTION)
    });
    p
}

fn ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.is_true())
    })
}

/// The node's taints as they should be: unreachable while not Ready, without it once Ready.
pub fn taints_update(node: &Node, now: DateTime<Utc>) -> Option<Vec<Taint>> {
    let has = node.spec.taints.iter().any(|t| t.key == UNREACHABLE);
    let known = node
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready"));
    match (known && !ready(node), has) {
        (true, false) => {
            let mut t = node.spec.taints.clone();
            t.push(Taint {
                key: UNREACHABLE.into(),
                value: None,
                effect: "NoExecute".into(),
                time_added: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            });
            Some(t)
        }
        (false, true) => Some(
            node.spec
                .taints
                .iter()
                .filter(|t| t.key != UNREACHABLE)
                .cloned()
                .collect(),
        ),
        _ => None,
    }
}

/// Pods on an unreachable node whose toleration has run out: a pod's own toleration of the
/// taint (no seconds: forever), else the cluster default (`None`: never evict).
pub fn evictions<'a>(
    node: &Node,
    pods: &'a [Pod],
    now: DateTime<Utc>,
    default: Option<Duration>,
) -> Vec<&'a Pod> {
    let Some(since) = node
        .spec
        .taints
        .iter()
        .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        .and_then(|t| t.time_added.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
    else {
        return vec![];
    };
    let away = (now - since).to_std().unwrap_or_default();
    pods.iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node.metadata.name.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !lost(p))
        .filter(|p| {
            let own = p.spec.tolerations.iter().find(|t| {
                (t.key.as_deref() == Some(UNREACHABLE)
                    || (t.key.is_none() && t.operator.as_deref() == Some("Exists")))
                    && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
            });
            let limit = match own {
                Some(t) => t
                    .toleration_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64)),
                None => default,
            };
            limit.is_some_and(|l| away > l)
        })
        .collect()
}

/// `pod` as not ready because its node is, if it was ready: what Kubernetes' node controller
/// does to every pod of a node that stops posting status, so Services stop sending it traffic
/// at once (a DaemonSet's pods, which tolerate the node being away, included). Its agent's
/// next report, when it comes back, says again what holds.
pub fn mark_not_ready(pod: &Pod, node: &str, now: DateTime<Utc>) -> Option<Pod> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.is_true());
    if !ready || pod.is_terminal() {
        return None;
    }
    let mut p = pod.clone();
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for c in p.status.iter_mut().flat_map(|s| s.conditions.iter_mut()) {
        if c.type_ == "Ready" {
            c.status = "False".into();
            c.reason = Some("NodeNotReady".into());
            c.message = Some(format!("node {node} is not ready"));
            c.last_transition_time = Some(at.clone());
        }
    }
    Some(p)
}

/// Since when `node` has been tainted unreachable, if it is.
fn unreachable_since(node: &Node) -> Option<&str> {
    node.spec
        .taints
        .iter()
        .find(|t| t.key == UNREACHABLE)?
        .time_added
        .as_deref()
}

async fn node_event(store: &Store, node: &Node, type_: &str, reason: &str, message: &str) {
    let about = crate::events::reference(&Object::Node(node.clone()));
    crate::events::record(store, &about, type_, reason, message, "node-controller").await;
}

/// The pods, read only when some node is unreachable long enough to evict from.
async fn pods_if_evicting(store: &Store, nodes: &[Node]) -> Vec<Pod> {
    let unreachable = nodes.iter().any(|n| {
        n.spec
            .taints
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
    });
    if unreachable {
        store.list_typed(Kind::Pod, None).await.unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// Marks every ready pod of `node` not ready ([`mark_not_ready`]).
async fn mark_pods_not_ready(store: &Store, node: &str) {
    let pods: Vec<Pod> = store.list_typed(Kind::Pod, None).await.unwrap_or_default();
    let now = Utc::now();
    let on_node = pods
        .iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node));
    for pod in on_node {
        let Some(marked) = mark_not_ready(pod, node, now) else {
            continue;
        };
        match store
            .update_status(Object::Pod(marked), Some(pod.metadata.revision()))
            .await
        {
            Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(error = %shoal_transport::report(&e), "node lifecycle: cannot mark a pod not ready")
            }
        }
    }
}

pub async fn run(
    store: Store,
    grace: Duration,
    default_toleration: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5).min(grace / 2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let nodes: Vec<Node> = match store.list_typed(Kind::Node, None).await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(error = %shoal_transport::report(&e), "node lifecycle: cannot list nodes");
                continue;
            }
        };
        let pods = pods_if_evicting(&store, &nodes).await;
        for node in &nodes {
            if let Some(taints) = taints_update(node, Utc::now()) {
                if let Some(since) = unreachable_since(node) {
                    let message = format!(
                        "Node {} is reachable again, after {} NotReady",
                        node.metadata.name,
                        shoal_api::table::age(Some(since), Utc::now())
                    );
                    node_event(&store, node, "Normal", "NodeReconnected", &message).await;
                }
                let mut next = node.clone();
                next.spec.taints = taints;
                let revision = node.metadata.revision();
                match store.update(Object::Node(next), Some(revision)).await {
                    Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %shoal_transport::report(&e), "node lifecycle: cannot taint a node")
                    }
                }
                continue;
            }
            let evicted = evictions(node, &pods, Utc::now(), default_toleration);
            // The node as stored now: an agent that came back since the list keeps its pods.
            let still_away = !evicted.is_empty()
                && store
                    .get(&crate::store::ObjectKey::new(
                        Kind::Node,
                        None,
                        &node.metadata.name,
                    ))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|o| o.into_typed::<Node>().ok())
                    .is_some_and(|n| !ready(&n));
            for pod in evicted.into_iter().filter(|_| still_away) {
                tracing::warn!(pod = %pod.metadata.name, node = %node.metadata.name, "a pod's node is lost: marking it, so its controller replaces it");
                let about = crate::events::reference(&Object::Pod(pod.clone()));
                let message = format!(
                    "Marking Pod {}/{} lost: node {} is unreachable; its controller runs a \
                     replacement, and the duplicates are resolved if the node comes back",
                    pod.metadata.namespace_or_default(),
                    pod.metadata.name,
                    node.metadata.name
                );
                crate::events::record(
                    &store,
                    &about,
                    "Warning",
                    "TaintManagerEviction",
                    &message,
                    "node-controller",
                )
                .await;
                let marked = mark_lost(pod, &node.metadata.name, Utc::now());
                // One write: an update replaces the status with the rest.
                let marked = Object::Pod(marked);
                match store.update(marked, Some(pod.metadata.revision())).await {
                    Ok(_) | Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %shoal_transport::report(&e), "node lifecycle: cannot mark a pod lost")
                    }
                }
            }
        }
        for mut node in nodes {
            let Some(condition) = ready_update(&node, Utc::now(), grace) else {
                continue;
            };
            tracing::warn!(node = %node.metadata.name, "node stopped posting status: NotReady");
            let message = format!(
                "Node {} is disconnected: {}",
                node.metadata.name,
                condition.message.as_deref().unwrap_or_default()
            );
            node_event(&store, &node, "Warning", "NodeNotReady", &message).await;
            let revision = node.metadata.revision();
            if let Some(st) = node.status.as_mut() {
                st.conditions.retain(|c| c.type_ != "Ready");
                st.conditions.push(condition);
            }
            let name = node.metadata.name.clone();
            match store
                .update_status(Object::Node(node), Some(revision))
                .await
            {
                Ok(_) => mark_pods_not_ready(&store, &name).await,
                Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %shoal_transport::report(&e), "node lifecycle: cannot update a node")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use shoal_api::NodeStatus;

    fn node(status: &str, beat: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: beat.map(str::to_string),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, toleration: Option<Option<i64>>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.spec.node_name = Some("n".into());
        if let Some(seconds) = toleration {
            p.spec.tolerations.push(shoal_api::Toleration {
                key: Some(UNREACHABLE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: seconds,
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn a_ready_pod_of_a_node_that_went_silent_is_marked_not_ready_once() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap();
        let mut p = pod("web", None);
        assert_eq!(
            mark_not_ready(&p, "n", now),
            None,
            "no status: nothing to mark"
        );
        p.status = Some(shoal_api::PodStatus {
            phase: Some("Running".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let marked = mark_not_ready(&p, "n", now).expect("marked");
        let ready = &marked.status.as_ref().unwrap().conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("NodeNotReady"))
        );
        assert_eq!(mark_not_ready(&marked, "n", now), None, "once");
        let mut done = p.clone();
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        assert_eq!(mark_not_ready(&done, "n", now), None);
    }

    #[test]
    fn unreachable_nodes_are_tainted_and_their_pods_evicted_when_toleration_runs_out() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0).unwrap();
        let mut n = node("Unknown", Some("2026-01-01T00:00:00Z"));
        n.metadata.name = "n".into();
        let taints = taints_update(&n, now).expect("tainted");
        assert_eq!(
            (taints[0].key.as_str(), taints[0].effect.as_str()),
            (UNREACHABLE, "NoExecute")
        );
        n.spec.taints = taints;
        assert_eq!(taints_update(&n, now), None, "tainted once");
        let later = now + chrono::Duration::seconds(120);
        let pods = [
            pod("default", None),
            pod("short", Some(Some(60))),
            pod("long", Some(Some(600))),
            pod("forever", Some(None)),
        ];
        let names = |v: Vec<&Pod>| {
            v.iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(evictions(&n, &pods, later, Some(Duration::from_secs(300)))),
            ["short"]
        );
        assert_eq!(
            names(evictions(&n, &pods, later, Some(Duration::from_secs(30)))),
            ["default", "short"]
        );
        assert_eq!(
            names(evictions(&n, &pods, later, None)),
            ["short"],
            "a default of never keeps pods without their own toleration"
        );
        let mut back = node("True", Some("2026-01-01T00:12:00Z"));
        back.spec.taints = n.spec.taints.clone();
        assert_eq!(taints_update(&back, later), Some(vec![]));
    }

    #[test]
    fn a_lost_pod_is_marked_not_deleted_and_not_marked_twice() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0).unwrap();
        let mut n = node("Unknown", Some("2026-01-01T00:00:00Z"));
        n.metadata.name = "n".into();
        n.spec.taints = taints_update(&n, now).expect("tainted");
        let original = pod("web-1", None);
        assert!(!lost(&original) && !was_lost(&original));
        let marked = mark_lost(&original, "n", now);
        assert!(lost(&marked) && was_lost(&marked));
        let st = marked.status.as_ref().unwrap();
        assert_eq!(st.reason.as_deref(), Some(NODE_LOST));
        assert!(st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False"));
        let later = now + chrono::Duration::seconds(600);
        let both = [original, marked];
        let again = evictions(&n, &both, later, Some(Duration::from_secs(1)));
        assert_eq!(again.len(), 1, "the marked pod is not marked again");
        assert!(!lost(again[0]));
        // The agent reports the pod again: a fresh status, without the mark.
        let mut reported = both[1].clone();
        reported.status = Some(Default::default());
        assert!(!lost(&reported) && was_lost(&reported));
    }

    #[test]
    fn table_of_heartbeats() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap();
        let g = GRACE_PERIOD;
        assert_eq!(
            ready_update(&node("True", Some("2026-01-01T00:00:30Z")), now, g),
            None,
            "30 s: still Ready"
        );
        assert_eq!(
            ready_update(&node("True", Some("2026-01-01T00:00:20Z")), now, g),
            None,
            "exactly the grace period"
        );
        let c = ready_update(&node("True", Some("2026-01-01T00:00:10Z")), now, g)
            .expect("50 s: NotReady");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("Unknown", Some("NodeStatusUnknown"))
        );
        assert_eq!(
            ready_update(&node("Unknown", Some("2026-01-01T00:00:00Z")), now, g),
            None,
            "already marked"
        );
        assert_eq!(
            ready_update(&node("True", None), now, g),
            None,
            "no heartbeat recorded"
        );
        assert_eq!(ready_update(&Node::default(), now, g), None);
    }

    #[test]
    fn an_agent_that_said_it_restarts_is_given_longer() {
        let restarting = |beat: &str| {
            let mut n = node("True", Some(beat));
            if let Some(st) = n.status.as_mut() {
                st.conditions[0].reason = Some(shoal_api::AGENT_RESTARTING.into());
            }
            n
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0).unwrap();
        let g = GRACE_PERIOD;
        assert_eq!(
            ready_update(&restarting("2026-01-01T00:08:00Z"), now, g),
            None,
            "2 minutes into a restart: still Ready"
        );
        let c = ready_update(&restarting("2026-01-01T00:04:00Z"), now, g).expect("6 minutes: lost");
        assert!(
            c.message
                .as_deref()
                .is_some_and(|m| m.contains("restarting")),
            "{c:?}"
        );
    }
}
