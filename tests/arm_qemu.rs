//! ARM agents: shoal cross-compiled for 64-bit ARM (aarch64) and 32-bit ARM (armv7), both
//! static with musl, and run under qemu-user, the stand-in for a Raspberry Pi, against the x86
//! controller.
//!
//! The aarch64 agent is the agent-only build a Pi runs (`--no-default-features`: no controller,
//! no wasm compiler), not position-independent as `build-static.sh` builds it, so it also
//! shows that a node without a compiler runs what the controller precompiled for it and says
//! so in its Node status; the armv7 one is the full binary.
//!
//! aarch64 is built with Debian's cross compiler (`gcc-aarch64-linux-gnu`, `.cargo/config.toml`)
//! and rustup's target; armv7 with `build-static.sh` (zig and cargo-zigbuild; the standard
//! library from rust-src where rustup has none for the target). Both need `qemu-user-static`.
//! Where something is missing a test is skipped with the reason; with `SHOAL_REQUIRE_CROSS=1`
//! (CI sets it) it fails instead, with the install hint.

mod kit;
#[path = "kit/registry.rs"]
mod registry;

use kit::{repo_path, Agent, Cluster, Controller};
use registry::Registry;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How a target is built.
enum Build {
    /// `cargo build` with a Debian cross compiler as the C compiler and linker.
    Gcc {
        gcc: &'static str,
        package: &'static str,
    },
    /// `build-static.sh`: zig as the C compiler and linker.
    Zig,
}

/// One ARM target: how to build for it and how to run what was built.
struct Arm {
    target: &'static str,
    build: Build,
    qemu: &'static str,
    /// ELF e_machine: 183 AArch64, 40 ARM.
    machine: u16,
    /// What the node reports as `kubernetes.io/arch`.
    arch: &'static str,
    /// How the agent runs wasm there: Cranelift compiles for aarch64; 32-bit ARM has no
    /// Cranelift backend, so wasmtime interprets Pulley bytecode.
    compiler: &'static str,
    /// What the controller compiles wasm for on the node's behalf.
    wasm_triple: &'static str,
    /// Cargo's feature arguments: which flavour of the binary.
    features: &'static [&'static str],
    /// What `shoal --version` says of the flavour.
    flavour: &'static str,
}

const AARCH64: Arm = Arm {
    target: "aarch64-unknown-linux-musl",
    build: Build::Gcc {
        gcc: "aarch64-linux-gnu-gcc",
        package: "gcc-aarch64-linux-gnu",
    },
    qemu: "qemu-aarch64-static",
    machine: 183,
    arch: "arm64",
    compiler: "native, precompiled code only",
    wasm_triple: "aarch64-unknown-linux-musl",
    features: &["--no-default-features"],
    flavour: "agent only, no wasm compiler",
};

const ARMV7: Arm = Arm {
    target: "armv7-unknown-linux-musleabihf",
    build: Build::Zig,
    qemu: "qemu-arm-static",
    machine: 40,
    arch: "arm",
    compiler: "pulley",
    wasm_triple: "pulley32",
    features: &[],
    flavour: "wasmtime 48.0.8)",
};

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// What is missing to build and run for `arm`, if anything.
fn missing(arm: &Arm) -> Option<String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let rustlib = Path::new(&sysroot).join("lib/rustlib");
    let has_std = rustlib.join(arm.target).is_dir();
    let mut gaps = Vec::new();
    if !on_path(arm.qemu) {
        gaps.push("apt-get install qemu-user-static".into());
    }
    match arm.build {
        Build::Gcc { gcc, package } => {
            if !on_path(gcc) {
                gaps.push(format!("apt-get install {package}"));
            }
            if !has_std {
                gaps.push(format!("rustup target add {}", arm.target));
            }
        }
        Build::Zig => {
            if !on_path("zig") {
                gaps.push("zig on PATH (pip install ziglang; .ci/run links it)".into());
            }
            if !on_path("cargo-zigbuild") {
                gaps.push("cargo install cargo-zigbuild --locked".into());
            }
            if !has_std && !rustlib.join("src/rust/library").is_dir() {
                gaps.push("rustup component add rust-src".into());
            }
        }
    }
    (!gaps.is_empty()).then(|| gaps.join("; "))
}

/// Builds shoal for `arm` into the same target dir as the tests (the host's build scripts
/// and proc macros are shared), with the dependencies unoptimised: this build is most of the
/// test's time, and the code under qemu has little to do. With `version`, the build says it
/// is that version (`SHOAL_VERSION`), as a release would. What was built is copied to `to`
/// before another test's build can replace it.
fn build(arm: &Arm, version: Option<&str>, to: &Path) -> Option<PathBuf> {
    if let Some(gaps) = missing(arm) {
        if std::env::var("SHOAL_REQUIRE_CROSS").as_deref() == Ok("1") {
            panic!("the {} test needs: {gaps}", arm.target);
        }
        kit::skipped(&format!("the {} test", arm.target), &gaps);
        return None;
    }
    // The tests here build into one place: one at a time, each taking its copy.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let unoptimised = [
        "--config",
        "profile.dev.package.\"*\".opt-level=0",
        "--quiet",
    ];
    let mut cmd = match arm.build {
        Build::Gcc { .. } => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            // Not position-independent, as build-static.sh builds the agent flavour.
            c.args(["build", "--bin", "shoal", "--target", arm.target])
                .arg("--manifest-path")
                .arg(repo_path("Cargo.toml"))
                .env("RUSTFLAGS", "-C relocation-model=static");
            c
        }
        Build::Zig => {
            let mut c = Command::new("sh");
            c.arg(repo_path("build-static.sh")).args([
                "--debug",
                "--flavour",
                "full",
                arm.target,
                "--",
            ]);
            c
        }
    };
    match version {
        Some(v) => cmd.env("SHOAL_VERSION", v),
        None => cmd.env_remove("SHOAL_VERSION"),
    };
    let out = cmd
        .args(arm.features)
        .args(unoptimised)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .expect("run the cross build");
    assert!(
        out.status.success(),
        "cross-building shoal for {} failed:\n{}",
        arm.target,
        String::from_utf8_lossy(&out.stderr)
    );
    let built = target_dir.join(arm.target).join("debug/shoal");
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).expect("the build's directory");
    }
    std::fs::copy(&built, to).expect("copying the build");
    Some(to.to_path_buf())
}

/// (ELF machine, has a program interpreter). A static binary has no interpreter (PT_INTERP)
/// to load it.
fn elf_facts(bytes: &[u8]) -> (u16, bool) {
    assert_eq!(&bytes[..4], b"\x7fELF", "an ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = match bytes[4] {
        1 => (u32_at(28) as usize, u16_at(42) as usize, u16_at(44)),
        _ => (u64_at(32) as usize, u16_at(54) as usize, u16_at(56)),
    };
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == 3);
    (machine, interp)
}

/// The command line that runs `bin` under qemu.
fn under_qemu(arm: &Arm, bin: &Path) -> Vec<OsString> {
    vec![OsString::from(arm.qemu), bin.into()]
}

/// Joins an agent built for `arm` to an x86 controller and runs the example workload on it.
fn runs_the_example_on(arm: &Arm) {
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = build(arm, None, &dir.path().join("bin/shoal")) else {
        return;
    };
    let (machine, dynamic) = elf_facts(&std::fs::read(&bin).unwrap());
    assert_eq!(machine, arm.machine, "built for {}", arm.target);
    assert!(!dynamic, "statically linked: nothing to install on the Pi");
    let program = under_qemu(arm, &bin);
    let version = Command::new(&program[0])
        .args(&program[1..])
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains(arm.target), "{version}");
    assert!(version.contains(arm.flavour), "{version}");
    if !arm.features.is_empty() {
        let controller = Command::new(&program[0])
            .args(&program[1..])
            .args(["controller", "--help"])
            .output()
            .unwrap();
        assert!(
            !controller.status.success(),
            "an agent-only build has no controller"
        );
    }

    let controller = Controller::start(&dir.path().join("controller"));
    let token = std::fs::read_to_string(controller.dir.join("token")).unwrap();
    let name = format!("pi-{}", arm.arch);
    let program: Vec<&std::ffi::OsStr> = program.iter().map(OsString::as_os_str).collect();
    let agent = Agent::with(&controller, &name, &dir.path().join("agent"))
        .program(&program)
        .token(token.trim())
        .args(&[])
        .start();
    let c = Cluster::adopt(controller, vec![agent]);
    c.wait_for("the ARM node Ready", Duration::from_secs(120), |c| {
        c.shoal(&["get", "nodes", &name, "--no-headers"])
            .stdout()
            .split_whitespace()
            .nth(1)
            == Some("Ready")
    });
    let node: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", &name, "-o", "json"]).ok()).unwrap();
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/arch"], arm.arch);
    assert_eq!(node["status"]["nodeInfo"]["architecture"], arm.arch);
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(runtime.contains(arm.compiler), "{runtime}");

    // The example workload, unchanged: its module is pushed by apply and runs on the Pi.
    c.controller
        .shoal(&[
            "apply",
            "-f",
            repo_path("examples/hello.yaml").to_str().unwrap(),
        ])
        .ok();
    c.wait_for(
        "hello Running on the ARM node",
        Duration::from_secs(180),
        |c| c.pod("hello")["status"]["phase"] == "Running",
    );
    assert_eq!(c.pod("hello")["spec"]["nodeName"], name.as_str());
    c.wait_for("its greeting in the logs", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "hello"])
            .stdout()
            .contains("Hello from the edge from hello")
    });
    // The controller compiled the module for this node's target (Cranelift for aarch64, Pulley
    // bytecode for 32-bit ARM); the Pi only loaded the code.
    let target = &node["status"]["runtimeHandlers"][0]["wasmTarget"];
    assert_eq!(target["wasmtime"], "48.0.8", "{node}");
    let triple = target["triple"].as_str().unwrap_or_default();
    assert!(triple.starts_with(arm.wasm_triple), "{node}");
    let controller_log = c.controller.log();
    assert!(
        controller_log
            .lines()
            .any(|l| l.contains("precompiled wasm for a node target") && l.contains(triple)),
        "{controller_log}"
    );
    let agent_log = c.agents[0].log();
    assert!(
        agent_log.contains("loaded code precompiled by the controller"),
        "{agent_log}"
    );
    assert!(
        !agent_log.contains("compiled locally"),
        "nothing compiled on the Pi:\n{agent_log}"
    );
    if !arm.features.is_empty() {
        a_module_it_pulls_is_compiled_by_the_controller(&c, triple);
    }

    // A container image that has only amd64 is not scheduled on the Pi, and the pod says why.
    use shoal_runtime::oci::build::{tar_dir, write_layout, ImageSpec};
    let layout = dir.path().join("amd64-only");
    let empty = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        platform: shoal_runtime::oci::image::Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        },
        ..Default::default()
    };
    write_layout(
        &layout,
        "amd64-only:1",
        &[(spec, vec![tar_dir(empty.path()).unwrap()])],
    )
    .unwrap();
    c.shoal(&["push", layout.to_str().unwrap(), "amd64-only:1"])
        .ok();
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: x86}\nspec:\n  containers:\n  - {name: main, image: amd64-only:1}\n"),
        )
        .ok();
    let want = "0/1 nodes available: 1 node(s) had a platform image \"amd64-only:1\" lacks (it has linux/amd64)";
    c.wait_for(
        "the amd64-only pod Pending with the reason",
        Duration::from_secs(60),
        |c| {
            let p = c.pod("x86");
            p["status"]["phase"] == "Pending" && p["status"]["conditions"][0]["message"] == want
        },
    );
}

/// A wasm module the Pi pulls from a registry itself (with the pod's credentials, which the
/// controller never holds the module under) runs there too: the agent-only build uploads it
/// to the controller, which compiles it for the node's target and keeps nothing of it.
fn a_module_it_pulls_is_compiled_by_the_controller(c: &Cluster, triple: &str) {
    let Some(registry) = Registry::start() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(registry.push_wasm(&kit::wasm_fixture("probe", "wasm32-wasip1"), "probe:v1"));
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  containers:\n  - name: probe\n    image: {}/probe:v1\n    args: [print, pulled by the Pi]\n",
        registry.addr
    );
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&pod))
        .ok();
    c.wait_for(
        "the pulled module's pod Succeeded on the Pi",
        Duration::from_secs(180),
        |c| c.pod("pulled")["status"]["phase"] == "Succeeded",
    );
    assert_eq!(c.shoal(&["logs", "pulled"]).ok(), "pulled by the Pi\n");
    let controller_log = c.controller.log();
    assert!(
        controller_log.lines().any(|l| l
            .contains("compiled a module a node pulled, for its target")
            && l.contains(triple)),
        "{controller_log}"
    );
    let agent_log = c.agents[0].log();
    assert!(
        agent_log.contains("artifact pulled from a registry")
            && agent_log
                .lines()
                .any(|l| l.contains("loaded code precompiled by the controller")
                    && l.contains("pulled=true")),
        "{agent_log}"
    );
    let kept = std::fs::read_dir(c.controller.dir.join("artifacts/precompiled/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(kept, 0, "the controller keeps nothing of a node's module");
}

#[test]
fn an_aarch64_agent_under_qemu_joins_reports_arm64_and_runs_a_wasm_pod() {
    runs_the_example_on(&AARCH64);
}

#[test]
fn an_armv7_agent_under_qemu_interprets_wasm_with_pulley_and_runs_a_wasm_pod() {
    runs_the_example_on(&ARMV7);
}

/// The version the rebuilt aarch64 binary says it is.
const NEXT: &str = concat!(env!("CARGO_PKG_VERSION"), "-ota.arm64");

/// A binfmt_misc entry that runs aarch64 executables through qemu, for the test's life: an
/// upgraded agent execs its new binary (and starts its guard from the old one), which the
/// kernel runs only through such an entry. A host-wide change while it lasts (any aarch64
/// executable runs through qemu), so root only; binfmt_misc is mounted only if it was not, and
/// unmounted again.
struct Binfmt {
    entry: PathBuf,
    mounted: bool,
}

impl Binfmt {
    const DIR: &'static str = "/proc/sys/fs/binfmt_misc";
    /// An ELF64 little-endian executable for machine 183 (AArch64), and the bits compared.
    const MAGIC: &'static str =
        r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00";
    const MASK: &'static str =
        r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";

    fn register(qemu: &Path) -> Binfmt {
        let dir = Path::new(Self::DIR);
        let mounted = !dir.join("register").exists();
        if mounted {
            let status = Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(dir)
                .status()
                .expect("mount");
            assert!(status.success(), "mount -t binfmt_misc");
        }
        let name = format!("shoal-test-aarch64-{}", std::process::id());
        // F: the interpreter is opened now, so it also serves processes in other mount
        // namespaces (runc's, were there any).
        let rule = format!(
            ":{name}:M::{}:{}:{}:F",
            Self::MAGIC,
            Self::MASK,
            qemu.display()
        );
        let registered = std::fs::write(dir.join("register"), rule);
        let binfmt = Binfmt {
            entry: dir.join(name),
            mounted,
        };
        registered.expect("registering qemu for aarch64 with binfmt_misc");
        binfmt
    }
}

impl Drop for Binfmt {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.entry, "-1");
        if self.mounted {
            let _ = Command::new("umount").arg(Self::DIR).status();
        }
    }
}

/// The full path of `tool` on the PATH.
fn on_path_at(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} on the PATH"))
}

fn node_version(c: &Cluster, node: &str) -> String {
    let n: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", node, "-o", "json"]).ok()).unwrap();
    n["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An aarch64 agent (the agent-only build a Pi runs) upgraded over the air under qemu, as the
/// x86 ones are in tests/agent_upgrade.rs: the binary rebuilt with another version string is
/// pushed (its platform, linux/arm64, read from its ELF header), fetched by the node over its
/// own link, swapped in and exec'd in the same process, and the node reports the new version.
/// Then a broken aarch64 binary (it exits at once) is rolled back by the Pi itself and the
/// rollout pauses with the reason (tests/agent_upgrade.rs adds the pods and a binary that
/// never reports Ready). Needs root: the kernel runs the exec'd
/// aarch64 binary through a binfmt_misc entry for qemu that the test registers for its life.
#[test]
fn root_an_aarch64_agent_under_qemu_is_upgraded_over_the_air_and_rolls_back_a_broken_binary() {
    let test =
        "root_an_aarch64_agent_under_qemu_is_upgraded_over_the_air_and_rolls_back_a_broken_binary";
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        if std::env::var("SHOAL_REQUIRE_CROSS").as_deref() == Ok("1") {
            panic!("{test} needs root (it registers qemu with binfmt_misc)");
        }
        kit::skipped(test, "not root (it registers qemu with binfmt_misc)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = build(&AARCH64, None, &dir.path().join("bin/shoal")) else {
        return;
    };
    let Some(next) = build(&AARCH64, Some(NEXT), &dir.path().join("shoal-next")) else {
        return;
    };
    let _binfmt = Binfmt::register(&on_path_at(AARCH64.qemu));

    let controller = Controller::start(&dir.path().join("controller"));
    let token = std::fs::read_to_string(controller.dir.join("token")).unwrap();
    let name = "pi-ota";
    // Started as the Pi starts it: the binary itself (through binfmt_misc here), so what it
    // execs after the swap is found the same way.
    let agent = Agent::with(&controller, name, &dir.path().join("agent"))
        .program(&[bin.as_os_str()])
        .token(token.trim())
        .args(&["--node-status-update-frequency", "2s"])
        .start();
    let agent_dir = agent.dir.clone();
    let first_pid = agent.pid().expect("the agent's pid");
    let c = Cluster::adopt(controller, vec![agent]);
    c.wait_for("the ARM node Ready", Duration::from_secs(120), |c| {
        c.shoal(&["get", "nodes", name, "--no-headers"])
            .stdout()
            .split_whitespace()
            .nth(1)
            == Some("Ready")
    });
    assert_eq!(
        node_version(&c, name),
        format!("shoal-v{}", env!("CARGO_PKG_VERSION"))
    );

    let pushed = c
        .shoal(&["push", next.to_str().unwrap(), "shoal:next-arm64"])
        .ok();
    assert!(pushed.contains("@sha256:"), "{pushed}");
    c.apply(&upgrade("pi-to-next", NEXT, "shoal:next-arm64"));
    c.wait_for("the Pi upgraded", Duration::from_secs(360), |c| {
        let u: serde_json::Value = serde_json::from_str(
            &c.shoal(&["get", "agentupgrade", "pi-to-next", "-o", "json"])
                .ok(),
        )
        .unwrap();
        u["status"]["phase"] == "Complete"
    });
    let u: serde_json::Value = serde_json::from_str(
        &c.shoal(&["get", "agentupgrade", "pi-to-next", "-o", "json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(u["status"]["nodes"][0]["state"], "Upgraded", "{u}");
    assert_eq!(u["status"]["nodes"][0]["version"], NEXT, "{u}");
    assert_eq!(node_version(&c, name), format!("shoal-v{NEXT}"));
    // In place: the same process, now running the new binary, which replaced the old file.
    let pid: u32 = std::fs::read_to_string(agent_dir.join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        pid,
        first_pid,
        "the agent exec'd the new binary itself:\n{}",
        c.agents[0].log()
    );
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(&next).unwrap(),
        "the node's binary is the pushed one"
    );

    // An aarch64 binary that exits at once: the Pi goes back by itself, the rollout pauses.
    let broken = exits_at_once(dir.path());
    c.shoal(&["push", broken.to_str().unwrap(), "shoal:broken-arm64"])
        .ok();
    c.apply(&upgrade(
        "pi-to-broken",
        "9.9.9-broken",
        "shoal:broken-arm64",
    ));
    let status = |c: &Cluster| -> serde_json::Value {
        serde_json::from_str(
            &c.shoal(&["get", "agentupgrade", "pi-to-broken", "-o", "json"])
                .ok(),
        )
        .unwrap()
    };
    c.wait_for("the broken rollout paused", Duration::from_secs(360), |c| {
        status(c)["status"]["phase"] == "Paused"
    });
    let u = status(&c);
    let reason = u["status"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("node {name} went back to its previous binary"))
            && reason.contains("exited before it reported Ready"),
        "{u}"
    );
    assert_eq!(u["status"]["nodes"][0]["state"], "RolledBack", "{u}");
    c.wait_for(
        "the Pi back on the rebuilt binary",
        Duration::from_secs(180),
        |c| node_version(c, name) == format!("shoal-v{NEXT}"),
    );
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(&next).unwrap(),
        "the previous binary is back in place"
    );
    let events = c.shoal(&["get", "events"]).ok();
    assert!(
        events.contains("went back to") && events.contains("Rollout paused"),
        "{events}"
    );
    assert!(!events.contains("NodeNotReady"), "{events}");
}

/// An AgentUpgrade of every node to `version`, the binary pushed as `binary`, one node at a
/// time, each given three minutes (qemu is slow) to report Ready on it.
fn upgrade(name: &str, version: &str, binary: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1alpha1\nkind: AgentUpgrade\nmetadata: {{name: {name}}}\nspec:\n  version: \"{version}\"\n  binaries: [\"{binary}\"]\n  maxUnavailable: 1\n  readyTimeoutSeconds: 180\n"
    )
}

/// A static aarch64 executable that exits 1 at once: what a broken build would be.
fn exits_at_once(dir: &Path) -> PathBuf {
    let source = dir.join("exits.rs");
    std::fs::write(&source, "fn main() { std::process::exit(1) }\n").unwrap();
    let out = dir.join("shoal-broken");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = Command::new(rustc)
        .args([
            "--target",
            AARCH64.target,
            "-C",
            "linker=aarch64-linux-gnu-gcc",
            "-o",
        ])
        .arg(&out)
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}
