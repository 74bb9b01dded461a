//! The controller's two doors side by side, printed (not asserted): listing 1,000 pods with
//! `kubectl get pods` (HTTPS, the Kubernetes API) and with `shoal get pods` (QUIC), each a
//! whole client process as a user runs it; and how long a change takes to reach a watcher on
//! each door (a kubectl watch process, a QUIC watch stream), from the start of its write to
//! the event's arrival (the write's own round trip printed beside).
//!
//! The controller is the real one, as a process. The pods are bound to a node that does not
//! exist, so nothing runs them and the list stays as written.
//!
//! Run with `cargo bench --bench api` (kubectl must be on the PATH); `SHOAL_BENCH_PODS` and
//! `SHOAL_BENCH_RUNS` change the size.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{env_or, latency_row, Controller};
use shoal_transport::proto::{Request, Response};
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pod(i: usize, label: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i:04}"), "labels": {"app": "bench", "round": label}},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "probe:1",
            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}
    }))
    .expect("JSON")
}

/// Runs `program` with `args` `runs` times; the wall time of each whole process.
fn timed(
    program: &str,
    args: &[&str],
    env: (&str, &std::path::Path),
    runs: usize,
) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new(program)
                .env(env.0, env.1)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .expect("the client runs");
            let took = start.elapsed();
            assert!(
                out.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            took
        })
        .collect()
}

fn main() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl is not on the PATH: the HTTPS door cannot be measured");
        std::process::exit(1);
    }
    let pods = env_or("SHOAL_BENCH_PODS", 1000);
    let runs = env_or("SHOAL_BENCH_RUNS", 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start(&dir.path().join("controller"));
    let config = controller.config();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(shoal_transport::Client::connect(&controller.credentials()))
        .expect("connect");
    for chunk in (0..pods).collect::<Vec<_>>().chunks(100) {
        let objects = chunk.iter().map(|i| pod(*i, "0")).collect();
        match rt.block_on(client.call(&Request::Apply { objects })) {
            Ok(Response::Applied(_)) => {}
            other => panic!("apply: {other:?}"),
        }
    }
    let cache = dir.path().join("kube-cache");
    let cache_arg = format!("--cache-dir={}", cache.display());
    // Discovery is cached after the first run, as on a user's machine.
    let _ = timed(
        "kubectl",
        &["get", "pods", &cache_arg],
        ("KUBECONFIG", &config),
        1,
    );
    let mut https = timed(
        "kubectl",
        &["get", "pods", &cache_arg],
        ("KUBECONFIG", &config),
        runs,
    );
    let mut quic = timed(
        kit::shoal_bin(),
        &["get", "pods"],
        ("SHOAL_CONFIG", &config),
        runs,
    );
    println!("listing {pods} pods, a whole client process each ({runs} runs):");
    println!(
        "{}",
        latency_row("kubectl get pods (HTTPS door)", &mut https, 1)
    );
    println!(
        "{}",
        latency_row("shoal get pods (QUIC door)", &mut quic, 1)
    );

    watch_delays(&rt, &client, &config, &cache_arg, pods, runs);
    rt.block_on(client.close());
}

/// A label change written over QUIC, `runs` times, timed until each door's watcher sees it.
fn watch_delays(
    rt: &tokio::runtime::Runtime,
    client: &shoal_transport::Client,
    config: &std::path::Path,
    cache_arg: &str,
    pods: usize,
    runs: usize,
) {
    // Watch delay: a label change written over QUIC, seen by each door's watcher.
    let mut kubectl_watch = Command::new("kubectl")
        .env("KUBECONFIG", config)
        .args([
            "get",
            "pods",
            "-l",
            "app=bench",
            "--watch-only",
            "-o",
            "name",
            cache_arg,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = kubectl_watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });
    let watch = Request::Watch {
        kind: "Pod".into(),
        namespace: Some("default".into()),
        selector: "app=bench".into(),
        fields: String::new(),
        revision: 0,
    };
    let mut stream = rt.block_on(client.stream(&watch)).expect("watch");
    // Each watcher stamps an event when it arrives, on a thread or task of its own.
    let (events, arrived) = std::sync::mpsc::channel();
    rt.spawn(async move {
        while let Ok(Some(Response::Event { .. })) = stream.next().await {
            if events.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let (mut https_delay, mut quic_delay) = (Vec::new(), Vec::new());
    let mut write_rtt = Vec::new();
    for round in 1..=runs {
        let written = Instant::now();
        let objects = vec![pod(round % pods, &round.to_string())];
        match rt.block_on(client.call(&Request::Apply { objects })) {
            Ok(Response::Applied(_)) => {}
            other => panic!("apply: {other:?}"),
        }
        write_rtt.push(written.elapsed());
        let at = arrived
            .recv_timeout(Duration::from_secs(10))
            .expect("the QUIC watch saw the change");
        quic_delay.push(at.saturating_duration_since(written));
        let (_, at) = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("kubectl saw the change");
        https_delay.push(at.saturating_duration_since(written));
        // The next write only once both watchers are quiet.
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = kubectl_watch.kill();
    let _ = kubectl_watch.wait();
    println!("a change reaching a watcher, from the start of its write ({runs} changes):");
    println!(
        "{}",
        latency_row("the write itself (QUIC apply, answered)", &mut write_rtt, 2)
    );
    println!(
        "{}",
        latency_row("kubectl get -w (HTTPS door)", &mut https_delay, 2)
    );
    println!("{}", latency_row("QUIC watch stream", &mut quic_delay, 2));
}
