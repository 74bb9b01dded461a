//! Decisions about a pod's containers, without I/O: whether to restart after an exit, how long
//! to back off, and the phase and statuses the pod reports. The supervisor feeds them events
//! and `now`.

use chrono::{DateTime, Utc};
use shoal_api::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodPhase,
};
use std::time::Duration;

/// A container that ran this long without failing starts its back-off over.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    pub fn restarts_after(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The delay before restart number `restarts + 1`: 10 s, 20 s, 40 s, ... 5 min.
pub fn backoff(restarts_in_a_row: u32) -> Duration {
    crate::backoff::Backoff::RESTART.ceiling(restarts_in_a_row)
}

/// What one container is doing, as the supervisor tracks it.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Not started yet; `reason` such as ContainerCreating, ErrImagePull, ImagePullBackOff.
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: DateTime<Utc>,
    },
    /// Exited; restarts at `until` unless the policy keeps it down (`until` is `None`).
    BackOff {
        last: Terminated,
        until: Option<DateTime<Utc>>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub phase: Phase,
    pub restart_count: i32,
    /// Failures since the container last ran for [`BACKOFF_RESET`].
    pub failures_in_a_row: u32,
    pub last: Option<Terminated>,
    /// What the readiness probe says (true without one): a running container is ready only
    /// while it holds.
    pub probe_ready: bool,
    /// Whether the startup probe passed (true without one): until it has, the container is
    /// not started, and the other probes wait.
    pub startup_passed: bool,
    /// A sidecar: an init container with `restartPolicy: Always`, which the init sequence
    /// passes once it has started, and which runs beside the containers.
    pub sidecar: bool,
    /// The run an earlier agent reported as running and this one did not take back (a wasm
    /// guest, which ends with the agent's process; an OCI container gone with a reboot):
    /// its next start is a restart, and this is its last state.
    pub lost: Option<Terminated>,
}

/// Why a container that an earlier agent ran was started again: the kubelet, which keeps its
/// containers across its own restarts, has no such reason.
pub const AGENT_RESTARTED: &str = "AgentRestarted";

/// What the node keeps of a container across agent restarts, beside the pod: its restart
/// count, and since when it ran when the last status was reported.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub name: String,
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default)]
    pub running_since: Option<DateTime<Utc>>,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container::waiting(name, image, "ContainerCreating")
    }

    /// Not started yet, saying why (`PodInitializing`: init containers run first).
    pub fn waiting(name: &str, image: &str, reason: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            phase: Phase::Waiting {
                reason: reason.into(),
                message: None,
            },
            restart_count: 0,
            failures_in_a_row: 0,
            last: None,
            probe_ready: true,
            startup_passed: true,
            sidecar: false,
            lost: None,
        }
    }

    /// What the node keeps of it (see [`Kept`]).
    pub fn kept(&self, init: bool) -> Kept {
        Kept {
            name: self.name.clone(),
            init,
            restart_count: self.restart_count,
            running_since: match self.phase {
                Phase::Running { since } => Some(since),
                _ => None,
            },
        }
    }

    /// Goes on from what an earlier agent kept of it: its restart count, and, when it was
    /// running, a run that ended with that agent (`now` is when this one learns of it).
    pub fn resume(&mut self, kept: &Kept, now: DateTime<Utc>) {
        self.restart_count = kept.restart_count.max(0);
        self.lost = kept.running_since.map(|since| {
            Terminated {
            exit_code: 255,
            reason: AGENT_RESTARTED.into(),
            message: Some(
                "it ended with the agent (or the node) that ran it; the next agent started it again"
                    .into(),
            ),
            started: since,
            finished: now.max(since),
        }
        });
    }

    /// Running, and past its startup probe if it has one (a container status' `started`).
    pub fn has_started(&self) -> bool {
        matches!(self.phase, Phase::Running { .. }) && self.startup_passed
    }

    /// The container exited: decide whether and when it comes back.
    pub fn exited(&mut self, t: Terminated, policy: RestartPolicy, now: DateTime<Utc>) {
        let ran = (t.finished - t.started).to_std().unwrap_or_default();
        if ran >= BACKOFF_RESET {
            self.failures_in_a_row = 0;
        }
        let until = if policy.restarts_after(t.exit_code) {
            self.failures_in_a_row += 1;
            Some(
                now + chrono::Duration::from_std(backoff(self.failures_in_a_row))
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        self.last = Some(t.clone());
        self.phase = Phase::BackOff { last: t, until };
    }

    /// It started (or was found running, once [`Container::lost`] is cleared for it): a
    /// start after an exit, or after the agent that ran it ended, is a restart.
    pub fn started(&mut self, now: DateTime<Utc>) {
        if matches!(self.phase, Phase::BackOff { .. }) {
            self.restart_count += 1;
        } else if let Some(lost) = self.lost.take() {
            self.restart_count += 1;
            self.last = Some(lost);
        }
        self.phase = Phase::Running { since: now };
    }

    /// When it should be started again, if it should.
    pub fn restart_at(&self) -> Option<DateTime<Utc>> {
        match &self.phase {
            Phase::BackOff { until, .. } => *until,
            _ => None,
        }
    }

    pub fn status(&self) -> ContainerStatus {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let terminated = |t: &Terminated| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: Some(ts(&t.started)),
                finished_at: Some(ts(&t.finished)),
                signal: None,
            }),
            ..Default::default()
        };
        let (state, ready) = match &self.phase {
            Phase::Waiting { reason, message } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..Default::default()
                },
                false,
            ),
            Phase::Running { since } => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(ts(since)),
                    }),
                    ..Default::default()
                },
                self.probe_ready && self.startup_passed,
            ),
            Phase::BackOff {
                last,
                until: Some(_),
            } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: Some(format!(
                            "back-off {} restarting failed container={}",
                            human(backoff(self.failures_in_a_row)),
                            self.name
                        )),
                    }),
                    ..Default::default()
                },
                {
                    let _ = last;
                    false
                },
            ),
            Phase::BackOff { last, until: None } => (terminated(last), false),
        };
        let last_state = match (&self.phase, &self.last) {
            (Phase::BackOff { until: None, .. }, _) | (_, None) => None,
            (_, Some(t)) => Some(terminated(t)),
        };
        ContainerStatus {
            name: self.name.clone(),
            ready,
            restart_count: self.restart_count,
            started: Some(self.has_started()),
            image: self.image.clone(),
            image_id: None,
            state: Some(state),
            last_state,
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Whether the pod is initialized: every init container has run to success and every sidecar
/// has started (true without any). Once a container has started it stays so, also while a
/// sidecar restarts, as the kubelet has it.
pub fn initialized(init: &[Container], containers: &[Container]) -> bool {
    let done = |c: &Container| {
        if c.sidecar {
            c.has_started()
        } else {
            matches!(&c.phase, Phase::BackOff { last, until: None } if last.exit_code == 0)
        }
    };
    containers
        .iter()
        .any(|c| !matches!(c.phase, Phase::Waiting { .. }))
        || init.iter().all(done)
}

/// The pod's phase from its init containers and containers: Failed when an init container
/// failed for good, Pending until the pod is initialized, then as its containers make it
/// (sidecars, which are always restarted, count for neither).
pub fn pod_phase_of(init: &[Container], containers: &[Container]) -> PodPhase {
    let init_failed = init.iter().any(|c| {
        !c.sidecar
            && matches!(&c.phase, Phase::BackOff { last, until: None } if last.exit_code != 0)
    });
    if init_failed {
        PodPhase::Failed
    } else if !initialized(init, containers) {
        PodPhase::Pending
    } else {
        pod_phase(containers)
    }
}

/// The pod's phase from its containers, as Kubernetes computes it.
pub fn pod_phase(containers: &[Container]) -> PodPhase {
    let all_done = containers
        .iter()
        .all(|c| matches!(c.phase, Phase::BackOff { until: None, .. }));
    if all_done && !containers.is_empty() {
        let failed = containers
            .iter()
            .any(|c| matches!(&c.phase, Phase::BackOff { last, .. } if last.exit_code != 0));
        return if failed {
            PodPhase::Failed
        } else {
            PodPhase::Succeeded
        };
    }
    let started = containers
        .iter()
        .any(|c| !matches!(c.phase, Phase::Waiting { .. }));
    if started {
        PodPhase::Running
    } else {
        PodPhase::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn term(code: i32, ran_secs: i64, at: DateTime<Utc>) -> Terminated {
        Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started: at - chrono::Duration::seconds(ran_secs),
            finished: at,
        }
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let got: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(100), crate::backoff::Backoff::RESTART.max);
    }

    #[test]
    fn restart_policy_table() {
        for (policy, code, restarts) in [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 1, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 2, true),
            (RestartPolicy::Never, 1, false),
        ] {
            assert_eq!(
                policy.restarts_after(code),
                restarts,
                "{policy:?} exit {code}"
            );
        }
    }

    #[test]
    fn a_crashing_container_backs_off_longer_each_time_and_shows_crash_loop() {
        let mut c = Container::new("app", "img");
        let mut now = t0();
        let mut delays = vec![];
        for _ in 0..3 {
            c.started(now);
            now += chrono::Duration::seconds(1);
            c.exited(term(1, 1, now), RestartPolicy::Always, now);
            let until = c.restart_at().unwrap();
            delays.push((until - now).num_seconds());
            assert_eq!(
                c.status().state.unwrap().waiting.unwrap().reason.as_deref(),
                Some("CrashLoopBackOff")
            );
            now = until;
        }
        assert_eq!(delays, [10, 20, 40]);
        c.started(now);
        assert_eq!(c.restart_count, 3);
        let st = c.status();
        assert!(st.ready);
        assert_eq!(st.last_state.unwrap().terminated.unwrap().exit_code, 1);
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let mut c = Container::new("app", "img");
        c.failures_in_a_row = 5;
        c.started(t0());
        let end = t0() + chrono::Duration::seconds(700);
        c.exited(term(1, 700, end), RestartPolicy::Always, end);
        assert_eq!((c.restart_at().unwrap() - end).num_seconds(), 10);
    }

    /// A sidecar initializes the pod once started, never fails it, and does not hold a
    /// finished pod's phase; a sidecar restarting later leaves the pod initialized.
    #[test]
    fn sidecars_initialize_by_starting_and_never_decide_the_phase() {
        let now = t0();
        let mut side = Container::new("proxy", "i");
        side.sidecar = true;
        side.startup_passed = false;
        let app = Container::waiting("app", "i", "PodInitializing");
        side.started(now);
        assert!(!initialized(
            std::slice::from_ref(&side),
            std::slice::from_ref(&app)
        ));
        side.startup_passed = true;
        assert!(initialized(
            std::slice::from_ref(&side),
            std::slice::from_ref(&app)
        ));
        let mut app_done = app.clone();
        app_done.started(now);
        app_done.exited(term(0, 1, now), RestartPolicy::Never, now);
        // Stopped after the containers finished (SIGTERM): the pod still succeeded.
        side.exited(term(143, 5, now), RestartPolicy::Never, now);
        let (init, containers) = ([side.clone()], [app_done]);
        assert_eq!(pod_phase_of(&init, &containers), PodPhase::Succeeded);
        // Crashing beside a running container: restarted, the pod running and initialized.
        let mut running = app.clone();
        running.started(now);
        side.exited(term(1, 5, now), RestartPolicy::Always, now);
        let (init, containers) = ([side], [running]);
        assert!(initialized(&init, &containers));
        assert_eq!(pod_phase_of(&init, &containers), PodPhase::Running);
    }

    /// What an agent keeps of its containers comes back in the next one: a run that ended
    /// with the agent counts one restart, with why as the last state; a container taken back
    /// keeps its count and counts none.
    #[test]
    fn a_container_an_earlier_agent_ran_counts_a_restart_unless_taken_back() {
        let now = t0();
        let mut before = Container::new("app", "i");
        before.started(now);
        before.exited(term(1, 1, now), RestartPolicy::Always, now);
        before.started(now);
        let kept = before.kept(false);
        assert_eq!((kept.restart_count, kept.running_since), (1, Some(now)));
        let json = serde_json::to_string(&kept).unwrap();
        assert_eq!(serde_json::from_str::<Kept>(&json).unwrap(), kept);

        let later = now + chrono::Duration::seconds(30);
        let mut wasm = Container::new("app", "i");
        wasm.resume(&kept, later);
        assert_eq!(
            wasm.status().restart_count,
            1,
            "nothing counted before it starts"
        );
        wasm.started(later);
        let st = wasm.status();
        assert_eq!(st.restart_count, 2);
        let last = st.last_state.unwrap().terminated.unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (255, Some(AGENT_RESTARTED))
        );

        let mut taken_back = Container::new("app", "i");
        taken_back.resume(&kept, later);
        taken_back.lost = None;
        taken_back.started(now);
        assert_eq!(taken_back.status().restart_count, 1);
        assert!(taken_back.status().last_state.is_none());

        // Not running when the agent ended (done, or backing off): no restart of its own.
        let mut done = Container::new("job", "i");
        done.resume(&Container::new("job", "i").kept(false), later);
        assert!(done.lost.is_none());
    }

    #[test]
    fn phase_table() {
        let now = t0();
        let mut running = Container::new("a", "i");
        running.started(now);
        let mut ok = Container::new("b", "i");
        ok.exited(term(0, 1, now), RestartPolicy::OnFailure, now);
        let mut failed = Container::new("c", "i");
        failed.exited(term(3, 1, now), RestartPolicy::Never, now);
        let waiting = Container::new("d", "i");
        assert_eq!(pod_phase(std::slice::from_ref(&waiting)), PodPhase::Pending);
        assert_eq!(pod_phase(&[running.clone(), ok.clone()]), PodPhase::Running);
        assert_eq!(pod_phase(std::slice::from_ref(&ok)), PodPhase::Succeeded);
        assert_eq!(pod_phase(&[ok, failed.clone()]), PodPhase::Failed);
        assert_eq!(
            failed.status().state.unwrap().terminated.unwrap().exit_code,
            3
        );
    }
}
