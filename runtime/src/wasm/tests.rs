//! The wasm executor against real wasmtime, with small WAT modules.

use super::*;
use crate::handle::ExitReason;
use crate::ContainerSpec;
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
        std::fs::read_to_string(&spec.log_path).unwrap(),
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
