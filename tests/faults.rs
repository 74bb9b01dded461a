//! The fault suite, as root with runc: edge autonomy as a contract. A controller on the machine
//! and agents each in a network namespace of its own ("hosts" on a bridge the test makes, with
//! no default route). Faults are real: a host's cable pulled (`ip link set ... down`), processes
//! killed with SIGKILL and started again, a host's address changed under its agent. Each test
//! states the invariant it checks (no duplicate replicas, no lost write, no needless restart)
//! and checks it, beyond the cluster answering afterwards. Every test here needs runc and root:
//! it is skipped, saying why, where they are missing, and fails instead when
//! SHOAL_REQUIRE_RUNC=1.

mod kit;

use kit::{field, host_agent_args, hosts_cluster_with, runc_missing, Cluster, Controller, Hosts};
use std::time::{Duration, Instant};

fn ready(p: &serde_json::Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// When the pod's first container last started: unchanged means not restarted.
fn started_at(p: &serde_json::Value) -> String {
    field(p, "status.containerStatuses.0.state.running.startedAt")
}

/// One HTTP GET from inside host `i` (busybox nc), so it works while the host is cut off.
fn get_in(hosts: &Hosts, i: usize, ip: &str, port: u16) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 {ip} {port}");
    let out = hosts.exec(i, &["busybox", "sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .ok_or_else(|| {
            format!(
                "{ip}:{port} from {}: no HTTP answer: {text:?} {}",
                hosts.names[i],
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn node_ready(c: &Cluster, name: &str) -> bool {
    c.shoal(&["get", "nodes", "--no-headers"])
        .stdout()
        .lines()
        .any(|l| l.split_whitespace().take(2).eq([name, "Ready"]))
}

fn events(c: &Cluster) -> String {
    c.shoal(&["get", "events", "-A"]).stdout()
}

/// busybox httpd on :8080 answering with the pod's name.
const BACKEND: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

fn web(replicas: u32, extra_env: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1
        command: [sh, -c, {BACKEND:?}]
        env: [{{name: VERSION, value: "{extra_env}"}}]
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
"#
    )
}

#[test]
fn runc_a_node_partitioned_past_its_grace_period_keeps_serving_and_on_heal_no_replica_is_duplicated_or_restarted(
) {
    let test = "runc_a_node_partitioned_past_its_grace_period_keeps_serving_and_on_heal_no_replica_is_duplicated_or_restarted";
    if runc_missing(test) {
        return;
    }
    // Invariants: while cut off, node-2's pod keeps running and serving (directly and
    // through its Service); the controller replaces it elsewhere; after the heal, exactly the
    // desired 2 replicas remain, the original kept (keep-original), and no pod that ran
    // through the partition was restarted.
    let hosts = Hosts::create(91, 2);
    let (c, _leftovers) = hosts_cluster_with(
        &hosts,
        91,
        &["edge", "edge"],
        &[
            "--node-grace-period",
            "4",
            "--default-unreachable-toleration-seconds",
            "4",
        ],
        &["--node-status-update-frequency", "1"],
    );
    c.apply(&web(2, "v1"));
    c.wait_for("2 ready, one per node", Duration::from_secs(90), |c| {
        let p = c.pods("app=web");
        let mut nodes: Vec<String> = p.iter().map(|p| field(p, "spec.nodeName")).collect();
        nodes.sort();
        p.iter().all(ready) && nodes == ["node-1", "node-2"]
    });
    let before = c.pods("app=web");
    let on = |node: &str| {
        before
            .iter()
            .find(|p| field(p, "spec.nodeName") == node)
            .cloned()
            .expect("a pod on the node")
    };
    let (original, steady) = (on("node-2"), on("node-1"));
    let name = field(&original, "metadata.name");
    let pod_ip = field(&original, "status.podIP");
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "web", "-o", "json"]).ok()).unwrap();
    let cluster_ip = field(&svc, "spec.clusterIP");
    c.wait_for("node-2's proxy routing", Duration::from_secs(30), |_| {
        get_in(&hosts, 1, &cluster_ip, 80).is_ok()
    });

    let agent_log_at_cut = c.agents[1].log().len();
    let cut = Instant::now();
    hosts.cut(1);
    let mut detected = None;
    c.wait_for(
        "node-2 NotReady, its pod marked lost, a replacement running on node-1",
        Duration::from_secs(90),
        |c| {
            if detected.is_none()
                && c.agents[1].log()[agent_log_at_cut..].contains("lost the controller")
            {
                detected = Some(cut.elapsed());
            }
            let nodes = c.shoal(&["get", "nodes", "--no-headers"]).stdout();
            let p = c.pods("app=web");
            let lost = p.iter().any(|p| {
                field(p, "metadata.name") == name && field(p, "status.reason") == "NodeLost"
            });
            let on_node_1 = p
                .iter()
                .filter(|p| field(p, "spec.nodeName") == "node-1" && ready(p))
                .count();
            nodes.contains("NotReady(disconnected") && lost && on_node_1 == 2
        },
    );
    let replaced = cut.elapsed();
    c.wait_for(
        "node-2's agent to give its connection up",
        Duration::from_secs(60),
        |c| {
            if detected.is_none()
                && c.agents[1].log()[agent_log_at_cut..].contains("lost the controller")
            {
                detected = Some(cut.elapsed());
            }
            detected.is_some()
        },
    );
    println!(
        "the controller replaced node-2's pod {:.1} s after the cut; node-2's agent gave its connection up {:.1} s after it (QUIC idle timeout)",
        replaced.as_secs_f64(),
        detected.map_or(f64::NAN, |d| d.as_secs_f64()),
    );
    let nodes = c.shoal(&["get", "nodes"]).ok();
    println!("{nodes}");
    // Cut off, node-2 still serves: the pod itself, and its Service by the endpoints last known.
    assert_eq!(
        get_in(&hosts, 1, &pod_ip, 8080).as_deref(),
        Ok(name.as_str())
    );
    for _ in 0..4 {
        assert_eq!(
            get_in(&hosts, 1, &cluster_ip, 80).as_deref(),
            Ok(name.as_str()),
            "the only backend node-2 can reach is its own"
        );
    }
    assert!(
        c.shoal(&["get", "pods", "-l", "app=web", "--no-headers"])
            .stdout()
            .contains(" NodeLost "),
        "the lost pod shows as such"
    );

    hosts.heal(1);
    c.wait_for(
        "node-2 back, exactly 2 replicas",
        Duration::from_secs(90),
        |c| {
            let p = c.pods("app=web");
            node_ready(c, "node-2")
                && p.len() == 2
                && p.iter().all(ready)
                && p.iter().any(|p| field(p, "metadata.name") == name)
        },
    );
    // Absence is checked once the agent and the controller have both said they reconciled
    // (the events below), not after a guess at how long that takes.
    let wants = [
        "NodeNotReady",
        "TaintManagerEviction",
        "NodeReconnected",
        "Reconciled",
        "a duplicate once a lost node came back (keep-original)",
    ];
    c.wait_for(
        "the reconnect and the duplicate resolved, in events",
        Duration::from_secs(60),
        |c| {
            let ev = events(c);
            wants.iter().all(|w| ev.contains(w))
        },
    );
    let after = c.pods("app=web");
    assert_eq!(after.len(), 2, "no duplicate replicas: {after:?}");
    for kept in [&original, &steady] {
        let now = after
            .iter()
            .find(|p| field(p, "metadata.uid") == field(kept, "metadata.uid"))
            .unwrap_or_else(|| panic!("{} is gone: {after:?}", field(kept, "metadata.name")));
        assert_eq!(started_at(now), started_at(kept), "not restarted: {now}");
        assert_eq!(field(now, "status.containerStatuses.0.restartCount"), "0");
    }
    assert!(c.agents[1].log().contains("reconciled with the controller"));
}

#[test]
fn runc_a_killed_agent_started_again_while_cut_off_brings_its_wasm_and_oci_pods_back_from_local_state(
) {
    let test = "runc_a_killed_agent_started_again_while_cut_off_brings_its_wasm_and_oci_pods_back_from_local_state";
    if runc_missing(test) {
        return;
    }
    // Invariants: with no controller, a restarted agent (after what a reboot takes: its
    // containers, their network namespaces, its pod bridge) runs the same pods again, with
    // their ConfigMap and Secret, from its local state; the Secret is not on the node's disk
    // in the clear; restart policies keep applying and logs keep being kept while it is cut
    // off; on heal nothing is duplicated or restarted; a change of the host's address does
    // not drop its connection.
    let hosts = Hosts::create(93, 1);
    let (mut c, _leftovers) = hosts_cluster_with(&hosts, 93, &["edge"], &[], &[]);
    c.push_probe_component();
    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data: {index.html: "from a configmap"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {token: "dG9wLXNlY3JldC10b2tlbg=="}
---
apiVersion: v1
kind: Pod
metadata: {name: oci-web, labels: {app: oci-web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, "mkdir -p /www && cat /etc/site/index.html /etc/creds/token > /www/index.html && exec httpd -f -p 8080 -h /www"]
    volumeMounts:
    - {name: site, mountPath: /etc/site}
    - {name: creds, mountPath: /etc/creds}
    resources: {requests: {cpu: 10m, memory: 8Mi}}
  volumes:
  - {name: site, configMap: {name: site}}
  - {name: creds, secret: {secretName: creds}}
---
apiVersion: v1
kind: Pod
metadata: {name: wasm-web, labels: {app: wasm-web}}
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: probe:2
    args: [serve, "8090", hello from wasm]
    ports: [{containerPort: 8090}]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  runtimeClassName: wasm
  containers:
  - name: main
    image: probe:2
    args: [print, "up and about to fail", sleep, "1000", exit, "3"]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: oneshot}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: main
    image: probe:2
    args: [print, "ran once"]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    let host_ip = hosts.addresses[0].clone();
    let oci_ip = || field(&c.pod("oci-web"), "status.podIP");
    c.wait_for("both pods serving", Duration::from_secs(90), |c| {
        let ip = field(&c.pod("oci-web"), "status.podIP");
        get_in(&hosts, 0, &ip, 8080).is_ok_and(|b| b.contains("top-secret-token"))
            && get_in(&hosts, 0, &host_ip, 8090).is_ok_and(|b| b.contains("hello from wasm"))
    });
    c.wait_for("the one-shot pod done", Duration::from_secs(60), |c| {
        field(&c.pod("oneshot"), "status.phase") == "Succeeded"
    });
    let ip = oci_ip();
    let uids: Vec<String> = ["oci-web", "wasm-web"]
        .iter()
        .map(|p| field(&c.pod(p), "metadata.uid"))
        .collect();

    // The agent dies, the cable goes, and what a reboot would take goes too.
    c.agents[0].kill9();
    hosts.cut(0);
    let dir = c.agents[0].dir.clone();
    let root = dir.join("runc");
    let ids = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    for id in String::from_utf8_lossy(&ids.stdout).lines() {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id])
            .output()
            .expect("runc delete");
        assert!(out.status.success(), "{out:?}");
    }
    for uid in &uids {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &format!("shoal-{uid}")])
            .output();
    }
    let _ = hosts.exec(0, &["ip", "link", "delete", "shoal0"]);
    assert!(
        get_in(&hosts, 0, &ip, 8080).is_err() && get_in(&hosts, 0, &host_ip, 8090).is_err(),
        "nothing serves before the agent is back"
    );
    let raw = std::fs::read(dir.join("local.redb")).expect("the node's local state");
    for clear in [&b"top-secret-token"[..], b"dG9wLXNlY3JldC10b2tlbg=="] {
        assert!(
            !raw.windows(clear.len()).any(|w| w == clear),
            "the Secret is sealed in the node's local state"
        );
    }

    let token = std::fs::read_to_string(c.controller.dir.join("token")).expect("token");
    let args = host_agent_args("edge", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    c.agents[0] = hosts.agent(0, &c.controller, &dir, token.trim(), &args);
    let deadline = started + Duration::from_secs(60);
    let (mut oci_back, mut wasm_back) = (None, None);
    while Instant::now() < deadline && (oci_back.is_none() || wasm_back.is_none()) {
        if oci_back.is_none()
            && get_in(&hosts, 0, &ip, 8080)
                .is_ok_and(|b| b.contains("from a configmap") && b.contains("top-secret-token"))
        {
            oci_back = Some(started.elapsed());
        }
        if wasm_back.is_none()
            && get_in(&hosts, 0, &host_ip, 8090).is_ok_and(|b| b.contains("hello from wasm"))
        {
            wasm_back = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = c.agents[0].log();
    let (Some(oci), Some(wasm)) = (oci_back, wasm_back) else {
        panic!("the pods did not come back without the controller:\n{log}");
    };
    println!(
        "with the controller out of reach, the OCI pod served again {:.1} s after the agent started, the wasm pod {:.1} s",
        oci.as_secs_f64(),
        wasm.as_secs_f64()
    );
    assert!(
        log.contains("starting the pods this node ran, from its local state"),
        "{log}"
    );
    c.wait_for(
        "the agent to find the controller out of reach",
        Duration::from_secs(30),
        |c| c.agents[0].log().contains("cannot reach the controller"),
    );
    // The crash-looping pod is restarted by its policy (with back-off), controller or not.
    c.wait_for(
        "the crasher restarted while cut off",
        Duration::from_secs(60),
        |c| {
            c.agents[0]
                .log()
                .lines()
                .filter(|l| l.contains("container exited") && l.contains("default/crasher/main"))
                .count()
                >= 2
        },
    );
    assert!(
        !c.agents[0]
            .log()
            .contains("shoal_agent: connected to the controller"),
        "all of that with no controller"
    );
    assert!(
        !c.agents[0].log().contains("pod=oneshot"),
        "a pod that finished is not run again"
    );

    hosts.heal(0);
    c.wait_for("the node reconciled", Duration::from_secs(90), |c| {
        c.agents[0].log().contains("reconciled with the controller")
            && node_ready(c, "node-1")
            && ["oci-web", "wasm-web"].iter().all(|p| ready(&c.pod(p)))
    });
    let now: Vec<String> = ["oci-web", "wasm-web"]
        .iter()
        .map(|p| field(&c.pod(p), "metadata.uid"))
        .collect();
    assert_eq!(now, uids, "the same pods, not new ones");
    let all = c.shoal(&["get", "pods", "--no-headers"]).stdout();
    assert_eq!(all.lines().count(), 4, "no duplicates: {all}");
    assert_eq!(c.shoal(&["logs", "oneshot"]).ok(), "ran once\n");
    // What the pods wrote while the node was cut off is in their logs. The wasm pod ended
    // with the killed agent: the offline run is a restart, counted, and the first run's log
    // is its previous one, as the kubelet keeps it.
    let wasm_log = c.shoal(&["logs", "wasm-web"]).ok();
    assert_eq!(
        wasm_log.matches("serving on 8090").count(),
        1,
        "the offline run's: {wasm_log}"
    );
    let previous = c.shoal(&["logs", "wasm-web", "--previous"]).ok();
    assert_eq!(
        previous.matches("serving on 8090").count(),
        1,
        "the first run's: {previous}"
    );
    let wasm = c.pod("wasm-web");
    assert_eq!(
        (
            field(&wasm, "status.containerStatuses.0.restartCount"),
            field(
                &wasm,
                "status.containerStatuses.0.lastState.terminated.reason"
            )
        ),
        ("1".to_string(), "AgentRestarted".to_string()),
        "{wasm}"
    );
    let crasher: serde_json::Value = c.pod("crasher");
    assert!(
        field(&crasher, "status.containerStatuses.0.restartCount")
            .parse::<u32>()
            .is_ok_and(|n| n >= 1),
        "the restarts made offline are reported: {crasher}"
    );
    let described = c.shoal(&["describe", "pod", "crasher"]).ok();
    assert!(
        described.contains("BackOff") && described.contains("while disconnected"),
        "the events of the time offline are sent on reconnect:\n{described}"
    );
    let starts = |c: &Cluster| -> Vec<String> {
        ["oci-web", "wasm-web"]
            .iter()
            .map(|p| started_at(&c.pod(p)))
            .collect()
    };
    let at_heal = starts(&c);
    c.wait_for("the node reconciled", Duration::from_secs(30), |c| {
        events(c).contains("Reconciled")
    });
    assert_eq!(starts(&c), at_heal, "nothing restarted on reconnect");

    // The host's address changes under the agent: QUIC migrates the connection.
    let lost_before = c.agents[0].log().matches("lost the controller").count();
    let new_ip = "10.93.0.50";
    let moved = hosts.exec(
        0,
        &[
            "sh",
            "-c",
            &format!("ip addr flush dev eth0 && ip addr add {new_ip}/24 dev eth0"),
        ],
    );
    assert!(moved.status.success(), "{moved:?}");
    c.wait_for(
        "the node's new address reported over the same connection",
        Duration::from_secs(30),
        |c| {
            let n: serde_json::Value =
                serde_json::from_str(&c.shoal(&["get", "node", "node-1", "-o", "json"]).stdout())
                    .unwrap_or_default();
            n["status"]["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["address"] == new_ip))
        },
    );
    assert_eq!(
        c.agents[0].log().matches("lost the controller").count(),
        lost_before,
        "the connection survived the address change:\n{}",
        c.agents[0].log()
    );
    assert!(node_ready(&c, "node-1"));
}

#[test]
fn runc_a_controller_killed_mid_rollout_loses_no_acknowledged_write_and_the_rollout_completes() {
    let test = "runc_a_controller_killed_mid_rollout_loses_no_acknowledged_write_and_the_rollout_completes";
    if runc_missing(test) {
        return;
    }
    // Invariants: every write the controller acknowledged before its kill -9 is there after
    // it; the rollout it was in the middle of completes with exactly the desired replicas, all
    // of the new version; the agents reconnect by themselves; pods outside the rollout are not
    // restarted.
    let hosts = Hosts::create(95, 2);
    let (mut c, _leftovers) = hosts_cluster_with(&hosts, 95, &["edge", "edge"], &[], &[]);
    c.apply(&web(4, "v1"));
    c.apply(
        &web(2, "steady")
            .replace("name: web", "name: steady")
            .replace("app: web", "app: steady"),
    );
    c.wait_for("web and steady ready", Duration::from_secs(120), |c| {
        let (w, s) = (c.pods("app=web"), c.pods("app=steady"));
        w.len() == 4 && w.iter().all(ready) && s.len() == 2 && s.iter().all(ready)
    });
    let steady_before: Vec<(String, String)> = c
        .pods("app=steady")
        .iter()
        .map(|p| (field(p, "metadata.uid"), started_at(p)))
        .collect();

    // Writes keep coming while the rollout runs; the kill lands among them.
    let config = c.controller.config();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0..400 {
            let name = format!("cm-{i}");
            let manifest =
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{n: \"{i}\"}}\n");
            let mut child = std::process::Command::new(kit::shoal_bin())
                .args(["apply", "-f", "-"])
                .env("SHOAL_CONFIG", &config)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("shoal apply");
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                let _ = stdin.write_all(manifest.as_bytes());
            }
            let out = child.wait_with_output().expect("shoal apply");
            if out.status.success() {
                acknowledged.push(name);
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else if !acknowledged.is_empty() {
                break;
            }
        }
        acknowledged
    });
    c.wait_for("writes flowing", Duration::from_secs(60), |_| {
        count.load(std::sync::atomic::Ordering::SeqCst) >= 20
    });
    c.apply(&web(4, "v2"));
    c.wait_for("the rollout under way", Duration::from_secs(60), |c| {
        c.pods("app=web")
            .iter()
            .any(|p| p.to_string().contains("\"v2\""))
    });
    c.controller.kill9();
    let acknowledged = writer.join().expect("writer");
    assert!(
        !acknowledged.is_empty(),
        "writes were acknowledged before the kill"
    );
    println!(
        "{} ConfigMap writes acknowledged before the kill -9",
        acknowledged.len()
    );
    let addr = c.controller.addr.clone();
    c.controller = Controller::start_listening(
        &c.controller.dir.clone(),
        &addr,
        &["--cluster-cidr", "10.96.0.0/16"],
    );

    c.wait_for(
        "the agents back by themselves",
        Duration::from_secs(60),
        // Each agent reconnected and took up its watch again (a Ready shown now could be the
        // one stored before the kill).
        |c| {
            c.agents
                .iter()
                .all(|a| a.log().contains("reconciled with the controller"))
                && node_ready(c, "node-1")
                && node_ready(c, "node-2")
        },
    );
    let rollout = c.shoal(&["rollout", "status", "deploy/web", "--timeout", "120s"]);
    if !rollout.0.status.success() {
        panic!(
            "the rollout did not complete: {}\n{}\n{}\ncontroller:\n{}\nagents:\n{}",
            rollout.stderr(),
            c.shoal(&["get", "pods", "-o", "wide"]).stdout(),
            c.shoal(&["get", "rs", "-o", "wide"]).stdout(),
            c.controller.log(),
            c.agents
                .iter()
                .map(|a| format!("{}:\n{}", a.name, a.log()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let names = c.shoal(&["get", "configmaps", "-o", "name"]).stdout();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| {
            !names
                .lines()
                .any(|l| l.trim_end() == format!("configmap/{n}"))
        })
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    c.wait_for("exactly 4 web pods, all v2", Duration::from_secs(60), |c| {
        let w = c.pods("app=web");
        w.len() == 4
            && w.iter()
                .all(|p| ready(p) && field(p, "spec.containers.0.env.0.value") == "v2")
    });
    let steady_after: Vec<(String, String)> = c
        .pods("app=steady")
        .iter()
        .map(|p| (field(p, "metadata.uid"), started_at(p)))
        .collect();
    assert_eq!(
        steady_after, steady_before,
        "pods outside the rollout undisturbed"
    );
    for a in &c.agents {
        assert!(
            a.log()
                .matches("shoal_agent: connected to the controller")
                .count()
                >= 2,
            "{} reconnected on its own",
            a.name
        );
    }
}

/// The probe component with `extra` bytes of noise in a custom section: a large artifact that
/// still runs.
fn padded_component(extra: usize) -> Vec<u8> {
    let mut wasm = std::fs::read(kit::wasm_fixture("probe", "wasm32-wasip2")).expect("probe");
    let name = b"shoal-test-padding";
    let leb = |mut n: usize, out: &mut Vec<u8>| loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    };
    let mut body = Vec::with_capacity(extra + 32);
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    // Noise that no link compresses: xorshift.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while body.len() < extra {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(&x.to_le_bytes());
    }
    wasm.push(0);
    leb(body.len(), &mut wasm);
    wasm.extend_from_slice(&body);
    wasm
}

/// A counter of the bytes the machine sent to a host over its cable.
fn tx_bytes(link: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{link}/statistics/tx_bytes"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A `key=value` field of a log line.
fn log_field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

#[test]
fn runc_an_artifact_fetch_cut_halfway_resumes_from_the_bytes_it_had_and_is_verified() {
    let test = "runc_an_artifact_fetch_cut_halfway_resumes_from_the_bytes_it_had_and_is_verified";
    if runc_missing(test) {
        return;
    }
    // Invariant: after the cut, the fetch goes on from the bytes received, not from zero (the
    // bytes sent after the heal are well under the artifact's size), and what runs is the
    // artifact whose digest was announced.
    let hosts = Hosts::create(97, 1);
    let (c, _leftovers) = hosts_cluster_with(&hosts, 97, &["edge"], &[], &[]);
    let size = 48 << 20;
    let scratch = tempfile::tempdir().expect("tmp");
    let big = scratch.path().join("big.wasm");
    std::fs::write(&big, padded_component(size)).expect("write");
    c.shoal(&["push", big.to_str().expect("utf-8"), "big:1"])
        .ok();
    // A slow link, so the cut lands in the middle of the transfer.
    let link = hosts.links[0].clone();
    let tc = |args: &[&str]| {
        let out = std::process::Command::new("tc")
            .args(args)
            .output()
            .expect("tc");
        assert!(out.status.success(), "tc {args:?}: {out:?}");
    };
    tc(&[
        "qdisc", "add", "dev", &link, "root", "tbf", "rate", "40mbit", "burst", "64kb", "latency",
        "400ms",
    ]);
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  runtimeClassName: wasm
  containers:
  - name: main
    image: big:1
    args: [serve, "8091", the big one]
    ports: [{containerPort: 8091}]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    let artifacts = c.agents[0].dir.join("artifacts");
    let partial = || -> u64 {
        std::fs::read_dir(&artifacts)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .max()
            .unwrap_or(0)
    };
    let half = (size / 2) as u64;
    c.wait_for("the fetch halfway", Duration::from_secs(120), |_| {
        partial() >= half
    });
    hosts.cut(0);
    let had = partial();
    // Long enough for the connection to be given up on (QUIC's idle timeout is 15 s).
    c.wait_for(
        "the agent to give the connection up",
        Duration::from_secs(60),
        |c| c.agents[0].log().contains("lost the controller"),
    );
    let sent_before = tx_bytes(&link);
    hosts.heal(0);
    c.wait_for(
        "the pod running the artifact",
        Duration::from_secs(180),
        |c| ready(&c.pod("big")),
    );
    let wire = tx_bytes(&link) - sent_before;
    let log = c.agents[0].log();
    let line = log
        .lines()
        .find(|l| l.contains("artifact fetched") && l.contains("big:1"))
        .unwrap_or_else(|| panic!("no fetch logged:\n{log}"));
    let resumed_from = log_field(line, "resumed_from").expect("resumed_from");
    let received = log_field(line, "received").expect("received");
    let full = log_field(line, "size").expect("size");
    println!(
        "artifact of {full} bytes: {had} held at the cut, resumed from byte {resumed_from}; \
         {received} bytes of it carried after the resume, {wire} bytes on the wire to the node \
         from the heal until the pod ran"
    );
    assert!(resumed_from >= half, "resumed from what it had: {line}");
    assert_eq!(resumed_from + received, full, "{line}");
    assert!(
        wire < full * 3 / 4,
        "well under the full size on the wire: {wire} of {full}"
    );
    assert!(get_in(&hosts, 0, &hosts.addresses[0], 8091).is_ok_and(|b| b.contains("the big one")));
}
