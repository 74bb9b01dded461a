//! WASI fidelity: a WASI p1 module and a p2 component, run by Shoal's wasm runtime, behave as
//! the same program does natively: argv, env, files read and written through a mounted
//! directory, stdout and stderr (in order), and the exit code.

mod kit;

use kit::{native_fixture, wasm_fixture};
use shoal_runtime::wasm::WasmRuntime;
use shoal_runtime::{logs, ContainerSpec, Mount, Workload};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

struct Outcome {
    output: String,
    code: i32,
    written: String,
}

fn script(dir: &str) -> Vec<String> {
    [
        "args",
        "env",
        "GREETING",
        "env",
        "UNSET",
        "print",
        "to stdout",
        "eprint",
        "to stderr",
        "cat",
        &format!("{dir}/in.txt"),
        "write",
        &format!("{dir}/out.txt"),
        "written by the guest",
        "exit",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn native(dir: &Path) -> Outcome {
    let log = dir.join("native.log");
    let out = std::fs::File::create(&log).unwrap();
    let status = Command::new(native_fixture("probe"))
        .arg0("probe")
        .args(script(dir.to_str().unwrap()))
        .env_clear()
        .env("GREETING", "hello")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    Outcome {
        output: std::fs::read_to_string(&log)
            .unwrap()
            .replace(dir.to_str().unwrap(), "/data"),
        code: status.code().unwrap(),
        written: std::fs::read_to_string(dir.join("out.txt")).unwrap(),
    }
}

async fn in_shoal(runtime: &WasmRuntime, artifact: &Path, dir: &Path) -> Outcome {
    let mut argv = vec!["probe".to_string()];
    argv.extend(script("/data"));
    let spec = ContainerSpec {
        id: "default/fidelity/probe".into(),
        artifact: artifact.to_path_buf(),
        argv,
        env: vec![("GREETING".into(), "hello".into())],
        working_dir: None,
        mounts: vec![Mount {
            host_path: dir.to_path_buf(),
            guest_path: "/data".into(),
            read_only: false,
        }],
        memory_limit: Some(64 << 20),
        cpu_limit_millis: None,
        log_path: dir.join("container.log"),
        ..Default::default()
    };
    let exit = runtime.start(spec).unwrap().wait().await;
    Outcome {
        output: logs::read(&dir.join("container.log"), None, &Default::default()).unwrap(),
        code: exit.code,
        written: std::fs::read_to_string(dir.join("out.txt")).unwrap(),
    }
}

fn workdir(root: &Path, name: &str) -> std::path::PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("in.txt"), "read through a volume\n").unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_modules_and_p2_components_behave_as_the_native_program() {
    let root = tempfile::tempdir().unwrap();
    let runtime = WasmRuntime::new(&root.path().join("cache")).unwrap();
    let reference = native(&workdir(root.path(), "native"));
    assert_eq!(reference.code, 7);
    assert!(
        reference
            .output
            .contains("to stdout\nto stderr\nread through a volume\n"),
        "{}",
        reference.output
    );

    for target in ["wasm32-wasip1", "wasm32-wasip2"] {
        let got = in_shoal(
            &runtime,
            &wasm_fixture("probe", target),
            &workdir(root.path(), target),
        )
        .await;
        assert_eq!(
            got.output, reference.output,
            "{target}: output differs from the native program"
        );
        // WASI p2's `wasi:cli/exit` carries only success or failure (the code needs the
        // unstable exit-with-code, which Rust's wasip2 libc does not call): any non-zero exit
        // is 1, as `wasmtime run` reports it too.
        let expected = match (target, reference.code) {
            ("wasm32-wasip2", c) if c != 0 => 1,
            (_, c) => c,
        };
        assert_eq!(got.code, expected, "{target}: exit code");
        assert_eq!(
            got.written, reference.written,
            "{target}: file written through the volume"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_volume_refuses_writes() {
    let root = tempfile::tempdir().unwrap();
    let runtime = WasmRuntime::new(&root.path().join("cache")).unwrap();
    let dir = workdir(root.path(), "ro");
    let spec = ContainerSpec {
        id: "default/ro/probe".into(),
        artifact: wasm_fixture("probe", "wasm32-wasip1"),
        argv: [
            "probe",
            "cat",
            "/data/in.txt",
            "write",
            "/data/out.txt",
            "nope",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![],
        working_dir: None,
        mounts: vec![Mount {
            host_path: dir.clone(),
            guest_path: "/data".into(),
            read_only: true,
        }],
        memory_limit: None,
        cpu_limit_millis: None,
        log_path: root.path().join("ro.log"),
        ..Default::default()
    };
    let exit = runtime.start(spec).unwrap().wait().await;
    assert_eq!(exit.code, 2, "the write failed");
    let log = logs::read(&root.path().join("ro.log"), None, &Default::default()).unwrap();
    assert!(
        log.starts_with("read through a volume\nwrite /data/out.txt:"),
        "{log}"
    );
    assert!(!dir.join("out.txt").exists());
}
