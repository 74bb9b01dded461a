//! The scheduler's I/O shell: wakes on pod and node changes (and every few seconds, so
//! nothing missed stays missed), runs [`crate::scheduler::Snapshot::schedule`] for every pending pod, and writes
//! the binding or the reason it stays Pending.

use crate::artifacts::Artifacts;
use crate::batch::slow_start;
use crate::error::{Error, Result};
use crate::reconcile::volumes;
use crate::scheduler::Snapshot;
use crate::store::{Op, Store};
use crate::wake::Waker;
use shoal_api::{Condition, Kind, Node, Object, PersistentVolumeClaim, Pod, PodStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A claim made after its pod (or a volume made by hand) lets a pending pod go.
const WATCHED: &[Kind] = &[
    Kind::Pod,
    Kind::Node,
    Kind::PersistentVolumeClaim,
    Kind::PersistentVolume,
];

/// A pass runs on every pod or node change; this often with none (each pass reads every pod).
const RESYNC: Duration = Duration::from_secs(5);

pub async fn run(store: Store, artifacts: Arc<Artifacts>, shutdown: CancellationToken) {
    let mut waker = Waker::new(store.clone(), WATCHED, RESYNC);
    while waker.wait(&shutdown).await {
        if let Err(e) = pass(&store, Some(&artifacts)).await {
            tracing::warn!(error = %shoal_transport::report(&e), "scheduling pass failed");
        }
    }
}

fn pending(p: &Pod) -> bool {
    p.spec.node_name.is_none() && p.metadata.deletion_timestamp.is_none() && !p.is_terminal()
}

fn scheduled_condition(ok: bool, message: Option<String>) -> Condition {
    Condition {
        type_: "PodScheduled".into(),
        status: shoal_api::ConditionStatus::from(ok).as_str().into(),
        reason: (!ok).then(|| "Unschedulable".into()),
        message,
        last_transition_time: Some(crate::store::now()),
        ..Default::default()
    }
}

/// What a pass decided for one pending pod: its node, with the volumes provisioned for it
/// there (written with the binding, in one transaction), or why it stays Pending.
enum Decision<'a> {
    Bind(&'a Pod, String, Vec<Op>),
    Unschedulable(&'a Pod, String),
}

/// The claims, volumes and classes of a pass, for the pods that mount claims.
struct Storage {
    claims: Vec<PersistentVolumeClaim>,
    classes: Vec<shoal_api::StorageClass>,
}

impl Storage {
    async fn read(store: &Store) -> Result<(Storage, Vec<shoal_api::PersistentVolume>)> {
        let claims = store.list_typed(Kind::PersistentVolumeClaim, None).await?;
        let volumes = store.list_typed(Kind::PersistentVolume, None).await?;
        let classes = store.list_typed(Kind::StorageClass, None).await?;
        Ok((Storage { claims, classes }, volumes))
    }

    /// The writes that provision the claims `names` of `pod` on `node` (local-path claims
    /// whose first pod this is). One that cannot be made here is left to the binder, which
    /// makes it on the pod's node once the pod is bound.
    fn provision(&self, pod: &Pod, names: &[String], node: &Node) -> Vec<Op> {
        let ns = pod.metadata.namespace_or_default();
        let mut ops = Vec::new();
        for name in names {
            let Some(claim) = self
                .claims
                .iter()
                .find(|c| c.metadata.namespace_or_default() == ns && &c.metadata.name == name)
            else {
                continue;
            };
            let Some(class) = volumes::class_of(claim, &self.classes) else {
                continue;
            };
            match volumes::provision(claim, class, node) {
                Ok((volume, claim)) => ops.extend(volumes::bind_ops(volume, claim, true)),
                Err(why) => {
                    tracing::warn!(claim = %name, namespace = %ns, %why, "cannot provision a volume")
                }
            }
        }
        ops
    }
}

/// One scheduling pass over every pending pod, oldest first. Decisions are made one after
/// another against a [`Snapshot`] that counts each binding as it is made; the writes then go
/// to the store together, so group commit carries them in a few transactions.
pub async fn pass(store: &Store, artifacts: Option<&Artifacts>) -> Result<usize> {
    let nodes: Vec<Node> = store.list_typed(Kind::Node, None).await?;
    let pods: Vec<Pod> = store.list_typed(Kind::Pod, None).await?;
    let mut queue: Vec<&Pod> = pods.iter().filter(|p| pending(p)).collect();
    // The platforms of the container images the pending pods use, when pushed here.
    let mut images: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(artifacts) = artifacts {
        for c in queue
            .iter()
            .filter(|p| crate::scheduler::runtime_of(p) == "runc")
            .flat_map(|p| p.spec.init_containers.iter().chain(&p.spec.containers))
        {
            if !images.contains_key(&c.image) {
                if let Some(has) = artifacts.platforms(&c.image) {
                    images.insert(c.image.clone(), has);
                }
            }
        }
    }
    let (storage, volumes) = Storage::read(store).await?;
    let policies: Vec<shoal_api::NetworkPolicy> = if queue.iter().any(|p| p.uses_node_network()) {
        store.list_typed(Kind::NetworkPolicy, None).await?
    } else {
        Vec::new()
    };
    let claims =
        crate::scheduler::volumes::Claims::new(&storage.claims, &volumes, &storage.classes);
    let mut snapshot = Snapshot::new(&nodes, &pods)
        .with_images(images)
        .with_claims(claims);
    queue.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    let mut decisions = Vec::new();
    for pod in queue {
        // A pod on its node's network that a NetworkPolicy isolates could not be held to it.
        let refused = shoal_api::policy::node_network_refusal(&policies, pod);
        match refused.map_or_else(|| snapshot.schedule(pod), Err) {
            Ok(node) => {
                let provisioned = snapshot.assume(pod, &node);
                let ops = match nodes.iter().find(|n| n.metadata.name == node) {
                    Some(n) if !provisioned.is_empty() => storage.provision(pod, &provisioned, n),
                    _ => Vec::new(),
                };
                decisions.push(Decision::Bind(pod, node, ops));
            }
            Err(reason) => {
                let already = pod.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "PodScheduled" && c.message.as_deref() == Some(reason.as_str())
                    })
                });
                if !already {
                    decisions.push(Decision::Unschedulable(pod, reason));
                }
            }
        }
    }
    let binds = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Bind(..)))
        .count();
    slow_start(decisions, |d| write(store, d)).await?;
    Ok(binds)
}

async fn write(store: &Store, decision: Decision<'_>) -> Result<()> {
    match decision {
        Decision::Bind(pod, node, ops) => bind(store, pod, node, ops).await,
        Decision::Unschedulable(pod, reason) => unschedulable(store, pod, reason).await,
    }
}

async fn bind(store: &Store, pod: &Pod, node: String, provision: Vec<Op>) -> Result<()> {
    let revision = pod.metadata.revision();
    let mut next = pod.clone();
    next.spec.node_name = Some(node.clone());
    let mut status = next.status.take().unwrap_or_default();
    status.phase = Some("Pending".into());
    status.conditions.retain(|c| c.type_ != "PodScheduled");
    status.conditions.push(scheduled_condition(true, None));
    next.status = Some(status);
    let mut ops = vec![Op::Update {
        object: Object::Pod(next),
        expected: Some(revision),
    }];
    ops.extend(provision);
    match store.write(ops).await {
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
            tracing::debug!(pod = %pod.metadata.name, namespace = %pod.metadata.namespace_or_default(), %node, "scheduled");
            Ok(())
        }
        // Changed or gone meanwhile: the next pass sees it as it is now.
        Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn unschedulable(store: &Store, pod: &Pod, reason: String) -> Result<()> {
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
    let revision = pod.metadata.revision();
    let mut next = pod.clone();
    next.status = Some(PodStatus {
        phase: Some("Pending".into()),
        conditions: vec![scheduled_condition(false, Some(reason))],
        ..Default::default()
    });
    match store.update_status(Object::Pod(next), Some(revision)).await {
        Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
