//! CronJob (`batch/v1`): a Job made on a schedule.

use super::{Job, JobSpec, ObjectReference, Pod, HOSTNAME_LABEL};
use crate::meta::{ObjectMeta, OwnerReference};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The label a Job's pods carry: the Job's name.
pub const JOB_NAME_LABEL: &str = "job-name";

/// The annotation on a Job its CronJob's node ran while cut off from the controller: the
/// node's name. The controller made the Job from the node's report on its return.
pub const RUN_BY_NODE_ANNOTATION: &str = "shoal.dev/run-by-node";

/// How far ahead the controller tells a node the times of the CronJobs pinned to it
/// ([`PinnedCronJob`]): how long a node cut off from the controller runs them on.
pub const PINNED_HORIZON_SECS: i64 = 7 * 24 * 3600;

/// The most runs of equally spaced times ([`TimeRun`]) a [`PinnedCronJob`] carries.
pub const PINNED_MAX_RUNS: usize = 4096;

/// The annotation a CronJob's Job carries: the time it was scheduled for (RFC 3339).
pub const CRONJOB_SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CronJobSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CronJobStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobSpec {
    /// Five cron fields (minute hour day-of-month month day-of-week) or a macro (`@hourly`).
    pub schedule: String,
    /// The IANA time zone the schedule is read in (the controller's, UTC, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How late a missed run may still start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// Allow (the default), Forbid or Replace: what a run does while the last still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    pub job_template: JobTemplateSpec,
    /// Finished Jobs kept: 3 successful and 1 failed by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplateSpec {
    #[serde(default)]
    pub metadata: JobTemplateMeta,
    #[serde(default)]
    pub spec: JobSpec,
}

/// What a Job made from the template takes of its metadata (Kubernetes' CronJob controller
/// copies these two; the rest is the Job's own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplateMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobStatus {
    /// Its Jobs that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
}

impl CronJob {
    pub fn suspended(&self) -> bool {
        self.spec.suspend == Some(true)
    }

    pub fn concurrency_policy(&self) -> &str {
        self.spec.concurrency_policy.as_deref().unwrap_or("Allow")
    }

    /// The node its runs are pinned to: its pod template's `nodeName`, or its nodeSelector
    /// on `kubernetes.io/hostname`. That node runs it on while cut off from the controller.
    pub fn pinned_node(&self) -> Option<&str> {
        let spec = &self.spec.job_template.spec.template.spec;
        spec.node_name
            .as_deref()
            .or_else(|| spec.node_selector.get(HOSTNAME_LABEL).map(String::as_str))
            .filter(|n| !n.is_empty())
    }

    /// The name of the Job of the run scheduled at `at`: `NAME-<minutes since the epoch>`,
    /// so one time never makes two Jobs, whoever starts it.
    pub fn job_name(&self, at: DateTime<Utc>) -> String {
        format!("{}-{}", self.metadata.name, at.timestamp().div_euclid(60))
    }

    /// The Job of the run scheduled at `at`, from the template, owned by the CronJob.
    pub fn job_for(&self, at: DateTime<Utc>) -> Job {
        let t = &self.spec.job_template;
        let mut metadata = ObjectMeta {
            name: self.job_name(at),
            namespace: self.metadata.namespace.clone(),
            labels: t.metadata.labels.clone(),
            annotations: t.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: self.metadata.name.clone(),
                uid: self.metadata.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            ..Default::default()
        };
        metadata.annotations.insert(
            CRONJOB_SCHEDULED_ANNOTATION.into(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        Job {
            metadata,
            spec: t.spec.clone(),
            ..Default::default()
        }
    }
}

impl Job {
    /// A new pod of this Job, from its template: named by `generateName`, labelled with the
    /// Job's name and owned by it.
    pub fn new_pod(&self) -> Pod {
        let t = &self.spec.template;
        let mut pod = Pod {
            metadata: t.metadata.clone(),
            spec: t.spec.clone(),
            ..Default::default()
        };
        pod.metadata.name = String::new();
        pod.metadata.generate_name = format!("{}-", self.metadata.name);
        pod.metadata.namespace = self.metadata.namespace.clone();
        pod.metadata
            .labels
            .insert(JOB_NAME_LABEL.into(), self.metadata.name.clone());
        pod.metadata.owner_references = vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: self.metadata.name.clone(),
            uid: self.metadata.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }];
        pod
    }
}

/// Times spaced equally: `count` of them, the first at `first` (seconds since the epoch),
/// each `step` seconds after the one before. A schedule's times for days ahead are a few of
/// these (every minute for a week is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRun {
    pub first: i64,
    pub step: u32,
    pub count: u32,
}

impl TimeRun {
    /// `times` (ascending) as runs of equal steps, at most `max_runs` of them (the rest is
    /// left off: the list ends earlier).
    pub fn compress(times: &[i64], max_runs: usize) -> Vec<TimeRun> {
        let mut runs: Vec<TimeRun> = Vec::new();
        for &t in times {
            if let Some(last) = runs.last_mut() {
                let end = last.first + i64::from(last.step) * i64::from(last.count - 1);
                let gap = u32::try_from(t - end).unwrap_or(0);
                if gap > 0 && (last.count == 1 || gap == last.step) {
                    last.step = gap;
                    last.count += 1;
                    continue;
                }
            }
            if runs.len() == max_runs {
                break;
            }
            runs.push(TimeRun {
                first: t,
                step: 0,
                count: 1,
            });
        }
        runs
    }

    /// The latest of the times `runs` hold that is after `after` and at most `until`.
    pub fn latest_in(runs: &[TimeRun], after: i64, until: i64) -> Option<i64> {
        runs.iter()
            .filter_map(|r| {
                if r.count == 0 || r.first > until {
                    return None;
                }
                let step = i64::from(r.step.max(1));
                let k = ((until - r.first) / step).min(i64::from(r.count) - 1);
                let t = r.first + k * i64::from(r.step);
                (t > after).then_some(t)
            })
            .max()
    }
}

/// A CronJob pinned to a node, as the controller hands it to that node: the CronJob, and its
/// scheduled times from now for [`PINNED_HORIZON_SECS`], read in its time zone by the
/// controller (so a node needs no cron parser and no time zone data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinnedCronJob {
    pub cronjob: CronJob,
    pub times: Vec<TimeRun>,
}

/// What a node reports of a run of a CronJob pinned to it that it started while cut off from
/// the controller: the CronJob (namespace, name, uid), the scheduled time (seconds since the
/// epoch), the pod it ran (made from [`CronJob::job_for`] and [`Job::new_pod`], with the
/// name and uid it ran under, and its status), and the Jobs of earlier runs it ended
/// (`concurrencyPolicy: Replace`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CronRunReport {
    pub namespace: String,
    pub cronjob: String,
    pub cronjob_uid: String,
    pub scheduled: i64,
    pub pod: Pod,
    #[serde(default)]
    pub replaced: Vec<String>,
}
