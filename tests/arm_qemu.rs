//! ARM agents: shoal cross-compiled for aarch64 (static, musl) and run under qemu-user, the
//! stand-in for a Raspberry Pi, against the x86 controller.
//!
//! Needs Debian's `gcc-aarch64-linux-gnu` and `qemu-user-static` and the Rust target
//! `aarch64-unknown-linux-musl`. Where one is missing the test is skipped with the reason; with
//! `SHOAL_REQUIRE_CROSS=1` (CI sets it) it fails instead, with the install hint.

mod kit;

use kit::{repo_path, Agent, Cluster, Controller};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TARGET: &str = "aarch64-unknown-linux-musl";
const QEMU: &str = "qemu-aarch64-static";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// What is missing to build and run the aarch64 binary, if anything.
fn missing() -> Option<String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let std_lib = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
    let mut gaps = Vec::new();
    if !on_path("aarch64-linux-gnu-gcc") {
        gaps.push("apt-get install gcc-aarch64-linux-gnu");
    }
    if !on_path(QEMU) {
        gaps.push("apt-get install qemu-user-static");
    }
    if !std_lib.is_dir() {
        gaps.push("rustup target add aarch64-unknown-linux-musl");
    }
    (!gaps.is_empty()).then(|| gaps.join("; "))
}

/// Builds shoal for aarch64 into the same target dir as the tests (the host's build scripts
/// and proc macros are shared), with the dependencies unoptimised: this build is most of the
/// test's time, and the code under qemu has little to do.
fn aarch64_shoal() -> Option<PathBuf> {
    if let Some(gaps) = missing() {
        if std::env::var("SHOAL_REQUIRE_CROSS").as_deref() == Ok("1") {
            panic!("the aarch64 test needs: {gaps}");
        }
        eprintln!("skipped: the aarch64 test needs: {gaps}");
        return None;
    }
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--bin", "shoal", "--target", TARGET])
        .args(["--config", "profile.dev.package.\"*\".opt-level=0"])
        .arg("--manifest-path")
        .arg(repo_path("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cross-building shoal for {TARGET} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(target_dir.join(TARGET).join("debug/shoal"))
}

/// (ELF machine, has a program interpreter): 183 is AArch64; a static binary has no
/// interpreter (PT_INTERP) to load it.
fn elf_facts(bytes: &[u8]) -> (u16, bool) {
    assert_eq!(&bytes[..4], b"\x7fELF", "an ELF file");
    assert_eq!(bytes[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let interp = (0..phnum as usize).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3
    });
    (machine, interp)
}

#[test]
fn an_aarch64_agent_under_qemu_joins_reports_arm64_and_runs_a_wasm_pod() {
    let Some(bin) = aarch64_shoal() else { return };
    let (machine, dynamic) = elf_facts(&std::fs::read(&bin).unwrap());
    assert_eq!(machine, 183, "an AArch64 binary");
    assert!(!dynamic, "statically linked: nothing to install on the Pi");
    let version = Command::new(QEMU)
        .arg(&bin)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains(TARGET), "{version}");

    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(&dir.path().join("controller"));
    let token = std::fs::read_to_string(controller.dir.join("token")).unwrap();
    let agent = Agent::start_program(
        &[QEMU.as_ref(), bin.as_os_str()],
        &controller,
        "pi-arm64",
        &dir.path().join("agent"),
        token.trim(),
        &[],
    );
    let c = Cluster::adopt(controller, vec![agent]);
    c.wait_for("the aarch64 node Ready", Duration::from_secs(120), |c| {
        c.shoal(&["get", "nodes", "pi-arm64", "--no-headers"])
            .stdout()
            .split_whitespace()
            .nth(1)
            == Some("Ready")
    });
    let node: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "pi-arm64", "-o", "json"]).ok()).unwrap();
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/arch"], "arm64");
    assert_eq!(node["status"]["nodeInfo"]["architecture"], "arm64");
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(
        runtime.contains("cranelift"),
        "aarch64 compiles wasm: {runtime}"
    );

    // The example workload, unchanged: its module is pushed by apply and runs on the Pi.
    c.controller
        .shoal(&[
            "apply",
            "-f",
            repo_path("examples/hello.yaml").to_str().unwrap(),
        ])
        .ok();
    c.wait_for(
        "hello Running on the aarch64 node",
        Duration::from_secs(120),
        |c| c.pod("hello")["status"]["phase"] == "Running",
    );
    assert_eq!(c.pod("hello")["spec"]["nodeName"], "pi-arm64");
    c.wait_for("its greeting in the logs", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "hello"])
            .stdout()
            .contains("Hello from the edge from hello")
    });
}
