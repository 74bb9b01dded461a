//! The status a pod reports, computed by a pure function ([`pod_status`]) from what its task
//! knows, and sent to the controller one report at a time.

use super::state::{self, Container};
use super::{client, Inner, PodRun};
use crate::sync::lock;
use shoal_api::{Condition, Object, Pod, PodStatus};
use shoal_transport::proto::Request;
use std::sync::{Arc, Mutex};

/// A report: the status, and what the pod's task keeps of it for the next one.
#[derive(Debug, PartialEq)]
pub(super) struct Report {
    pub status: PodStatus,
    /// Readiness, and since when (the Ready condition's lastTransitionTime).
    pub readiness: (bool, String),
    /// The address reported as the pod's.
    pub reported_ip: Option<String>,
}

/// The status of a pod as its containers' states make it. `host_ip` is the node's address as
/// the controller sees it; `now` is when readiness changed, if it changes with this report.
pub(super) fn pod_status(run: &PodRun, host_ip: Option<&str>, now: &str) -> Report {
    let statuses: Vec<_> = run.containers.iter().map(Container::status).collect();
    let init_statuses: Vec<_> = run.init.iter().map(Container::status).collect();
    let initialized = state::initialized(&run.init, &run.containers);
    // Sidecars' readiness counts as the containers' does (Kubernetes 1.29+).
    let sidecars_ready = run
        .init
        .iter()
        .zip(&init_statuses)
        .all(|(c, st)| !c.sidecar || st.ready);
    let all_ready =
        initialized && sidecars_ready && !statuses.is_empty() && statuses.iter().all(|c| c.ready);
    let since = match &run.readiness {
        Some((was, since)) if *was == all_ready => since.clone(),
        _ => now.to_string(),
    };
    // Wasm pods use the node's network, as hostNetwork pods do. An OCI pod's address outlives
    // the agent (its lease is on disk): until a returning agent has taken the pod back, the
    // address stored stays, so a restart of the agent never takes the pod out of its
    // Services' endpoints.
    let reported_ip = if run.pod.uses_node_network() {
        host_ip.map(str::to_string)
    } else {
        run.pod_ip
            .clone()
            .or_else(|| run.pod.status.as_ref().and_then(|st| st.pod_ip.clone()))
    };
    let cond = |ty: &str, ok: bool| Condition {
        last_transition_time: ty.ends_with("Ready").then(|| since.clone()),
        ..Condition::new(ty, ok)
    };
    let status = PodStatus {
        phase: Some(state::pod_phase_of(&run.init, &run.containers).to_string()),
        conditions: vec![
            cond("PodScheduled", true),
            cond("Initialized", initialized),
            cond("ContainersReady", all_ready),
            cond("Ready", all_ready),
        ],
        host_ip: host_ip.map(str::to_string),
        pod_ip: reported_ip.clone(),
        start_time: Some(run.started.clone()),
        init_container_statuses: init_statuses,
        container_statuses: statuses,
        ..Default::default()
    };
    Report {
        status,
        readiness: (all_ready, since),
        reported_ip,
    }
}

/// Sends the pod's status as the containers' states make it; a lost link is fine (the next
/// session reports everything again).
pub(super) async fn report(inner: &Inner, state: &Arc<Mutex<PodRun>>) {
    lock(state).changed.send_replace(());
    keep_if_finished(inner, state);
    keep_restarts(state);
    let Some(client) = client(inner) else { return };
    // One report of a pod at a time, each taken when it gets its turn: containers report at
    // once, and an older picture sent last would stay the pod's status.
    let turn = lock(state).reporting.clone();
    let _turn = turn.lock().await;
    let host_ip =
        crate::node::source_ip(client.connection().remote_address()).map(|ip| ip.to_string());
    let pod = {
        let mut s = lock(state);
        let report = pod_status(&s, host_ip.as_deref(), &crate::node::now());
        s.readiness = Some(report.readiness);
        s.reported_ip = report.reported_ip;
        Pod {
            metadata: s.pod.metadata.clone(),
            status: Some(report.status),
            ..Default::default()
        }
    };
    let mut obj = Object::Pod(pod);
    obj.normalize();
    let Ok(object) = serde_json::to_vec(&obj) else {
        return;
    };
    if let Err(e) = client
        .call(&Request::UpdateStatus { object })
        .await
        .map_err(crate::Error::from)
        .and_then(crate::error::expect_ok)
    {
        tracing::debug!(error = %shoal_transport::report(&e), "status report failed");
    }
}

/// The file in a pod's directory that keeps its containers' restarts ([`state::Kept`]).
pub(super) const KEPT_FILE: &str = "containers.json";

/// What an earlier agent kept of a pod's containers; nothing when there is no such file (a
/// new pod) or it cannot be read (the counts start over, as on a pod's first day).
pub(super) fn read_kept(path: &std::path::Path) -> Vec<state::Kept> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "the containers' restart counts cannot be read; they start over");
        Vec::new()
    })
}

/// Keeps the containers' restart counts and running starts beside the pod, for the next agent,
/// when they changed. Written whole (a new file renamed over the old), so an agent killed
/// mid-write leaves the old record; one not yet written (the pod's directory is made when it
/// is prepared) is written at the next change.
fn keep_restarts(state: &Arc<Mutex<PodRun>>) {
    let (path, kept) = {
        let mut s = lock(state);
        let kept: Vec<state::Kept> = (s.init.iter().map(|c| c.kept(true)))
            .chain(s.containers.iter().map(|c| c.kept(false)))
            .collect();
        if kept == s.kept {
            return;
        }
        s.kept = kept.clone();
        (s.kept_file.clone(), kept)
    };
    let Ok(bytes) = serde_json::to_vec(&kept) else {
        return;
    };
    let tmp = path.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::debug!(path = %path.display(), error = %e, "restart counts not kept");
        lock(state).kept.clear();
    }
}

/// A pod whose containers are all done for good is kept on the node as finished: a restart of
/// the agent, with or without the controller, does not run a completed Job's pod again.
fn keep_if_finished(inner: &Inner, state: &Arc<Mutex<PodRun>>) {
    let mut s = lock(state);
    let phase = state::pod_phase_of(&s.init, &s.containers);
    if s.kept_finished || !phase.is_terminal() || s.pod.is_static() {
        return;
    }
    s.kept_finished = true;
    let mut pod = s.pod.clone();
    pod.status = Some(PodStatus {
        phase: Some(phase.to_string()),
        ..Default::default()
    });
    inner.local.keep(&Object::Pod(pod));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::state::{RestartPolicy, Terminated};
    use chrono::{TimeZone, Utc};

    fn run(runtime: Option<&str>, host_network: bool, containers: Vec<Container>) -> PodRun {
        let mut pod = Pod::default();
        pod.spec.runtime_class_name = runtime.map(str::to_string);
        pod.spec.host_network = host_network;
        PodRun {
            pod,
            init: vec![],
            containers,
            started: "T0".into(),
            readiness: None,
            pod_ip: Some("10.42.0.5".into()),
            reported_ip: None,
            images: vec![],
            reporting: Arc::default(),
            kept_finished: false,
            changed: Arc::new(tokio::sync::watch::Sender::new(())),
            stop_grace: None,
            kept_file: std::path::PathBuf::new(),
            kept: vec![],
            timing: None,
        }
    }

    fn running(ready: bool) -> Container {
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let mut c = Container::new("app", "img");
        c.started(t);
        c.probe_ready = ready;
        c
    }

    fn exited(code: i32) -> Container {
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let mut c = Container::new("job", "img");
        let term = Terminated {
            exit_code: code,
            reason: "Completed".into(),
            message: None,
            started: t,
            finished: t,
        };
        c.exited(term, RestartPolicy::Never, t);
        c
    }

    fn condition(r: &Report, ty: &str) -> String {
        r.status
            .conditions
            .iter()
            .find(|c| c.type_ == ty)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn status_follows_the_containers_and_the_network() {
        struct Case {
            name: &'static str,
            run: PodRun,
            phase: &'static str,
            ready: &'static str,
            ip: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "an OCI pod waiting to start: Pending, its own address",
                run: run(None, false, vec![Container::new("app", "img")]),
                phase: "Pending",
                ready: "False",
                ip: Some("10.42.0.5"),
            },
            Case {
                name: "running and ready",
                run: run(None, false, vec![running(true)]),
                phase: "Running",
                ready: "True",
                ip: Some("10.42.0.5"),
            },
            Case {
                name: "running, its readiness probe failing",
                run: run(None, false, vec![running(true), running(false)]),
                phase: "Running",
                ready: "False",
                ip: Some("10.42.0.5"),
            },
            Case {
                name: "a wasm pod has the node's address",
                run: run(Some("wasm"), false, vec![running(true)]),
                phase: "Running",
                ready: "True",
                ip: Some("192.0.2.1"),
            },
            Case {
                name: "a hostNetwork pod has the node's address",
                run: run(None, true, vec![running(true)]),
                phase: "Running",
                ready: "True",
                ip: Some("192.0.2.1"),
            },
            Case {
                name: "all exited 0 for good: Succeeded",
                run: run(None, false, vec![exited(0)]),
                phase: "Succeeded",
                ready: "False",
                ip: Some("10.42.0.5"),
            },
            Case {
                name: "one failed for good: Failed",
                run: run(None, false, vec![exited(0), exited(2)]),
                phase: "Failed",
                ready: "False",
                ip: Some("10.42.0.5"),
            },
        ];
        for c in cases {
            let r = pod_status(&c.run, Some("192.0.2.1"), "T1");
            assert_eq!(r.status.phase.as_deref(), Some(c.phase), "{}", c.name);
            assert_eq!(condition(&r, "Ready"), c.ready, "{}", c.name);
            assert_eq!(condition(&r, "ContainersReady"), c.ready, "{}", c.name);
            assert_eq!(condition(&r, "PodScheduled"), "True", "{}", c.name);
            assert_eq!(r.status.pod_ip.as_deref(), c.ip, "{}", c.name);
            assert_eq!(r.reported_ip.as_deref(), c.ip, "{}", c.name);
            assert_eq!(r.status.host_ip.as_deref(), Some("192.0.2.1"), "{}", c.name);
            assert_eq!(r.status.start_time.as_deref(), Some("T0"), "{}", c.name);
        }
    }

    #[test]
    fn init_containers_hold_the_pod_pending_or_fail_it() {
        let waiting = || Container::waiting("app", "img", "PodInitializing");
        let mut r = run(None, false, vec![waiting()]);
        r.init = vec![running(false)];
        let report = pod_status(&r, None, "T1");
        assert_eq!(report.status.phase.as_deref(), Some("Pending"));
        assert_eq!(condition(&report, "Initialized"), "False");
        assert_eq!(report.status.init_container_statuses.len(), 1);
        r.init = vec![exited(0)];
        r.containers = vec![running(true)];
        let report = pod_status(&r, None, "T1");
        assert_eq!(report.status.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&report, "Initialized"), "True");
        assert_eq!(condition(&report, "Ready"), "True");
        r.init = vec![exited(3)];
        r.containers = vec![waiting()];
        let report = pod_status(&r, None, "T1");
        assert_eq!(report.status.phase.as_deref(), Some("Failed"));
        assert_eq!(condition(&report, "Ready"), "False");
    }

    #[test]
    fn readiness_keeps_its_transition_time_until_it_changes() {
        let mut r = run(None, false, vec![running(true)]);
        let first = pod_status(&r, None, "T1");
        assert_eq!(first.readiness, (true, "T1".to_string()));
        r.readiness = Some(first.readiness);
        let same = pod_status(&r, None, "T2");
        assert_eq!(
            same.readiness,
            (true, "T1".to_string()),
            "unchanged: T1 kept"
        );
        let ready = same.status.conditions.iter().find(|c| c.type_ == "Ready");
        assert_eq!(
            ready.and_then(|c| c.last_transition_time.as_deref()),
            Some("T1")
        );
        r.readiness = Some(same.readiness);
        r.containers[0].probe_ready = false;
        let changed = pod_status(&r, None, "T3");
        assert_eq!(changed.readiness, (false, "T3".to_string()));
    }

    #[test]
    fn an_agent_back_before_taking_its_pod_back_reports_the_stored_address() {
        let mut r = run(None, false, vec![Container::new("app", "img")]);
        r.pod_ip = None;
        r.pod.status = Some(PodStatus {
            pod_ip: Some("10.42.0.9".into()),
            ..Default::default()
        });
        let report = pod_status(&r, Some("192.0.2.1"), "T1");
        assert_eq!(report.reported_ip.as_deref(), Some("10.42.0.9"));
    }
}
