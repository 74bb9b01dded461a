//! Pod network figures, printed: requests per second and median/p99 latency of HTTP requests
//! (a fresh TCP connection each, as HTTP/1.0), and the throughput of one large response, from
//! a pod on one node to a backend pod on another node, side by side in one run:
//! - by the pod's address, as QUIC datagrams between the nodes (TUN device to TUN device);
//! - through the Service's cluster IP (the proxy on the client's node, a QUIC stream to the
//!   pod's node, its proxy dialling the pod);
//! - by the pod's address routed by the kernel from node to node (no tunnel), for comparison;
//! - both again with each node's link shaped to 100 Mbit/s (`tc tbf`), as at an edge site;
//! - with the nodes cut from each other, the first two again, relayed by the controller.
//!
//! The nodes are network namespaces on this machine with a veth each to a bridge, as in
//! tests/services.rs; the pods are busybox in runc containers (httpd for the backend).
//!
//! Run with `cargo bench --bench services` as root with runc installed (`apt-get install runc
//! busybox-static`); without them it says why and does nothing. `SHOAL_AGENT_BIN=PATH` runs
//! the agents from another build of shoal (the agent flavour, say) beside this bench's
//! controller.

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const REQUESTS: usize = 1000;
const CONCURRENCY: [usize; 2] = [1, 8];
/// The size of the bulk transfer.
const BULK_MIB: usize = 64;
/// The bench's hosts (see [`kit::Hosts`]); no test uses it.
const TAG: u8 = 61;

/// The bulk load: `--bulk ADDR`, one GET of the large file; prints the bits per second.
fn bulk(addr: SocketAddr) {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(b"GET /big HTTP/1.0\r\nHost: bench\r\n\r\n")
        .expect("request");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("bulk read: {e}"),
        }
    }
    assert!(total >= BULK_MIB << 20, "only {total} bytes came");
    println!("{:.0}", total as f64 * 8.0 / start.elapsed().as_secs_f64());
}

/// The load: `--client ADDR REQUESTS CONCURRENCY`, run inside the client node's network by
/// the bench itself; prints `rps p50_us p99_us errors`.
fn client(addr: SocketAddr, requests: usize, concurrency: usize) {
    let start = Instant::now();
    let per = requests / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per);
                let mut errors = 0usize;
                for _ in 0..per {
                    let t = Instant::now();
                    let ok = (|| -> std::io::Result<()> {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")?;
                        let mut body = Vec::new();
                        s.read_to_end(&mut body)?;
                        if body.starts_with(b"HTTP/1.") {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("not an HTTP answer"))
                        }
                    })();
                    match ok {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.join().expect("worker");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort();
    let at = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0, |d| d.as_micros())
    };
    println!(
        "{:.0} {} {} {errors}",
        all.len() as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let addr: SocketAddr = args[i + 1].parse().expect("ADDR");
        client(
            addr,
            args[i + 2].parse().expect("N"),
            args[i + 3].parse().expect("C"),
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--bulk") {
        bulk(args[i + 1].parse().expect("ADDR"));
        return;
    }
    if kit::runc_missing("the services bench") {
        return;
    }
    let hosts = kit::Hosts::create(TAG, 2);
    let (c, _leftovers) = kit::hosts_cluster(&hosts, TAG, &["front", "back"]);
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(BACKEND))
        .ok();
    c.wait_for("the pods ready", Duration::from_secs(60), |c| {
        kit::field(&c.pod("backend"), "status.containerStatuses.0.ready") == "true"
            && kit::field(&c.pod("client"), "status.phase") == "Running"
    });
    let pod_ip = kit::field(&c.pod("backend"), "status.podIP");
    // The load runs in the client pod's network namespace: what a pod on node-1 sees.
    let client_netns = format!("shoal-{}", kit::field(&c.pod("client"), "metadata.uid"));
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "backend", "-o", "json"]).ok()).expect("svc");
    let cluster_ip = kit::field(&svc, "spec.clusterIP");
    let range = |node: &str| {
        let n: serde_json::Value =
            serde_json::from_str(&c.shoal(&["get", "node", node, "-o", "json"]).ok())
                .expect("node");
        kit::field(&n, "spec.podCIDR")
    };
    c.wait_for(
        "the cluster IP served on node-1",
        Duration::from_secs(30),
        |_| {
            let out = hosts.exec(0, &["ip", "route", "show", "table", "local"]);
            String::from_utf8_lossy(&out.stdout).contains(&format!("local {cluster_ip} "))
        },
    );
    let via_service = format!("{cluster_ip}:80");
    let pod = format!("{pod_ip}:8080");
    let load = |target: &str, concurrency: usize| load(&client_netns, target, concurrency);
    // Warm the paths (first tunnel, ARP, page cache).
    load(&via_service, 1);
    load(&pod, 1);
    println!(
        "services: {REQUESTS} HTTP/1.0 requests, each on a new connection, from a pod on node-1 to a busybox httpd pod on node-2; bulk: {BULK_MIB} MiB in one response"
    );
    let row = |label: &str, target: &str| row(&client_netns, label, target);
    row("pod to pod by address (QUIC datagrams, direct)", &pod);
    row("through the ClusterIP (QUIC stream, direct)", &via_service);
    // The kernel's own path for comparison: each node routes the other's pod range to it
    // over the veths (in place of the TUN device), forwarding; no tunnel, no encryption.
    let ranges = [range("node-1"), range("node-2")];
    kernel_routes(&hosts, &ranges, true);
    load(&pod, 1);
    row("pod to pod, routed by the kernel (no tunnel)", &pod);
    // An edge site's link: each host's own shaped to 100 Mbit/s.
    shape(&hosts, true);
    row("routed by the kernel, links at 100 Mbit/s", &pod);
    kernel_routes(&hosts, &ranges, false);
    load(&pod, 1);
    row("by address (QUIC datagrams), links at 100 Mbit/s", &pod);
    shape(&hosts, false);
    // Cut node-1 from node-2: both paths find the direct way gone and go through the
    // controller.
    for (i, other) in [(0, 1), (1, 0)] {
        let peer = format!("{}/32", hosts.addresses[other]);
        run(&hosts, i, &["ip", "route", "add", "blackhole", &peer]);
    }
    load(&via_service, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load(&pod, 1).3 > 0 && Instant::now() < deadline {}
    row("pod to pod by address, relayed by the controller", &pod);
    row(
        "through the ClusterIP, relayed by the controller",
        &via_service,
    );
}

/// Prints the figures of `target` from network namespace `netns`: latency at each
/// concurrency, then the bulk throughput.
fn row(netns: &str, label: &str, target: &str) {
    for conc in CONCURRENCY {
        let (rps, p50, p99, errors) = load(netns, target, conc);
        println!(
            "  {label:<52} x{conc}  {rps:>7.0} req/s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  errors {errors}"
        );
    }
    let mbit = bulk_in(netns, target);
    println!("  {label:<52} bulk {mbit:>8.0} Mbit/s");
}

/// Shapes each host's link (`on`) to 100 Mbit/s, as an edge site's, or takes that off.
fn shape(hosts: &kit::Hosts, on: bool) {
    for i in 0..2 {
        let tbf = ["rate", "100mbit", "burst", "64kb", "latency", "20ms"];
        let mut args = vec![
            "tc",
            "qdisc",
            if on { "add" } else { "del" },
            "dev",
            "eth0",
            "root",
        ];
        if on {
            args.push("tbf");
            args.extend(tbf);
        }
        run(hosts, i, &args);
    }
}

/// Runs `args` in host `i`, which must succeed.
fn run(hosts: &kit::Hosts, i: usize, args: &[&str]) {
    let out = hosts.exec(i, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Routes each node's pod range (`ranges`) from the other node over the veths, by the
/// kernel (`on`: a route of metric 0, ahead of the TUN device's), or takes that off.
fn kernel_routes(hosts: &kit::Hosts, ranges: &[String; 2], on: bool) {
    for (i, other) in [(0, 1), (1, 0)] {
        let range = ranges[other].as_str();
        let via = hosts.addresses[other].as_str();
        let verb = if on { "add" } else { "del" };
        run(
            hosts,
            i,
            &["ip", "route", verb, range, "via", via, "metric", "0"],
        );
    }
}

/// The service and the pod behind it, on the node labelled `role: back`.
const BACKEND: &str = r#"apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: backend, labels: {app: backend}}
spec:
  nodeSelector: {role: back}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, "mkdir -p /www && echo hello > /www/index.html && dd if=/dev/zero of=/www/big bs=1M count=64 2>/dev/null && exec httpd -f -p 8080 -h /www"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
    resources: {requests: {cpu: 10m, memory: 8Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeSelector: {role: front}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox:1, command: [sleep, "3600"]}
"#;

/// The best of three bulk transfers from `target`, run in network namespace `netns`, in
/// Mbit/s.
fn bulk_in(netns: &str, target: &str) -> f64 {
    let me = std::env::current_exe().expect("bench binary");
    (0..3)
        .map(|_| {
            let out = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .arg("--")
                .arg(&me)
                .args(["--bulk", target])
                .output()
                .expect("run the bulk client");
            let text = String::from_utf8_lossy(&out.stdout);
            let bits: f64 = text.trim().parse().unwrap_or_else(|_| {
                panic!("bulk: {text} {}", String::from_utf8_lossy(&out.stderr))
            });
            bits / 1e6
        })
        .fold(0.0, f64::max)
}

/// Runs the client in network namespace `netns` against `target`: requests per second, p50
/// and p99 in milliseconds, and errors.
fn load(netns: &str, target: &str, concurrency: usize) -> (f64, f64, f64, usize) {
    let me = std::env::current_exe().expect("bench binary");
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{netns}"))
        .arg("--")
        .arg(&me)
        .args([
            "--client",
            target,
            &REQUESTS.to_string(),
            &concurrency.to_string(),
        ])
        .output()
        .expect("run the client");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    assert!(
        f.len() == 4,
        "client: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (f[0], f[1] / 1000.0, f[2] / 1000.0, f[3] as usize)
}
