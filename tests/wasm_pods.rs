//! End-to-end tests of wasm pods: a controller and two agents as separate processes on
//! loopback, pods placed by the scheduler, run by wasmtime, their logs read through the CLI.

mod kit;

use kit::{field, wasm_fixture, Agent, Cluster};
use std::time::Duration;

fn probe_pod(name: &str, image: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: probe}}}}\nspec:\n  runtimeClassName: wasm\n{extra}  containers:\n  - name: probe\n    image: {image}\n    args: [{}]\n    resources: {{requests: {{cpu: 10m, memory: 4Mi}}}}\n",
        args.join(", ")
    )
}

/// A field of a pod's JSON by its dotted path (`status.containerStatuses.0.ready`), as text.

#[test]
fn wasm_pods_spread_over_two_agents_run_and_their_logs_come_back() {
    let c = Cluster::start(2);
    let image = c.push_probe();
    let manifest: String = (1..=4)
        .map(|i| {
            probe_pod(
                &format!("p{i}"),
                image,
                &[
                    "print",
                    &format!("hello from p{i}"),
                    "eprint",
                    "to stderr",
                    "sleep",
                    "600000",
                ],
                "",
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&manifest))
        .ok();
    c.wait_for("4 pods Running", Duration::from_secs(60), |c| {
        c.shoal(&["get", "pods", "--no-headers"])
            .stdout()
            .lines()
            .filter(|l| l.contains(" Running "))
            .count()
            == 4
    });
    let wide = c.shoal(&["get", "pods", "-o", "wide", "--no-headers"]).ok();
    for node in ["node-1", "node-2"] {
        let n = wide
            .lines()
            .filter(|l| l.trim_end().ends_with(node))
            .count();
        assert_eq!(n, 2, "pods are spread over both agents:\n{wide}");
    }
    for i in 1..=4 {
        c.wait_for("the pod's output", Duration::from_secs(20), |c| {
            c.shoal(&["logs", &format!("p{i}")]).stdout() == format!("hello from p{i}\nto stderr\n")
        });
        let pod = c.pod(&format!("p{i}"));
        assert_eq!(field(&pod, "status.phase"), "Running");
        assert_eq!(field(&pod, "status.containerStatuses.0.ready"), "true");
        assert!(!field(&pod, "status.hostIP").is_empty());
    }
    assert_eq!(c.shoal(&["logs", "p1", "--tail", "1"]).ok(), "to stderr\n");
    let err = c.shoal(&["logs", "p1", "-c", "nope"]).fails();
    assert!(
        err.contains("container \"nope\" is not valid for pod \"p1\""),
        "{err}"
    );
    // Deleting a pod stops it on its node.
    c.shoal(&["delete", "pod", "p1"]).ok();
    c.wait_for("p1 gone from its agent", Duration::from_secs(20), |c| {
        c.agents
            .iter()
            .any(|a| a.log().contains("stopping pod") && a.log().contains("pod=p1"))
    });
}

#[test]
fn a_failing_module_goes_into_crash_loop_back_off_with_growing_delays() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&probe_pod(
                "crasher",
                image,
                &["print", "boom", "exit", "3"],
                "",
            )),
        )
        .ok();
    c.wait_for(
        "a first crash loop back-off of 10s",
        Duration::from_secs(30),
        |c| {
            let p = c.pod("crasher");
            field(&p, "status.containerStatuses.0.state.waiting.message")
                .starts_with("back-off 10s")
        },
    );
    assert!(c
        .shoal(&["get", "pods", "--no-headers"])
        .ok()
        .contains("CrashLoopBackOff"));
    c.wait_for(
        "a second back-off of 20s after the first restart",
        Duration::from_secs(40),
        |c| {
            let p = c.pod("crasher");
            field(&p, "status.containerStatuses.0.restartCount") == "1"
                && field(&p, "status.containerStatuses.0.state.waiting.message")
                    .starts_with("back-off 20s")
        },
    );
    let p = c.pod("crasher");
    assert_eq!(
        field(
            &p,
            "status.containerStatuses.0.lastState.terminated.exitCode"
        ),
        "3"
    );
    assert_eq!(c.shoal(&["logs", "crasher", "--previous"]).ok(), "boom\n");
    // describe shows what happened, newest last, repeats counted.
    let described = c.shoal(&["describe", "pod", "crasher"]).ok();
    let events = &described[described.find("Events:").expect("an Events section")..];
    let order: Vec<&str> = ["Scheduled", "Pulled", "Started", "BackOff"]
        .into_iter()
        .filter(|r| events.contains(&format!(" {r} ")))
        .collect();
    assert_eq!(
        order,
        ["Scheduled", "Pulled", "Started", "BackOff"],
        "{events}"
    );
    let positions: Vec<usize> = order
        .iter()
        .map(|r| events.find(&format!(" {r} ")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "newest last:\n{events}"
    );
}

#[test]
fn over_the_memory_limit_is_oom_killed_and_too_big_stays_pending_with_the_reason() {
    let c = Cluster::start(2);
    let image = c.push_probe();
    let hog = probe_pod("hog", image, &["alloc", "64"], "  restartPolicy: Never\n").replace(
        "resources: {requests: {cpu: 10m, memory: 4Mi}}",
        "resources: {requests: {cpu: 10m, memory: 4Mi}, limits: {memory: 16Mi}}",
    );
    let huge =
        probe_pod("huge", image, &["sleep", "1"], "").replace("memory: 4Mi", "memory: 100000Gi");
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&format!("{hog}---\n{huge}")))
        .ok();
    c.wait_for("the hog to fail", Duration::from_secs(60), |c| {
        field(&c.pod("hog"), "status.phase") == "Failed"
    });
    let hog = c.pod("hog");
    assert_eq!(
        field(&hog, "status.containerStatuses.0.state.terminated.reason"),
        "OOMKilled"
    );
    assert_eq!(
        field(&hog, "status.containerStatuses.0.state.terminated.exitCode"),
        "137"
    );
    c.wait_for("the reason huge is pending", Duration::from_secs(30), |c| {
        field(&c.pod("huge"), "status.conditions.0.message")
            == "0/2 nodes available: 2 insufficient memory"
    });
    assert_eq!(field(&c.pod("huge"), "status.phase"), "Pending");
    // The agents are unharmed: a new pod still runs.
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&probe_pod(
                "after",
                image,
                &["print", "still here", "sleep", "600000"],
                "",
            )),
        )
        .ok();
    c.wait_for("a pod after the OOM", Duration::from_secs(30), |c| {
        c.shoal(&["logs", "after"]).stdout() == "still here\n"
    });
}

#[test]
fn an_agent_that_boots_before_its_controller_joins_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = kit::Controller::start(&dir.path().join("controller"));
    let addr = first.addr.clone();
    first.kill9();
    // The device boots while the controller is down: it keeps trying, it does not exit.
    let mut agent = Agent::start(&first, "early", &dir.path().join("agent"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !agent.log().contains("cannot join the cluster yet") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        assert!(
            agent.wait_exit(Duration::from_millis(200)).is_none(),
            "{}",
            agent.log()
        );
    }
    // The controller comes back on its address, with its CA (so the token still pins it).
    let back = kit::Controller::start_listening(&dir.path().join("controller"), &addr, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = back.shoal(&["get", "nodes", "--no-headers"]).stdout();
        if nodes.contains("early") && nodes.contains(" Ready ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        agent.log().contains("joined the cluster"),
        "{}",
        agent.log()
    );
}

#[test]
fn an_agent_with_a_token_for_another_cluster_is_refused() {
    let c = Cluster::start(0);
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("SHOAL1::{}::nottherightsecret", "0".repeat(64));
    let mut agent = Agent::with(&c.controller, "intruder", dir.path())
        .token(&wrong)
        .start();
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .expect("the agent gives up");
    assert!(!status.success());
    assert!(
        agent
            .log()
            .contains("the controller's CA does not match the token"),
        "{}",
        agent.log()
    );
    // Right CA, wrong secret.
    let real = std::fs::read_to_string(c.controller.dir.join("token")).unwrap();
    let forged = format!("{}::forged", real.trim().rsplit_once("::").unwrap().0);
    let mut agent = Agent::with(&c.controller, "intruder", &dir.path().join("2"))
        .token(&forged)
        .start();
    assert!(!agent
        .wait_exit(Duration::from_secs(30))
        .expect("the agent gives up")
        .success());
    assert!(
        agent
            .log()
            .contains("the join token is not valid for this cluster"),
        "{}",
        agent.log()
    );
    assert_eq!(
        c.shoal(&["get", "nodes"]).stderr().trim(),
        "No resources found"
    );
}

#[test]
fn configmap_secret_and_empty_dir_volumes_and_secret_env_reach_the_guest() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{greeting: "from a configmap\n"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app-secret}}
stringData: {{password: "s3cret\n"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  volumes:
  - {{name: config, configMap: {{name: app-config}}}}
  - {{name: secret, secret: {{secretName: app-secret}}}}
  - {{name: scratch, emptyDir: {{}}}}
  containers:
  - name: probe
    image: {image}
    args: [cat, /config/greeting, cat, /secret/password, env, PASSWORD, write, /scratch/f, "written\n", cat, /scratch/f, write, /config/nope, x]
    env:
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: app-secret, key: password}}}}
    volumeMounts:
    - {{name: config, mountPath: /config, readOnly: true}}
    - {{name: secret, mountPath: /secret, readOnly: true}}
    - {{name: scratch, mountPath: /scratch}}
"#
    );
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&manifest))
        .ok();
    c.wait_for("the pod to finish", Duration::from_secs(60), |c| {
        field(&c.pod("vols"), "status.phase") == "Failed"
    });
    let logs = c.shoal(&["logs", "vols"]).ok();
    assert!(
        logs.starts_with(
            "from a configmap\ns3cret\nPASSWORD=s3cret\n\nwritten\nwrite /config/nope:"
        ),
        "{logs}"
    );
    let pod = c.pod("vols");
    assert_eq!(
        field(&pod, "status.containerStatuses.0.state.terminated.exitCode"),
        "2",
        "the read-only volume refused the write"
    );
}

#[test]
fn a_missing_artifact_leaves_the_pod_waiting_with_the_reason() {
    let c = Cluster::start(1);
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&probe_pod("ghost", "nothere:1", &["print", "x"], "")),
        )
        .ok();
    let waiting = |c: &Cluster| {
        let p = c.pod("ghost");
        (
            field(&p, "status.containerStatuses.0.state.waiting.reason"),
            field(&p, "status.containerStatuses.0.state.waiting.message"),
        )
    };
    c.wait_for(
        "ErrImagePull with the reason",
        Duration::from_secs(30),
        |c| {
            let (reason, message) = waiting(c);
            reason == "ErrImagePull"
                && message.contains("artifact \"nothere:1\"")
                && message.contains("shoal push")
        },
    );
    c.wait_for("ImagePullBackOff", Duration::from_secs(30), |c| {
        waiting(c).0 == "ImagePullBackOff"
    });
    assert!(c
        .shoal(&["get", "pods", "--no-headers"])
        .ok()
        .contains("ImagePullBackOff"));
    // Pushing it later lets the pod start on the next attempt.
    let wasm = wasm_fixture("probe", "wasm32-wasip1");
    c.shoal(&["push", wasm.to_str().unwrap(), "nothere:1"]).ok();
    c.wait_for(
        "the pod to run once the artifact exists",
        Duration::from_secs(60),
        |c| {
            field(&c.pod("ghost"), "status.phase") == "Succeeded"
                || c.shoal(&["logs", "ghost"]).stdout() == "x\n"
        },
    );
}

#[test]
fn logs_follow_streams_new_output_as_it_is_written() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let steps = [
        "print", "first", "sleep", "1500", "print", "second", "sleep", "600000",
    ];
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&probe_pod("talker", image, &steps, "")),
        )
        .ok();
    c.wait_for("the first line", Duration::from_secs(30), |c| {
        c.shoal(&["logs", "talker"]).stdout() == "first\n"
    });
    let mut follow = std::process::Command::new(kit::shoal_bin())
        .args(["logs", "-f", "talker"])
        .env("SHOAL_CONFIG", c.controller.config())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let lines: Vec<String> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        lines,
        ["first", "second"],
        "the second line arrived while following"
    );
}

#[test]
fn a_node_whose_agent_dies_turns_not_ready_and_ready_again_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let controller =
        kit::Controller::start_with_args(&dir.path().join("c"), &["--node-grace-period", "3"]);
    let token = std::fs::read_to_string(controller.dir.join("token")).unwrap();
    let agent_dir = dir.path().join("a");
    let start_agent = || {
        Agent::with(&controller, "edge-1", &agent_dir)
            .token(token.trim())
            .args(&["--node-status-update-frequency", "1"])
            .start()
    };
    let status = || {
        let out = controller.shoal(&["get", "nodes", "--no-headers"]).stdout();
        // NotReady says since when: NotReady(disconnected 4s).
        out.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .split('(')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let wait = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while status() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "node never became {want}: {}",
                controller.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let mut agent = start_agent();
    wait("Ready");
    agent.kill9();
    wait("NotReady");
    let node: serde_json::Value = serde_json::from_str(
        &controller
            .shoal(&["get", "node", "edge-1", "-o", "json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(
        node["status"]["conditions"][0]["reason"],
        "NodeStatusUnknown"
    );
    // The same node comes back with the certificate it already has: no token needed.
    let _agent = Agent::with(&controller, "edge-1", &agent_dir)
        .token("unused-after-joining")
        .args(&["--node-status-update-frequency", "1"])
        .start();
    wait("Ready");
}

#[test]
fn a_pushed_wasm_artifact_is_precompiled_for_the_nodes_and_pods_start_without_compiling() {
    let c = Cluster::start(1);
    // The node is registered with its wasm target, so the push compiles for it at once.
    let image = c.push_probe();
    c.wait_for(
        "the controller precompiled the probe for the node",
        Duration::from_secs(60),
        |c| {
            c.controller
                .log()
                .contains("precompiled wasm for a node target")
        },
    );
    let node: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "node-1", "-o", "json"]).ok()).unwrap();
    let triple = field(&node, "status.runtimeHandlers.0.wasmTarget.triple");
    assert!(triple.starts_with(std::env::consts::ARCH), "{node}");
    assert!(c.controller.log().contains(&triple));
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&probe_pod(
                "pre",
                image,
                &["print", "ran", "sleep", "600000"],
                "",
            )),
        )
        .ok();
    c.wait_for("the pod Running", Duration::from_secs(60), |c| {
        field(&c.pod("pre"), "status.phase") == "Running"
    });
    c.wait_for("its output", Duration::from_secs(20), |c| {
        c.shoal(&["logs", "pre"]).stdout() == "ran\n"
    });
    let log = c.agents[0].log();
    assert!(
        log.contains("loaded code precompiled by the controller"),
        "{log}"
    );
    assert!(!log.contains("compiled locally"), "{log}");
    assert_eq!(
        c.controller
            .log()
            .matches("precompiled wasm for a node target")
            .count(),
        1,
        "compiled once, on the push; the node's fetch was served from what was kept"
    );
}

/// imagePullPolicy on an image the controller keeps, as the kubelet has it for a registry's:
/// IfNotPresent runs the node's copy without asking (a tag pushed again is not seen), Always
/// asks and runs what the name means now, Never runs only what the node has and otherwise
/// waits in ErrImageNeverPull.
#[test]
fn image_pull_policy_decides_whether_the_controller_is_asked_for_an_image() {
    let c = Cluster::start(1);
    let probe = wasm_fixture("probe", "wasm32-wasip1");
    c.shoal(&["push", probe.to_str().unwrap(), "app:1"]).ok();
    let pod = |name: &str, policy: Option<&str>| {
        let pod = probe_pod(name, "app:1", &["print", "probe"], "");
        match policy {
            Some(p) => pod.replace(
                "    image:",
                &format!("    imagePullPolicy: {p}\n    image:"),
            ),
            None => pod,
        }
    };
    let apply = |yaml: String| {
        c.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(&yaml))
            .ok();
    };
    let logs = |c: &Cluster, name: &str| c.shoal(&["logs", name]).stdout();
    let pulled = |name: &str| {
        let described = c.shoal(&["describe", "pod", name]).ok();
        described
            .lines()
            .find(|l| l.contains(" Pulled "))
            .unwrap_or_default()
            .to_string()
    };

    // Never, before the node has it: never fetched, the reason says why.
    apply(pod("never-before", Some("Never")));
    c.wait_for("ErrImageNeverPull", Duration::from_secs(30), |c| {
        let p = c.pod("never-before");
        field(&p, "status.containerStatuses.0.state.waiting.reason") == "ErrImageNeverPull"
            && field(&p, "status.containerStatuses.0.state.waiting.message")
                .contains("imagePullPolicy is Never")
    });
    c.shoal(&["delete", "pod", "never-before"]).ok();

    // The default for a tag other than latest is IfNotPresent: fetched the first time.
    apply(pod("first", None));
    c.wait_for("the first pod's output", Duration::from_secs(60), |c| {
        logs(c, "first") == "probe\n"
    });
    assert!(
        pulled("first").contains("Successfully pulled image \"app:1\""),
        "{}",
        pulled("first")
    );

    // The tag pushed again with another module: IfNotPresent keeps running the node's copy.
    let hello = wasm_fixture("hello", "wasm32-wasip1");
    c.shoal(&["push", hello.to_str().unwrap(), "app:1"]).ok();
    apply(pod("second", Some("IfNotPresent")));
    c.wait_for("the second pod's output", Duration::from_secs(60), |c| {
        logs(c, "second") == "probe\n"
    });
    assert!(
        pulled("second").contains("Container image \"app:1\" already present on machine"),
        "{}",
        pulled("second")
    );

    // Always asks, and runs what the name means now; Never then runs that copy.
    apply(pod("always", Some("Always")));
    c.wait_for("the pushed-again module", Duration::from_secs(60), |c| {
        logs(c, "always").starts_with("hello from")
    });
    apply(pod("never-after", Some("Never")));
    c.wait_for("Never runs the node's copy", Duration::from_secs(60), |c| {
        logs(c, "never-after").starts_with("hello from")
    });
    assert!(
        pulled("never-after").contains("already present on machine"),
        "{}",
        pulled("never-after")
    );
}
