//! Node lifecycle: a node whose heartbeat stops is marked NotReady once the grace period has
//! passed, so `get nodes` tells the truth and the scheduler stops placing pods there.
//! The decision is a pure function of the node and `now`; the loop around it is thin.
//! (Tainting and evicting the pods of an unreachable node belong to the workload controllers.)

use crate::error::Error;
use crate::store::Store;
use chrono::{DateTime, Utc};
use shoal_api::{Condition, Kind, Node, Object};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Silence after which a node is NotReady (Kubernetes' node-monitor-grace-period).
pub const GRACE_PERIOD: Duration = Duration::from_secs(40);

/// The Ready condition this node should have now, if it must change.
pub fn ready_update(node: &Node, now: DateTime<Utc>, grace: Duration) -> Option<Condition> {
    let ready = node
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if ready.status != "True" {
        return None;
    }
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
        message: Some(format!(
            "the agent stopped posting status {}s ago",
            silent.as_secs()
        )),
        last_heartbeat_time: ready.last_heartbeat_time.clone(),
        last_transition_time: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        last_update_time: None,
    })
}

pub async fn run(store: Store, grace: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5).min(grace / 2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let nodes = match store.list(Kind::Node, None) {
            Ok((nodes, _)) => nodes,
            Err(e) => {
                tracing::warn!(error = %e, "node lifecycle: cannot list nodes");
                continue;
            }
        };
        for obj in nodes {
            let Ok(mut node) = obj.into_typed::<Node>() else {
                continue;
            };
            let Some(condition) = ready_update(&node, Utc::now(), grace) else {
                continue;
            };
            tracing::warn!(node = %node.metadata.name, "node stopped posting status: NotReady");
            let revision = node.metadata.revision();
            if let Some(st) = node.status.as_mut() {
                st.conditions.retain(|c| c.type_ != "Ready");
                st.conditions.push(condition);
            }
            match store
                .update_status(Object::Node(node), Some(revision))
                .await
            {
                Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(error = %e, "node lifecycle: cannot update a node"),
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
}
