//! CronJobs pinned to a node (`CronJob::pinned_node`), run by that node while it is cut off
//! from the controller: while connected, the node asks for them with their times ahead
//! ([`Request::PinnedCronJobs`], read in each CronJob's time zone here, so a node needs no cron
//! parser or zone data); on its return it reports each run it started meanwhile
//! ([`Request::ReportCronRun`]) before anything else, and the controller makes that run's Job
//! and pod then. The Job is named after the scheduled time, so a run the controller started
//! for the same time before it saw the node gone is the same Job: the node's pod, which ran,
//! joins it, and the controller's, which never started, goes.
//!
//! [`Request::PinnedCronJobs`]: shoal_transport::proto::Request::PinnedCronJobs
//! [`Request::ReportCronRun`]: shoal_transport::proto::Request::ReportCronRun

use super::{bad_request, forbidden, json_answer, Service};
use crate::error::Error;
use crate::reconcile::cronjob;
use crate::store::{ObjectKey, Op};
use chrono::{DateTime, TimeZone, Utc};
use shoal_api::{
    CronJob, CronRunReport, Job, Kind, Object, PinnedCronJob, Pod, PropagationPolicy,
    RUN_BY_NODE_ANNOTATION,
};
use shoal_transport::proto::{Response, WireError};

type Answer = std::result::Result<Response, WireError>;

/// How far in the future a reported run's time may be: the node's clock may run ahead.
const CLOCK_SKEW_SECS: i64 = 60;

/// Whether the pod ran: one of its containers is or was running.
fn started(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.container_statuses.iter().any(|c| {
            let ran = |st: &Option<shoal_api::ContainerState>| {
                st.as_ref()
                    .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            };
            ran(&c.state) || ran(&c.last_state)
        })
    })
}

/// A uid as the node makes one: 36 characters of hex digits and dashes.
fn uid_shaped(uid: &str) -> bool {
    uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn is_controller(job: &Job, owner_uid: &str) -> bool {
    job.metadata
        .owner_references
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid)
}

/// The time a run was reported for, if it may have run then: a time of the CronJob's
/// schedule, since it was made, in the time a node can have run it (its times reach a week
/// past its last word with the controller), and not ahead of `now`.
fn reported_time(
    cj: &CronJob,
    key: &ObjectKey,
    scheduled: i64,
    now: DateTime<Utc>,
) -> std::result::Result<DateTime<Utc>, WireError> {
    let s = cronjob::schedule(cj).map_err(|(path, why)| bad_request(format!("{path}: {why}")))?;
    let earliest = cj
        .metadata
        .creation_timestamp
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc) - chrono::Duration::seconds(CLOCK_SKEW_SECS))
        .unwrap_or(now)
        .max(now - chrono::Duration::seconds(2 * shoal_api::PINNED_HORIZON_SECS));
    Utc.timestamp_opt(scheduled, 0)
        .single()
        .filter(|t| *t <= now + chrono::Duration::seconds(CLOCK_SKEW_SECS) && *t >= earliest)
        .filter(|_| cronjob::fires_at(&s, scheduled))
        .ok_or_else(|| {
            bad_request(format!(
                "{key} is not scheduled at {scheduled} (seconds since the epoch), or not in the \
                 two weeks before now since it was made"
            ))
        })
}

impl Service {
    /// The CronJobs pinned to `node`, each with its times for the days ahead.
    pub(super) async fn pinned_cronjobs(&self, node: &str) -> Answer {
        let cronjobs: Vec<CronJob> = self.store.list_typed(Kind::CronJob, None).await?;
        let now = Utc::now();
        let pinned: Vec<PinnedCronJob> = cronjobs
            .into_iter()
            .filter(|c| c.pinned_node() == Some(node) && c.metadata.deletion_timestamp.is_none())
            .filter_map(|cronjob| {
                let s = cronjob::schedule(&cronjob).ok()?;
                let times = cronjob::pinned_times(&s, now);
                Some(PinnedCronJob { cronjob, times })
            })
            .collect();
        json_answer(&pinned)
    }

    /// A run `node` started while cut off: its Job and pod made (the pod as the template
    /// says, under the name, uid and status the node ran it with), the CronJob's last
    /// schedule time moved on, and the Jobs it replaced deleted. Reporting it again answers
    /// the pod as stored.
    pub(super) async fn report_cron_run(&self, node: &str, report: &[u8]) -> Answer {
        let r: CronRunReport = serde_json::from_slice(report)
            .map_err(|e| bad_request(format!("a CronJob run report: {e}")))?;
        let ns = r.namespace.as_str();
        let key = ObjectKey::new(Kind::CronJob, Some(ns), &r.cronjob);
        let cj = match self.store.get(&key).await? {
            Some(Object::CronJob(cj)) if cj.metadata.uid == r.cronjob_uid => cj,
            _ => {
                return Err(Error::NotFound(format!(
                    "{key} (the one node {node:?} ran, uid {})",
                    r.cronjob_uid
                ))
                .into())
            }
        };
        if cj.pinned_node() != Some(node) {
            return Err(forbidden(format!(
                "node {node:?} may only report runs of CronJobs pinned to it; {key} is not"
            )));
        }
        let at = reported_time(&cj, &key, r.scheduled, Utc::now())?;
        let job_name = cj.job_name(at);
        let (pod_name, pod_uid) = (&r.pod.metadata.name, &r.pod.metadata.uid);
        let suffix = pod_name.strip_prefix(&format!("{job_name}-"));
        if !uid_shaped(pod_uid)
            || !suffix.is_some_and(|s| !s.is_empty() && s.len() <= 10)
            || pod_name.len() > 253
        {
            return Err(bad_request(format!(
                "the pod of a run of {job_name} is named {job_name}-SUFFIX with a uid of 36 \
                 characters; got {pod_name:?}, uid {pod_uid:?}"
            )));
        }
        // Reported before, and the answer lost on the way.
        let pod_key = ObjectKey::new(Kind::Pod, Some(ns), pod_name);
        if let Some(stored) = self.store.get(&pod_key).await? {
            if stored.metadata().uid == *pod_uid {
                return Ok(Response::Object(super::encode(&stored)?));
            }
            return Err(Error::AlreadyExists(pod_key.to_string()).into());
        }
        // A uid is one object's: a node may not take another pod's.
        let taken = self
            .store
            .list(Kind::Pod, None)
            .await?
            .0
            .iter()
            .any(|p| p.metadata().uid == *pod_uid);
        if taken {
            return Err(Error::AlreadyExists(format!("a pod with uid {pod_uid}")).into());
        }
        let mut ops = Vec::new();
        let job_key = ObjectKey::new(Kind::Job, Some(ns), &job_name);
        let (job, made) = match self.store.get(&job_key).await? {
            // Started here too before the node was seen gone: the node's run is the one.
            Some(Object::Job(job)) if is_controller(&job, &cj.metadata.uid) => (job, false),
            Some(_) => return Err(Error::AlreadyExists(job_key.to_string()).into()),
            None => {
                let mut job = cj.job_for(at);
                job.metadata.uid = uuid::Uuid::new_v4().to_string();
                job.metadata
                    .annotations
                    .insert(RUN_BY_NODE_ANNOTATION.into(), node.to_string());
                ops.push(Op::CreateWithUid(Object::Job(job.clone())));
                (job, true)
            }
        };
        if !made {
            ops.extend(self.unstarted_pods(&job, node).await?);
        }
        // The pod as the template says (a node does not choose what its pods may use), under
        // the name and uid it ran with, bound to the node, with its status.
        let mut pod = job.new_pod();
        pod.metadata.name = pod_name.clone();
        pod.metadata.uid = pod_uid.clone();
        pod.spec.node_name = Some(node.to_string());
        pod.status = r.pod.status.clone();
        ops.push(Op::CreateWithUid(Object::Pod(pod)));
        ops.extend(self.replaced_jobs(&cj, &r.replaced, &job_name).await?);
        let mut next = cj.clone();
        let status = next.status.get_or_insert_with(Default::default);
        let scheduled = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if status
            .last_schedule_time
            .as_deref()
            .is_none_or(|t| t < scheduled.as_str())
        {
            status.last_schedule_time = Some(scheduled);
            ops.push(Op::UpdateStatus {
                object: Object::CronJob(next),
                expected: None,
            });
        }
        let changes = self.store.write(ops).await?;
        let stored = changes
            .into_iter()
            .map(|c| c.object)
            .find(|o| o.kind() == Kind::Pod && o.metadata().uid == *pod_uid)
            .ok_or_else(|| Error::Internal("the reported pod was not written".into()))?;
        let message = if made {
            format!("Created job {job_name}: node {node} ran it while cut off from the controller")
        } else {
            format!("Job {job_name} was run by node {node} while cut off from the controller; its pod that never started was deleted")
        };
        tracing::info!(cronjob = %cj.metadata.name, job = %job_name, %node, "a run its node started while cut off");
        let about = crate::events::reference(&Object::CronJob(cj));
        crate::events::record(
            &self.store,
            &about,
            "Normal",
            "SuccessfulCreate",
            &message,
            "cronjob-controller",
        )
        .await;
        Ok(Response::Object(super::encode(&stored)?))
    }

    /// The deletions of `job`'s pods bound to `node` that never started: its run is the
    /// node's, reported.
    async fn unstarted_pods(&self, job: &Job, node: &str) -> crate::error::Result<Vec<Op>> {
        let ns = job.metadata.namespace_or_default();
        let pods: Vec<Pod> = self.store.list_typed(Kind::Pod, Some(ns)).await?;
        Ok(pods
            .iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .any(|o| o.uid == job.metadata.uid)
                    && p.spec.node_name.as_deref() == Some(node)
                    && !started(p)
            })
            .map(|p| Op::Delete {
                key: ObjectKey::new(Kind::Pod, Some(ns), &p.metadata.name),
                expected: None,
            })
            .collect())
    }

    /// The deletions of the Jobs of `cj` a run replaced (`concurrencyPolicy: Replace`), with
    /// their pods, which the node ended already.
    async fn replaced_jobs(
        &self,
        cj: &CronJob,
        names: &[String],
        job_name: &str,
    ) -> crate::error::Result<Vec<Op>> {
        let ns = cj.metadata.namespace_or_default();
        let mut ops = Vec::new();
        for name in names.iter().filter(|n| *n != job_name) {
            let replaced = ObjectKey::new(Kind::Job, Some(ns), name);
            if let Some(Object::Job(j)) = self.store.get(&replaced).await? {
                if is_controller(&j, &cj.metadata.uid) {
                    let pods: Vec<Pod> = self.store.list_typed(Kind::Pod, Some(ns)).await?;
                    ops.extend(
                        pods.iter()
                            .filter(|p| {
                                p.metadata
                                    .owner_references
                                    .iter()
                                    .any(|o| o.uid == j.metadata.uid)
                            })
                            .map(|p| Op::Delete {
                                key: ObjectKey::new(Kind::Pod, Some(ns), &p.metadata.name),
                                expected: None,
                            }),
                    );
                    ops.push(Op::DeleteWith {
                        key: replaced,
                        policy: PropagationPolicy::Background,
                        grace: None,
                    });
                }
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests;
