//! CronJobs pinned to this node (`CronJob::pinned_node`), run here while the node is cut off
//! from the controller: a site whose uplink is down still samples its sensors on schedule.
//!
//! While connected, the agent asks for its pinned CronJobs every [`PULL`], each with its times
//! for the week ahead as the controller reads them (in the CronJob's time zone), and keeps
//! them on disk. While the controller is out of reach (and the node is held by it as away, so
//! it starts nothing for them), each time that comes starts a run here: the Job's pod, named
//! and made as the controller would make it, run as any pod of this node. Its
//! `concurrencyPolicy` holds against the runs of it on this node, `startingDeadlineSeconds`
//! against how late the agent is, `suspend` as it was last heard; finished runs past the
//! history limits are dropped, as the controller would delete them. On the way back, before
//! anything else, each run is reported once ([`Request::ReportCronRun`]): the controller makes
//! its Job and pod, the latter under the uid it runs with, so nothing runs twice.

use crate::config::Link;
use crate::error::{Error, Result};
use crate::pod::Supervisor;
use crate::sync::lock;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use shoal_api::{CronJob, CronRunReport, Object, PinnedCronJob, Pod, TimeRun};
use shoal_transport::proto::{ErrorCode, Request, Response};
use shoal_transport::Client;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the pinned CronJobs are asked for while the controller is reachable.
pub const PULL: Duration = Duration::from_secs(30);

/// How often the clock is looked at for a time that has come.
const TICK: Duration = Duration::from_secs(1);

/// The most runs kept unreported: past it the oldest finished ones are dropped.
const MAX_UNREPORTED: usize = 1024;

/// A run started here while cut off, until it is reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    namespace: String,
    cronjob: String,
    cronjob_uid: String,
    scheduled: i64,
    pod_name: String,
    pod_uid: String,
    /// Jobs of earlier runs it ended (`concurrencyPolicy: Replace`).
    #[serde(default)]
    replaced: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Kept {
    pinned: Vec<PinnedCronJob>,
    runs: Vec<Run>,
}

/// The pinned CronJobs and the unreported runs, kept in `DATA_DIR/cronjobs.json`.
#[derive(Clone)]
pub struct Cron(Arc<Inner>);

struct Inner {
    file: PathBuf,
    node: String,
    kept: Mutex<Kept>,
    supervisor: Supervisor,
}

/// What a run of `cj` at `at` runs: the pod the Job the controller would make for that time
/// would have, bound here, with a name and uid of its own.
fn run_pod(cj: &CronJob, at: chrono::DateTime<chrono::Utc>, node: &str) -> Result<Pod> {
    let job = cj.job_for(at);
    let mut pod = job.new_pod();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)]))
        .collect();
    pod.metadata.name = format!("{}-{suffix}", job.metadata.name);
    let b: [u8; 16] = rng.random();
    pod.metadata.uid = format!(
        "{}-{}-4{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        &hex::encode(&b[6..8])[1..],
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    );
    pod.metadata.creation_timestamp = Some(crate::node::now());
    pod.spec.node_name = Some(node.to_string());
    let mut obj = Object::Pod(pod);
    obj.normalize();
    obj.into_typed::<Pod>()
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Which runs of one CronJob to drop: finished ones past its history limits, oldest first.
/// `runs`: (index, scheduled, finished, succeeded).
fn past_history(cj: &CronJob, runs: &[(usize, i64, bool, bool)]) -> Vec<usize> {
    let mut out = Vec::new();
    for (succeeded, limit) in [
        (true, cj.spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, cj.spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&(usize, i64, bool, bool)> =
            runs.iter().filter(|r| r.2 && r.3 == succeeded).collect();
        done.sort_by_key(|r| r.1);
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        out.extend(done.iter().take(extra).map(|r| r.0));
    }
    out
}

impl Cron {
    /// What the node kept: the runs a previous agent left unreported are held by the
    /// supervisor (their pods run again from the node's local state).
    pub fn load(data_dir: &std::path::Path, node: &str, supervisor: Supervisor) -> Cron {
        let file = data_dir.join("cronjobs.json");
        let kept: Kept = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "the pinned CronJobs kept cannot be read; asked for again");
                Kept::default()
            }),
            Err(_) => Kept::default(),
        };
        supervisor.hold_unreported(kept.runs.iter().map(|r| r.pod_uid.clone()));
        Cron(Arc::new(Inner {
            file,
            node: node.to_string(),
            kept: Mutex::new(kept),
            supervisor,
        }))
    }

    fn save(&self) {
        let bytes = {
            let k = lock(&self.0.kept);
            serde_json::to_vec(&*k)
        };
        let Ok(bytes) = bytes else { return };
        let tmp = self.0.file.with_extension("json.tmp");
        if let Err(e) =
            std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.0.file))
        {
            tracing::warn!(file = %self.0.file.display(), error = %e, "cannot keep the pinned CronJobs on disk");
        }
    }

    /// Asks the controller for this node's pinned CronJobs and keeps them.
    async fn pull(&self, client: &Client) -> Result<()> {
        let r = client.call(&Request::PinnedCronJobs).await?;
        let Response::Json(json) = r else {
            return Err(Error::Internal(r.unexpected()));
        };
        let pinned: Vec<PinnedCronJob> =
            serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
        let changed = {
            let mut k = lock(&self.0.kept);
            let changed = k.pinned != pinned;
            k.pinned = pinned;
            changed
        };
        if changed {
            let n = lock(&self.0.kept).pinned.len();
            tracing::info!(
                cronjobs = n,
                "CronJobs pinned to this node, run here while the controller is out of reach"
            );
            self.save();
        }
        // Their images now: a run while cut off cannot fetch one.
        let now = chrono::Utc::now();
        let templates: Vec<Pod> = lock(&self.0.kept)
            .pinned
            .iter()
            .filter_map(|p| run_pod(&p.cronjob, now, &self.0.node).ok())
            .collect();
        for pod in &templates {
            self.0.supervisor.prefetch(pod).await;
        }
        Ok(())
    }

    /// Reports each run started while cut off, oldest first. A run whose CronJob is gone (or
    /// that the controller refuses) stops and is forgotten; a failure to reach the controller
    /// leaves the rest for the next connection.
    pub async fn report(&self, client: &Client) -> Result<()> {
        let runs = lock(&self.0.kept).runs.clone();
        for run in runs {
            let Some(pod) = self.0.supervisor.pod_now(&run.pod_uid) else {
                self.forget(&run, "its pod is no longer on this node");
                continue;
            };
            let report = CronRunReport {
                namespace: run.namespace.clone(),
                cronjob: run.cronjob.clone(),
                cronjob_uid: run.cronjob_uid.clone(),
                scheduled: run.scheduled,
                pod,
                replaced: run.replaced.clone(),
            };
            let report = serde_json::to_vec(&report).map_err(|e| Error::Internal(e.to_string()))?;
            match client.call(&Request::ReportCronRun { report }).await? {
                Response::Object(_) => {
                    tracing::info!(cronjob = %run.cronjob, pod = %run.pod_name, "reported a run started while cut off");
                    self.remove(&run);
                    self.0.supervisor.reported(&run.pod_uid);
                    self.0.supervisor.report_pod(&run.pod_uid).await;
                }
                Response::Error(e)
                    if e.code == ErrorCode::Internal || e.code == ErrorCode::TooManyRequests =>
                {
                    return Err(Error::Server(e.message));
                }
                Response::Error(e) => {
                    tracing::warn!(cronjob = %run.cronjob, pod = %run.pod_name, error = %e.message, "the controller refused a run started while cut off; it stops");
                    self.remove(&run);
                    self.0.supervisor.drop_unreported(&run.pod_uid);
                }
                other => return Err(Error::Internal(other.unexpected())),
            }
        }
        Ok(())
    }

    fn remove(&self, run: &Run) {
        lock(&self.0.kept).runs.retain(|r| r.pod_uid != run.pod_uid);
        self.save();
    }

    fn forget(&self, run: &Run, why: &str) {
        tracing::info!(cronjob = %run.cronjob, pod = %run.pod_name, why, "a run started while cut off is not reported");
        self.remove(run);
        self.0.supervisor.drop_unreported(&run.pod_uid);
    }

    /// Starts the runs whose time came in `(after, now]` while the controller is out of reach.
    async fn fire_due(&self, after: i64, now: i64) {
        let due: Vec<(CronJob, i64)> = lock(&self.0.kept)
            .pinned
            .iter()
            .filter(|p| !p.cronjob.suspended())
            .filter_map(|p| Some((p.cronjob.clone(), TimeRun::latest_in(&p.times, after, now)?)))
            .collect();
        for (cj, at) in due {
            if let Err(e) = self.fire(&cj, at, now).await {
                tracing::warn!(cronjob = %cj.metadata.name, error = %shoal_transport::report(&e), "a scheduled run could not start");
            }
        }
    }

    async fn fire(&self, cj: &CronJob, at: i64, now: i64) -> Result<()> {
        let name = &cj.metadata.name;
        let ns = cj.metadata.namespace_or_default().to_string();
        if let Some(deadline) = cj.spec.starting_deadline_seconds {
            if now - at > deadline {
                tracing::info!(cronjob = %name, "a run missed its starting deadline");
                return Ok(());
            }
        }
        let time = chrono::DateTime::from_timestamp(at, 0)
            .ok_or_else(|| Error::Internal(format!("time {at} out of range")))?;
        let prefix = format!("{name}-");
        let active: Vec<(String, String, bool)> = self
            .0
            .supervisor
            .job_pods(&ns, &prefix)
            .into_iter()
            .filter(|(_, _, done)| !done)
            .collect();
        let mut replaced = Vec::new();
        match cj.concurrency_policy() {
            "Forbid" if !active.is_empty() => {
                tracing::info!(cronjob = %name, "a run skipped: the last one still runs (concurrencyPolicy Forbid)");
                return Ok(());
            }
            "Replace" => {
                for (uid, job, _) in &active {
                    let unreported = lock(&self.0.kept).runs.iter().any(|r| &r.pod_uid == uid);
                    if unreported {
                        lock(&self.0.kept).runs.retain(|r| &r.pod_uid != uid);
                        self.0.supervisor.drop_unreported(uid);
                    } else {
                        self.0.supervisor.end(uid);
                        replaced.push(job.clone());
                    }
                }
            }
            _ => {}
        }
        let pod = run_pod(cj, time, &self.0.node)?;
        tracing::info!(cronjob = %name, pod = %pod.metadata.name, "the controller is out of reach: this node starts the scheduled run itself");
        lock(&self.0.kept).runs.push(Run {
            namespace: ns,
            cronjob: name.clone(),
            cronjob_uid: cj.metadata.uid.clone(),
            scheduled: at,
            pod_name: pod.metadata.name.clone(),
            pod_uid: pod.metadata.uid.clone(),
            replaced,
        });
        self.save();
        self.0.supervisor.start_unreported(pod).await;
        self.trim(cj);
        Ok(())
    }

    /// Drops the finished runs of `cj` past its history limits, and the oldest finished runs
    /// past [`MAX_UNREPORTED`].
    fn trim(&self, cj: &CronJob) {
        let runs = lock(&self.0.kept).runs.clone();
        let state = |r: &Run| {
            let pod = self.0.supervisor.pod_now(&r.pod_uid);
            let phase = pod.as_ref().and_then(|p| p.phase());
            (
                phase.is_some_and(|p| p.is_terminal()),
                phase == Some(shoal_api::PodPhase::Succeeded),
            )
        };
        let mine: Vec<(usize, i64, bool, bool)> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.cronjob_uid == cj.metadata.uid)
            .map(|(i, r)| {
                let (done, ok) = state(r);
                (i, r.scheduled, done, ok)
            })
            .collect();
        let mut drop: Vec<usize> = past_history(cj, &mine);
        let over = runs
            .len()
            .saturating_sub(drop.len())
            .saturating_sub(MAX_UNREPORTED);
        let oldest: Vec<usize> = runs
            .iter()
            .enumerate()
            .filter(|(i, r)| !drop.contains(i) && state(r).0)
            .map(|(i, _)| i)
            .take(over)
            .collect();
        drop.extend(oldest);
        for i in drop {
            if let Some(r) = runs.get(i) {
                self.forget(r, "past the CronJob's history limit");
            }
        }
    }

    /// Follows the pinned CronJobs while the controller is reachable and starts their runs
    /// while it is not, until `shutdown`.
    pub async fn run(self, link: Link, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = chrono::Utc::now().timestamp();
        let mut pulled: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = chrono::Utc::now().timestamp();
            let client = link.borrow().clone();
            match client {
                Some(client) => {
                    if pulled.is_none_or(|at| at.elapsed() >= PULL) {
                        match self.pull(&client).await {
                            Ok(()) => pulled = Some(tokio::time::Instant::now()),
                            Err(e) => {
                                tracing::debug!(error = %shoal_transport::report(&e), "pinned CronJobs not asked for");
                                pulled = Some(tokio::time::Instant::now());
                            }
                        }
                    }
                }
                None => {
                    pulled = None;
                    self.fire_due(last, now).await;
                }
            }
            last = now.max(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_runs_past_the_history_limits_go_oldest_first() {
        let mut cj = CronJob::default();
        cj.spec.successful_jobs_history_limit = Some(2);
        let runs = [
            (0, 100, true, true),
            (1, 160, true, false),
            (2, 220, true, true),
            (3, 280, true, true),
            (4, 340, true, false),
            (5, 400, false, false),
        ];
        assert_eq!(past_history(&cj, &runs), [0, 1]);
    }

    #[test]
    fn a_run_pod_is_the_jobs_pod_bound_here_with_its_own_name_and_uid() {
        let mut cj = CronJob::default();
        cj.metadata.name = "sample".into();
        cj.metadata.namespace = Some("site".into());
        cj.metadata.uid = "cj-uid".into();
        cj.spec.job_template.spec.template.spec.node_name = Some("pi-1".into());
        let at = chrono::DateTime::from_timestamp(29_000_000 * 60, 0).expect("time");
        let a = run_pod(&cj, at, "pi-1").expect("pod");
        let b = run_pod(&cj, at, "pi-1").expect("pod");
        assert!(
            a.metadata.name.starts_with("sample-29000000-"),
            "{}",
            a.metadata.name
        );
        assert_eq!(a.metadata.name.len(), "sample-29000000-".len() + 5);
        assert_eq!(a.metadata.uid.len(), 36);
        assert_ne!(a.metadata.uid, b.metadata.uid);
        assert_eq!(a.metadata.namespace.as_deref(), Some("site"));
        assert_eq!(a.spec.node_name.as_deref(), Some("pi-1"));
        assert_eq!(
            a.metadata.labels.get("job-name").map(String::as_str),
            Some("sample-29000000")
        );
        assert_eq!(a.metadata.owner_references[0].name, "sample-29000000");
    }
}
