//! Workload controllers end to end: a controller and two agents as processes, wasm pods.

mod kit;

use kit::{wasm_fixture, Cluster};
use std::time::Duration;

fn replicaset(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: probe
        image: probe:1
        args: [print, serving, sleep, "600000"]
        resources: {{requests: {{cpu: 10m, memory: 4Mi}}}}
"#
    )
}

/// Names of the pods labelled app=web that are Running.
fn running(c: &Cluster) -> Vec<String> {
    c.shoal(&["get", "pods", "-l", "app=web", "--no-headers"])
        .stdout()
        .lines()
        .filter(|l| l.contains(" Running "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn web_pods(c: &Cluster) -> usize {
    c.shoal(&["get", "pods", "-l", "app=web", "--no-headers"])
        .stdout()
        .lines()
        .count()
}

#[test]
fn a_replicaset_keeps_its_replicas_scales_replaces_and_takes_its_pods_along() {
    let c = Cluster::start(2);
    let wasm = wasm_fixture("probe", "wasm32-wasip1");
    c.shoal(&["push", wasm.to_str().unwrap(), "probe:1"]).ok();

    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&replicaset(4)))
        .ok();
    c.wait_for("4 replicas Running", Duration::from_secs(60), |c| {
        running(c).len() == 4 && web_pods(c) == 4
    });
    let wide = c
        .shoal(&["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"])
        .ok();
    for node in ["node-1", "node-2"] {
        assert_eq!(
            wide.lines()
                .filter(|l| l.trim_end().ends_with(node))
                .count(),
            2,
            "replicas of one owner spread:\n{wide}"
        );
    }
    let pod: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "pod", &running(&c)[0], "-o", "json"]).ok())
            .unwrap();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    c.wait_for("status 4/4 ready", Duration::from_secs(30), |c| {
        c.shoal(&["get", "rs", "web", "--no-headers"])
            .stdout()
            .split_whitespace()
            .collect::<Vec<_>>()[1..4]
            == ["4", "4", "4"]
    });

    // A pod deleted by hand is replaced.
    let victim = running(&c)[0].clone();
    c.shoal(&["delete", "pod", &victim]).ok();
    c.wait_for("a replacement", Duration::from_secs(60), |c| {
        let r = running(c);
        r.len() == 4 && !r.contains(&victim)
    });

    // Scaling down leaves exactly the desired count.
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&replicaset(1)))
        .ok();
    c.wait_for("1 replica", Duration::from_secs(60), |c| {
        web_pods(c) == 1 && running(c).len() == 1
    });

    // Deleting the ReplicaSet deletes its pods.
    c.shoal(&["delete", "rs", "web"]).ok();
    c.wait_for("no pods left", Duration::from_secs(60), |c| {
        web_pods(c) == 0
    });
}
