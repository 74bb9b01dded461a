//! Native sidecars (init containers with `restartPolicy: Always`, Kubernetes 1.29+), through
//! real runc as root: started in the init sequence and waited on only until they have
//! started, run beside the containers, restarted whatever the pod's policy, stopped after
//! the containers (last started first), and never deciding the pod's phase. Needs runc and
//! root: skipped, saying why, where they are missing; fails instead when
//! SHOAL_REQUIRE_RUNC=1 (CI sets it).

mod kit;

use kit::{field, runc_missing};
use std::time::Duration;

/// A Job-like pod (restartPolicy Never) whose container fetches from its sidecar on
/// localhost: the sidecar's startup probe holds the container back until it serves, the pod
/// succeeds when the container does, and the sidecar is stopped then (its exit recorded).
/// A long-running pod's sidecar that crashes is restarted beside its untouched container,
/// counts in READY, is taken back with it by a restarted agent, and is stopped after the
/// container when the pod is deleted.
#[test]
fn runc_sidecars_start_first_run_beside_and_stop_after_the_containers() {
    if runc_missing("runc_sidecars_start_first_run_beside_and_stop_after_the_containers") {
        return;
    }
    let (mut c, _leftovers) = kit::oci_cluster(83, 1, &[]);
    kit::push_busybox(&c);
    let marks = tempfile::tempdir().expect("tempdir");
    let marks_dir = marks.path().to_str().expect("utf-8");
    // It stops on SIGTERM (a shell as PID 1 ignores signals it does not trap).
    let serve = "trap 'exit 0' TERM; mkdir -p /www && echo from-sidecar > /www/data && httpd -f -p 8081 -h /www & wait";
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: batch}}
spec:
  restartPolicy: Never
  initContainers:
  - name: server
    image: busybox:1
    restartPolicy: Always
    command: [sh, -c, "sleep 2; {serve}"]
    startupProbe: {{tcpSocket: {{port: 8081}}, periodSeconds: 1, failureThreshold: 30}}
  containers:
  - name: job
    image: busybox:1
    command: [wget, -qO-, http://127.0.0.1:8081/data]
"#
    ));
    // The sidecar crashes on its first run (exit 3), then serves its readiness probe. Both
    // note on a hostPath, when told to stop, that they were.
    let sidecar = r#"trap 'echo proxy >> /marks/order; exit 0' TERM
mkdir -p /www && echo ok > /www/healthz && httpd -p 8082 -h /www
n=$(cat /marks/runs 2>/dev/null || echo 0); echo $((n+1)) > /marks/runs
if [ "$n" -eq 0 ]; then sleep 2; exit 3; fi
while :; do sleep 0.2; done"#;
    let app = "trap 'echo app >> /marks/order; exit 0' TERM; while :; do sleep 0.2; done";
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: steady}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: marks, hostPath: {{path: {marks_dir}}}}}]
  initContainers:
  - name: proxy
    image: busybox:1
    restartPolicy: Always
    command: [sh, -c, {sidecar:?}]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8082}}, periodSeconds: 1}}
    volumeMounts: [{{name: marks, mountPath: /marks}}]
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, {app:?}]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
"#
    ));

    c.wait_for("batch succeeded", Duration::from_secs(90), |c| {
        field(&c.pod("batch"), "status.phase") == "Succeeded"
    });
    assert_eq!(
        c.shoal(&["logs", "batch", "-c", "job"]).ok(),
        "from-sidecar\n"
    );
    c.wait_for("the batch sidecar stopped", Duration::from_secs(30), |c| {
        !field(
            &c.pod("batch"),
            "status.initContainerStatuses.0.state.terminated.finishedAt",
        )
        .is_empty()
    });
    let b = c.pod("batch");
    assert_eq!(field(&b, "status.phase"), "Succeeded", "{b}");
    assert_eq!(
        field(&b, "status.containerStatuses.0.state.terminated.exitCode"),
        "0"
    );
    assert_eq!(
        field(
            &b,
            "status.initContainerStatuses.0.state.terminated.exitCode"
        ),
        "0",
        "stopped by SIGTERM: {b}"
    );
    assert_eq!(
        field(&b, "status.initContainerStatuses.0.restartCount"),
        "0",
        "the container waited for the startup probe: {b}"
    );
    let row = c.shoal(&["get", "pod", "batch", "--no-headers"]).ok();
    assert!(row.contains("Completed"), "{row}");

    // The sidecar came back after its crash; the container was never restarted.
    c.wait_for(
        "steady 2/2 after the sidecar's restart",
        Duration::from_secs(60),
        |c| {
            let p = c.pod("steady");
            field(&p, "status.initContainerStatuses.0.restartCount") == "1"
                && c.shoal(&["get", "pod", "steady", "--no-headers"])
                    .ok()
                    .split_whitespace()
                    .nth(1)
                    == Some("2/2")
        },
    );
    let s = c.pod("steady");
    assert_eq!(field(&s, "status.phase"), "Running", "{s}");
    assert_eq!(field(&s, "status.containerStatuses.0.restartCount"), "0");
    assert_eq!(
        field(
            &s,
            "status.initContainerStatuses.0.lastState.terminated.exitCode"
        ),
        "3"
    );
    let row = c.shoal(&["get", "pod", "steady", "--no-headers"]).ok();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..4], ["2/2", "Running", "1"], "{row}");

    // The agent dies and comes back: it takes both containers back, the sidecar with them,
    // without running or stopping either again.
    c.agents[0].kill9();
    let token = std::fs::read_to_string(c.controller.dir.join("token")).expect("token");
    let dir = c.agents[0].dir.clone();
    c.agents[0] = kit::Agent::with(&c.controller, "node-1", &dir)
        .token(token.trim())
        .args(&["--pod-bridge", "shoal-t83"])
        .start();
    c.wait_for(
        "both containers followed again",
        Duration::from_secs(60),
        |c| {
            c.agents[0]
                .log()
                .matches("found the container running; following it")
                .count()
                >= 2
        },
    );
    c.wait_for("steady 2/2 again", Duration::from_secs(30), |c| {
        c.shoal(&["get", "pod", "steady", "--no-headers"])
            .ok()
            .split_whitespace()
            .nth(1)
            == Some("2/2")
    });
    let runs = std::fs::read_to_string(marks.path().join("runs")).expect("runs");
    assert_eq!(runs.trim(), "2", "the sidecar was not run again");
    assert!(!marks.path().join("order").exists(), "nothing was stopped");

    c.shoal(&["delete", "pod", "steady"]).ok();
    c.wait_for("both stopped", Duration::from_secs(60), |_| {
        std::fs::read_to_string(marks.path().join("order")).is_ok_and(|o| o.lines().count() == 2)
    });
    let order = std::fs::read_to_string(marks.path().join("order")).expect("order");
    assert_eq!(
        order, "app\nproxy\n",
        "the container stops before its sidecar"
    );
}
