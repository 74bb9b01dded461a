//! Workload controllers end to end: a controller and agents as processes, wasm pods.

mod kit;

use kit::{Cluster, PodWatch};
use shoal_transport::proto::EventType;
use std::collections::BTreeMap;
use std::time::Duration;

/// A pod's name, and whether it is Ready, from its JSON.
fn state_of(bytes: &[u8]) -> (String, bool) {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let ready = v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    (v["metadata"]["name"].as_str().unwrap().to_string(), ready)
}

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
    c.push_probe();

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

fn deployment(replicas: u32, message: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: probe
        image: probe:1
        args: [print, "{message}", sleep, "600000"]
        resources: {{requests: {{cpu: 10m, memory: 4Mi}}}}
"#
    )
}

fn per_node(c: &Cluster) -> Vec<usize> {
    let wide = c
        .shoal(&["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"])
        .stdout();
    ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| {
            wide.lines()
                .filter(|l| l.contains(" Running ") && l.trim_end().ends_with(n))
                .count()
        })
        .collect()
}

#[test]
fn a_deployment_spreads_scales_and_rolls_out_within_its_budgets() {
    let c = Cluster::start(3);
    c.push_probe();

    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(6, "v1")))
        .ok();
    c.wait_for("6 replicas spread 2-2-2", Duration::from_secs(60), |c| {
        per_node(c) == [2, 2, 2]
    });
    let out = c
        .shoal(&["rollout", "status", "deploy/web", "--timeout", "60s"])
        .ok();
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );

    c.shoal(&["scale", "deploy/web", "--replicas", "9"]).ok();
    c.wait_for("9 replicas", Duration::from_secs(60), |c| {
        running(c).len() == 9 && web_pods(c) == 9
    });
    c.shoal(&["scale", "deploy/web", "--replicas", "2"]).ok();
    c.wait_for("2 replicas", Duration::from_secs(60), |c| {
        running(c).len() == 2 && web_pods(c) == 2
    });
    c.shoal(&["scale", "deploy/web", "--replicas", "4"]).ok();
    c.wait_for("4 replicas", Duration::from_secs(60), |c| {
        running(c).len() == 4 && web_pods(c) == 4
    });
    c.shoal(&["rollout", "status", "deploy/web", "--timeout", "60s"])
        .ok();

    // Roll out a new template and check every state the store went through, change by change:
    // never more than maxSurge (1) extra pods, never more than maxUnavailable (1) missing.
    let (mut watch, items) = PodWatch::start(&c, "app=web");
    let mut pods: BTreeMap<String, bool> = items.iter().map(|b| state_of(b)).collect();
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(4, "v2")))
        .ok();
    let (mut changes, mut peak, mut trough) = (0, 0, usize::MAX);
    let done = |pods: &BTreeMap<String, bool>| pods.len() == 4 && pods.values().all(|r| *r);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match watch.next(Duration::from_secs(1)) {
            Some((type_, object)) => {
                let (name, ready) = state_of(&object);
                match type_ {
                    EventType::Deleted => pods.remove(&name),
                    _ => pods.insert(name, ready),
                };
                changes += 1;
                let ready = pods.values().filter(|r| **r).count();
                peak = peak.max(pods.len());
                trough = trough.min(ready);
                assert!(
                    pods.len() <= 5,
                    "change {changes}: {} pods (4 + maxSurge 1): {pods:?}",
                    pods.len()
                );
                assert!(
                    ready >= 3,
                    "change {changes}: {ready} ready (4 - maxUnavailable 1): {pods:?}"
                );
            }
            // Quiet for a second: every change so far was checked. Finished?
            None => {
                if changes > 0
                    && done(&pods)
                    && c.shoal(&["rollout", "status", "deploy/web", "--watch=false"])
                        .stdout()
                        .contains("successfully rolled out")
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the rollout stalled after {changes} changes: {pods:?}\n{}\n{}\n{}",
                    c.shoal(&["get", "rs", "-o", "wide"]).stdout(),
                    c.shoal(&["get", "deploy", "web", "-o", "yaml"]).stdout(),
                    c.controller.log()
                );
            }
        }
    }
    println!("rollout: {changes} pod changes, at most {peak} pods, at least {trough} ready");
    assert!(
        changes >= 8,
        "four pods replaced: created, ready and deleted"
    );
    let sets = c.shoal(&["get", "rs", "--no-headers"]).ok();
    assert_eq!(
        sets.lines().count(),
        2,
        "the old ReplicaSet is kept, scaled to zero:\n{sets}"
    );
    assert!(
        sets.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("0")),
        "{sets}"
    );
    for pod in running(&c) {
        c.wait_for("the new template's output", Duration::from_secs(20), |c| {
            c.shoal(&["logs", &pod]).stdout() == "v2\n"
        });
    }

    // Deleting the Deployment takes its ReplicaSets and pods along.
    c.shoal(&["delete", "deploy", "web"]).ok();
    c.wait_for("nothing left", Duration::from_secs(60), |c| {
        web_pods(c) == 0 && c.shoal(&["get", "rs", "--no-headers"]).stdout().is_empty()
    });
}

fn history(c: &Cluster) -> Vec<String> {
    c.shoal(&["rollout", "history", "deploy/web"])
        .ok()
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn outputs(c: &Cluster) -> Vec<String> {
    let mut out: Vec<String> = running(c)
        .iter()
        .map(|p| c.shoal(&["logs", p]).stdout())
        .collect();
    out.sort();
    out
}

#[test]
fn rollout_undo_returns_to_the_previous_template_and_pause_holds_edits_until_resume() {
    let c = Cluster::start(2);
    c.push_probe();
    let settled = |c: &Cluster, message: &str| {
        c.shoal(&["rollout", "status", "deploy/web", "--watch=false"])
            .stdout()
            .contains("successfully rolled out")
            && web_pods(c) == 2
            && outputs(c) == vec![format!("{message}\n"); 2]
    };
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(2, "v1")))
        .ok();
    c.wait_for("v1", Duration::from_secs(60), |c| settled(c, "v1"));
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(2, "v2")))
        .ok();
    c.wait_for("v2", Duration::from_secs(60), |c| settled(c, "v2"));
    assert_eq!(history(&c), ["1", "2"]);

    let out = c.shoal(&["rollout", "undo", "deploy/web"]).ok();
    assert_eq!(out, "deployment.apps/web rolled back to revision 1\n");
    c.wait_for("v1 again", Duration::from_secs(60), |c| settled(c, "v1"));
    c.wait_for("the old set as revision 3", Duration::from_secs(20), |c| {
        history(c) == ["2", "3"]
    });
    assert_eq!(
        c.shoal(&["get", "rs", "--no-headers"]).ok().lines().count(),
        2,
        "undo reused the v1 ReplicaSet"
    );

    c.shoal(&["rollout", "pause", "deploy/web"]).ok();
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(
                &deployment(2, "v3")
                    .replace("spec:\n  replicas", "spec:\n  paused: true\n  replicas"),
            ),
        )
        .ok();
    // The controller has seen the paused v3 template (and said so) before absence is checked.
    c.wait_for(
        "the v3 template seen, paused",
        Duration::from_secs(30),
        |c| {
            let d = json(c, &["get", "deploy", "web"]);
            let paused = d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "DeploymentPaused");
            paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]
        },
    );
    assert_eq!(outputs(&c), ["v1\n", "v1\n"], "nothing rolls while paused");
    assert_eq!(
        c.shoal(&["get", "rs", "--no-headers"]).ok().lines().count(),
        2,
        "no new ReplicaSet while paused"
    );
    c.shoal(&["rollout", "resume", "deploy/web"]).ok();
    c.wait_for("v3 after resume", Duration::from_secs(60), |c| {
        settled(c, "v3")
    });
}

const DAEMON: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: daemon}
spec:
  selector: {matchLabels: {app: daemon}}
  template:
    metadata: {labels: {app: daemon}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: probe
        image: probe:1
        args: [print, watching, sleep, "600000"]
"#;

/// Node name of each Running pod with this label.
fn placements(c: &Cluster, label: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .shoal(&["get", "pods", "-l", label, "-o", "wide", "--no-headers"])
        .stdout()
        .lines()
        .filter(|l| l.contains(" Running "))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemonset_follows_nodes_and_drain_moves_everything_else() {
    let c = Cluster::start(3);
    c.push_probe();
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&format!("{DAEMON}---\n{}", deployment(2, "v1"))),
        )
        .ok();
    c.wait_for("a daemon on each node", Duration::from_secs(60), |c| {
        placements(c, "app=daemon") == ["node-1", "node-2", "node-3"]
    });

    // A fourth node joins: it gets a daemon. It leaves: its daemon goes.
    let dir = tempfile::tempdir().unwrap();
    let mut fourth = kit::Agent::start(&c.controller, "node-4", dir.path());
    c.wait_for("a daemon on the new node", Duration::from_secs(60), |c| {
        placements(c, "app=daemon") == ["node-1", "node-2", "node-3", "node-4"]
    });
    fourth.kill9();
    c.shoal(&["delete", "node", "node-4"]).ok();
    c.wait_for(
        "the daemon of the node that left removed",
        Duration::from_secs(60),
        |c| {
            c.shoal(&[
                "get",
                "pods",
                "-l",
                "app=daemon",
                "-o",
                "wide",
                "--no-headers",
            ])
            .stdout()
            .lines()
            .count()
                == 3
        },
    );

    // Cordon, then drain the node that holds a web pod: the web pods move, the daemon stays.
    c.wait_for("2 web pods", Duration::from_secs(60), |c| {
        running(c).len() == 2
    });
    let busy = placements(&c, "app=web")[0].clone();
    assert_eq!(
        c.shoal(&["cordon", &busy]).ok(),
        format!("node/{busy} cordoned\n")
    );
    assert!(c
        .shoal(&["get", "nodes", &busy, "--no-headers"])
        .ok()
        .contains("Ready,SchedulingDisabled"));
    let out = c.shoal(&["drain", &busy, "--timeout", "60"]).ok();
    assert!(out.ends_with(&format!("node/{busy} drained\n")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("pod/web-") && l.ends_with(" evicted")),
        "{out}"
    );
    // As kubectl's, a drain waits for the evicted pods to be gone; their Deployment runs
    // them again elsewhere.
    c.wait_for(
        "the web pods running elsewhere",
        Duration::from_secs(60),
        |c| {
            let web = placements(c, "app=web");
            web.len() == 2 && !web.contains(&busy)
        },
    );
    assert_eq!(
        placements(&c, "app=daemon"),
        ["node-1", "node-2", "node-3"],
        "daemon pods stay"
    );
    assert_eq!(
        c.shoal(&["uncordon", &busy]).ok(),
        format!("node/{busy} uncordoned\n")
    );
}

fn job(name: &str, completions: u32, parallelism: u32, backoff: u32, args: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  template:
    spec:
      runtimeClassName: wasm
      restartPolicy: Never
      containers:
      - name: probe
        image: probe:1
        args: {args}
"#
    )
}

/// Asserts the Job's row in `get jobs`: Complete, with these completions.
fn complete(c: &Cluster, job: &str, completions: &str) {
    let table = c.shoal(&["get", "job", job, "--no-headers"]).ok();
    assert!(
        table
            .split_whitespace()
            .take(3)
            .eq([job, "Complete", completions]),
        "{table}"
    );
}

#[test]
fn a_job_completes_exactly_its_completions_and_a_failing_one_stops_at_its_backoff_limit() {
    let c = Cluster::start(2);
    c.push_probe();

    // Follow every pod change of the job to check it never runs more than `parallelism`.
    let (mut watch, _) = PodWatch::start(&c, "job-name=batch");
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&job("batch", 5, 2, 6, "[print, done, sleep, \"300\"]")),
        )
        .ok();
    let out = c
        .shoal(&[
            "wait",
            "--for=condition=complete",
            "job/batch",
            "--timeout",
            "60s",
        ])
        .ok();
    assert_eq!(out, "job/batch condition met\n");
    let mut phases: BTreeMap<String, String> = BTreeMap::new();
    let mut most_active = 0;
    while let Some((type_, object)) = watch.next(Duration::from_millis(500)) {
        let v: serde_json::Value = serde_json::from_slice(&object).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        match type_ {
            EventType::Deleted => phases.remove(&name),
            _ => phases.insert(
                name,
                v["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string(),
            ),
        };
        let active = phases
            .values()
            .filter(|p| !matches!(p.as_str(), "Succeeded" | "Failed"))
            .count();
        most_active = most_active.max(active);
    }
    assert!(
        most_active <= 2,
        "{most_active} pods active at once (parallelism 2)"
    );
    assert_eq!(
        phases
            .values()
            .filter(|p| p.as_str() == "Succeeded")
            .count(),
        5,
        "{phases:?}"
    );
    assert_eq!(phases.len(), 5, "exactly 5 pods: {phases:?}");
    complete(&c, "batch", "5/5");
    assert_eq!(
        c.shoal(&["get", "pods", "-l", "job-name=batch", "--no-headers"])
            .ok()
            .matches(" Completed ")
            .count(),
        5
    );

    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&job("doomed", 1, 1, 2, "[print, failing, exit, \"1\"]")),
        )
        .ok();
    c.shoal(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout",
        "60s",
    ])
    .ok();
    let j: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "job", "doomed", "-o", "json"]).ok()).unwrap();
    assert_eq!(
        j["status"]["conditions"][0]["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(
        j["status"]["failed"], 3,
        "backoffLimit 2: the third failure stops it"
    );
    c.wait_reconcile_pass();
    assert_eq!(
        c.shoal(&["get", "pods", "-l", "job-name=doomed", "--no-headers"])
            .ok()
            .lines()
            .count(),
        3,
        "no pod after the limit"
    );
    let err = c
        .shoal(&[
            "wait",
            "--for=condition=complete",
            "job/doomed",
            "--timeout",
            "1s",
        ])
        .fails();
    assert!(
        err.contains("timed out waiting for the condition complete on jobs/doomed"),
        "{err}"
    );

    // A drain of nodes that hold finished Job pods returns once they are gone (as kubectl's:
    // they never run again, so there is nothing to wait for), and the Jobs keep their counts.
    for node in ["node-1", "node-2"] {
        let out = c.shoal(&["drain", node, "--timeout", "30"]).ok();
        assert!(out.ends_with(&format!("node/{node} drained\n")), "{out}");
    }
    assert_eq!(
        c.shoal(&["get", "pods", "--no-headers"]).stdout(),
        "",
        "every finished pod evicted"
    );
    c.wait_reconcile_pass();
    complete(&c, "batch", "5/5");
    let j: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "job", "doomed", "-o", "json"]).ok()).unwrap();
    assert_eq!(j["status"]["failed"], 3, "{j}");
}

/// A drain of a node that is gone (its agent killed) still returns: a pod's deletion does
/// not wait on its node (the node stops what it no longer sees when it comes back).
#[test]
fn a_drain_of_a_dead_node_returns_once_its_pods_are_deleted() {
    let mut c = Cluster::start(1);
    c.push_probe();
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(1, "v1")))
        .ok();
    c.wait_for("the web pod running", Duration::from_secs(60), |c| {
        running(c).len() == 1
    });
    let pod = running(&c)[0].clone();
    c.agents[0].kill9();
    let out = c.shoal(&["drain", "node-1", "--timeout", "30"]).ok();
    assert!(out.contains(&format!("pod/{pod} evicted\n")), "{out}");
    assert!(out.ends_with("node/node-1 drained\n"), "{out}");
}

/// How many pods with this label are marked lost.
fn lost(c: &Cluster, label: &str) -> usize {
    c.shoal(&["get", "pods", "-l", label, "--no-headers"])
        .stdout()
        .matches(" NodeLost ")
        .count()
}

/// A cluster for the tests of lost nodes: a node is NotReady 3 s after it goes silent and its
/// pods are taken as lost 3 s later (its agents report every second).
struct Lossy {
    c: Cluster,
    token: String,
    dir: tempfile::TempDir,
}

impl Lossy {
    fn start() -> Lossy {
        let dir = tempfile::tempdir().unwrap();
        let controller = kit::Controller::start_with_args(
            &dir.path().join("c"),
            &[
                "--node-grace-period",
                "3",
                "--default-unreachable-toleration-seconds",
                "3",
            ],
        );
        let token = std::fs::read_to_string(controller.dir.join("token")).unwrap();
        Lossy {
            c: Cluster::adopt(controller, vec![]),
            token: token.trim().to_string(),
            dir,
        }
    }

    /// An agent named `name` (its data kept across its restarts).
    fn agent(&self, name: &str) -> kit::Agent {
        kit::Agent::with(&self.c.controller, name, &self.dir.path().join(name))
            .token(&self.token)
            .args(&["--node-status-update-frequency", "1"])
            .start()
    }
}

/// A Job's pod on a node that is lost is replaced; when the node comes back with it, the Job
/// keeps one of the two and completes once, as a ReplicaSet resolves its duplicates.
#[test]
fn a_jobs_pod_on_a_lost_node_is_replaced_and_the_job_completes_once() {
    let lossy = Lossy::start();
    let (c, agent) = (&lossy.c, |name: &str| lossy.agent(name));
    let mut agents = [agent("node-1"), agent("node-2")];
    c.wait_nodes_ready();
    c.push_probe();
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&job(
                "lasting",
                1,
                1,
                6,
                "[print, working, sleep, \"15000\"]",
            )),
        )
        .ok();
    c.wait_for("the job's pod running", Duration::from_secs(60), |c| {
        placements(c, "job-name=lasting").len() == 1
    });
    let node = placements(c, "job-name=lasting")[0].clone();
    let i = usize::from(node == "node-2");
    agents[i].kill9();
    c.wait_for(
        "a replacement running on the other node, the original marked lost",
        Duration::from_secs(60),
        |c| {
            let lost = lost(c, "job-name=lasting");
            lost == 1 && placements(c, "job-name=lasting").iter().any(|n| n != &node)
        },
    );
    agents[i] = agent(&node);
    c.shoal(&[
        "wait",
        "--for=condition=complete",
        "job/lasting",
        "--timeout",
        "90s",
    ])
    .ok();
    c.wait_reconcile_pass();
    let j: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "job", "lasting", "-o", "json"]).ok()).unwrap();
    assert_eq!(j["status"]["succeeded"], 1, "completed once: {j}");
    let left = c
        .shoal(&["get", "pods", "-l", "job-name=lasting", "--no-headers"])
        .ok();
    assert_eq!(left.lines().count(), 1, "one of the two stayed: {left}");
}

#[test]
fn pods_of_a_dead_node_are_replaced_after_their_toleration_and_its_return_leaves_exactly_the_replicas(
) {
    let lossy = Lossy::start();
    let (c, agent) = (&lossy.c, |name: &str| lossy.agent(name));
    let _first = agent("node-1");
    let mut second = agent("node-2");
    c.wait_for("two nodes Ready", Duration::from_secs(30), |c| {
        c.shoal(&["get", "nodes", "--no-headers"])
            .stdout()
            .matches(" Ready ")
            .count()
            == 2
    });
    c.push_probe();
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(4, "v1")))
        .ok();
    c.wait_for("2-2 spread", Duration::from_secs(60), |c| {
        placements(c, "app=web") == ["node-1", "node-1", "node-2", "node-2"]
    });
    // A DaemonSet beside it: its pod tolerates the node being away (it is never lost), but
    // while its node is silent it is not ready, and ready again when the node is back.
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(DAEMON))
        .ok();
    let daemon_ready_on_2 = |c: &Cluster| -> Option<(String, String)> {
        let out = c
            .shoal(&["get", "pods", "-l", "app=daemon", "-o", "json"])
            .stdout();
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        let pod = list["items"]
            .as_array()?
            .iter()
            .find(|p| p["spec"]["nodeName"] == "node-2")?
            .clone();
        let ready = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        Some((
            ready["status"].as_str()?.to_string(),
            ready["reason"].as_str().unwrap_or_default().to_string(),
        ))
    };
    c.wait_for("the daemon ready on node-2", Duration::from_secs(60), |c| {
        daemon_ready_on_2(c).is_some_and(|(s, _)| s == "True")
    });

    second.kill9();
    c.wait_for(
        "the daemon on the silent node-2 not ready",
        Duration::from_secs(30),
        |c| daemon_ready_on_2(c) == Some(("False".into(), "NodeNotReady".into())),
    );
    c.wait_for(
        "node-2 NotReady and tainted",
        Duration::from_secs(30),
        |c| {
            let n: serde_json::Value =
                serde_json::from_str(&c.shoal(&["get", "node", "node-2", "-o", "json"]).stdout())
                    .unwrap_or_default();
            n["spec"]["taints"][0]["key"] == "node.kubernetes.io/unreachable"
        },
    );
    let on_node_2 = |c: &Cluster| -> Vec<String> {
        c.shoal(&["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"])
            .stdout()
            .lines()
            .filter(|l| l.contains(" Running ") && l.trim_end().ends_with("node-2"))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    };
    let originals = on_node_2(c);
    assert_eq!(originals.len(), 2);
    c.wait_for(
        "the pods replaced on node-1, the lost ones marked, not deleted",
        Duration::from_secs(60),
        |c| {
            let lost = lost(c, "app=web");
            placements(c, "app=web") == ["node-1", "node-1", "node-1", "node-1"] && lost == 2
        },
    );

    let _back = agent("node-2");
    c.wait_for("node-2 Ready and untainted", Duration::from_secs(30), |c| {
        let n: serde_json::Value =
            serde_json::from_str(&c.shoal(&["get", "node", "node-2", "-o", "json"]).stdout())
                .unwrap_or_default();
        n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())
            && c.shoal(&["get", "nodes", "--no-headers"])
                .stdout()
                .matches(" Ready ")
                .count()
                == 2
    });
    c.wait_for(
        "the daemon on node-2 ready again",
        Duration::from_secs(30),
        |c| daemon_ready_on_2(c).is_some_and(|(s, _)| s == "True"),
    );
    // Invariant: exactly the desired replicas, and the pods that came back stay (the default
    // policy, keep-original): their replacements on node-1 are the ones removed.
    c.wait_for("duplicates resolved", Duration::from_secs(30), |c| {
        web_pods(c) == 4 && running(c).len() == 4
    });
    c.wait_reconcile_pass();
    assert_eq!(
        web_pods(c),
        4,
        "exactly the desired replicas, no duplicates"
    );
    assert_eq!(running(c).len(), 4);
    let mut back = on_node_2(c);
    back.sort();
    let mut want = originals.clone();
    want.sort();
    assert_eq!(back, want, "the originals stayed");
}

#[test]
fn a_rollout_that_cannot_progress_fails_rollout_status_after_its_deadline() {
    let c = Cluster::start(1);
    let stuck = deployment(2, "v1")
        .replace("image: probe:1", "image: absent:1")
        .replace(
            "  replicas: 2\n",
            "  replicas: 2\n  progressDeadlineSeconds: 3\n",
        );
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&stuck))
        .ok();
    let err = c
        .shoal(&["rollout", "status", "deploy/web", "--timeout", "60s"])
        .fails();
    assert!(
        err.contains("deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
    // The pods that hold it are named, with why.
    assert!(
        err.lines()
            .any(|l| l.starts_with("  pod/web-") && l.contains("waiting on node/node-1")),
        "{err}"
    );
    let d: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "deploy", "web", "-o", "json"]).ok()).unwrap();
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        (
            progressing["status"].as_str(),
            progressing["reason"].as_str()
        ),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );
}

fn json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.shoal(&all).ok()).unwrap()
}

fn names(c: &Cluster, kind: &str, selector: &str) -> Vec<String> {
    c.shoal(&["get", kind, "-l", selector, "--no-headers"])
        .stdout()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn min_ready_seconds_delays_availability_and_delete_cascades_foreground_or_orphans() {
    let c = Cluster::start(1);
    c.push_probe();
    let slow =
        deployment(2, "v1").replace("  replicas: 2\n", "  replicas: 2\n  minReadySeconds: 6\n");
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&slow))
        .ok();
    // Ready first; available only once ready for minReadySeconds.
    let mut seen_ready_not_available = false;
    c.wait_for("2 available replicas", Duration::from_secs(60), |c| {
        let st = &json(c, &["get", "deploy", "web"])["status"];
        if st["readyReplicas"] == 2 && st["availableReplicas"].as_i64().unwrap_or(0) == 0 {
            seen_ready_not_available = true;
        }
        st["availableReplicas"] == 2
    });
    assert!(
        seen_ready_not_available,
        "ready pods count as available only after minReadySeconds"
    );

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, no longer owned.
    let pods = names(&c, "pods", "app=web");
    assert_eq!(pods.len(), 2);
    let rs = names(&c, "rs", "app=web");
    assert_eq!(rs.len(), 1);
    c.shoal(&["delete", "deploy", "web", "--cascade=orphan"])
        .ok();
    c.wait_for("the ReplicaSet released", Duration::from_secs(30), |c| {
        json(c, &["get", "rs", &rs[0]])["metadata"]["ownerReferences"].is_null()
    });
    assert_eq!(names(&c, "pods", "app=web"), pods, "the pods are untouched");

    c.shoal(&["delete", "rs", &rs[0], "--cascade=orphan"]).ok();
    c.wait_for("the pods released", Duration::from_secs(30), |c| {
        pods.iter()
            .all(|p| json(c, &["get", "pod", p])["metadata"]["ownerReferences"].is_null())
    });
    assert_eq!(
        names(&c, "pods", "app=web"),
        pods,
        "orphaned pods keep running"
    );
    for p in &pods {
        let pod = c.pod(p);
        assert_eq!(pod["status"]["phase"], "Running", "{pod}");
        assert!(pod["metadata"]["ownerReferences"].is_null(), "{pod}");
    }
    c.shoal(&["delete", "pods", "-l", "app=web"]).ok();

    // Foreground: `delete` returns once the pods and the ReplicaSet are gone, the Deployment
    // last; while it waits, the Deployment is still there, marked.
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(3, "v1")))
        .ok();
    c.wait_for("3 replicas", Duration::from_secs(60), |c| {
        running(c).len() == 3
    });
    let mut watch = std::process::Command::new(kit::shoal_bin())
        .env("SHOAL_CONFIG", c.controller.config())
        .args(["get", "deploy", "--watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = c
        .shoal(&[
            "delete",
            "deploy",
            "web",
            "--cascade=foreground",
            "--timeout",
            "60s",
        ])
        .ok();
    assert_eq!(out, "deployment.apps \"web\" deleted\n");
    assert!(names(&c, "pods", "app=web").is_empty(), "no pods left");
    assert!(names(&c, "rs", "app=web").is_empty(), "no ReplicaSet left");
    std::thread::sleep(Duration::from_secs(1));
    let _ = watch.kill();
    let output = watch.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&output.stdout);
    assert!(
        seen.contains("\"foregroundDeletion\"") && seen.contains("\"deletionTimestamp\""),
        "the Deployment was marked while its dependents went:\n{seen}"
    );
}

/// The Jobs a CronJob made, oldest first (their names end in their scheduled minute).
fn cron_jobs(c: &Cluster, cronjob: &str) -> Vec<serde_json::Value> {
    let out = c.shoal(&["get", "jobs", "-o", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let items = match v["items"].as_array() {
        Some(items) => items.clone(),
        None if v["kind"] == "Job" => vec![v],
        None => vec![],
    };
    let mut mine: Vec<serde_json::Value> = items
        .into_iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cronjob)
        .collect();
    mine.sort_by_key(|j| {
        j["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    mine
}

/// A CronJob every minute makes one Job per minute, named after it, each running its pod to
/// completion; finished ones past its history limit go; a schedule or time zone that does not
/// parse is refused naming the field.
#[test]
fn a_cronjob_starts_a_job_each_scheduled_minute_and_keeps_its_history_limit() {
    let c = Cluster::start(1);
    c.push_probe();
    let cronjob = |schedule: &str, zone: &str| {
        format!(
            r#"apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "{schedule}"
  timeZone: {zone}
  successfulJobsHistoryLimit: 1
  jobTemplate:
    metadata: {{labels: {{app: tick}}}}
    spec:
      template:
        spec:
          runtimeClassName: wasm
          restartPolicy: Never
          containers:
          - name: probe
            image: probe:1
            args: [print, tick]
"#
        )
    };
    let bad = c
        .controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&cronjob("61 * * * *", "UTC")))
        .fails();
    assert!(bad.contains("spec.schedule"), "{bad}");
    let bad = c
        .controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&cronjob("* * * * *", "Mars/Base")),
        )
        .fails();
    assert!(
        bad.contains("spec.timeZone") && bad.contains("Mars/Base"),
        "{bad}"
    );

    c.apply(&cronjob("* * * * *", "Europe/Berlin"));
    c.wait_for("the first scheduled Job", Duration::from_secs(80), |c| {
        !cron_jobs(c, "tick").is_empty()
    });
    let first = cron_jobs(&c, "tick")[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let minute: i64 = first
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("a Job named after its minute: {first}"));
    assert!(
        (minute * 60 - now_secs()).abs() < 120,
        "{first} is named after a minute near now"
    );
    c.wait_for("the first Job complete", Duration::from_secs(60), |c| {
        c.shoal(&["get", "job", &first, "--no-headers"])
            .stdout()
            .contains("Complete")
    });
    let cj = c.shoal(&["get", "cronjob", "tick", "-o", "json"]).ok();
    let cj: serde_json::Value = serde_json::from_str(&cj).expect("json");
    assert!(
        kit::field(&cj, "status.lastScheduleTime").ends_with(":00Z"),
        "{cj}"
    );
    assert_eq!(kit::field(&cj, "spec.timeZone"), "Europe/Berlin");
    let table = c.shoal(&["get", "cronjobs"]).ok();
    assert!(
        table.contains("* * * * *") && table.contains("Europe/Berlin"),
        "{table}"
    );

    // The next minute: a second Job; the first, past the history limit of 1, goes.
    c.wait_for(
        "the next minute's Job, the first gone",
        Duration::from_secs(90),
        |c| {
            let jobs = cron_jobs(c, "tick");
            jobs.iter().all(|j| j["metadata"]["name"] != first.as_str())
                && jobs
                    .iter()
                    .any(|j| j["status"]["conditions"].to_string().contains("Complete"))
        },
    );
    let jobs = cron_jobs(&c, "tick");
    let last = jobs.last().expect("a Job");
    assert_eq!(
        last["metadata"]["labels"]["app"], "tick",
        "the template's labels: {last}"
    );
    let job_name = kit::field(last, "metadata.name");
    let pods = c.pods(&format!("job-name={job_name}"));
    let name = kit::field(pods.first().expect("its pod"), "metadata.name");
    assert_eq!(c.shoal(&["logs", &name]).ok().trim(), "tick");
}

/// The pods an agent says it started for a CronJob while cut off from the controller.
fn started_offline(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("this node starts the scheduled run itself"))
        .filter_map(|l| {
            let at = l.find("pod=")?;
            Some(
                l[at + 4..]
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn a_pinned_cronjob_keeps_firing_on_its_node_while_the_controller_is_away_and_each_run_is_reported_once(
) {
    let mut c = Cluster::start(1);
    c.push_probe();
    c.apply(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: sample}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 10
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          nodeName: node-1
          runtimeClassName: wasm
          restartPolicy: Never
          containers:
          - name: probe
            image: probe:1
            args: [print, sampled]
"#,
    );
    // The node learns of the CronJob pinned to it, with its times ahead.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c.agents[0].log().contains("CronJobs pinned to this node") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            c.agents[0].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The node fetches the CronJob's image ahead: no run here has needed it yet, and none
    // could fetch it once the controller is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c.agents[0]
        .log()
        .lines()
        .any(|l| l.contains("fetched ahead") && l.contains("probe:1"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            c.agents[0].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The controller goes away (a power cut at the site's server).
    let (addr, dir) = (c.controller.addr.clone(), c.controller.dir.clone());
    c.controller.kill9();
    let away = now_secs();
    // Two scheduled minutes on, the node has started both runs by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(170);
    while started_offline(&c.agents[0].log()).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            c.agents[0].log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let offline = started_offline(&c.agents[0].log());
    std::thread::sleep(Duration::from_secs(3));
    c.controller = kit::Controller::start_listening(&dir, &addr, &[]);

    // Back: each run is its minute's Job, once, with the one pod that ran on the node.
    c.wait_for(
        "the runs from while the controller was away, reported",
        Duration::from_secs(60),
        |c| {
            offline.iter().all(|pod| {
                c.shoal(&["get", "pod", pod, "--no-headers"])
                    .stdout()
                    .contains("Completed")
            })
        },
    );
    for pod in &offline {
        let p = c.pod(pod);
        assert_eq!(kit::field(&p, "spec.nodeName"), "node-1", "{p}");
        assert_eq!(kit::field(&p, "status.phase"), "Succeeded", "{p}");
        let job = kit::field(&p, "metadata.labels.job-name");
        let minute: i64 = job
            .strip_prefix("sample-")
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("a Job named after its minute: {job}"));
        assert!(
            minute * 60 >= away,
            "{job} is of a minute after the controller went away"
        );
        assert_eq!(c.shoal(&["logs", pod]).ok(), "sampled\n");
        let pods = c.shoal(&[
            "get",
            "pods",
            "-l",
            &format!("job-name={job}"),
            "-o",
            "name",
        ]);
        assert_eq!(pods.ok().trim(), format!("pod/{pod}"), "one pod for {job}");
    }
    c.wait_for("the reported Jobs complete", Duration::from_secs(60), |c| {
        cron_jobs(c, "sample")
            .iter()
            .filter(|j| {
                offline
                    .iter()
                    .any(|p| p.starts_with(&format!("{}-", kit::field(j, "metadata.name"))))
            })
            .filter(|j| kit::field(j, "status.conditions.0.type") == "Complete")
            .count()
            == offline.len()
    });
    // No minute has two Jobs, and no Job two pods: the controller started none of the
    // node's runs again.
    let jobs = cron_jobs(&c, "sample");
    let names: Vec<String> = jobs
        .iter()
        .map(|j| kit::field(j, "metadata.name"))
        .collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique);
    let all = c.shoal(&["get", "pods", "-o", "name"]).ok();
    for name in &names {
        let of_job = all
            .lines()
            .filter(|l| l.starts_with(&format!("pod/{name}-")))
            .count();
        assert_eq!(of_job, 1, "{name}: {all}");
    }
    let cj = c.shoal(&["get", "cronjob", "sample", "-o", "json"]).ok();
    let cj: serde_json::Value = serde_json::from_str(&cj).expect("json");
    let last = offline
        .iter()
        .filter_map(|p| {
            p.rsplit_once('-')?
                .0
                .strip_prefix("sample-")?
                .parse::<i64>()
                .ok()
        })
        .max()
        .unwrap_or_default();
    assert!(
        kit::field(&cj, "status.lastScheduleTime") >= chrono_like(last * 60),
        "{cj}"
    );
    let events = c.shoal(&["get", "events"]).ok();
    assert!(
        events.contains("while cut off from the controller"),
        "{events}"
    );
}

/// `secs` as RFC 3339 in UTC, as the API writes times.
fn chrono_like(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
