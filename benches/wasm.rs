//! Wasm pod figures on a loopback cluster (a controller and one agent, real processes), printed:
//! - apply-to-Running latency (median, p99): cold (a new artifact: fetch and compile) and with
//!   the compile cache warm, beside the bare cost of running the same module with wasmtime;
//! - agent resident memory idle, and per idle wasm pod at 100 and 1,000 pods on one agent.
//!
//! Run with `cargo bench --bench wasm` (needs `rustup target add wasm32-wasip1 wasm32-wasip2`).

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{apply_until_running, rss_kib, wasm_fixture, Agent, Controller};
use shoal_runtime::wasm::WasmRuntime;
use shoal_runtime::{ContainerSpec, Workload};
use shoal_transport::proto::{Request, Response};
use shoal_transport::Client;
use std::time::{Duration, Instant};

/// A copy of a module with a custom section appended: valid, and a digest of its own.
fn variant(module: &[u8], n: usize) -> Vec<u8> {
    let name = format!("shoal-bench-{n}");
    let mut section = vec![name.len() as u8];
    section.extend(name.as_bytes());
    let mut out = module.to_vec();
    out.push(0);
    out.push(section.len() as u8);
    out.extend(section);
    out
}

fn pod(name: &str, image: &str, beats: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "wasm"}},
        "spec": {"runtimeClassName": "wasm", "containers": [{
            "name": "hello", "image": image, "args": [beats],
            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}
    }))
    .expect("json")
}

async fn push(client: &Client, bytes: &[u8], reference: &str) {
    let path = std::env::temp_dir().join(format!("shoal-bench-{}.wasm", std::process::id()));
    std::fs::write(&path, bytes).expect("write");
    let out = std::process::Command::new(kit::shoal_bin())
        .args(["push", path.to_str().expect("path"), reference])
        .env(
            "SHOAL_CONFIG",
            std::env::var("SHOAL_BENCH_CONFIG").expect("config"),
        )
        .output()
        .expect("shoal push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = client;
}

async fn count_running(client: &Client) -> usize {
    match client
        .call(&Request::List {
            kind: "Pod".into(),
            namespace: Some("default".into()),
            selector: "bench=idle".into(),
            fields: String::new(),
        })
        .await
        .expect("list")
    {
        Response::List { items, .. } => items
            .iter()
            .filter(|b| {
                serde_json::from_slice::<serde_json::Value>(b)
                    .map(|v| v["status"]["phase"] == "Running")
                    .unwrap_or(false)
            })
            .count(),
        other => panic!("{other:?}"),
    }
}

async fn idle_pods(client: &Client, from: usize, to: usize, image: &str) {
    for chunk in (from..to).collect::<Vec<_>>().chunks(100) {
        let objects = chunk
            .iter()
            .map(|i| {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&pod(&format!("idle-{i}"), image, "1000000"))
                        .expect("json");
                v["metadata"]["labels"]["bench"] = "idle".into();
                serde_json::to_vec(&v).expect("json")
            })
            .collect();
        client
            .call(&Request::Apply { objects })
            .await
            .expect("apply");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while count_running(client).await < to {
        assert!(Instant::now() < deadline, "pods did not all start");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let hello = std::fs::read(wasm_fixture("hello", "wasm32-wasip1")).expect("hello.wasm");
        let dir = tempfile::tempdir().expect("tempdir");

        // Bare wasmtime through the same runtime: compile, then start-to-exit of the module.
        let (mut compile, mut run) = bare_wasmtime(&hello, dir.path()).await;

        let controller = Controller::start(&dir.path().join("controller"));
        std::env::set_var("SHOAL_BENCH_CONFIG", controller.config());
        let token = std::fs::read_to_string(controller.dir.join("token")).expect("token");
        let agent = Agent::with(&controller, "bench-node", &dir.path().join("agent"))
            .token(token.trim())
            .args(&["--max-pods", "1200"])
            .start();
        let client = Client::connect(&controller.credentials())
            .await
            .expect("connect");
        loop {
            let out = controller.shoal(&["get", "nodes", "--no-headers"]).stdout();
            if out.contains(" Ready ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = agent.pid().expect("agent pid");
        let idle = rss_kib(pid);

        // Cold: every pod a new artifact (fetched, compiled). Warm: the same one again.
        let mut cold = Vec::new();
        for i in 0..10 {
            push(&client, &variant(&hello, i), &format!("cold-{i}:1")).await;
            cold.push(
                apply_until_running(
                    &client,
                    &format!("cold-{i}"),
                    pod(&format!("cold-{i}"), &format!("cold-{i}:1"), "1000000"),
                )
                .await,
            );
        }
        push(&client, &hello, "hello:1").await;
        apply_until_running(&client, "warmup", pod("warmup", "hello:1", "1000000")).await;
        let mut warm = Vec::new();
        for i in 0..30 {
            warm.push(
                apply_until_running(
                    &client,
                    &format!("warm-{i}"),
                    pod(&format!("warm-{i}"), "hello:1", "1000000"),
                )
                .await,
            );
        }
        kit::delete_pods(&client, "bench=wasm").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let base = rss_kib(pid);
        idle_pods(&client, 0, 100, "hello:1").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at100 = rss_kib(pid);
        idle_pods(&client, 100, 1000, "hello:1").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at1000 = rss_kib(pid);

        println!("wasm pods on a loopback cluster (controller + 1 agent, release build):");
        println!(
            "{}",
            kit::latency_row(
                "bare wasmtime, compile hello.wasm (64 KiB):",
                &mut compile,
                1
            )
        );
        println!(
            "{}",
            kit::latency_row("bare wasmtime, start to exit (precompiled):", &mut run, 2)
        );
        println!(
            "{}",
            kit::latency_row("apply to Running, cold (fetch + compile):", &mut cold, 1)
        );
        println!(
            "{}",
            kit::latency_row("apply to Running, compile cache warm:", &mut warm, 1)
        );
        println!(
            "  agent resident memory, idle:                     {:>7.1} MiB",
            idle as f64 / 1024.0
        );
        println!(
            "  agent resident memory, 100 idle wasm pods:       {:>7.1} MiB ({:.0} KiB per pod)",
            at100 as f64 / 1024.0,
            (at100.saturating_sub(base)) as f64 / 100.0
        );
        println!(
            "  agent resident memory, 1,000 idle wasm pods:     {:>7.1} MiB ({:.0} KiB per pod)",
            at1000 as f64 / 1024.0,
            (at1000.saturating_sub(base)) as f64 / 1000.0
        );
        drop(agent);
    });
}

/// Bare wasmtime through the same runtime as the agent's, ten modules: the compile times,
/// and the start-to-exit times of the compiled modules.
async fn bare_wasmtime(hello: &[u8], dir: &std::path::Path) -> (Vec<Duration>, Vec<Duration>) {
    let bare = WasmRuntime::new(&dir.join("bare-cache")).expect("runtime");
    let mut compile = Vec::new();
    let mut run = Vec::new();
    for i in 0..10 {
        let path = dir.join(format!("bare-{i}.wasm"));
        std::fs::write(&path, variant(hello, 1000 + i)).expect("write");
        let t = Instant::now();
        bare.prepare(&path).expect("compile");
        compile.push(t.elapsed());
        let spec = ContainerSpec {
            id: "bench/bare/hello".into(),
            artifact: path,
            argv: vec!["hello".into(), "0".into()],
            env: vec![],
            working_dir: None,
            mounts: vec![],
            memory_limit: None,
            cpu_limit_millis: None,
            log_path: dir.join("bare.log"),
            ..Default::default()
        };
        let t = Instant::now();
        bare.start(spec).expect("start").wait().await;
        run.push(t.elapsed());
    }
    (compile, run)
}
