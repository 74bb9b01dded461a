//! The scheduler's I/O shell: wakes on pod and node changes (and every second, so nothing
//! missed stays missed), runs [`crate::scheduler::schedule`] for every pending pod, and writes
//! the binding or the reason it stays Pending.

use crate::error::{Error, Result};
use crate::scheduler::schedule;
use crate::store::Store;
use crate::wake::{typed, Waker};
use shoal_api::{Condition, Kind, Node, Object, Pod, PodStatus};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(store: Store, shutdown: CancellationToken) {
    let mut waker = Waker::new(
        store.clone(),
        &[Kind::Pod, Kind::Node],
        Duration::from_secs(1),
    );
    while waker.wait(&shutdown).await {
        if let Err(e) = pass(&store).await {
            tracing::warn!(error = %e, "scheduling pass failed");
        }
    }
}

fn pending(p: &Pod) -> bool {
    p.spec.node_name.is_none()
        && p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
}

fn scheduled_condition(ok: bool, message: Option<String>) -> Condition {
    Condition {
        type_: "PodScheduled".into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok).then(|| "Unschedulable".into()),
        message,
        last_transition_time: Some(crate::store::now()),
        ..Default::default()
    }
}

/// One scheduling pass over every pending pod, oldest first.
pub async fn pass(store: &Store) -> Result<usize> {
    let nodes: Vec<Node> = typed(store.list(Kind::Node, None)?.0);
    let mut pods: Vec<Pod> = typed(store.list(Kind::Pod, None)?.0);
    let mut queue: Vec<usize> = (0..pods.len()).filter(|&i| pending(&pods[i])).collect();
    queue.sort_by(|&a, &b| {
        pods[a]
            .metadata
            .creation_timestamp
            .cmp(&pods[b].metadata.creation_timestamp)
    });
    let mut bound = 0;
    for i in queue {
        let pod = pods[i].clone();
        let revision = pod.metadata.revision();
        match schedule(&pod, &nodes, &pods) {
            Ok(node) => {
                let mut next = pod.clone();
                next.spec.node_name = Some(node.clone());
                let mut status = next.status.take().unwrap_or_default();
                status.phase = Some("Pending".into());
                status.conditions.retain(|c| c.type_ != "PodScheduled");
                status.conditions.push(scheduled_condition(true, None));
                next.status = Some(status);
                match store
                    .update(Object::Pod(next.clone()), Some(revision))
                    .await
                {
                    Ok(_) => {
                        let about = crate::events::reference(&Object::Pod(pod.clone()));
                        let message = format!(
                            "Successfully assigned {}/{} to {node}",
                            pod.metadata.namespace_or_default(),
                            pod.metadata.name
                        );
                        crate::events::record(
                            store,
                            &about,
                            "Normal",
                            "Scheduled",
                            &message,
                            "shoal-scheduler",
                        )
                        .await;
                        tracing::info!(pod = %pod.metadata.name, namespace = %pod.metadata.namespace_or_default(), %node, "scheduled");
                        pods[i] = next;
                        bound += 1;
                    }
                    // Changed or gone meanwhile: the next pass sees it as it is now.
                    Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(reason) => {
                let already = pod.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "PodScheduled" && c.message.as_deref() == Some(reason.as_str())
                    })
                });
                if !already {
                    tracing::info!(pod = %pod.metadata.name, %reason, "unschedulable");
                    let about = crate::events::reference(&Object::Pod(pod.clone()));
                    crate::events::record(
                        store,
                        &about,
                        "Warning",
                        "FailedScheduling",
                        &reason,
                        "shoal-scheduler",
                    )
                    .await;
                    let mut next = pod.clone();
                    next.status = Some(PodStatus {
                        phase: Some("Pending".into()),
                        conditions: vec![scheduled_condition(false, Some(reason))],
                        ..Default::default()
                    });
                    match store.update_status(Object::Pod(next), Some(revision)).await {
                        Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(bound)
}
