//! The Job reconciler: runs pods until `completions` succeed, at most `parallelism` at once;
//! fails the Job past `backoffLimit` failed pods (BackoffLimitExceeded) or past
//! `activeDeadlineSeconds` (DeadlineExceeded), and deletes a finished Job after
//! `ttlSecondsAfterFinished`.

use chrono::{DateTime, Utc};
use shoal_api::PodPhase;
use shoal_api::{Condition, Job, JobStatus, OwnerReference, Pod};

pub const JOB_NAME_LABEL: &str = "job-name";

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
    let t = &job.spec.template;
    let mut pod = Pod {
        metadata: t.metadata.clone(),
        spec: t.spec.clone(),
        ..Default::default()
    };
    pod.metadata.name = String::new();
    pod.metadata.generate_name = format!("{}-", job.metadata.name);
    pod.metadata.namespace = job.metadata.namespace.clone();
    pod.metadata
        .labels
        .insert(JOB_NAME_LABEL.into(), job.metadata.name.clone());
    pod.metadata.owner_references = vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone(),
        uid: job.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    pod
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
    let active: Vec<&Pod> = owned
        .iter()
        .filter(|p| !phase(p).is_terminal() && p.metadata.deletion_timestamp.is_none())
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
