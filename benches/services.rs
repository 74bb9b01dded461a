//! Service proxy figures, printed: requests per second and median/p99 latency of HTTP requests
//! (a fresh TCP connection each, as HTTP/1.0) from one node to a backend pod on another node,
//! through the Service's cluster IP (the proxy on the client's node, a QUIC stream to the pod's
//! node, its proxy dialling the pod) beside a direct routed connection to the same pod, in the
//! same run; then, with the nodes cut from each other, through the cluster IP again, relayed
//! by the controller. The nodes are network namespaces on this machine with a veth each to
//! a bridge, as in tests/services.rs; the backend is busybox httpd in a runc container.
//!
//! Run with `cargo bench --bench services` as root with runc installed (`apt-get install runc
//! busybox-static`); without them it says why and does nothing.

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const REQUESTS: usize = 1000;
const CONCURRENCY: [usize; 2] = [1, 8];

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
    if kit::runc_missing("the services bench") {
        return;
    }
    let hosts = kit::Hosts::create(75, 2);
    let (c, _leftovers) = kit::hosts_cluster(&hosts, 75, &["front", "back"]);
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(BACKEND))
        .ok();
    c.wait_for("the backend ready", Duration::from_secs(60), |c| {
        let p = c.pod("backend");
        kit::field(&p, "status.containerStatuses.0.ready") == "true"
    });
    let pod_ip = kit::field(&c.pod("backend"), "status.podIP");
    let svc: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "svc", "backend", "-o", "json"]).ok()).expect("svc");
    let cluster_ip = kit::field(&svc, "spec.clusterIP");
    // The direct path: node-1 routes node-2's pod range to node-2, which forwards.
    let node2: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "node-2", "-o", "json"]).ok())
            .expect("node");
    let pod_cidr = kit::field(&node2, "spec.podCIDR");
    let run = |i: usize, args: &[&str]| {
        let out = hosts.exec(i, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(1, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    run(
        0,
        &["ip", "route", "add", &pod_cidr, "via", &hosts.addresses[1]],
    );
    c.wait_for(
        "the cluster IP served on node-1",
        Duration::from_secs(30),
        |_| {
            let out = hosts.exec(0, &["ip", "route", "show", "table", "local"]);
            String::from_utf8_lossy(&out.stdout).contains(&format!("local {cluster_ip} "))
        },
    );
    let load = |target: &str, concurrency: usize| load(&hosts, target, concurrency);
    let via_service = format!("{cluster_ip}:80");
    let direct = format!("{pod_ip}:8080");
    // Warm both paths (first tunnel, ARP, page cache).
    load(&via_service, 1);
    load(&direct, 1);
    println!(
        "services: {REQUESTS} HTTP/1.0 requests, each on a new connection, from node-1 to a busybox httpd pod on node-2"
    );
    let row = |label: &str, target: &str, conc: usize| {
        let (rps, p50, p99, errors) = load(target, conc);
        println!(
            "  {label:<50} x{conc}  {rps:>7.0} req/s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  errors {errors}"
        );
    };
    for conc in CONCURRENCY {
        row("through the ClusterIP, node to node", &via_service, conc);
        row("direct to the pod (routed, no proxy)", &direct, conc);
    }
    // Cut node-1 from node-2: the proxy finds the direct path gone and relays.
    run(
        0,
        &[
            "ip",
            "route",
            "add",
            "blackhole",
            &format!("{}/32", hosts.addresses[1]),
        ],
    );
    load(&via_service, 1);
    for conc in CONCURRENCY {
        row(
            "through the ClusterIP, relayed by the controller",
            &via_service,
            conc,
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
    command: [sh, -c, "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
    resources: {requests: {cpu: 10m, memory: 8Mi}}
"#;

/// Runs the client in node-1's namespace against `target`: requests per second, p50 and p99
/// in milliseconds, and errors.
fn load(hosts: &kit::Hosts, target: &str, concurrency: usize) -> (f64, f64, f64, usize) {
    let me = std::env::current_exe().expect("bench binary");
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", hosts.names[0]))
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
