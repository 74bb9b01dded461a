//! Services across nodes, as root with runc: a controller on the machine and three agents,
//! each in a network namespace of its own (its own address, a veth to a bridge the test makes),
//! so "another node" is another host on a real link. Pods are busybox containers (the image is
//! built here from Debian's `busybox-static`). Every test here needs runc and root: it is
//! skipped, saying why, where they are missing, and fails instead when SHOAL_REQUIRE_RUNC=1.

mod kit;

use kit::{field, hosts_cluster as cluster, runc_missing, Cluster, Hosts};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

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

/// The ready pods of `app`, by name, as `get pods -o json` shows them.
fn ready_pods(c: &Cluster, app: &str) -> Vec<String> {
    c.pods(&format!("app={app}"))
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
    // node-1 cannot reach node-3 (a partition between them; both still reach the
    // controller): node-2's pods are reached directly, node-3's through the controller.
    let out = hosts.exec(
        0,
        &[
            "ip",
            "route",
            "add",
            "blackhole",
            &format!("{}/32", hosts.addresses[2]),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Service first, so the frontend's pods get its variables.
    c.apply(
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

    c.apply(&deployment("backend", 3, "back", BACKEND, ""));
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
    c.apply(&deployment("frontend", 1, "front", frontend, ""));
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

    // The Service's names resolve from a pod, through the agent's DNS server.
    let lookups = "for n in backend backend.default backend.default.svc.cluster.local nosuch.default.svc.cluster.local; do nslookup $n; done; cat /etc/resolv.conf; sleep 600";
    c.apply(&deployment("resolver", 1, "front", lookups, ""));
    c.wait_for("the resolver's lookups", Duration::from_secs(60), |c| {
        ready_pods(c, "resolver")
            .first()
            .is_some_and(|p| c.shoal(&["logs", p]).stdout().contains("options ndots:5"))
    });
    let resolved = c.shoal(&["logs", &ready_pods(&c, "resolver")[0]]).stdout();
    assert_eq!(
        resolved.matches(&format!("Address: {cluster_ip}")).count(),
        3,
        "{resolved}"
    );
    assert!(resolved.contains("NXDOMAIN"), "{resolved}");
    assert!(
        resolved.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolved}"
    );

    // Both paths were taken, each to its node.
    let front_log = c.agents[0].log();
    let said = |what: &str, peer: &str| {
        front_log
            .lines()
            .any(|l| l.contains(what) && l.contains(&format!("peer=\"{peer}\"")))
    };
    assert!(said("reaching the node directly", "node-2"), "{front_log}");
    assert!(
        said("relaying through the controller", "node-3"),
        "{front_log}"
    );
    assert!(!said("reaching the node directly", "node-3"), "{front_log}");

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

/// A bare pod labelled `app=backend` on the `back` node running `script`, with `probes` (YAML
/// lines at the container's indentation).
fn backend_pod(name: &str, script: &str, probes: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: backend}}}}
spec:
  nodeSelector: {{role: back}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, {script:?}]
    ports: [{{name: http, containerPort: 8080}}]
    resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
{probes}"#
    )
}

#[test]
fn runc_probes_take_unready_pods_out_of_rotation_and_restart_dead_ones() {
    if runc_missing("runc_probes_take_unready_pods_out_of_rotation_and_restart_dead_ones") {
        return;
    }
    let hosts = Hosts::create(73, 2);
    let (c, _leftovers) = cluster(&hosts, 73, &["front", "back"]);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: backend}\nspec:\n  type: LoadBalancer\n  selector: {app: backend}\n  ports: [{port: 80, targetPort: http, nodePort: 30080}]\n",
    );
    let readiness = "    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1, failureThreshold: 1}\n";
    // "steady" stays healthy; "flaky" removes its /healthz after a few seconds.
    let serve = "mkdir -p /www && hostname > /www/index.html && echo ok > /www/healthz && httpd -f -p 8080 -h /www";
    c.apply(&backend_pod("steady", serve, readiness));
    c.apply(&backend_pod(
        "flaky",
        &format!("(sleep 6; rm /www/healthz) & {serve}"),
        readiness,
    ));
    // Node port on the node without backends; LoadBalancer status lists both nodes.
    let via = format!("{}:30080", hosts.addresses[0]);
    let mut seen = BTreeMap::<String, usize>::new();
    c.wait_for("both pods answering", Duration::from_secs(60), |_| {
        if let Ok(body) = get(&via) {
            *seen.entry(body).or_insert(0) += 1;
        }
        seen.contains_key("steady") && seen.contains_key("flaky")
    });
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "backend", "-o", "json"]).ok()).expect("svc");
    let mut ingress: Vec<String> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .expect("ingress")
        .iter()
        .map(|i| field(i, "ip"))
        .collect();
    ingress.sort();
    assert_eq!(ingress, hosts.addresses, "{svc}");

    // Readiness fails: the pod stays Running, 0/1 ready, and gets no more traffic.
    c.wait_for("flaky not ready", Duration::from_secs(30), |c| {
        c.shoal(&["get", "pod", "flaky", "--no-headers"])
            .stdout()
            .split_whitespace()
            .nth(1)
            == Some("0/1")
    });
    assert_eq!(field(&c.pod("flaky"), "status.phase"), "Running");
    assert_eq!(
        field(&c.pod("flaky"), "status.containerStatuses.0.restartCount"),
        "0"
    );
    let endpoints = c.shoal(&["get", "endpoints", "backend", "-o", "json"]).ok();
    let ep: serde_json::Value = serde_json::from_str(&endpoints).expect("endpoints");
    assert_eq!(
        field(&ep, "subsets.0.notReadyAddresses.0.targetRef.name"),
        "flaky",
        "{ep}"
    );
    let answers: Vec<String> = (0..20).map(|_| get(&via).expect("answer")).collect();
    assert!(answers.iter().all(|a| a == "steady"), "{answers:?}");
    let described = c.shoal(&["describe", "pod", "flaky"]).ok();
    assert!(
        described.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{described}"
    );

    // An exec probe runs in the container (runc exec): ready once the file it checks exists.
    let exec = "    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}\n";
    c.apply(&backend_pod(
        "late",
        &format!("(sleep 5; touch /tmp/ready) & {serve}"),
        exec,
    ));
    c.wait_for("late running but not ready", Duration::from_secs(30), |c| {
        let p = c.pod("late");
        field(&p, "status.phase") == "Running"
            && field(&p, "status.containerStatuses.0.ready") == "false"
    });
    c.wait_for(
        "late ready by its exec probe",
        Duration::from_secs(30),
        |c| field(&c.pod("late"), "status.containerStatuses.0.ready") == "true",
    );
    let described = c.shoal(&["describe", "pod", "late"]).ok();
    assert!(
        described
            .contains("Readiness probe failed: command [\"cat\", \"/tmp/ready\"] exited with 1"),
        "{described}"
    );

    // Liveness fails: the container is killed and started again, and counted.
    let liveness =
        "    livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, failureThreshold: 2}\n";
    c.apply(&backend_pod(
        "mortal",
        "httpd -f -p 8080 -h / & pid=$!; sleep 3; kill $pid; sleep 600",
        liveness,
    ));
    c.wait_for(
        "mortal restarted by its liveness probe",
        Duration::from_secs(60),
        |c| {
            field(&c.pod("mortal"), "status.containerStatuses.0.restartCount")
                .parse::<u32>()
                .is_ok_and(|n| n >= 1)
        },
    );
    let described = c.shoal(&["describe", "pod", "mortal"]).ok();
    assert!(
        described.contains("Liveness probe failed: dial tcp"),
        "{described}"
    );
    assert!(
        described.contains("Container main failed liveness probe, will be restarted"),
        "{described}"
    );
}

#[test]
fn runc_wasm_pods_listen_only_on_declared_ports_and_serve_behind_a_service() {
    if runc_missing("runc_wasm_pods_listen_only_on_declared_ports_and_serve_behind_a_service") {
        return;
    }
    let hosts = Hosts::create(77, 2);
    let (c, _leftovers) = cluster(&hosts, 77, &["front", "back"]);
    c.push_probe_component();
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: wasm-web}
spec:
  type: NodePort
  selector: {app: wasm-web}
  ports: [{port: 80, targetPort: web}]
---
apiVersion: v1
kind: Pod
metadata: {name: wasm-web, labels: {app: wasm-web}}
spec:
  runtimeClassName: wasm
  nodeSelector: {role: back}
  containers:
  - name: web
    image: probe:2
    args: [listen, "9999", serve, "8080", hello from wasm]
    ports: [{name: web, containerPort: 8080}]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    c.wait_for("the wasm pod serving", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "wasm-web"])
            .stdout()
            .contains("serving on 8080")
    });
    let log = c.shoal(&["logs", "wasm-web"]).stdout();
    assert!(
        log.starts_with("cannot listen on 9999: "),
        "an undeclared port must be refused: {log}"
    );
    // Its endpoint is its node's address (wasm pods use the node's network).
    let pod = c.pod("wasm-web");
    assert_eq!(field(&pod, "status.podIP"), hosts.addresses[1], "{pod}");
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "wasm-web", "-o", "json"]).ok())
            .expect("svc");
    let node_port = field(&svc, "spec.ports.0.nodePort");
    // Wasm pods resolve the cluster's names too (WASI ip-name-lookup), and the rest as the
    // node does.
    let cluster_ip = field(&svc, "spec.clusterIP");
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: wasm-resolver}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: resolve
    image: probe:2
    args: [resolve, wasm-web, resolve, wasm-web.default, resolve, wasm-web.default.svc.cluster.local, resolve, nosuch.default.svc.cluster.local, resolve, localhost]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    c.wait_for("the wasm lookups", Duration::from_secs(60), |c| {
        field(&c.pod("wasm-resolver"), "status.phase") == "Succeeded"
    });
    let looked_up = c.shoal(&["logs", "wasm-resolver"]).stdout();
    for name in [
        "wasm-web",
        "wasm-web.default",
        "wasm-web.default.svc.cluster.local",
    ] {
        assert!(
            looked_up.contains(&format!("{name} is {cluster_ip}\n")),
            "{looked_up}"
        );
    }
    assert!(
        looked_up.contains("nosuch.default.svc.cluster.local does not resolve"),
        "{looked_up}"
    );
    assert!(looked_up.contains("localhost is 127.0.0.1"), "{looked_up}");
    let mut body = Err(String::new());
    c.wait_for(
        "the wasm pod answering through the node port",
        Duration::from_secs(30),
        |_| {
            body = get(&format!("{}:{node_port}", hosts.addresses[0]));
            body.is_ok()
        },
    );
    assert_eq!(body.as_deref(), Ok("hello from wasm"));
}

#[test]
fn runc_udp_services_carry_datagrams_both_ways_across_nodes() {
    if runc_missing("runc_udp_services_carry_datagrams_both_ways_across_nodes") {
        return;
    }
    let hosts = Hosts::create(79, 2);
    let (c, _leftovers) = cluster(&hosts, 79, &["front", "back"]);
    c.push_probe_component();
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  runtimeClassName: wasm
  nodeSelector: {role: back}
  containers:
  - name: echo
    image: probe:2
    args: [udp-echo, "5353"]
    ports: [{containerPort: 5353, protocol: UDP}]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    c.wait_for("the echo pod bound", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "echo"])
            .stdout()
            .contains("echoing on udp 5353")
    });
    // From the machine to the node without the pod: its proxy tunnels each datagram over.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    sock.connect(format!("{}:30053", hosts.addresses[0]))
        .expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    let mut answers = Vec::new();
    c.wait_for("echoed datagrams", Duration::from_secs(30), |_| {
        let _ = sock.send(format!("ping {}", answers.len()).as_bytes());
        if let Ok(n) = sock.recv(&mut buf) {
            answers.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        answers.len() >= 3
    });
    assert!(
        answers.iter().all(|a| a.starts_with("echo: ping ")),
        "{answers:?}"
    );
    // A UDP port with no endpoint is refused: the pod goes, so does the listener.
    c.shoal(&["delete", "pod", "echo"]).ok();
    c.wait_for("datagrams refused", Duration::from_secs(30), |_| {
        let _ = sock.send(b"anyone?");
        matches!(sock.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
}

#[test]
fn runc_wasi_http_components_with_three_replicas_answer_behind_a_service() {
    if runc_missing("runc_wasi_http_components_with_three_replicas_answer_behind_a_service") {
        return;
    }
    let hosts = Hosts::create(81, 3);
    let (c, _leftovers) = cluster(&hosts, 81, &["web", "web", "web"]);
    let wasm = kit::wasm_fixture("http_hello", "wasm32-wasip2");
    c.shoal(&["push", wasm.to_str().expect("utf-8"), "http-hello:1"])
        .ok();
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  type: NodePort
  selector: {app: hello}
  ports: [{port: 80, targetPort: http, nodePort: 30081}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 3
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: hello
        image: http-hello:1
        ports: [{name: http, containerPort: 8080}]
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
"#,
    );
    c.wait_for("3 hello pods ready", Duration::from_secs(90), |c| {
        ready_pods(c, "hello").len() == 3
    });
    let pods = ready_pods(&c, "hello");
    // A wasm pod's containerPort is its node's: one replica a node.
    let nodes: std::collections::BTreeSet<String> = pods
        .iter()
        .map(|p| field(&c.pod(p), "spec.nodeName"))
        .collect();
    assert_eq!(nodes.len(), 3, "{pods:?} on {nodes:?}");
    // Through the node port, every replica answers in turn.
    let mut answered = BTreeMap::<String, usize>::new();
    for i in 0..30 {
        let body = get(&format!("{}:30081", hosts.addresses[0])).expect("answer");
        let pod = body
            .strip_prefix("hello from ")
            .and_then(|r| r.strip_suffix(" (GET /)"))
            .unwrap_or_else(|| panic!("request {i}: unexpected answer {body:?}"));
        *answered.entry(pod.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        answered.keys().cloned().collect::<Vec<_>>(),
        pods,
        "every replica answers: {answered:?}"
    );
    // HTTP/1.1 keep-alive: two requests on one connection to one replica's port.
    let mut s =
        std::net::TcpStream::connect(format!("{}:8080", hosts.addresses[1])).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = String::new();
    for path in ["/one", "/two?x=1"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: hello\r\n\r\n").expect("send");
        let mut buf = [0u8; 1024];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !got.contains(&format!("(GET {path})")) && std::time::Instant::now() < deadline {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "the connection closed after {got:?}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.contains("(GET /two?x=1)"), "{got}");
}
