//! Services across nodes, as root with runc: a controller on the machine and three agents,
//! each in a network namespace of its own (its own address, a veth to a bridge the test makes),
//! so "another node" is another host on a real link. Pods are busybox containers (the image is
//! built here from Debian's `busybox-static`). Every test here needs runc and root: it is
//! skipped, saying why, where they are missing, and fails instead when SHOAL_REQUIRE_RUNC=1.

mod kit;

use kit::{field, runc_missing, Agent, Cluster, Controller, Hosts, Leftovers};
use shoal_runtime::oci::build::{busybox_layer, write_layout, ImageSpec};
use shoal_runtime::oci::image::Platform;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// A controller on the machine's side of the bridge and an agent in each host, the hosts
/// labelled `role=...` from `roles`; every node Ready, busybox pushed as `busybox:1`.
fn cluster(hosts: &Hosts, tag: u8, roles: &[&str]) -> (Cluster, Leftovers) {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start_listening(
        &dir.path().join("controller"),
        &format!("{}:0", hosts.gateway),
        &["--cluster-cidr", &format!("10.{}.0.0/16", tag + 1)],
    );
    let token = std::fs::read_to_string(controller.dir.join("token")).expect("token");
    let agents: Vec<Agent> = roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let program = hosts.run_in(i);
            let program: Vec<&std::ffi::OsStr> = program.iter().map(|s| s.as_os_str()).collect();
            let labels = format!("role={role}");
            Agent::start_program(
                &program,
                &controller,
                &format!("node-{}", i + 1),
                &dir.path().join(format!("agent-{}", i + 1)),
                token.trim(),
                &["--labels", &labels, "--pod-bridge", "shoal0"],
            )
        })
        .collect();
    let leftovers = Leftovers(agents.iter().map(|a| a.dir.clone()).collect(), None);
    let c = Cluster::adopt(controller, agents).keep(dir);
    let names: Vec<String> = c.agents.iter().map(|a| a.name.clone()).collect();
    c.wait_for("every node Ready", Duration::from_secs(60), |c| {
        let out = c.shoal(&["get", "nodes", "--no-headers"]).stdout();
        names.iter().all(|n| {
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([n.as_str(), "Ready"]))
        })
    });
    let scratch = tempfile::tempdir().expect("tmp");
    let layout = scratch.path().join("busybox");
    let layer = busybox_layer(Path::new("/bin/busybox")).expect("busybox layer");
    let image = ImageSpec {
        platform: Platform::host(),
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    write_layout(&layout, "busybox:1", &[(image, vec![layer])]).expect("layout");
    c.shoal(&["push", layout.to_str().expect("utf-8"), "busybox:1"])
        .ok();
    (c, leftovers)
}

/// A Deployment of busybox pods on the nodes labelled `role`, running `script`.
fn deployment(name: &str, replicas: u32, role: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{role: {role}}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1
        command: [sh, -c, {script:?}]
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
{extra}"#
    )
}

/// An HTTP server on :8080 answering every request with the pod's name.
const BACKEND: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

fn apply(c: &Cluster, yaml: &str) {
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(yaml))
        .ok();
}

/// The ready pods of `app`, by name, as `get pods -o json` shows them.
fn ready_pods(c: &Cluster, app: &str) -> Vec<String> {
    let out = c
        .shoal(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"])
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    // One match prints as the object itself, more as a List.
    let items = match v["items"].as_array() {
        Some(items) => items.clone(),
        None if v["kind"] == "Pod" => vec![v],
        None => vec![],
    };
    items
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .map(|p| field(p, "metadata.name"))
        .collect()
}

/// One HTTP GET over a fresh connection from the machine; the body, or why there is none.
fn get(addr: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(5),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("{addr}: {e}"))?;
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .ok_or_else(|| format!("{addr}: no HTTP answer: {out:?}"))
}

/// The backends named in the frontend's log lines `got NAME`, counted, from line `from` on.
fn answers(log: &str, from: usize) -> (BTreeMap<String, usize>, usize) {
    let mut counts = BTreeMap::new();
    let lines: Vec<&str> = log.lines().collect();
    for l in lines.iter().skip(from) {
        if let Some(name) = l.strip_prefix("got ") {
            *counts.entry(name.trim().to_string()).or_insert(0) += 1;
        }
    }
    (counts, lines.len())
}

#[test]
fn runc_services_reach_pods_on_other_nodes_round_robin_through_a_stable_cluster_ip_and_node_ports()
{
    let test = "runc_services_reach_pods_on_other_nodes_round_robin_through_a_stable_cluster_ip_and_node_ports";
    if runc_missing(test) {
        return;
    }
    let hosts = Hosts::create(71, 3);
    let (c, _leftovers) = cluster(&hosts, 71, &["front", "back", "back"]);

    // The Service first, so the frontend's pods get its variables.
    apply(
        &c,
        "apiVersion: v1\nkind: Service\nmetadata: {name: backend}\nspec:\n  type: NodePort\n  selector: {app: backend}\n  ports: [{port: 80, targetPort: http}]\n",
    );
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "backend", "-o", "json"]).ok()).expect("svc");
    let cluster_ip = field(&svc, "spec.clusterIP");
    let node_port = field(&svc, "spec.ports.0.nodePort");
    assert!(cluster_ip.starts_with("10.43."), "{svc}");
    assert!(node_port.parse::<u16>().is_ok_and(|p| p >= 30000), "{svc}");

    // With no endpoints, a connection is refused at once (from the frontend's host), once
    // the host's agent made the address its own.
    c.wait_for(
        "the cluster IP local on node-1",
        Duration::from_secs(30),
        |_| {
            let out = hosts.exec(0, &["ip", "route", "show", "table", "local"]);
            String::from_utf8_lossy(&out.stdout).contains(&format!("local {cluster_ip} "))
        },
    );
    let refused = hosts.exec(0, &["busybox", "nc", "-w", "3", &cluster_ip, "80"]);
    let why = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        why.contains("refused"),
        "expected connection refused, got {why:?}"
    );

    apply(&c, &deployment("backend", 3, "back", BACKEND, ""));
    c.wait_for("3 backend pods ready", Duration::from_secs(90), |c| {
        ready_pods(c, "backend").len() == 3
    });
    // Endpoints: the three pods, port resolved by name, on the back nodes only.
    let ep: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "endpoints", "backend", "-o", "json"]).ok())
            .expect("endpoints");
    assert_eq!(field(&ep, "subsets.0.ports.0.port"), "8080", "{ep}");
    let nodes: Vec<String> = ep["subsets"][0]["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .map(|a| field(a, "nodeName"))
        .collect();
    assert_eq!(nodes.len(), 3, "{ep}");
    assert!(nodes.iter().all(|n| n != "node-1"), "{ep}");

    // A frontend on node-1 calls the backend by its Service variables, every 100 ms.
    let frontend = "echo backend at $BACKEND_SERVICE_HOST:$BACKEND_SERVICE_PORT; \
        while true; do echo got $(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 $BACKEND_SERVICE_HOST $BACKEND_SERVICE_PORT 2>&1 | tail -n 1); sleep 0.1; done";
    apply(&c, &deployment("frontend", 1, "front", frontend, ""));
    c.wait_for("the frontend ready", Duration::from_secs(60), |c| {
        ready_pods(c, "frontend").len() == 1
    });
    let front = ready_pods(&c, "frontend").remove(0);
    let backends = ready_pods(&c, "backend");
    let log = |c: &Cluster| c.shoal(&["logs", &front]).stdout();
    c.wait_for(
        "30 answers in the frontend's log",
        Duration::from_secs(60),
        |c| answers(&log(c), 0).0.values().sum::<usize>() >= 30,
    );
    let text = log(&c);
    assert!(
        text.starts_with(&format!("backend at {cluster_ip}:80\n")),
        "{text}"
    );
    // Round-robin: every backend answers, each about a third of the time.
    let (counts, _) = answers(&text, 1);
    let total: usize = counts.values().sum();
    for b in &backends {
        let n = counts.get(b).copied().unwrap_or(0);
        assert!(
            n * 4 >= total,
            "backend {b} answered {n} of {total}: not round-robin: {counts:?}"
        );
    }
    assert!(
        counts.keys().all(|k| backends.contains(k)),
        "answers other than the backends' names: {counts:?}"
    );

    // NodePort on every node's address, also node-1's where no backend runs.
    for addr in &hosts.addresses {
        let body = get(&format!("{addr}:{node_port}")).expect("node port");
        assert!(
            backends.contains(&body),
            "{addr}:{node_port} answered {body:?}"
        );
    }

    // Replace every backend pod: the address stays, and the new pods answer.
    c.shoal(&["delete", "pods", "-l", "app=backend"]).ok();
    c.wait_for("3 new backend pods ready", Duration::from_secs(90), |c| {
        let now = ready_pods(c, "backend");
        now.len() == 3 && now.iter().all(|p| !backends.contains(p))
    });
    let renewed = ready_pods(&c, "backend");
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "backend", "-o", "json"]).ok()).expect("svc");
    assert_eq!(field(&svc, "spec.clusterIP"), cluster_ip);
    let seen = log(&c).lines().count();
    c.wait_for(
        "every new backend answering the frontend",
        Duration::from_secs(60),
        |c| {
            let (counts, _) = answers(&log(c), seen);
            renewed.iter().all(|p| counts.contains_key(p))
        },
    );
}
