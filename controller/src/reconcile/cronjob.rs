//! The CronJob reconciler (Kubernetes' CronJob controller v2): at each scheduled time a Job
//! from the template, named after the time (`NAME-<minutes since the epoch>`) so one time never
//! makes two Jobs; a missed time starts late within `startingDeadlineSeconds` (only the most
//! recent one, as Kubernetes does); `concurrencyPolicy` Forbid skips a time while a Job runs,
//! Replace deletes the running ones first; `suspend` starts nothing; finished Jobs past the
//! history limits are deleted, oldest first. Times are read in `timeZone` (UTC when absent).
//! A pure function of the CronJob, its Jobs and the time.

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use shoal_api::{Condition, CronJob, CronJobStatus, Job, ObjectReference};

/// More missed times than this since the last: Kubernetes warns, as the clock or the
/// controller was off for long (the most recent still starts).
const TOO_MANY_MISSED: usize = 100;

/// A schedule as the controller reads it: its cron pattern and time zone.
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// Parses a CronJob's schedule and time zone; an error names the field.
pub fn schedule(cj: &CronJob) -> Result<Schedule, (String, String)> {
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(cj.spec.schedule.trim())
        .map_err(|e| {
            (
                "spec.schedule".to_string(),
                format!("{:?}: {e}", cj.spec.schedule),
            )
        })?;
    let zone = match cj.spec.time_zone.as_deref() {
        None => Tz::UTC,
        Some(name) => name.parse::<Tz>().map_err(|_| {
            (
                "spec.timeZone".to_string(),
                format!("unknown time zone {name:?} (an IANA name, such as Europe/Berlin)"),
            )
        })?,
    };
    Ok(Schedule { cron, zone })
}

impl Schedule {
    /// The latest scheduled time after `after` and at most `now`, and how many there were
    /// (counted up to [`TOO_MANY_MISSED`] + 1).
    pub fn most_recent(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, usize)> {
        let latest = self
            .cron
            .find_previous_occurrence(&now.with_timezone(&self.zone), true)
            .ok()?
            .with_timezone(&Utc);
        if latest <= after {
            return None;
        }
        let missed = self
            .cron
            .iter_after(after.with_timezone(&self.zone))
            .take_while(|t| t.with_timezone(&Utc) <= now)
            .take(TOO_MANY_MISSED + 1)
            .count();
        Some((latest, missed))
    }

    /// The next scheduled time after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The times `cj` is scheduled for from `now` (after it) for [`shoal_api::PINNED_HORIZON_SECS`],
/// as runs of equal steps: what its pinned node runs by while cut off.
pub fn pinned_times(s: &Schedule, now: DateTime<Utc>) -> Vec<shoal_api::TimeRun> {
    let until = now + Duration::seconds(shoal_api::PINNED_HORIZON_SECS);
    // Every minute of the horizon at most: a five-field schedule fires no more often.
    let times: Vec<i64> = s
        .cron
        .iter_after(now.with_timezone(&s.zone))
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= until)
        .take((shoal_api::PINNED_HORIZON_SECS / 60) as usize + 1)
        .map(|t| t.timestamp())
        .collect();
    shoal_api::TimeRun::compress(&times, shoal_api::PINNED_MAX_RUNS)
}

/// Whether `at` (seconds since the epoch) is one of the times `s` fires at.
pub fn fires_at(s: &Schedule, at: i64) -> bool {
    let Some(t) = Utc.timestamp_opt(at, 0).single() else {
        return false;
    };
    s.cron
        .find_next_occurrence(&t.with_timezone(&s.zone), true)
        .is_ok_and(|n| n.with_timezone(&Utc) == t)
}

/// What the controller checks beyond the object's shape before storing it: a CronJob's
/// schedule and time zone parse (as kube-apiserver parses them).
pub fn admission_errors(obj: &shoal_api::Object) -> Vec<shoal_api::FieldError> {
    match obj {
        shoal_api::Object::CronJob(cj) if !cj.spec.schedule.trim().is_empty() => schedule(cj)
            .err()
            .map(|(path, message)| shoal_api::FieldError::new(path, message))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// What a pass does for one CronJob.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Option<Job>,
    /// Jobs to delete, by name: running ones a Replace ends, finished ones past the limits.
    pub delete: Vec<String>,
    pub status: Option<CronJobStatus>,
    /// An Event to record: type, reason, message.
    pub event: Option<(&'static str, &'static str, String)>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse(t: Option<&str>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a Condition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.is_true())
}

fn finished(job: &Job) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: job.metadata.namespace.clone(),
        name: Some(job.metadata.name.clone()),
        uid: Some(job.metadata.uid.clone()),
    }
}

/// `jobs`: the Jobs this CronJob controls. `held`: it is pinned to a node out of touch, which
/// runs it by itself meanwhile and reports its runs on its return ([`shoal_api::CronRunReport`]):
/// nothing is started for it here until then.
pub fn reconcile(cj: &CronJob, jobs: &[Job], now: DateTime<Utc>, held: bool) -> Plan {
    let mut plan = Plan::default();
    let old = cj.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let active: Vec<&Job> = jobs.iter().filter(|j| !finished(j)).collect();
    status.active = active.iter().map(|j| reference(j)).collect();
    let succeeded_at = |j: &Job| {
        condition(j, "Complete")
            .and(j.status.as_ref())
            .and_then(|s| parse(s.completion_time.as_deref()))
    };
    if let Some(t) = jobs.iter().filter_map(succeeded_at).max() {
        if parse(old.last_successful_time.as_deref()).is_none_or(|old| t > old) {
            status.last_successful_time = Some(ts(t));
        }
    }
    plan.delete = past_history(cj, jobs);
    match schedule(cj) {
        Err((_, why)) => plan.event = Some(("Warning", "UnparseableSchedule", why)),
        Ok(_) if cj.suspended() || held => {}
        Ok(s) => start(cj, &s, jobs, &active, now, &mut plan, &mut status),
    }
    if status != old {
        plan.status = Some(status);
    }
    plan
}

/// The Job of the most recent scheduled time, if one is due and may start.
fn start(
    cj: &CronJob,
    s: &Schedule,
    jobs: &[Job],
    active: &[&Job],
    now: DateTime<Utc>,
    plan: &mut Plan,
    status: &mut CronJobStatus,
) {
    let created = parse(cj.metadata.creation_timestamp.as_deref()).unwrap_or(now);
    let mut earliest = parse(status.last_schedule_time.as_deref()).unwrap_or(created);
    if let Some(d) = cj.spec.starting_deadline_seconds {
        earliest = earliest.max(now - Duration::seconds(d));
    }
    let Some((at, missed)) = s.most_recent(earliest, now) else {
        return;
    };
    if missed > TOO_MANY_MISSED {
        plan.event = Some((
            "Warning",
            "TooManyMissedTimes",
            format!("too many missed start times: more than {TOO_MANY_MISSED}; check the clock (the most recent starts)"),
        ));
    }
    let job = cj.job_for(at);
    if jobs.iter().any(|j| j.metadata.name == job.metadata.name) {
        // Made already (by an earlier pass whose status write was lost).
        status.last_schedule_time = Some(ts(at));
        return;
    }
    match cj.concurrency_policy() {
        "Forbid" if !active.is_empty() => {
            // Not started, and not marked as scheduled: it starts once the running one
            // ends, if that is within the starting deadline.
            return;
        }
        "Replace" => {
            plan.delete
                .extend(active.iter().map(|j| j.metadata.name.clone()));
        }
        _ => {}
    }
    plan.event = Some((
        "Normal",
        "SuccessfulCreate",
        format!("Created job {}", job.metadata.name),
    ));
    status.last_schedule_time = Some(ts(at));
    plan.create = Some(job);
}

/// Finished Jobs past the history limits, oldest first: beyond
/// `successfulJobsHistoryLimit` (3) succeeded ones and `failedJobsHistoryLimit` (1) failed.
fn past_history(cj: &CronJob, jobs: &[Job]) -> Vec<String> {
    let mut out = Vec::new();
    for (type_, limit) in [
        (
            "Complete",
            cj.spec.successful_jobs_history_limit.unwrap_or(3),
        ),
        ("Failed", cj.spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Job> = jobs
            .iter()
            .filter(|j| condition(j, type_).is_some())
            .collect();
        done.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        out.extend(done[..extra].iter().map(|j| j.metadata.name.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Condition, JobStatus};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn cronjob(schedule: &str) -> CronJob {
        let mut cj = CronJob::default();
        cj.metadata.name = "sample".into();
        cj.metadata.namespace = Some("default".into());
        cj.metadata.uid = "cj-uid".into();
        cj.metadata.creation_timestamp = Some("2026-12-06T10:00:30Z".into());
        cj.spec.schedule = schedule.into();
        cj
    }

    fn job(name: &str, done: Option<&str>) -> Job {
        let mut j = Job::default();
        j.metadata.name = name.into();
        j.metadata.creation_timestamp =
            Some(format!("2026-12-06T10:{}:00Z", &name[name.len() - 2..]));
        if let Some(type_) = done {
            j.status = Some(JobStatus {
                completion_time: Some("2026-12-06T10:30:00Z".into()),
                conditions: vec![Condition {
                    type_: type_.into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        j
    }

    #[test]
    fn schedules_and_time_zones_parse_or_say_why() {
        for ok in [
            "* * * * *",
            "*/5 1-3 * * MON-FRI",
            "@hourly",
            "@daily",
            "0 0 1 1 *",
        ] {
            assert!(schedule(&cronjob(ok)).is_ok(), "{ok}");
        }
        let e = schedule(&cronjob("61 * * * *")).err().expect("bad minute");
        assert_eq!(e.0, "spec.schedule");
        let mut cj = cronjob("@daily");
        cj.spec.time_zone = Some("Mars/Olympus".into());
        let e = schedule(&cj).err().expect("bad zone");
        assert!(
            e.0 == "spec.timeZone" && e.1.contains("Mars/Olympus"),
            "{e:?}"
        );
    }

    #[test]
    fn a_time_makes_one_job_named_after_it() {
        let cj = cronjob("*/5 * * * *");
        let plan = reconcile(&cj, &[], at("2026-12-06T10:07:10Z"), false);
        let job = plan.create.expect("a job");
        // 10:05 UTC in minutes since the epoch.
        assert_eq!(
            job.metadata.name,
            format!("sample-{}", at("2026-12-06T10:05:00Z").timestamp() / 60)
        );
        assert_eq!(job.metadata.owner_references[0].kind, "CronJob");
        assert_eq!(
            job.metadata.annotations[shoal_api::CRONJOB_SCHEDULED_ANNOTATION],
            "2026-12-06T10:05:00Z"
        );
        let status = plan.status.expect("status");
        assert_eq!(
            status.last_schedule_time.as_deref(),
            Some("2026-12-06T10:05:00Z")
        );
        // Once scheduled, the same time makes nothing more.
        let mut again = cj.clone();
        again.status = Some(status);
        assert_eq!(
            reconcile(&again, &[job], at("2026-12-06T10:09:59Z"), false).create,
            None
        );
        // Before the first time after creation: nothing.
        assert_eq!(
            reconcile(&cj, &[], at("2026-12-06T10:04:00Z"), false).create,
            None
        );
    }

    #[test]
    fn time_zones_deadlines_suspend_and_concurrency() {
        // 07:00 in Berlin is 06:00 UTC in winter.
        let mut cj = cronjob("0 7 * * *");
        cj.metadata.creation_timestamp = Some("2026-12-05T00:00:00Z".into());
        cj.spec.time_zone = Some("Europe/Berlin".into());
        let plan = reconcile(&cj, &[], at("2026-12-06T06:00:20Z"), false);
        assert_eq!(
            plan.status.and_then(|s| s.last_schedule_time).as_deref(),
            Some("2026-12-06T06:00:00Z")
        );
        // A missed time past the starting deadline: not started.
        cj.spec.starting_deadline_seconds = Some(60);
        assert_eq!(
            reconcile(&cj, &[], at("2026-12-06T06:05:00Z"), false).create,
            None
        );
        cj.spec.starting_deadline_seconds = None;
        cj.spec.suspend = Some(true);
        assert_eq!(
            reconcile(&cj, &[], at("2026-12-06T06:05:00Z"), false).create,
            None
        );

        let mut cj = cronjob("* * * * *");
        let running = job("sample-10", None);
        let now = at("2026-12-06T10:12:30Z");
        cj.spec.concurrency_policy = Some("Forbid".into());
        let plan = reconcile(&cj, std::slice::from_ref(&running), now, false);
        assert_eq!(plan.create, None);
        assert_eq!(plan.status.map(|s| s.active.len()), Some(1));
        cj.spec.concurrency_policy = Some("Replace".into());
        let plan = reconcile(&cj, std::slice::from_ref(&running), now, false);
        assert!(plan.create.is_some());
        assert_eq!(plan.delete, ["sample-10"]);
        cj.spec.concurrency_policy = None;
        let plan = reconcile(&cj, &[running], now, false);
        assert!(plan.create.is_some() && plan.delete.is_empty());
    }

    #[test]
    fn finished_jobs_past_the_history_limits_go_oldest_first() {
        let mut cj = cronjob("* * * * *");
        cj.spec.suspend = Some(true);
        let jobs: Vec<Job> = (11..=15)
            .map(|i| job(&format!("sample-{i}"), Some("Complete")))
            .chain((16..=17).map(|i| job(&format!("sample-{i}"), Some("Failed"))))
            .chain([job("sample-18", None)])
            .collect();
        let plan = reconcile(&cj, &jobs, at("2026-12-06T10:20:00Z"), false);
        assert_eq!(plan.delete, ["sample-11", "sample-12", "sample-16"]);
        let status = plan.status.expect("status");
        assert_eq!(
            status.last_successful_time.as_deref(),
            Some("2026-12-06T10:30:00Z")
        );
        assert_eq!(status.active.len(), 1);
    }

    #[test]
    fn a_pinned_cronjob_is_held_while_its_node_is_away_and_its_node_gets_its_times() {
        let cj = cronjob("* * * * *");
        let now = at("2026-12-06T10:07:10Z");
        assert!(reconcile(&cj, &[], now, false).create.is_some());
        let held = reconcile(&cj, &[], now, true);
        assert_eq!(held.create, None, "its node runs it meanwhile");
        assert_eq!(held.status, None, "nothing marked as scheduled");

        // Every minute for a week is one run of times; a weekday schedule a few.
        let s = schedule(&cj).expect("parses");
        let runs = pinned_times(&s, now);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].first, at("2026-12-06T10:08:00Z").timestamp());
        assert_eq!((runs[0].step, runs[0].count), (60, 7 * 24 * 60));
        let weekdays = schedule(&cronjob("30 9 * * MON-FRI")).expect("parses");
        let runs = pinned_times(&weekdays, now);
        let ends = |t: &str| at(t).timestamp();
        assert_eq!(
            shoal_api::TimeRun::latest_in(&runs, 0, ends("2026-12-09T12:00:00Z")),
            Some(ends("2026-12-09T09:30:00Z")),
            "a Wednesday's run: {runs:?}"
        );
        assert!(fires_at(&weekdays, ends("2026-12-09T09:30:00Z")));
        assert!(!fires_at(&weekdays, ends("2026-12-09T09:31:00Z")));
        assert!(
            !fires_at(&weekdays, ends("2026-12-06T09:30:00Z")),
            "a Sunday"
        );
        // In its time zone: 09:30 in Berlin is 08:30 UTC in winter.
        let mut berlin = cronjob("30 9 * * *");
        berlin.spec.time_zone = Some("Europe/Berlin".into());
        let s = schedule(&berlin).expect("parses");
        let runs = pinned_times(&s, now);
        assert_eq!(runs[0].first, ends("2026-12-07T08:30:00Z"));
        assert_eq!((runs[0].step, runs[0].count), (86_400, 7));
    }
}
