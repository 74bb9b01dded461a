//! Workload reconcilers. Each decision is a pure function (`replicaset::reconcile`); this loop
//! feeds them the store's state when anything they watch changes (and every few seconds, so a
//! missed change is never missed for long), applies their plans, and collects the garbage:
//! pods whose controlling owner is gone are deleted (background cascade). Claims and volumes
//! are bound here too ([`volumes`]).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod foreground;
pub mod job;
mod policy;
pub mod replicaset;
pub mod volumes;

use crate::batch::slow_start;
use crate::error::{Error, Result};
use crate::events;
use crate::store::{ObjectKey, Op, Store};
use crate::wake::Waker;
use shoal_api::{CronJob, DaemonSet, Deployment, Job, Kind, Node, Object, Pod, ReplicaSet};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RESYNC: Duration = Duration::from_secs(5);

/// How often Events past their time to live are deleted.
const EXPIRE_EVENTS: Duration = Duration::from_secs(60);

const WATCHED: &[Kind] = &[
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::DaemonSet,
    Kind::Job,
    Kind::CronJob,
    Kind::Pod,
    Kind::Node,
    Kind::Service,
    Kind::PersistentVolumeClaim,
    Kind::PersistentVolume,
    Kind::NetworkPolicy,
    Kind::Namespace,
];

/// `links`: the nodes with a live session, whose pinned CronJobs are started here (those of the
/// others run on their node meanwhile, [`cronjob::reconcile`]).
/// `service_range`: the Services' range, which NetworkPolicy leaves to the nodes' proxies.
pub async fn run(
    store: Store,
    links: crate::server::NodeLinks,
    service_range: String,
    shutdown: CancellationToken,
) {
    let mut waker = Waker::new(store.clone(), WATCHED, RESYNC);
    let mut expired = std::time::Instant::now();
    while waker.wait(&shutdown).await {
        if let Err(e) = pass(&store, &links, &service_range).await {
            tracing::warn!(error = %shoal_transport::report(&e), "reconcile pass failed");
        }
        if expired.elapsed() >= EXPIRE_EVENTS {
            expired = std::time::Instant::now();
            if let Err(e) = events::expire(&store, chrono::Utc::now()).await {
                tracing::warn!(error = %shoal_transport::report(&e), "expiring events failed");
            }
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
    let orphans: Vec<&shoal_api::ObjectMeta> = objects
        .iter()
        .map(&meta)
        .filter(|m| {
            m.controller_owner()
                .is_some_and(|c| c.kind == owner_kind && !owners.contains(c.uid.as_str()))
        })
        .collect();
    if !orphans.is_empty() {
        tracing::info!(kind = %kind, count = orphans.len(), "deleting what a deleted {owner_kind} owned");
    }
    slow_start(orphans, |m| async move {
        tolerate(
            store
                .delete(
                    ObjectKey::new(kind, Some(m.namespace_or_default()), &m.name),
                    None,
                )
                .await,
        )
    })
    .await?;
    Ok(())
}

/// Deletes the named objects of one kind in one namespace.
async fn delete_named(store: &Store, kind: Kind, ns: &str, names: &[String]) -> Result<()> {
    slow_start(names.iter().collect(), |name| async move {
        tolerate(
            store
                .delete(ObjectKey::new(kind, Some(ns), name), None)
                .await,
        )
    })
    .await?;
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

/// One pass over every workload. Deployments go first, so the ReplicaSets they scale are
/// reconciled in the same pass; the pods are read once, after that.
pub async fn pass(
    store: &Store,
    links: &crate::server::NodeLinks,
    service_range: &str,
) -> Result<()> {
    foreground(store).await?;
    deployments(store).await?;
    let pods: Vec<Pod> = store.list_typed(Kind::Pod, None).await?;
    lost_with_their_node(store, &pods).await?;
    replicasets(store, &pods).await?;
    daemonsets(store, &pods).await?;
    cronjobs(store, links).await?;
    jobs(store, &pods).await?;
    volumes::reconcile(store, &pods).await?;
    policy::reconcile(store, &pods, service_range).await?;
    services(store, &pods).await
}

/// Pods marked lost whose node has since been deleted (`shoal delete node` of a node that is not
/// coming back) go too: nothing will ever report them again. Their replacements run already.
async fn lost_with_their_node(store: &Store, pods: &[Pod]) -> Result<()> {
    let lost: Vec<&Pod> = pods
        .iter()
        .filter(|p| crate::node_lifecycle::lost(p))
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let nodes: HashSet<String> = store
        .list_typed::<Node>(Kind::Node, None)
        .await?
        .into_iter()
        .map(|n| n.metadata.name)
        .collect();
    for p in lost {
        let Some(node) = p.spec.node_name.as_deref().filter(|n| !nodes.contains(*n)) else {
            continue;
        };
        let message = format!("Deleting a pod lost with node {node}, which has been deleted");
        let about = events::reference(&Object::Pod(p.clone()));
        events::record(store, &about, "Normal", "PodGC", &message, "pod-gc").await;
        let key = ObjectKey::new(
            Kind::Pod,
            Some(p.metadata.namespace_or_default()),
            &p.metadata.name,
        );
        tolerate(store.delete(key, None).await)?;
    }
    Ok(())
}

/// Endpoints for every Service with a selector (and none for a Service that is gone), and
/// the status of LoadBalancer Services.
async fn services(store: &Store, pods: &[Pod]) -> Result<()> {
    use shoal_api::{Endpoints, Service};
    let services: Vec<Service> = store.list_typed(Kind::Service, None).await?;
    let stored: Vec<Endpoints> = store.list_typed(Kind::Endpoints, None).await?;
    let key = |m: &shoal_api::ObjectMeta| (m.namespace_or_default().to_string(), m.name.clone());
    let by_key: std::collections::HashMap<_, &Endpoints> =
        stored.iter().map(|e| (key(&e.metadata), e)).collect();
    let nodes: Vec<Node> = store.list_typed(Kind::Node, None).await?;
    for svc in &services {
        if let Some(status) = endpoints::status_change(svc, &nodes) {
            let mut next = svc.clone();
            next.status = status;
            put_status(store, Object::Service(next), svc.metadata.revision()).await?;
        }
        if svc.spec.selector.is_empty() {
            continue;
        }
        let want = endpoints::desired(svc, pods);
        match by_key.get(&key(&svc.metadata)) {
            Some(have) if endpoints::same(have, &want) => {}
            Some(have) => {
                let mut next = want;
                next.metadata = shoal_api::ObjectMeta {
                    labels: next.metadata.labels,
                    ..have.metadata.clone()
                };
                let revision = have.metadata.revision();
                tolerate(store.update(Object::Endpoints(next), Some(revision)).await)?;
            }
            None => tolerate(store.create(Object::Endpoints(want)).await)?,
        }
    }
    let wanted: HashSet<_> = services.iter().map(|s| key(&s.metadata)).collect();
    for gone in stored
        .iter()
        .filter(|e| !wanted.contains(&key(&e.metadata)))
    {
        let m = &gone.metadata;
        let k = ObjectKey::new(Kind::Endpoints, Some(m.namespace_or_default()), &m.name);
        tolerate(store.delete(k, None).await)?;
    }
    Ok(())
}

/// Whether an owner is on its way out (foreground cascade): its controller leaves it alone.
fn deleting(meta: &shoal_api::ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Foreground cascade: an owner marked for deletion goes once nothing it owns is left. Until
/// then its dependents are deleted, the ones that own things themselves (a Deployment's
/// ReplicaSets) in the foreground too, so the Deployment outlives its pods.
async fn foreground(store: &Store) -> Result<()> {
    let mut owners: Vec<Object> = Vec::new();
    for kind in [
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
    ] {
        owners.extend(
            store
                .list(kind, None)
                .await?
                .0
                .into_iter()
                .filter(|o| deleting(o.metadata())),
        );
    }
    if owners.is_empty() {
        return Ok(());
    }
    let mut dependents: Vec<Object> = store.list(Kind::ReplicaSet, None).await?.0;
    dependents.extend(store.list(Kind::Job, None).await?.0);
    dependents.extend(store.list(Kind::Pod, None).await?.0);
    for owner in &owners {
        let plan = foreground::plan(owner, &dependents);
        if plan.delete_owner {
            let m = owner.metadata();
            tracing::info!(kind = %owner.kind(), name = %m.name, "dependents gone; deleting");
            tolerate(store.delete(ObjectKey::of(owner), Some(m.revision())).await)?;
            continue;
        }
        slow_start(plan.mark, |d| async move {
            let key = ObjectKey::of(d);
            let policy = shoal_api::PropagationPolicy::Foreground;
            let op = Op::DeleteWith {
                key,
                policy,
                grace: None,
            };
            tolerate(store.write(vec![op]).await)
        })
        .await?;
        slow_start(plan.delete, |d| async move {
            tolerate(store.delete(ObjectKey::of(d), None).await)
        })
        .await?;
    }
    Ok(())
}

async fn jobs(store: &Store, pods: &[Pod]) -> Result<()> {
    let jobs: Vec<Job> = store.list_typed(Kind::Job, None).await?;
    let now = chrono::Utc::now();
    for job in jobs.iter().filter(|j| !deleting(&j.metadata)) {
        let ns = job.metadata.namespace_or_default();
        let owned: Vec<Pod> = controlled_by(pods, &job.metadata.uid, |o| &o.metadata);
        let plan = job::reconcile(job, &owned, now);
        let pods = (0..plan.create).map(|_| job::new_pod(job)).collect();
        slow_start(pods, |p| async {
            tolerate(store.create(Object::Pod(p)).await)
        })
        .await?;
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
    collect_garbage(store, Kind::Pod, pods, "Job", &owners, |o| &o.metadata).await
}

/// Each CronJob's Jobs: made on schedule, replaced or skipped by its concurrency policy, and
/// the finished ones past its history limits deleted; Jobs of a deleted CronJob go too.
async fn cronjobs(store: &Store, links: &crate::server::NodeLinks) -> Result<()> {
    let cronjobs: Vec<CronJob> = store.list_typed(Kind::CronJob, None).await?;
    let jobs: Vec<Job> = store.list_typed(Kind::Job, None).await?;
    let nodes: Vec<Node> = if cronjobs.iter().any(|c| c.pinned_node().is_some()) {
        store.list_typed(Kind::Node, None).await?
    } else {
        Vec::new()
    };
    let now = chrono::Utc::now();
    for cj in cronjobs.iter().filter(|c| !deleting(&c.metadata)) {
        let ns = cj.metadata.namespace_or_default();
        let owned: Vec<Job> = controlled_by(&jobs, &cj.metadata.uid, |o| &o.metadata);
        // A pinned CronJob whose node is out of touch (no session here: also just after
        // this controller started) is run by that node meanwhile.
        let held = cj.pinned_node().is_some_and(|n| {
            nodes.iter().any(|node| node.metadata.name == n) && !links.connected(n)
        });
        let plan = cronjob::reconcile(cj, &owned, now, held);
        if let Some((type_, reason, message)) = &plan.event {
            let about = events::reference(&Object::CronJob(cj.clone()));
            events::record(store, &about, type_, reason, message, "cronjob-controller").await;
        }
        delete_named(store, Kind::Job, ns, &plan.delete).await?;
        if let Some(job) = plan.create {
            tracing::info!(cronjob = %cj.metadata.name, job = %job.metadata.name, "starting a scheduled job");
            tolerate(store.create(Object::Job(job)).await)?;
        }
        if let Some(status) = plan.status {
            let mut next = cj.clone();
            next.status = Some(status);
            put_status(store, Object::CronJob(next), cj.metadata.revision()).await?;
        }
    }
    let owners: HashSet<&str> = cronjobs.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::Job, &jobs, "CronJob", &owners, |o| &o.metadata).await
}

async fn daemonsets(store: &Store, pods: &[Pod]) -> Result<()> {
    let sets: Vec<DaemonSet> = store.list_typed(Kind::DaemonSet, None).await?;
    let nodes: Vec<Node> = if sets.is_empty() {
        Vec::new()
    } else {
        store.list_typed(Kind::Node, None).await?
    };
    for ds in sets.iter().filter(|s| !deleting(&s.metadata)) {
        let ns = ds.metadata.namespace_or_default();
        let owned: Vec<Pod> = controlled_by(pods, &ds.metadata.uid, |o| &o.metadata);
        let plan = daemonset::reconcile(ds, &nodes, &owned, chrono::Utc::now());
        slow_start(plan.create, |node| async move {
            tracing::info!(daemonset = %ds.metadata.name, %node, "creating a daemon pod");
            tolerate(
                store
                    .create(Object::Pod(daemonset::new_pod(ds, &node)))
                    .await,
            )
        })
        .await?;
        delete_named(store, Kind::Pod, ns, &plan.delete).await?;
        if let Some(status) = plan.status {
            let mut next = ds.clone();
            next.status = Some(status);
            put_status(store, Object::DaemonSet(next), ds.metadata.revision()).await?;
        }
    }
    let owners: HashSet<&str> = sets.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::Pod, pods, "DaemonSet", &owners, |o| {
        &o.metadata
    })
    .await
}

async fn deployments(store: &Store) -> Result<()> {
    let deploys: Vec<Deployment> = store.list_typed(Kind::Deployment, None).await?;
    let sets: Vec<ReplicaSet> = store.list_typed(Kind::ReplicaSet, None).await?;
    for d in deploys.iter().filter(|d| !deleting(&d.metadata)) {
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
        // One write per set, carrying its new replicas and minReadySeconds together.
        let mut touched: Vec<&str> = plan.scale.iter().map(|(n, _)| n.as_str()).collect();
        touched.extend(plan.min_ready.iter().map(String::as_str));
        touched.sort_unstable();
        touched.dedup();
        for name in touched {
            let Some(rs) = owned.iter().find(|r| r.metadata.name == name) else {
                continue;
            };
            let mut next = rs.clone();
            next.spec.min_ready_seconds = d.spec.min_ready_seconds;
            if let Some((_, replicas)) = plan.scale.iter().find(|(n, _)| n == name) {
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
                next.spec.replicas = Some(*replicas);
            }
            tolerate(
                store
                    .update(Object::ReplicaSet(next), Some(rs.metadata.revision()))
                    .await,
            )?;
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

/// Writes each of the pods `names` (in `ns`) as `edit` changes it, against the revision read: a
/// pod changed meanwhile waits for the next pass.
async fn edit_pods(
    store: &Store,
    pods: &[Pod],
    ns: &str,
    names: &[String],
    edit: impl Fn(&mut Pod),
) -> Result<()> {
    for name in names {
        let found = pods
            .iter()
            .find(|p| p.metadata.namespace_or_default() == ns && p.metadata.name == *name);
        if let Some(p) = found {
            let mut p = p.clone();
            let rev = p.metadata.revision();
            edit(&mut p);
            tolerate(store.update(Object::Pod(p), Some(rev)).await)?;
        }
    }
    Ok(())
}

async fn replicasets(store: &Store, pods: &[Pod]) -> Result<()> {
    let sets: Vec<ReplicaSet> = store.list_typed(Kind::ReplicaSet, None).await?;
    let now = chrono::Utc::now();
    for rs in sets.iter().filter(|s| !deleting(&s.metadata)) {
        let ns = rs.metadata.namespace_or_default();
        let plan = replicaset::reconcile(rs, pods, now);
        edit_pods(store, pods, ns, &plan.adopt, |p| {
            p.metadata
                .owner_references
                .push(replicaset::owner_reference(rs))
        })
        .await?;
        edit_pods(store, pods, ns, &plan.release, |p| {
            p.metadata
                .owner_references
                .retain(|o| o.uid != rs.metadata.uid)
        })
        .await?;
        let about = &events::reference(&Object::ReplicaSet(rs.clone()));
        let fresh = (0..plan.create)
            .map(|_| replicaset::new_pod(rs, &rs.spec.template))
            .collect();
        let created = slow_start(fresh, |pod| async move {
            let c = store.create(Object::Pod(pod)).await?;
            let message = format!("Created pod: {}", c.object.name());
            events::record(
                store,
                about,
                "Normal",
                "SuccessfulCreate",
                &message,
                "replicaset-controller",
            )
            .await;
            Ok(())
        })
        .await;
        if plan.create > 0 {
            tracing::info!(replicaset = %rs.metadata.name, namespace = ns, count = plan.create, "created pods");
        }
        if let Err(e) = created {
            // The status written below still counts what exists; the next pass tries again.
            tracing::warn!(replicaset = %rs.metadata.name, error = %shoal_transport::report(&e), "creating pods failed");
        }
        let duplicates = plan.duplicates;
        slow_start(plan.delete, |name| async move {
            tolerate(
                store
                    .delete(ObjectKey::new(Kind::Pod, Some(ns), &name), None)
                    .await,
            )?;
            let message = match duplicates {
                Some(policy) => format!(
                    "Deleted pod: {name}: a duplicate once a lost node came back ({})",
                    policy.as_str()
                ),
                None => format!("Deleted pod: {name}"),
            };
            events::record(
                store,
                about,
                "Normal",
                "SuccessfulDelete",
                &message,
                "replicaset-controller",
            )
            .await;
            Ok(())
        })
        .await?;
        edit_pods(store, pods, ns, &plan.settle, |p| {
            p.metadata
                .annotations
                .remove(crate::node_lifecycle::LOST_AT);
        })
        .await?;
        if let Some(status) = plan.status {
            let mut next = rs.clone();
            next.status = Some(status);
            put_status(store, Object::ReplicaSet(next), rs.metadata.revision()).await?;
        }
    }
    // Garbage: pods whose controlling ReplicaSet no longer exists.
    let owners: HashSet<&str> = sets.iter().map(|o| o.metadata.uid.as_str()).collect();
    collect_garbage(store, Kind::Pod, pods, "ReplicaSet", &owners, |o| {
        &o.metadata
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[tokio::test]
    async fn pods_lost_with_a_node_that_was_deleted_go_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let mut ns = shoal_api::Namespace::default();
        ns.metadata.name = "default".into();
        tolerate(store.create(Object::Namespace(ns)).await).unwrap();
        let mut here = Node::default();
        here.metadata.name = "here".into();
        store.create(Object::Node(here)).await.unwrap();
        let now = chrono::Utc::now();
        for (name, node, lost) in [
            ("lost-with-gone", "gone", true),
            ("lost-with-here", "here", true),
            ("running-on-gone", "gone", false),
        ] {
            let mut p = Pod::default();
            p.metadata.name = name.into();
            p.metadata.namespace = Some("default".into());
            p.spec.node_name = Some(node.into());
            p.spec.containers.push(shoal_api::Container {
                name: "c".into(),
                image: "x".into(),
                ..Default::default()
            });
            let created = store.create(Object::Pod(p)).await.unwrap();
            if lost {
                let stored: Pod = created.object.into_typed().unwrap();
                let marked = crate::node_lifecycle::mark_lost(&stored, node, now);
                store
                    .update(Object::Pod(marked), Some(stored.metadata.revision()))
                    .await
                    .unwrap();
            }
        }
        let pods: Vec<Pod> = store.list_typed(Kind::Pod, None).await.unwrap();
        lost_with_their_node(&store, &pods).await.unwrap();
        let mut left: Vec<String> = store
            .list_typed::<Pod>(Kind::Pod, None)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.metadata.name)
            .collect();
        left.sort();
        assert_eq!(left, ["lost-with-here", "running-on-gone"]);
    }
}
