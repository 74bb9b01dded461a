//! The Job reconciler: runs pods until `completions` succeed, at most `parallelism` at once;
//! fails the Job past `backoffLimit` failed pods (BackoffLimitExceeded) or past
//! `activeDeadlineSeconds` (DeadlineExceeded), and deletes a finished Job after
//! `ttlSecondsAfterFinished`. A pod on a lost node does not count as active, so it is replaced;
//! when its node comes back, the surplus is resolved as a ReplicaSet's duplicates are, by the
//! `shoal.dev/on-reconnect` policy (the Job's annotation, or its template's).

use chrono::{DateTime, Utc};
use shoal_api::PodPhase;
use shoal_api::{Condition, Job, JobStatus, Pod};

pub use shoal_api::JOB_NAME_LABEL;

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Active pods to stop (the Job failed), by name.
    pub delete: Vec<String>,
    pub status: Option<JobStatus>,
    /// The Job finished longer ago than its TTL.
    pub delete_job: bool,
}

fn phase(p: &Pod) -> PodPhase {
    p.phase().unwrap_or(PodPhase::Pending)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse(t: Option<&str>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn finished(status: &JobStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.is_true())
}

pub fn new_pod(job: &Job) -> Pod {
    job.new_pod()
}

/// Which of the `active` pods go when there are more than `wanted`: with the default policy
/// (keep-original) the pods that ran through a partition stay and the others go, the newest
/// first; with keep-replacement the pods back from a lost node go first.
fn surplus(job: &Job, active: &[&Pod], wanted: usize) -> Vec<String> {
    let keep_replacement = job
        .metadata
        .annotations
        .get(super::replicaset::ON_RECONNECT)
        .or_else(|| (job.spec.template.metadata.annotations).get(super::replicaset::ON_RECONNECT))
        .is_some_and(|v| v == "keep-replacement");
    let mut order: Vec<&Pod> = active.to_vec();
    // Last in the order: kept. Returned pods last under keep-original; then the oldest.
    order.sort_by(|a, b| {
        let returned = |p: &Pod| crate::node_lifecycle::was_lost(p) != keep_replacement;
        (
            returned(a),
            &b.metadata.creation_timestamp,
            &b.metadata.name,
        )
            .cmp(&(
                returned(b),
                &a.metadata.creation_timestamp,
                &a.metadata.name,
            ))
    });
    let extra = active.len().saturating_sub(wanted);
    order
        .into_iter()
        .take(extra)
        .map(|p| p.metadata.name.clone())
        .collect()
}

/// `owned`: the pods whose controller is this Job.
pub fn reconcile(job: &Job, owned: &[Pod], now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();
    let old = job.status.clone().unwrap_or_default();
    let completions = job.spec.completions.unwrap_or(1).max(0);
    let parallelism = job.spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = job.spec.backoff_limit.unwrap_or(6).max(0);
    // Counted from the pods there are, never below what was counted before: a finished pod
    // that is deleted (a drain evicts it, as kubectl's does) still finished. (A pod deleted
    // in the same pass as another one finishes is counted once, not twice: Kubernetes'
    // tracking finalizers would count both.)
    let succeeded = (owned
        .iter()
        .filter(|p| phase(p) == PodPhase::Succeeded)
        .count() as i32)
        .max(old.succeeded);
    // Failed pods, and for OnFailure the restarts of containers that failed in place.
    let restarts: i32 = owned
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter())
        .map(|c| c.restart_count)
        .sum();
    let failed = (owned
        .iter()
        .filter(|p| phase(p) == PodPhase::Failed)
        .count() as i32
        + restarts)
        .max(old.failed);
    // A pod on a lost node is not active: it is replaced (and counted again if it returns).
    // Unless the template pins its pods to that node: a replacement could only go there too.
    let template = &job.spec.template.spec;
    let pinned = template.node_name.is_some()
        || template
            .node_selector
            .contains_key(shoal_api::HOSTNAME_LABEL);
    let active: Vec<&Pod> = owned
        .iter()
        .filter(|p| !phase(p).is_terminal() && p.metadata.deletion_timestamp.is_none())
        .filter(|p| pinned || !crate::node_lifecycle::lost(p))
        .collect();
    let start = parse(old.start_time.as_deref()).unwrap_or(now);
    let mut status = JobStatus {
        active: active.len() as i32,
        succeeded,
        failed,
        start_time: Some(ts(start)),
        completion_time: old.completion_time.clone(),
        conditions: old.conditions.clone(),
    };
    let condition = |ty: &str, reason: &str, message: String| Condition {
        type_: ty.into(),
        status: shoal_api::ConditionStatus::True.as_str().into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(ts(now)),
        ..Default::default()
    };
    if finished(&old) {
        // Done: stop anything still running, and expire after the TTL.
        plan.delete = active.iter().map(|p| p.metadata.name.clone()).collect();
        let done_at = parse(old.completion_time.as_deref()).or_else(|| {
            old.conditions
                .iter()
                .filter_map(|c| parse(c.last_transition_time.as_deref()))
                .max()
        });
        if let (Some(ttl), Some(at)) = (job.spec.ttl_seconds_after_finished, done_at) {
            plan.delete_job = now >= at + chrono::Duration::seconds(i64::from(ttl));
        }
    } else if succeeded >= completions {
        status.conditions.push(condition(
            "Complete",
            "Completed",
            format!("{succeeded} of {completions} completions succeeded"),
        ));
        status.completion_time = Some(ts(now));
    } else if failed > backoff_limit {
        status.conditions.push(condition(
            "Failed",
            "BackoffLimitExceeded",
            format!("Job has reached the specified backoff limit ({backoff_limit})"),
        ));
        plan.delete = active.iter().map(|p| p.metadata.name.clone()).collect();
    } else if job
        .spec
        .active_deadline_seconds
        .is_some_and(|d| now >= start + chrono::Duration::seconds(d))
    {
        status.conditions.push(condition(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline".into(),
        ));
        plan.delete = active.iter().map(|p| p.metadata.name.clone()).collect();
    } else {
        let wanted = parallelism.min(completions - succeeded).max(0) as usize;
        plan.create = wanted.saturating_sub(active.len());
        // More running than wanted: a lost pod came back beside its replacement (or
        // parallelism went down), and the surplus goes, as Kubernetes' Job controller does.
        plan.delete = surplus(job, &active, wanted);
    }
    if plan.create > 0 || !plan.delete.is_empty() {
        status.active = (active.len() + plan.create - plan.delete.len().min(active.len())) as i32;
    }
    if job.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use shoal_api::*;

    fn job(completions: i32, parallelism: i32, backoff: i32) -> Job {
        let mut j = Job::default();
        j.metadata.name = "batch".into();
        j.metadata.uid = "job-1".into();
        j.spec.completions = Some(completions);
        j.spec.parallelism = Some(parallelism);
        j.spec.backoff_limit = Some(backoff);
        j
    }

    fn pods(phases: &[&str]) -> Vec<Pod> {
        phases
            .iter()
            .enumerate()
            .map(|(i, ph)| {
                let mut p = new_pod(&job(1, 1, 1));
                p.metadata.name = format!("p{i}");
                p.status = Some(PodStatus {
                    phase: Some(ph.to_string()),
                    ..Default::default()
                });
                p
            })
            .collect()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0).unwrap()
    }

    #[test]
    fn runs_at_most_parallelism_until_completions() {
        assert_eq!(reconcile(&job(5, 2, 6), &[], now()).create, 2);
        assert_eq!(
            reconcile(
                &job(5, 2, 6),
                &pods(&["Running", "Succeeded", "Succeeded"]),
                now()
            )
            .create,
            1
        );
        assert_eq!(
            reconcile(&job(5, 2, 6), &pods(&["Succeeded"; 4]), now()).create,
            1,
            "only one completion left"
        );
        let done = reconcile(&job(5, 2, 6), &pods(&["Succeeded"; 5]), now());
        let st = done.status.unwrap();
        assert_eq!(done.create, 0);
        assert_eq!(
            (st.conditions[0].type_.as_str(), st.succeeded),
            ("Complete", 5)
        );
        assert!(st.completion_time.is_some());
    }

    /// A pod on a lost node is replaced; when it comes back beside its replacement, one goes
    /// by the on-reconnect policy.
    #[test]
    fn a_lost_pod_is_replaced_and_the_duplicate_resolved_on_return() {
        let j = job(1, 1, 6);
        let mut original = pods(&["Running"]).remove(0);
        original.metadata.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
        let lost = crate::node_lifecycle::mark_lost(&original, "n", now());
        assert_eq!(reconcile(&j, std::slice::from_ref(&lost), now()).create, 1);
        // Pinned to that node, it is not: a replacement could only go to the same lost node.
        let mut pinned = j.clone();
        pinned.spec.template.spec.node_name = Some("n".into());
        assert_eq!(
            reconcile(&pinned, std::slice::from_ref(&lost), now()).create,
            0
        );

        // Back: the lost-at annotation stays, the lost condition is gone with the new status.
        let mut back = lost.clone();
        back.status = original.status.clone();
        let mut replacement = pods(&["Running"]).remove(0);
        replacement.metadata.name = "p1".into();
        replacement.metadata.creation_timestamp = Some("2026-01-01T00:05:00Z".into());
        let both = [back.clone(), replacement.clone()];
        let plan = reconcile(&j, &both, now());
        assert_eq!(
            (plan.create, plan.delete.clone()),
            (0, vec!["p1".to_string()])
        );
        let mut keep_new = j.clone();
        keep_new.metadata.annotations.insert(
            crate::reconcile::replicaset::ON_RECONNECT.into(),
            "keep-replacement".into(),
        );
        assert_eq!(reconcile(&keep_new, &both, now()).delete, ["p0"]);
    }

    /// Finished pods that are deleted (a drain) still count: a running Job does not run them
    /// again, and a finished one keeps its counts.
    #[test]
    fn deleted_finished_pods_still_count() {
        let mut running = job(5, 2, 6);
        running.status = Some(JobStatus {
            succeeded: 3,
            failed: 1,
            ..Default::default()
        });
        let plan = reconcile(&running, &pods(&["Running"]), now());
        assert_eq!(plan.create, 1, "two completions left, one running");
        let st = plan.status.unwrap();
        assert_eq!((st.succeeded, st.failed), (3, 1));

        let mut done = job(2, 2, 6);
        done.status = reconcile(&done, &pods(&["Succeeded"; 2]), now()).status;
        let after = reconcile(&done, &[], now());
        assert_eq!(after.create, 0);
        assert_eq!(after.status, None, "nothing changes: {:?}", after.status);
    }

    #[test]
    fn fails_past_the_backoff_limit_and_stops_what_runs() {
        let plan = reconcile(
            &job(5, 2, 2),
            &pods(&["Failed", "Failed", "Failed", "Running"]),
            now(),
        );
        let st = plan.status.unwrap();
        assert_eq!(
            st.conditions[0].reason.as_deref(),
            Some("BackoffLimitExceeded")
        );
        assert_eq!(plan.delete, ["p3"]);
        assert_eq!(plan.create, 0);
        let within = reconcile(&job(5, 2, 2), &pods(&["Failed", "Failed"]), now());
        assert_eq!(within.create, 2, "two failures are within a limit of 2");
    }

    #[test]
    fn fails_past_its_deadline_and_expires_after_its_ttl() {
        let mut j = job(1, 1, 6);
        j.spec.active_deadline_seconds = Some(60);
        j.status = Some(JobStatus {
            start_time: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        let plan = reconcile(&j, &pods(&["Running"]), now());
        assert_eq!(
            plan.status.as_ref().unwrap().conditions[0]
                .reason
                .as_deref(),
            Some("DeadlineExceeded")
        );
        let mut done = job(1, 1, 6);
        done.spec.ttl_seconds_after_finished = Some(100);
        done.status = Some(JobStatus {
            completion_time: Some("2026-01-01T00:08:00Z".into()),
            conditions: vec![Condition {
                type_: "Complete".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(
            reconcile(&done, &pods(&["Succeeded"]), now()).delete_job,
            "finished 120 s ago, ttl 100 s"
        );
        done.spec.ttl_seconds_after_finished = Some(300);
        assert!(!reconcile(&done, &pods(&["Succeeded"]), now()).delete_job);
    }
}
