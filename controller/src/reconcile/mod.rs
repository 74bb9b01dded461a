//! Workload reconcilers. Each decision is a pure function (`replicaset::reconcile`); this loop
//! feeds them the store's state when anything they watch changes (and every few seconds, so a
//! missed change is never missed for long), applies their plans, and collects the garbage:
//! pods whose controlling owner is gone are deleted (background cascade).

pub mod daemonset;
pub mod deployment;
pub mod job;
pub mod replicaset;

use crate::error::{Error, Result};
use crate::events;
use crate::store::{ObjectKey, Store};
use crate::wake::{typed, Waker};
use shoal_api::{DaemonSet, Deployment, Job, Kind, Node, Object, Pod, ReplicaSet};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RESYNC: Duration = Duration::from_secs(5);

const WATCHED: &[Kind] = &[
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::DaemonSet,
    Kind::Job,
    Kind::Pod,
    Kind::Node,
];

pub async fn run(store: Store, shutdown: CancellationToken) {
    let mut waker = Waker::new(store.clone(), WATCHED, RESYNC);
    while waker.wait(&shutdown).await {
        if let Err(e) = pass(&store).await {
            tracing::warn!(error = %e, "reconcile pass failed");
        }
    }
}

/// What `uid` controls, among `objects`.
fn controlled_by<T: Clone>(
    objects: &[T],
    uid: &str,
    meta: impl Fn(&T) -> &shoal_api::ObjectMeta,
) -> Vec<T> {
    objects
        .iter()
        .filter(|o| meta(o).controller_owner().is_some_and(|c| c.uid == uid))
        .cloned()
        .collect()
}

/// Background cascade: deletes objects whose controlling `owner_kind` no longer exists.
async fn collect_garbage<T>(
    store: &Store,
    kind: Kind,
    objects: &[T],
    owner_kind: &str,
    owners: &HashSet<&str>,
    meta: impl Fn(&T) -> &shoal_api::ObjectMeta,
) -> Result<()> {
    for o in objects {
        let m = meta(o);
        if let Some(c) = m.controller_owner() {
            if c.kind == owner_kind && !owners.contains(c.uid.as_str()) {
                tracing::info!(kind = %kind, name = %m.name, owner = %c.name, "deleting what a deleted {owner_kind} owned");
                tolerate(
                    store
                        .delete(
                            ObjectKey::new(kind, Some(m.namespace_or_default()), &m.name),
                            None,
                        )
                        .await,
                )?;
            }
        }
    }
    Ok(())
}

/// Deletes the named objects of one kind in one namespace.
async fn delete_named(store: &Store, kind: Kind, ns: &str, names: &[String]) -> Result<()> {
    for name in names {
        tolerate(
            store
                .delete(ObjectKey::new(kind, Some(ns), name), None)
                .await,
        )?;
    }
    Ok(())
}

/// Writes an owner's new status, unless it changed meanwhile (the next pass recomputes it).
async fn put_status(store: &Store, obj: Object, revision: u64) -> Result<()> {
    tolerate(store.update_status(obj, Some(revision)).await)
}

/// A write that lost a race is fine: the next pass sees the new state.
fn tolerate<T>(r: Result<T>) -> Result<()> {
    match r {
        Ok(_)
        | Err(Error::Conflict(_))
        | Err(Error::NotFound(_))
        | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn pass(store: &Store) -> Result<()> {
    deployments(store).await?;
    replicasets(store).await?;
    daemonsets(store).await?;
    jobs(store).await?;
    events::expire(store, chrono::Utc::now()).await
}

async fn jobs(store: &Store) -> Result<()> {
    let jobs: Vec<Job> = typed(store.list(Kind::Job, None)?.0);
    let pods: Vec<Pod> = typed(store.list(Kind::Pod, None)?.0);
    let now = chrono::Utc::now();
    for job in &jobs {
        let ns = job.metadata.namespace_or_default();
        let owned: Vec<Pod> = controlled_by(&pods, &job.metadata.uid, |o| &o.metadata);
        let plan = job::reconcile(job, &owned, now);
        for _ in 0..plan.create {
            tolerate(store.create(Object::Pod(job::new_pod(job))).await)?;
        }
        delete_named(store, Kind::Pod, ns, &plan.delete).await?;
        if let Some(status) = plan.status {
            if let Some(c) = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Complete" || c.type_ == "Failed")
            {
                if !job
                    .status
                    .as_ref()
                    .is_some_and(|s| s.conditions.contains(c))
                {
                    tracing::info!(job = %job.metadata.name, condition = %c.type_, reason = ?c.reason, "job finished");
                }
            }
            let mut next = job.clone();
            next.status = Some(status);
            put_status(store, Object::Job(next), job.metadata.revision()).await?;
        }
        if plan.delete_job {
            tracing::info!(job = %job.metadata.name, "deleting a finished job past its ttlSecondsAfterFinished");
            tolerate(
                store
                    .delete(
                        ObjectKey::new(Kind::Job, Some(ns), &job.metadata.name),
                        None,
                    )
                    .await,
            )?;
        }
    }
    let owners: HashSet<&str> = jobs.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::Pod, &pods, "Job", &owners, |o| &o.metadata).await
}

async fn daemonsets(store: &Store) -> Result<()> {
    let sets: Vec<DaemonSet> = typed(store.list(Kind::DaemonSet, None)?.0);
    let nodes: Vec<Node> = typed(store.list(Kind::Node, None)?.0);
    let pods: Vec<Pod> = typed(store.list(Kind::Pod, None)?.0);
    for ds in &sets {
        let ns = ds.metadata.namespace_or_default();
        let owned: Vec<Pod> = controlled_by(&pods, &ds.metadata.uid, |o| &o.metadata);
        let plan = daemonset::reconcile(ds, &nodes, &owned);
        for node in &plan.create {
            tracing::info!(daemonset = %ds.metadata.name, %node, "creating a daemon pod");
            tolerate(
                store
                    .create(Object::Pod(daemonset::new_pod(ds, node)))
                    .await,
            )?;
        }
        delete_named(store, Kind::Pod, ns, &plan.delete).await?;
        if let Some(status) = plan.status {
            let mut next = ds.clone();
            next.status = Some(status);
            put_status(store, Object::DaemonSet(next), ds.metadata.revision()).await?;
        }
    }
    let owners: HashSet<&str> = sets.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::Pod, &pods, "DaemonSet", &owners, |o| {
        &o.metadata
    })
    .await
}

async fn deployments(store: &Store) -> Result<()> {
    let deploys: Vec<Deployment> = typed(store.list(Kind::Deployment, None)?.0);
    let sets: Vec<ReplicaSet> = typed(store.list(Kind::ReplicaSet, None)?.0);
    for d in &deploys {
        let ns = d.metadata.namespace_or_default();
        let owned: Vec<ReplicaSet> = controlled_by(&sets, &d.metadata.uid, |o| &o.metadata);
        let plan = deployment::reconcile(d, &owned, chrono::Utc::now());
        if let Some(rs) = plan.create {
            tracing::info!(deployment = %d.metadata.name, replicaset = %rs.metadata.name, replicas = ?rs.spec.replicas, "new ReplicaSet");
            tolerate(store.create(Object::ReplicaSet(rs)).await)?;
        }
        if let Some((name, rev)) = &plan.revise {
            if let Some(rs) = owned.iter().find(|r| &r.metadata.name == name) {
                let mut next = rs.clone();
                next.metadata
                    .annotations
                    .insert(deployment::REVISION.into(), rev.to_string());
                tolerate(
                    store
                        .update(Object::ReplicaSet(next), Some(rs.metadata.revision()))
                        .await,
                )?;
            }
        }
        for (name, replicas) in &plan.scale {
            if let Some(rs) = owned.iter().find(|r| &r.metadata.name == name) {
                tracing::info!(deployment = %d.metadata.name, replicaset = %name, from = ?rs.spec.replicas, to = replicas, "scaling ReplicaSet");
                let from = rs.spec.replicas.unwrap_or(1);
                let verb = if *replicas > from { "up" } else { "down" };
                let message = format!("Scaled {verb} replica set {name} from {from} to {replicas}");
                let about = events::reference(&Object::Deployment(d.clone()));
                events::record(
                    store,
                    &about,
                    "Normal",
                    "ScalingReplicaSet",
                    &message,
                    "deployment-controller",
                )
                .await;
                let mut next = rs.clone();
                next.spec.replicas = Some(*replicas);
                tolerate(
                    store
                        .update(Object::ReplicaSet(next), Some(rs.metadata.revision()))
                        .await,
                )?;
            }
        }
        delete_named(store, Kind::ReplicaSet, ns, &plan.delete).await?;
        if let Some(status) = plan.status {
            let mut next = d.clone();
            next.status = Some(status);
            put_status(store, Object::Deployment(next), d.metadata.revision()).await?;
        }
    }
    // Garbage: ReplicaSets whose controlling Deployment no longer exists.
    let owners: HashSet<&str> = deploys.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::ReplicaSet, &sets, "Deployment", &owners, |o| {
        &o.metadata
    })
    .await
}

async fn replicasets(store: &Store) -> Result<()> {
    let sets: Vec<ReplicaSet> = typed(store.list(Kind::ReplicaSet, None)?.0);
    let pods: Vec<Pod> = typed(store.list(Kind::Pod, None)?.0);
    let by_name = |ns: &str, name: &str| {
        pods.iter()
            .find(|p| p.metadata.namespace_or_default() == ns && p.metadata.name == name)
    };
    for rs in &sets {
        let ns = rs.metadata.namespace_or_default();
        let plan = replicaset::reconcile(rs, &pods);
        for name in &plan.adopt {
            if let Some(p) = by_name(ns, name) {
                let mut p = p.clone();
                let rev = p.metadata.revision();
                p.metadata
                    .owner_references
                    .push(replicaset::owner_reference(rs));
                tolerate(store.update(Object::Pod(p), Some(rev)).await)?;
            }
        }
        for name in &plan.release {
            if let Some(p) = by_name(ns, name) {
                let mut p = p.clone();
                let rev = p.metadata.revision();
                p.metadata
                    .owner_references
                    .retain(|o| o.uid != rs.metadata.uid);
                tolerate(store.update(Object::Pod(p), Some(rev)).await)?;
            }
        }
        let about = events::reference(&Object::ReplicaSet(rs.clone()));
        for _ in 0..plan.create {
            let pod = replicaset::new_pod(rs, &rs.spec.template);
            if let Ok(c) = store.create(Object::Pod(pod)).await {
                let message = format!("Created pod: {}", c.object.name());
                events::record(
                    store,
                    &about,
                    "Normal",
                    "SuccessfulCreate",
                    &message,
                    "replicaset-controller",
                )
                .await;
            }
        }
        if plan.create > 0 {
            tracing::info!(replicaset = %rs.metadata.name, namespace = ns, count = plan.create, "created pods");
        }
        for name in &plan.delete {
            tolerate(
                store
                    .delete(ObjectKey::new(Kind::Pod, Some(ns), name), None)
                    .await,
            )?;
            let message = format!("Deleted pod: {name}");
            events::record(
                store,
                &about,
                "Normal",
                "SuccessfulDelete",
                &message,
                "replicaset-controller",
            )
            .await;
        }
        if let Some(status) = plan.status {
            let mut next = rs.clone();
            next.status = Some(status);
            put_status(store, Object::ReplicaSet(next), rs.metadata.revision()).await?;
        }
    }
    // Garbage: pods whose controlling ReplicaSet no longer exists.
    let owners: HashSet<&str> = sets.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::Pod, &pods, "ReplicaSet", &owners, |o| {
        &o.metadata
    })
    .await
}
