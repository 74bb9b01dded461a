//! An agent stopped as systemd or Ctrl-C stops it (SIGTERM): it is gone at once, leaves its
//! OCI containers running, tells the controller it is restarting, and the next agent takes
//! the containers back, while its wasm pods (which end with its process) count a restart;
//! with `--drain-on-stop` it stops them first. Needs root and runc
//! (`apt-get install runc`); skipped with the reason where they are missing, failing when
//! `SHOAL_REQUIRE_RUNC=1`.

mod kit;

use kit::{field, runc_list, runc_missing, Cluster};
use std::time::{Duration, Instant};

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, "echo started; sleep 600"]
    resources: {requests: {cpu: 10m, memory: 8Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: wasm-web}
spec:
  runtimeClassName: wasm
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: probe:2
    args: [serve, "8090", hello from wasm]
    ports: [{containerPort: 8090}]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#;

/// SIGTERM to the agent; how long it took to exit.
fn stop(c: &mut Cluster) -> Duration {
    let at = Instant::now();
    c.agents[0].terminate();
    let exited = c.agents[0].wait_exit(Duration::from_secs(20));
    let took = at.elapsed();
    assert!(
        exited.is_some_and(|s| s.success()),
        "the agent exits cleanly on SIGTERM: {exited:?}\n{}",
        c.agents[0].log()
    );
    took
}

fn start_agent(c: &mut Cluster, args: &[&str]) {
    let token = std::fs::read_to_string(c.controller.dir.join("token")).expect("token");
    let dir = c.agents[0].dir.clone();
    let mut all = vec!["--pod-bridge", "shoal-t88"];
    all.extend_from_slice(args);
    c.agents[0] = kit::Agent::with(&c.controller, "node-1", &dir)
        .token(token.trim())
        .args(&all)
        .start();
}

#[test]
fn runc_a_stopped_agent_leaves_its_containers_running_and_the_next_takes_them_back() {
    if runc_missing(
        "runc_a_stopped_agent_leaves_its_containers_running_and_the_next_takes_them_back",
    ) {
        return;
    }
    let (mut c, _leftovers) = kit::oci_cluster(88, 1, &[]);
    kit::push_busybox(&c);
    c.push_probe_component();
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(PODS))
        .ok();
    c.wait_for("both pods serving", Duration::from_secs(90), |c| {
        c.shoal(&["logs", "steady"]).stdout() == "started\n"
            && field(&c.pod("wasm-web"), "status.phase") == "Running"
    });
    let started = |c: &Cluster| {
        field(
            &c.pod("steady"),
            "status.containerStatuses.0.state.running.startedAt",
        )
    };
    let started_at = started(&c);
    let dir = c.agents[0].dir.clone();
    assert_eq!(runc_list(&dir).len(), 1);

    let took = stop(&mut c);
    println!(
        "the agent stopped {:.2} s after SIGTERM",
        took.as_secs_f64()
    );
    let log = c.agents[0].log();
    assert!(
        log.contains("leaving the pods running for the next agent"),
        "{log}"
    );
    assert!(
        log.contains("told the controller this agent is restarting"),
        "{log}"
    );
    assert_eq!(runc_list(&dir).len(), 1, "the container outlives the agent");
    let node: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "node-1", "-o", "json"]).ok())
            .expect("json");
    let node = if node["items"].is_array() {
        &node["items"][0]
    } else {
        &node
    };
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("AgentRestarting")),
        "the controller knows the node restarts: {ready}"
    );

    // The next agent takes the container back: the same start, no restart, one log.
    start_agent(&mut c, &[]);
    c.wait_for("the container taken back", Duration::from_secs(60), |c| {
        c.agents[0]
            .log()
            .contains("found the container running; following it")
            && field(&c.pod("steady"), "status.phase") == "Running"
    });
    // The wasm guest ended with the agent's process: started again, and counted so.
    c.wait_for("the wasm pod restarted", Duration::from_secs(60), |c| {
        let wasm = c.pod("wasm-web");
        field(&wasm, "status.phase") == "Running"
            && field(&wasm, "status.containerStatuses.0.restartCount") == "1"
    });
    let wasm = c.pod("wasm-web");
    assert_eq!(
        field(
            &wasm,
            "status.containerStatuses.0.lastState.terminated.reason"
        ),
        "AgentRestarted",
        "{wasm}"
    );
    assert!(
        !field(&wasm, "status.containerStatuses.0.state.running.startedAt").is_empty(),
        "{wasm}"
    );
    let steady = c.pod("steady");
    assert_eq!(started(&c), started_at, "the same container");
    assert_eq!(
        field(&steady, "status.containerStatuses.0.restartCount"),
        "0"
    );
    c.wait_for("the log, with one start", Duration::from_secs(30), |c| {
        c.shoal(&["logs", "steady"]).stdout() == "started\n"
    });
    let pods = c.shoal(&["get", "pods", "--no-headers"]).ok();
    assert_eq!(pods.lines().count(), 2, "no replacement scheduled: {pods}");
    let events = c.shoal(&["get", "events"]).ok();
    assert!(!events.contains("NodeNotReady"), "{events}");

    // With --drain-on-stop, a stop stops the pods (within their grace period) first.
    c.agents[0].terminate();
    c.agents[0].wait_exit(Duration::from_secs(20));
    start_agent(&mut c, &["--drain-on-stop"]);
    c.wait_for("the agent back", Duration::from_secs(60), |c| {
        c.agents[0]
            .log()
            .contains("found the container running; following it")
    });
    let took = stop(&mut c);
    println!(
        "with --drain-on-stop, the agent stopped {:.2} s after SIGTERM",
        took.as_secs_f64()
    );
    assert!(
        c.agents[0]
            .log()
            .contains("stopping every pod (--drain-on-stop)"),
        "{}",
        c.agents[0].log()
    );
    assert!(
        runc_list(&dir).is_empty(),
        "the container stopped with the agent"
    );
}
