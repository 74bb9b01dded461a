//! The wasm executor against real wasmtime, with small WAT modules.

use super::*;
use crate::handle::ExitReason;
use crate::ContainerSpec;
use sha2::Digest;
use std::path::PathBuf;
use std::time::Instant;

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const 3))))"#;

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

const HOG: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#;

/// Grows a table of function references until refused: tables live outside linear memory,
/// and once took the agent past 1 GB under a 32Mi limit.
const TABLE_HOG: &str = r#"(module (memory (export "memory") 1) (table 1 funcref)
  (func (export "_start") (loop $l (br_if $l (i32.ne (table.grow (ref.null func) (i32.const 65536)) (i32.const -1))))))"#;

const TRAP: &str = r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;

struct Fixture {
    dir: tempfile::TempDir,
    runtime: WasmRuntime,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let runtime = WasmRuntime::new(&dir.path().join("cache")).unwrap();
        Fixture { dir, runtime }
    }

    fn spec(&self, name: &str, wat: &str) -> ContainerSpec {
        let artifact = self.dir.path().join(format!("{name}.wat"));
        std::fs::write(&artifact, wat).unwrap();
        ContainerSpec {
            id: format!("default/{name}/main"),
            artifact,
            argv: vec![name.into()],
            env: vec![],
            working_dir: None,
            mounts: vec![],
            memory_limit: None,
            cpu_limit_millis: None,
            log_path: self.dir.path().join(format!("{name}.log")),
            ..Default::default()
        }
    }
}

#[tokio::test]
async fn output_goes_to_the_log_and_the_exit_code_is_kept() {
    let f = Fixture::new();
    let spec = f.spec("hello", HELLO);
    let exit = f.runtime.start(spec.clone()).unwrap().wait().await;
    assert_eq!(exit.code, 3);
    assert_eq!(exit.reason, ExitReason::Error);
    assert_eq!(
        crate::logs::read(&spec.log_path, None, &Default::default()).unwrap(),
        "hello wasm\nhello wasm\n"
    );
}

#[tokio::test]
async fn a_guest_that_loops_forever_stops_promptly() {
    let f = Fixture::new();
    let handle = f.runtime.start(f.spec("spin", SPIN)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(handle.exit().is_none(), "still running");
    let asked = Instant::now();
    handle.stop(Duration::from_secs(30));
    let exit = handle.wait().await;
    assert_eq!(exit.reason, ExitReason::Killed);
    assert_eq!(exit.code, 137);
    assert_eq!(
        exit.message.as_deref(),
        Some("stopped"),
        "stopped by the epoch, not the grace timer"
    );
    assert!(asked.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn going_past_the_memory_limit_is_an_oom_kill_and_the_runtime_survives() {
    let f = Fixture::new();
    let mut spec = f.spec("hog", HOG);
    spec.memory_limit = Some(8 << 20);
    let exit = f.runtime.start(spec).unwrap().wait().await;
    assert_eq!(exit.reason, ExitReason::OOMKilled, "{exit:?}");
    assert_eq!(exit.code, 137);
    // The same runtime goes on running other guests.
    let exit = f
        .runtime
        .start(f.spec("hello", HELLO))
        .unwrap()
        .wait()
        .await;
    assert_eq!(exit.code, 3);
}

#[tokio::test]
async fn growing_a_table_past_the_memory_limit_is_an_oom_kill() {
    let f = Fixture::new();
    let mut spec = f.spec("table-hog", TABLE_HOG);
    spec.memory_limit = Some(32 << 20);
    let exit = f.runtime.start(spec).unwrap().wait().await;
    assert_eq!(exit.reason, ExitReason::OOMKilled, "{exit:?}");
    assert!(exit.message.unwrap_or_default().contains("table limit"));
    // With no limit of its own, the default bounds it all the same.
    let exit = f
        .runtime
        .start(f.spec("table-hog-2", TABLE_HOG))
        .unwrap()
        .wait()
        .await;
    assert_eq!(exit.reason, ExitReason::OOMKilled, "{exit:?}");
}

#[tokio::test]
async fn a_trap_is_an_error_with_its_message() {
    let f = Fixture::new();
    let exit = f.runtime.start(f.spec("trap", TRAP)).unwrap().wait().await;
    assert_eq!(exit.code, 134);
    assert!(exit.message.unwrap().contains("wasm trap"));
}

#[test]
fn a_broken_artifact_is_named_in_the_error() {
    let f = Fixture::new();
    let spec = f.spec("broken", "(module (func $f (param i32)");
    let err = f.runtime.prepare(&spec.artifact).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("artifact {}", spec.artifact.display())),
        "{err}"
    );
    assert!(err.contains("not a valid WebAssembly module"), "{err}");
    let missing = f
        .runtime
        .prepare(&f.dir.path().join("absent.wasm"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent.wasm"), "{missing}");
}

#[test]
fn compiled_artifacts_are_cached_on_disk_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("hello.wat");
    std::fs::write(&artifact, HELLO).unwrap();
    let first = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    first.prepare(&artifact).unwrap();
    first.prepare(&artifact).unwrap();
    assert_eq!(first.local_compilations(), 1, "compiled once per process");
    drop(first);
    let second = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    second.prepare(&artifact).unwrap();
    assert_eq!(
        second.local_compilations(),
        0,
        "a restart loads the precompiled file"
    );
}

#[test]
fn code_precompiled_for_this_node_is_taken_and_nothing_is_compiled_here() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("hello.wat");
    std::fs::write(&artifact, HELLO).unwrap();
    let runtime = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    // What the controller does for this node: compile for the target the node reports.
    let code = Precompiler::new()
        .compile(runtime.target(), HELLO.as_bytes())
        .unwrap();
    let code_path = dir.path().join("hello.cwasm");
    std::fs::write(&code_path, code).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(HELLO.as_bytes()));
    assert!(!runtime.is_compiled(&digest));
    runtime.install_precompiled(&artifact, &code_path).unwrap();
    assert!(runtime.is_compiled(&digest));
    runtime.prepare(&artifact).unwrap();
    assert_eq!(runtime.local_compilations(), 0);
    assert_eq!(runtime.precompiled_installs(), 1);
    // Kept for the next start of the agent too.
    drop(runtime);
    let again = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    again.prepare(&artifact).unwrap();
    assert_eq!(again.local_compilations(), 0);
}

#[test]
fn precompiled_code_that_does_not_fit_this_engine_is_refused_and_compiled_here() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("hello.wat");
    std::fs::write(&artifact, HELLO).unwrap();
    let runtime = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    let other_arch = if cfg!(target_arch = "aarch64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-musl"
    };
    let foreign = shoal_api::WasmTarget {
        triple: other_arch.into(),
        features: vec![],
        ..runtime.target().clone()
    };
    let precompiler = Precompiler::new();
    let cases = [
        (
            "another architecture",
            precompiler.compile(&foreign, HELLO.as_bytes()).unwrap(),
            "precompiled code refused",
        ),
        (
            "a component's code for a module",
            precompiler
                .compile(runtime.target(), b"(component)")
                .unwrap(),
            "not precompiled code for a module",
        ),
        (
            "not code at all",
            b"\x7fELF garbage".to_vec(),
            "hello.cwasm",
        ),
    ];
    for (what, code, says) in cases {
        let code_path = dir.path().join("hello.cwasm");
        std::fs::write(&code_path, code).unwrap();
        let err = runtime
            .install_precompiled(&artifact, &code_path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(runtime.precompiled_installs(), 0, "{what}");
    }
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert!(cached.is_empty(), "nothing kept: {cached:?}");
    runtime.prepare(&artifact).unwrap();
    assert_eq!(runtime.local_compilations(), 1, "compiled here instead");
}

#[test]
fn the_compile_cache_on_disk_is_bounded_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts: Vec<PathBuf> = [HELLO, SPIN, TRAP]
        .iter()
        .enumerate()
        .map(|(i, wat)| {
            let a = dir.path().join(format!("{i}.wat"));
            std::fs::write(&a, wat).unwrap();
            a
        })
        .collect();
    // How big each compiled artifact is.
    let probe = WasmRuntime::new(&dir.path().join("probe")).unwrap();
    let mut sizes = Vec::new();
    for a in &artifacts {
        let before: u64 = dir_size(&dir.path().join("probe"));
        probe.prepare(a).unwrap();
        sizes.push(dir_size(&dir.path().join("probe")) - before);
    }
    // Room for the last two.
    let cache = dir.path().join("cache");
    let runtime = WasmRuntime::with_cache_limit(&cache, sizes[1] + sizes[2]).unwrap();
    for a in &artifacts {
        runtime.prepare(a).unwrap();
        // File times are coarse on some filesystems: keep the order clear.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    assert_eq!(dir_size(&cache), sizes[1] + sizes[2], "the oldest went");
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn wasm_sockets_bind_only_declared_ports() {
    use wasmtime_wasi::sockets::SocketAddrUse as U;
    let ports = [
        crate::Port {
            port: 8080,
            udp: false,
        },
        crate::Port {
            port: 5353,
            udp: true,
        },
    ];
    let at = |p: u16| std::net::SocketAddr::from(([0, 0, 0, 0], p));
    let ok = |p: u16, u: U| run::socket_allowed(&ports, at(p), u);
    assert!(ok(8080, U::TcpBind) && ok(8080, U::TcpListen));
    assert!(!ok(9999, U::TcpBind) && !ok(9999, U::TcpListen));
    assert!(ok(0, U::TcpBind), "the implicit bind before a connect");
    assert!(
        !ok(40000, U::TcpListen),
        "an ephemeral listener is still undeclared"
    );
    assert!(ok(5353, U::UdpBind) && !ok(8080, U::UdpBind) && !ok(5353, U::TcpListen));
    assert!(ok(443, U::TcpConnect) && ok(53, U::UdpSend));
}

#[test]
fn wasm_name_lookups_ask_the_cluster_first() {
    use std::net::IpAddr;
    let cluster = crate::Resolver(std::sync::Arc::new(|name: &str| match name {
        "web" => Some(vec!["10.43.0.7".parse().expect("ip")]),
        "gone.default.svc.cluster.local" => Some(vec![]),
        _ => None,
    }));
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    assert_eq!(
        lookup::resolve(Some(&cluster), "web").ok(),
        Some(vec![ip("10.43.0.7")])
    );
    assert!(lookup::resolve(Some(&cluster), "gone.default.svc.cluster.local").is_err());
    assert_eq!(
        lookup::resolve(None, "192.0.2.1").ok(),
        Some(vec![ip("192.0.2.1")])
    );
    assert_eq!(lookup::resolve(None, "[::1]").ok(), Some(vec![ip("::1")]));
    assert!(lookup::resolve(None, "not a name").is_err());
    assert!(lookup::resolve(Some(&cluster), "").is_err());
}
