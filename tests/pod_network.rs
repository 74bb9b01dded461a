//! The pod network beyond the node (root and runc): a pod's connection to a host outside the
//! cluster leaves with its node's address (source NAT in Shoal's own nftables table), a
//! headless Service resolves to its pods' addresses (and each pod by its own name) over
//! UDP and TCP, a Service with `sessionAffinity: ClientIP` keeps a client on one endpoint,
//! NetworkPolicy holds pods' connections in and out (by address, through a Service on the
//! same node or another, and a wasm pod's egress), and `shoal reset`, or a stop with
//! `--cleanup`, leaves no table, forwarding switch, bridge, TUN device or route of Shoal's
//! behind. Each node and the outside host are network namespaces on a bridge of the test's
//! own ([`kit::Hosts`]), with no default route: nothing leaves the machine.

mod kit;

use kit::{field, Hosts};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether Debian's `nft` is missing: a failure where CI installs it, else a skip.
fn nft_missing(test: &str) -> bool {
    if Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return false;
    }
    if std::env::var("SHOAL_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test} needs nft (apt-get install nftables)");
    }
    kit::skipped(test, "nft is not installed (apt-get install nftables)");
    true
}

/// A listener in host `i` that takes one TCP connection on `port` and prints the peer's
/// address and what it sent.
fn listen_once(hosts: &Hosts, i: usize, port: u16) -> std::process::Child {
    let script = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port}))\n\
         s.listen(1)\n\
         print('listening', flush=True)\n\
         c, a = s.accept()\n\
         print(a[0], c.recv(100).decode().strip(), flush=True)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", &hosts.names[i], "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in the outside host")
}

/// A script that asks the DNS server at `server` for `name`'s addresses over TCP (two
/// queries on one connection) and prints the second answer's, sorted.
fn tcp_lookup(server: &str, name: &str) -> String {
    format!(
        "import socket, struct\n\
         q = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0)\n\
         q += b''.join(bytes([len(l)]) + l.encode() for l in '{name}'.split('.')) + b'\\0'\n\
         q += struct.pack('>HH', 1, 1)\n\
         s = socket.create_connection(('{server}', 53), timeout=5)\n\
         def read(n):\n\
         \x20   b = b''\n\
         \x20   while len(b) < n:\n\
         \x20       c = s.recv(n - len(b))\n\
         \x20       if not c: raise SystemExit('closed')\n\
         \x20       b += c\n\
         \x20   return b\n\
         for _ in range(2):\n\
         \x20   s.sendall(struct.pack('>H', len(q)) + q)\n\
         \x20   r = read(struct.unpack('>H', read(2))[0])\n\
         an = struct.unpack('>H', r[6:8])[0]\n\
         ips = [socket.inet_ntoa(r[len(r) - 16 * (an - i) + 12:len(r) - 16 * (an - i) + 16]) for i in range(an)]\n\
         print(' '.join(sorted(ips)))\n"
    )
}

#[test]
fn runc_pods_reach_outside_hosts_from_the_nodes_address_headless_names_resolve_and_reset_undoes_it()
{
    let test =
        "runc_a_pod_reaches_a_host_outside_the_cluster_from_its_nodes_address_and_reset_undoes_it";
    if kit::runc_missing(test) || nft_missing(test) {
        return;
    }
    // Host 0 is the node; host 1 is outside the cluster (no agent), on the site's LAN.
    let hosts = Hosts::create(75, 2);
    no_forwarding(&hosts, 0);
    let (mut c, _leftovers) = kit::hosts_cluster(&hosts, 75, &["edge"]);
    let forwarding = |i: usize| {
        let out = hosts.exec(i, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(forwarding(0), "0", "a device that forwards nothing");

    let mut listener = listen_once(&hosts, 1, 9000);
    let mut lines = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("listening")
    );
    let outside = &hosts.addresses[1];
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: uplink}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1\n    command: [sh, -c, \"echo reading-42 | nc -w 5 {outside} 9000 && echo sent\"]\n"
    ));
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        let phase = field(&c.pod("uplink"), "status.phase");
        phase == "Succeeded" || phase == "Failed"
    });
    let pod = c.pod("uplink");
    assert_eq!(field(&pod, "status.phase"), "Succeeded", "{pod}");
    let heard = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = listener.wait();
    // The outside host saw the node's address, not the pod's (which it has no route back to).
    let pod_ip = field(&pod, "status.podIP");
    assert!(pod_ip.starts_with("10.76."), "{pod}");
    assert_eq!(heard, format!("{} reading-42", hosts.addresses[0]));
    assert_eq!(c.shoal(&["logs", "uplink"]).ok().trim(), "sent");

    // A headless Service resolves to its ready pods' addresses, and each pod by its own name.
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {clusterIP: None, selector: {app: db}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers:\n      - {name: c, image: busybox:1, command: [sleep, \"600\"]}\n",
    );
    c.wait_for("two db pods running", Duration::from_secs(60), |c| {
        let pods = c.pods("app=db");
        pods.len() == 2 && pods.iter().all(|p| field(p, "status.phase") == "Running")
    });
    let mut ips: Vec<String> = c
        .pods("app=db")
        .iter()
        .map(|p| field(p, "status.podIP"))
        .collect();
    ips.sort();
    let own = format!("{}.db.default.svc.cluster.local", ips[1].replace('.', "-"));
    // A pod with a hostname in the subdomain of a headless Service is named by it.
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: peers}\nspec: {clusterIP: None, selector: {app: peer}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: peer, labels: {app: peer}}\nspec:\n  hostname: p0\n  subdomain: peers\n  containers:\n  - {name: c, image: busybox:1, command: [sleep, \"600\"]}\n",
    );
    c.wait_for("the peer running", Duration::from_secs(60), |c| {
        field(&c.pod("peer"), "status.phase") == "Running"
    });
    let peer_ip = field(&c.pod("peer"), "status.podIP");
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: lookup}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1\n    command: [sh, -c, \"nslookup -type=a db; echo ===; nslookup -type=a {own}; echo ===; nslookup -type=a p0.peers.default.svc.cluster.local\"]\n"
    ));
    c.wait_for("the lookups done", Duration::from_secs(60), |c| {
        let phase = field(&c.pod("lookup"), "status.phase");
        phase == "Succeeded" || phase == "Failed"
    });
    let said = c.shoal(&["logs", "lookup"]).ok();
    assert_eq!(
        field(&c.pod("lookup"), "status.phase"),
        "Succeeded",
        "{said}"
    );
    let (all, rest) = said.split_once("===").expect("three lookups");
    let (one, peer) = rest.split_once("===").expect("three lookups");
    let answered = |text: &str| -> Vec<String> {
        let mut found: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Address: "))
            .map(|a| a.trim().to_string())
            .collect();
        found.sort();
        found
    };
    assert_eq!(answered(all), ips, "{said}");
    assert_eq!(answered(one), [ips[1].clone()], "{said}");
    assert_eq!(answered(peer), [peer_ip], "{said}");
    // The same over TCP (where a client asks when a UDP reply is cut), from the node.
    let dns = c
        .shoal(&[
            "get",
            "svc",
            "shoal-dns",
            "-n",
            "shoal-system",
            "-o",
            "json",
        ])
        .ok();
    let dns = field(&serde_json::from_str(&dns).expect("json"), "spec.clusterIP");
    let over_tcp = hosts.exec(
        0,
        &[
            "python3",
            "-c",
            &tcp_lookup(&dns, "db.default.svc.cluster.local"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&over_tcp.stdout).trim(),
        ips.join(" "),
        "{}",
        String::from_utf8_lossy(&over_tcp.stderr)
    );

    // sessionAffinity: ClientIP: every connection of one client reaches the same one of three
    // backends (in turn, the first three would reach all three).
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  selector: {app: sticky}\n  ports: [{port: 80, targetPort: 8080}]\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: sticky}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: sticky}}\n  template:\n    metadata: {labels: {app: sticky}}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1\n        command: [sh, -c, \"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n        ports: [{containerPort: 8080}]\n",
    );
    c.wait_for("three sticky pods ready", Duration::from_secs(60), |c| {
        let eps = c
            .shoal(&["get", "endpoints", "sticky", "-o", "json"])
            .stdout();
        serde_json::from_str::<serde_json::Value>(&eps).is_ok_and(|e| {
            e["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        })
    });
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1\n    command: [sh, -c, \"for i in 1 2 3 4 5 6; do wget -qO- http://sticky; done\"]\n",
    );
    c.wait_for("the client done", Duration::from_secs(60), |c| {
        field(&c.pod("client"), "status.phase") == "Succeeded"
    });
    let answers = c.shoal(&["logs", "client"]).ok();
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), 6, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| *a == answers[0] && a.starts_with("sticky-")),
        "{answers:?}"
    );

    // What the node changed: its own table, and forwarding on.
    let table = hosts.exec(0, &["nft", "list", "table", "ip", "shoal-shoal0"]);
    let rules = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        rules.contains("ip saddr 10.76.") && rules.contains("masquerade"),
        "{rules}"
    );
    assert_eq!(forwarding(0), "1");

    // Removed from the device by `shoal reset`: no table, forwarding as it was, no bridge.
    c.agents[0].terminate();
    c.agents[0].wait_exit(Duration::from_secs(20));
    let mut reset = Command::new(&hosts.run_in(0)[0]);
    reset
        .args(&hosts.run_in(0)[1..])
        .args(["reset", "--force", "--data-dir"])
        .arg(&c.agents[0].dir);
    let out = reset.output().expect("shoal reset");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("removed the nftables table ip shoal-shoal0"),
        "{said}"
    );
    assert_nothing_left(&hosts, 0);
}

/// Host `i` made a device that forwards nothing (a new network namespace starts with what
/// the machine has, which other tests may have changed).
fn no_forwarding(hosts: &Hosts, i: usize) {
    let out = hosts.exec(i, &["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Host `i` has no nftables table of Shoal's, forwarding off as it was before the agent, no
/// pod bridge or TUN device (`shoal0-tun`), and no route through either.
fn assert_nothing_left(hosts: &Hosts, i: usize) {
    let routes = hosts.exec(i, &["ip", "route"]);
    assert!(
        !String::from_utf8_lossy(&routes.stdout).contains("shoal"),
        "{}",
        String::from_utf8_lossy(&routes.stdout)
    );
    let tables = hosts.exec(i, &["nft", "list", "tables"]);
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("shoal"),
        "{}",
        String::from_utf8_lossy(&tables.stdout)
    );
    let forwarding = hosts.exec(i, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "0");
    let links = hosts.exec(i, &["ip", "-o", "link"]);
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("shoal0"),
        "{}",
        String::from_utf8_lossy(&links.stdout)
    );
}

#[test]
fn runc_an_agent_stopped_with_cleanup_stops_its_pods_and_leaves_nothing_in_the_hosts_network() {
    let test =
        "runc_an_agent_stopped_with_cleanup_stops_its_pods_and_leaves_nothing_in_the_hosts_network";
    if kit::runc_missing(test) || nft_missing(test) {
        return;
    }
    let hosts = Hosts::create(99, 1);
    no_forwarding(&hosts, 0);
    let (mut c, _leftovers) = kit::hosts_cluster_with(&hosts, 99, &["edge"], &[], &["--cleanup"]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1, command: [sleep, \"600\"]}\n",
    );
    c.wait_for("the pod running", Duration::from_secs(60), |c| {
        field(&c.pod("p"), "status.phase") == "Running"
    });
    let table = hosts.exec(0, &["nft", "list", "table", "ip", "shoal-shoal0"]);
    assert!(
        table.status.success(),
        "the pod's bridge came with the table"
    );
    c.agents[0].terminate();
    assert!(
        c.agents[0].wait_exit(Duration::from_secs(30)).is_some(),
        "{}",
        c.agents[0].log()
    );
    assert!(
        c.agents[0]
            .log()
            .contains("removed what this node made in the host's network"),
        "{}",
        c.agents[0].log()
    );
    assert!(
        kit::runc_list(&c.agents[0].dir).is_empty(),
        "the pod's container is stopped"
    );
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let pod_uid = field(&c.pod("p"), "metadata.uid");
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains(&pod_uid),
        "the pod's network namespace is gone"
    );
    assert_nothing_left(&hosts, 0);
}

/// What the long-running pod `client` of `ns` gets from `url` (it gives up after 3 s;
/// busybox's own `wget -T` crashes): `ok` when it got the page, else `refused` and what
/// it said.
fn fetch_from(c: &kit::Cluster, ns: &str, url: &str) -> String {
    let run = c.shoal(&[
        "exec",
        "-n",
        ns,
        "client",
        "--",
        "sh",
        "-c",
        &format!("timeout 3 wget -qO- {url}"),
    ]);
    if run.stdout().trim() == "hello" {
        "ok".into()
    } else {
        format!("refused: {} {}", run.stdout(), run.stderr())
    }
}

fn assert_refused(said: String) {
    assert!(said.starts_with("refused"), "{said}");
}

/// Whether the pod's network namespace holds Shoal's policy table.
fn policy_table(c: &kit::Cluster, ns: &str, pod: &str) -> Option<String> {
    let out = c.shoal(&["get", "pod", pod, "-n", ns, "-o", "json"]).ok();
    let uid = field(
        &serde_json::from_str(&out).expect("pod JSON"),
        "metadata.uid",
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("shoal-{uid}")])
        .args(["nft", "list", "table", "inet", "shoal-policy"])
        .output()
        .expect("ip netns exec");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn runc_a_network_policy_shuts_a_pod_then_lets_in_one_namespace_through_its_address_and_its_service(
) {
    let test = "runc_a_network_policy_shuts_a_pod_then_lets_in_one_namespace";
    if kit::runc_missing(test) || nft_missing(test) {
        return;
    }
    let hosts = Hosts::create(57, 2);
    no_forwarding(&hosts, 0);
    no_forwarding(&hosts, 1);
    let (c, _leftovers) = kit::hosts_cluster(&hosts, 57, &["edge", "edge"]);
    // node-1 runs the web pod and the clients; node-2 a second web pod, reached only through
    // its Service (a tunnel between the nodes, whose far end holds it to the policy).
    let web = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{instance: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web, instance: {name}}}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  containers:\n  - name: c\n    image: busybox:1\n    command: [sh, -c, \"mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    ports: [{{name: http, containerPort: 8080, hostPort: 18080}}]\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n"
        )
    };
    c.apply(&web("web", "node-1"));
    c.apply(&web("far", "node-2"));
    c.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: trusted}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
    );
    for ns in ["trusted", "other"] {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: {ns}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: node-1}}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: busybox:1, command: [sleep, \"600\"]}}\n"
        ));
    }
    let client_ip = |c: &kit::Cluster, ns: &str| {
        let out = c
            .shoal(&["get", "pod", "client", "-n", ns, "-o", "json"])
            .stdout();
        serde_json::from_str::<serde_json::Value>(&out)
            .map(|p| field(&p, "status.podIP"))
            .unwrap_or_default()
    };
    let ready = |c: &kit::Cluster, svc: &str| {
        let eps = c.shoal(&["get", "endpoints", svc, "-o", "json"]).stdout();
        serde_json::from_str::<serde_json::Value>(&eps).is_ok_and(|e| {
            e["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        })
    };
    c.wait_for("the web pods ready", Duration::from_secs(60), |c| {
        ready(c, "web")
            && ready(c, "far")
            && !client_ip(c, "trusted").is_empty()
            && !client_ip(c, "other").is_empty()
    });
    let direct = format!("http://{}:8080/", field(&c.pod("web"), "status.podIP"));
    let service = "http://web.default.svc.cluster.local/";
    let far = "http://far.default.svc.cluster.local/";
    assert_eq!(fetch_from(&c, "other", &direct), "ok");
    assert_eq!(fetch_from(&c, "other", far), "ok");
    // Its hostPort, from the other host (the pod sees node-1's address: the forwarder holds
    // the client to the policy first).
    let host_port = format!("http://{}:18080/", hosts.addresses[0]);
    let from_host = |url: &str| {
        let out = hosts.exec(
            1,
            &["sh", "-c", &format!("timeout 3 busybox wget -qO- {url}")],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(from_host(&host_port), "hello");

    // Deny all ingress to the web pod: a connection that worked no longer does, by its
    // address or through its Service.
    c.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n",
    );
    c.wait_for(
        "the policy in the pod's namespace",
        Duration::from_secs(30),
        |c| policy_table(c, "default", "web").is_some(),
    );
    let table = policy_table(&c, "default", "web").unwrap_or_default();
    assert!(table.contains("policy drop"), "{table}");
    assert_refused(fetch_from(&c, "other", &direct));
    assert_refused(fetch_from(&c, "other", service));
    assert_refused(fetch_from(&c, "other", far));
    assert_eq!(from_host(&host_port), "", "the hostPort is shut too");
    assert_eq!(
        field(&c.pod("web"), "status.phase"),
        "Running",
        "the node's probes still reach it"
    );
    // As Kubernetes has it, a pod never blocks itself (here through its own Service), and its
    // own node always reaches it (here a process of the node, through the cluster IP).
    let own = c.shoal(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        &format!("timeout 3 wget -qO- {service}"),
    ]);
    assert_eq!(own.stdout().trim(), "hello", "{}", own.stderr());
    let web_ip = {
        let out = c.shoal(&["get", "svc", "web", "-o", "json"]).ok();
        field(&serde_json::from_str(&out).expect("json"), "spec.clusterIP")
    };
    let from_node = hosts.exec(
        0,
        &[
            "sh",
            "-c",
            &format!("timeout 3 busybox wget -qO- http://{web_ip}/"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&from_node.stdout).trim(), "hello");

    // Let in one namespace, by the name label every namespace has, on the named port.
    c.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: trusted-in}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: trusted}}}]\n    ports: [{port: http}]\n",
    );
    let trusted = client_ip(&c, "trusted");
    c.wait_for(
        "the allow rule in the pod's namespace",
        Duration::from_secs(30),
        |c| policy_table(c, "default", "web").is_some_and(|t| t.contains(&trusted)),
    );
    let table = policy_table(&c, "default", "web").unwrap_or_default();
    assert!(
        table.contains("dport 8080") && !table.contains(&client_ip(&c, "other")),
        "{table}"
    );
    assert_eq!(fetch_from(&c, "trusted", &direct), "ok");
    assert_eq!(fetch_from(&c, "trusted", service), "ok");
    assert_eq!(fetch_from(&c, "trusted", far), "ok");
    assert_refused(fetch_from(&c, "other", &direct));
    assert_refused(fetch_from(&c, "other", service));
    assert_refused(fetch_from(&c, "other", far));
    let got = c.shoal(&["get", "netpol"]).ok();
    assert!(
        got.contains("trusted-in") && got.contains("app=web"),
        "{got}"
    );

    // A wasm pod that a policy would isolate, where it cannot be enforced, is refused.
    let refused = c
        .controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: w, labels: {app: web}}\nspec:\n  runtimeClassName: wasm\n  containers:\n  - {name: c, image: probe:1}\n"),
        )
        .fails();
    assert!(
        refused.contains("NetworkPolicy") && refused.contains("wasm pod"),
        "{refused}"
    );

    // With its policies gone the pod is open again, and its table is gone.
    c.shoal(&["delete", "netpol", "deny", "trusted-in"]).ok();
    c.wait_for("the tables removed", Duration::from_secs(30), |c| {
        policy_table(c, "default", "web").is_none() && policy_table(c, "default", "far").is_none()
    });
    assert_eq!(fetch_from(&c, "other", &direct), "ok");
    assert_eq!(fetch_from(&c, "other", far), "ok");

    // Egress: the other namespace's pods may reach the far web pod only. Its Service (and
    // the cluster DNS) still works; the near web pod, by address or Service, does not.
    c.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: out, namespace: other}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {instance: far}}}]\n    ports: [{port: 8080}]\n",
    );
    c.wait_for(
        "the egress rules in the client's namespace",
        Duration::from_secs(30),
        |c| policy_table(c, "other", "client").is_some_and(|t| t.contains("chain egress")),
    );
    assert_eq!(fetch_from(&c, "other", far), "ok");
    assert_refused(fetch_from(&c, "other", &direct));
    assert_refused(fetch_from(&c, "other", service));
    assert_eq!(
        fetch_from(&c, "trusted", service),
        "ok",
        "other namespaces are not held"
    );

    // A wasm pod in that namespace is held to the same egress, connection by connection: a
    // Service whose endpoints its rules allow, but not one they do not, nor a pod's address.
    let probe = c.push_probe_component();
    let cluster_ip = |svc: &str| {
        let out = c.shoal(&["get", "svc", svc, "-o", "json"]).ok();
        field(&serde_json::from_str(&out).expect("json"), "spec.clusterIP")
    };
    let (to_far, to_web) = (
        format!("{}:80", cluster_ip("far")),
        format!("{}:80", cluster_ip("web")),
    );
    let web_pod = direct
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // It starts at once: its node holds it until its rules have come.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: w, namespace: other}}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  nodeSelector: {{kubernetes.io/hostname: node-1}}\n  containers:\n  - name: c\n    image: {probe}\n    args: [connect, \"{to_far}\", connect, \"{to_web}\", connect, \"{web_pod}\"]\n"
    ));
    c.wait_for("the wasm pod done", Duration::from_secs(60), |c| {
        let out = c
            .shoal(&["get", "pod", "w", "-n", "other", "-o", "json"])
            .stdout();
        serde_json::from_str::<serde_json::Value>(&out)
            .is_ok_and(|p| field(&p, "status.phase") == "Succeeded")
    });
    let said = c.shoal(&["logs", "w", "-n", "other"]).ok();
    assert!(said.contains(&format!("connected to {to_far}")), "{said}");
    assert!(
        said.contains(&format!("cannot connect to {to_web}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("cannot connect to {web_pod}")),
        "{said}"
    );
}
