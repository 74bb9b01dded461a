//! Per target and flavour (`full`: the default features; `agent`: `--no-default-features`, no
//! controller and no wasm compiler): the size of the release `shoal` binary, and the agent's
//! resident memory once it has joined and is idle, beside the goals (aarch64 agent <= 8 MB,
//! full <= 15 MB, agent idle RSS <= 12 MiB). The x86_64 agent runs natively; the ARM ones run under qemu-user
//! (the stand-in for a Raspberry Pi), and their figure is qemu's process, labelled as such:
//! qemu adds its own translator and code cache, so a real Pi uses less.
//!
//! Run with `cargo bench --bench footprint`. It builds each release binary first (a fat-LTO
//! cross build takes several minutes on 2 cores); `SHOAL_BENCH_NO_BUILD=1` measures whatever
//! is already built; `SHOAL_BENCH_ONLY=aarch64,x86_64` measures only the targets named and
//! `SHOAL_BENCH_FLAVOURS=agent` only that flavour. The agent flavour is built as
//! `build-static.sh` builds it (the `agent` profile, not position-independent, its standard
//! library built from rust-src to abort on panic) into `target/footprint-agent`, so both stay
//! built. aarch64 needs Debian's cross gcc, armv7 `build-static.sh`'s tools (zig,
//! cargo-zigbuild), both qemu-user-static, the agent flavour rust-src; a target
//! is skipped with the reason when something is missing.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{rss_kib, Agent, Controller};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Target {
    triple: &'static str,
    /// The program that runs it on this x86 machine (`None`: natively).
    qemu: Option<(&'static str, Option<&'static str>)>,
    note: &'static str,
}

const TARGETS: [Target; 3] = [
    Target {
        triple: "x86_64-unknown-linux-gnu",
        qemu: None,
        note: "glibc, dynamic; native",
    },
    Target {
        triple: "aarch64-unknown-linux-musl",
        qemu: Some(("qemu-aarch64-static", None)),
        note: "musl, static; under qemu",
    },
    Target {
        triple: "armv7-unknown-linux-musleabihf",
        qemu: Some(("qemu-arm-static", None)),
        note: "musl, static; under qemu",
    },
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Which build of the binary.
#[derive(Clone, Copy, PartialEq)]
enum Flavour {
    /// The default features: controller, agent, client, wasm compiler.
    Full,
    /// `--no-default-features`: the agent (and client) only, running precompiled wasm.
    Agent,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Full => "full",
            Flavour::Agent => "agent",
        }
    }

    /// The size goal for a static aarch64 build, in MB.
    fn goal_mb(self) -> f64 {
        match self {
            Flavour::Full => 15.0,
            Flavour::Agent => 8.0,
        }
    }
}

/// The agent's idle memory goal, in MiB (x86_64, native).
const RSS_GOAL_MIB: f64 = 12.0;

/// Whether the comma-separated list in `var` (unset: everything) names `what`.
fn chosen(var: &str, what: &str) -> bool {
    std::env::var(var).map_or(true, |list| {
        list.split(',').any(|w| what.contains(w.trim()))
    })
}

/// The release binary for `t` in `flavour`: the full one for this machine is the one cargo
/// built for this benchmark; the others are (cross-)built unless SHOAL_BENCH_NO_BUILD is set.
fn binary(t: &Target, flavour: Flavour) -> Result<PathBuf, String> {
    let native = t.qemu.is_none();
    if native && flavour == Flavour::Full {
        return Ok(PathBuf::from(kit::shoal_bin()));
    }
    let target_dir = match flavour {
        Flavour::Full => repo().join("target"),
        Flavour::Agent => repo().join("target/footprint-agent"),
    };
    // The agent flavour is built as build-static.sh builds it: Cargo.toml's `agent` profile,
    // not position-independent. RUSTFLAGS then needs `--target` even natively, so that it
    // leaves build scripts and proc macros alone.
    let (build, dir, features): (&[&str], &str, &[&str]) = match flavour {
        Flavour::Full => (&["--release"], "release", &[]),
        Flavour::Agent => (
            &["--profile", "agent", "--target", t.triple],
            "agent",
            &["--no-default-features"],
        ),
    };
    let path = target_dir.join(t.triple).join(dir).join("shoal");
    if std::env::var_os("SHOAL_BENCH_NO_BUILD").is_none() {
        let mut cmd = if native || t.triple.starts_with("aarch64") {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.args(["build", "--quiet", "--bin", "shoal"])
                .args(build)
                .arg("--manifest-path")
                .arg(repo().join("Cargo.toml"))
                .args(features)
                .arg("--target-dir")
                .arg(&target_dir);
            if flavour == Flavour::Full {
                c.args(["--target", t.triple]);
            }
            if flavour == Flavour::Agent {
                // As build-static.sh: a standard library built to abort, no unwind tables.
                c.arg("-Zbuild-std=std,panic_abort")
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env(
                        "RUSTFLAGS",
                        "-C relocation-model=static -C force-unwind-tables=no",
                    );
            }
            c
        } else {
            let mut c = Command::new("sh");
            c.arg(repo().join("build-static.sh"))
                .args(["--flavour", flavour.name(), t.triple, "--", "--quiet"])
                .env("CARGO_TARGET_DIR", &target_dir);
            c
        };
        let out = cmd.output().map_err(|e| format!("cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building for {} failed: {}",
                t.triple,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is not built", path.display()))
    }
}

/// The agent's resident memory, idle, a few seconds after its node is Ready.
fn idle_rss(t: &Target, flavour: Flavour, bin: &Path, controller: &Controller, dir: &Path) -> u64 {
    let mut program: Vec<OsString> = Vec::new();
    if let Some((qemu, sysroot)) = t.qemu {
        program.push(qemu.into());
        if let Some(s) = sysroot {
            program.extend(["-L".into(), s.into()]);
        }
    }
    program.push(bin.into());
    let program: Vec<&std::ffi::OsStr> = program.iter().map(OsString::as_os_str).collect();
    let token = std::fs::read_to_string(controller.dir.join("token")).expect("token");
    let name = format!(
        "bench-{}-{}",
        flavour.name(),
        t.triple
            .split('-')
            .next()
            .unwrap_or("node")
            .replace('_', "-")
    );
    let agent = Agent::with(controller, &name, &dir.join(&name))
        .program(&program)
        .token(token.trim())
        .args(&[])
        .start();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let out = controller
            .shoal(&["get", "node", &name, "--no-headers"])
            .stdout();
        if out.split_whitespace().nth(1) == Some("Ready") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the {} agent did not get Ready:\n{}",
            t.triple,
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(5));
    rss_kib(agent.pid().expect("agent pid"))
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start(&dir.path().join("controller"));
    let mut rows = Vec::new();
    for t in &TARGETS {
        if !chosen("SHOAL_BENCH_ONLY", t.triple) {
            continue;
        }
        if let Some((qemu, _)) = t.qemu {
            let tool = if t.triple.starts_with("aarch64") {
                "aarch64-linux-gnu-gcc"
            } else {
                "cargo-zigbuild"
            };
            if !on_path(qemu) || !on_path(tool) {
                println!(
                    "{}: skipped (needs {qemu} and {tool}: apt-get install qemu-user-static, and the cross gcc or build-static.sh's tools)",
                    t.triple
                );
                continue;
            }
        }
        for flavour in [Flavour::Agent, Flavour::Full] {
            if !chosen("SHOAL_BENCH_FLAVOURS", flavour.name()) {
                continue;
            }
            let started = std::time::Instant::now();
            let bin = match binary(t, flavour) {
                Ok(b) => b,
                Err(e) => {
                    println!("{} {}: skipped ({e})", t.triple, flavour.name());
                    continue;
                }
            };
            eprintln!(
                "{} {}: built in {:.0} s",
                t.triple,
                flavour.name(),
                started.elapsed().as_secs_f64()
            );
            let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
            let rss = idle_rss(t, flavour, &bin, &controller, dir.path());
            rows.push((t, flavour, size, rss));
        }
    }
    println!("shoal release binaries and idle agents (2-core x86 host):");
    println!(
        "  {:<32} {:<7} {:<28} {:>10} {:>16}  goal",
        "target", "flavour", "build; how it ran", "binary", "agent idle RSS"
    );
    for (t, flavour, size, rss) in rows {
        let (mb, mib) = (size as f64 / 1e6, rss as f64 / 1024.0);
        let goal = if t.triple.starts_with("aarch64") {
            let g = flavour.goal_mb();
            format!(
                "binary <= {g:.0} MB: {}",
                if mb <= g { "met" } else { "not met" }
            )
        } else if t.qemu.is_none() {
            let met = if mib <= RSS_GOAL_MIB {
                "met"
            } else {
                "not met"
            };
            format!("idle RSS <= {RSS_GOAL_MIB:.0} MiB: {met}")
        } else {
            String::new()
        };
        println!(
            "  {:<32} {:<7} {:<28} {mb:>7.1} MB {mib:>12.1} MiB  {goal}",
            t.triple,
            flavour.name(),
            t.note,
        );
    }
}
