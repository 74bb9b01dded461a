//! Over-the-air upgrades of agents (`AgentUpgrade`): two agents, each running a container, are
//! upgraded one at a time from this build to a rebuilt one whose version string differs
//! (`SHOAL_VERSION` at build time), each fetching the binary over its own link and restarting
//! into it in the same process; then to a binary that exits at once, which the first node
//! takes back by itself, pausing the rollout before the second is touched; then the second to
//! one that runs on but never reports Ready, taken back once its time is up. The containers
//! run through all of it. Asserted from `get`, the events and the version each node reports.
//! Needs root and runc (`apt-get install runc`); skipped with the reason where they are
//! missing, failing when `SHOAL_REQUIRE_RUNC=1`.

mod kit;

use kit::{field, runc_missing, shoal_bin, Agent, Cluster, Controller, Leftovers};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BRIDGE: &str = "shoal-t68";
const NEXT: &str = concat!(env!("CARGO_PKG_VERSION"), "-ota.2");

fn pods() -> String {
    let pod = |node: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: steady-{node}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, "echo started; sleep 3600"]
    resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"#
        )
    };
    format!("{}---\n{}", pod("node-1"), pod("node-2"))
}

fn upgrade(name: &str, version: &str, binary: &str, ready: u32) -> String {
    format!(
        r#"apiVersion: shoal.dev/v1alpha1
kind: AgentUpgrade
metadata: {{name: {name}}}
spec:
  version: "{version}"
  binaries: ["{binary}"]
  maxUnavailable: 1
  readyTimeoutSeconds: {ready}
"#
    )
}

fn upgrade_of(node: &str, name: &str, version: &str, binary: &str, ready: u32) -> String {
    format!(
        "{}  nodeSelector: {{matchLabels: {{kubernetes.io/hostname: {node}}}}}\n",
        upgrade(name, version, binary, ready)
    )
}

/// Puts the build the other tests use back when dropped, however the test ends.
struct Restore {
    saved: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::rename(&self.saved, shoal_bin()).expect("putting the test build back");
    }
}

/// This build again with another version string: `cargo build` of the binary alone (the
/// crates it links are this build's, unchanged) with `SHOAL_VERSION` set, copied to `to`;
/// the build the tests run is put back afterwards.
fn rebuild_with_version(to: &Path) {
    let saved = to.with_file_name("shoal-current");
    std::fs::copy(shoal_bin(), &saved).expect("keeping the current build");
    let restore = Restore { saved };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--bin", "shoal", "--manifest-path"])
        .arg(kit::repo_path("Cargo.toml"))
        .env("SHOAL_VERSION", NEXT);
    // The environment the test build was made in, without what cargo adds for a test: build
    // scripts that watch one of those would make the build start over.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let kept = [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
            "CARGO_INCREMENTAL",
        ]
        .contains(&&*key)
            || [
                "CARGO_BUILD_",
                "CARGO_PROFILE_",
                "CARGO_REGISTRIES_",
                "CARGO_NET_",
            ]
            .iter()
            .any(|p| key.starts_with(p));
        if (key.starts_with("CARGO_") && !kept) || key == "OUT_DIR" || key == "LD_LIBRARY_PATH" {
            build.env_remove(&*key);
        }
    }
    let out = build.output().expect("cargo build");
    assert!(
        out.status.success(),
        "rebuilding shoal as {NEXT}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    without_debug_info(Path::new(shoal_bin()), to);
    drop(restore);
    let version = Command::new(to)
        .arg("--version")
        .output()
        .expect("--version");
    let text = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(text.starts_with(&format!("shoal {NEXT} ")), "{text}");
}

/// `from` copied to `to` without its debug sections (binutils' `strip`, there wherever Rust
/// links): the dev build is 280 MB, 110 MB without them, and the test holds it ten times over
/// (the pushed blob, each node's download, its running and its previous binary). The code is
/// the same byte for byte, so what is upgraded is still this build.
fn without_debug_info(from: &Path, to: &Path) {
    let out = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .output()
        .expect("strip (binutils)");
    assert!(
        out.status.success(),
        "strip --strip-debug {}: {}",
        from.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node_version(c: &Cluster, node: &str) -> String {
    let n: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", node, "-o", "json"]).ok()).expect("node");
    field(&n, "status.nodeInfo.kubeletVersion")
}

fn upgrade_status(c: &Cluster, name: &str) -> serde_json::Value {
    serde_json::from_str(&c.shoal(&["get", "agentupgrade", name, "-o", "json"]).ok())
        .expect("agentupgrade")
}

fn condition(c: &Cluster, node: &str, type_: &str) -> (String, String, String) {
    let n: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", node, "-o", "json"]).ok()).expect("node");
    let conditions = n["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions
        .iter()
        .find(|x| x["type"] == type_)
        .map(|x| (field(x, "status"), field(x, "reason"), field(x, "message")))
        .unwrap_or_default()
}

/// Each pod's uid, container start time and restart count.
fn pod_marks(c: &Cluster) -> Vec<(String, String, String)> {
    ["node-1", "node-2"]
        .iter()
        .map(|n| {
            let p = c.pod(&format!("steady-{n}"));
            (
                field(&p, "metadata.uid"),
                field(&p, "status.containerStatuses.0.state.running.startedAt"),
                field(&p, "status.containerStatuses.0.restartCount"),
            )
        })
        .collect()
}

fn digest_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).expect("read binary"),
    ))
}

/// The node's agent process now (an upgrade keeps it; a guard's restart makes a new one).
fn agent_pid(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("agent.pid"))
        .expect("agent.pid")
        .trim()
        .parse()
        .expect("a pid")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

#[test]
fn runc_agents_upgrade_over_the_air_one_at_a_time_and_a_broken_binary_rolls_back_by_itself() {
    if runc_missing(
        "runc_agents_upgrade_over_the_air_one_at_a_time_and_a_broken_binary_rolls_back_by_itself",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let next = dir.path().join("shoal-next");
    let at = std::time::Instant::now();
    rebuild_with_version(&next);
    eprintln!("rebuilt as {NEXT} in {:?}", at.elapsed());
    // A binary that exits at once: a real executable for this machine, not a shoal.
    let broken = dir.path().join("shoal-broken");
    std::fs::copy("/bin/false", &broken).expect("/bin/false");

    let controller = Controller::start_with_args(
        &dir.path().join("controller"),
        &["--cluster-cidr", "10.68.0.0/16"],
    );
    // Each agent runs from a binary of its own, which its upgrades replace.
    let agents: Vec<Agent> = (1..=2)
        .map(|i| {
            let bin = dir.path().join(format!("bin-{i}"));
            std::fs::create_dir_all(&bin).expect("bin dir");
            let exe = bin.join("shoal");
            without_debug_info(Path::new(shoal_bin()), &exe);
            Agent::with(
                &controller,
                &format!("node-{i}"),
                &dir.path().join(format!("agent-{i}")),
            )
            .program(&[exe.as_os_str()])
            .args(&[
                "--pod-bridge",
                BRIDGE,
                "--node-status-update-frequency",
                "2s",
            ])
            .start()
        })
        .collect();
    let agent_dirs: Vec<PathBuf> = agents.iter().map(|a| a.dir.clone()).collect();
    let first_pids: Vec<u32> = agents.iter().map(|a| a.pid().expect("pid")).collect();
    let _leftovers = Leftovers(agent_dirs.clone(), Some(BRIDGE.into()));
    let c = Cluster::adopt(controller, agents);
    let _respawned = Respawned(agent_dirs.clone(), first_pids.clone());
    c.wait_nodes_ready();
    let old = format!("shoal-v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(node_version(&c, "node-1"), old);

    kit::push_busybox(&c);
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&pods()))
        .ok();
    c.wait_for("both containers running", Duration::from_secs(90), |c| {
        ["node-1", "node-2"]
            .iter()
            .all(|n| field(&c.pod(&format!("steady-{n}")), "status.phase") == "Running")
    });
    let marks = pod_marks(&c);

    // The rebuilt binary, pushed as an artifact: its platform comes from its ELF header.
    let pushed = c
        .shoal(&["push", next.to_str().expect("path"), "shoal:next"])
        .ok();
    assert!(pushed.contains("@sha256:"), "{pushed}");
    c.apply(&upgrade("to-next", NEXT, "shoal:next", 60));
    let at = std::time::Instant::now();
    let mut seen_both_upgrading = false;
    c.wait_for("both nodes upgraded", Duration::from_secs(240), |c| {
        let u = upgrade_status(c, "to-next");
        let upgrading = u["status"]["nodes"]
            .as_array()
            .map(|n| n.iter().filter(|n| n["state"] == "Upgrading").count())
            .unwrap_or(0);
        seen_both_upgrading |= upgrading > 1;
        field(&u, "status.phase") == "Complete"
    });
    eprintln!("two nodes upgraded in {:?}", at.elapsed());
    assert!(!seen_both_upgrading, "maxUnavailable 1: one node at a time");
    c.wait_for("the nodes' conditions", Duration::from_secs(30), |c| {
        ["node-1", "node-2"]
            .iter()
            .all(|n| condition(c, n, "AgentUpgrade").1 == "Upgraded")
    });
    let u = upgrade_status(&c, "to-next");
    for n in ["node-1", "node-2"] {
        assert_eq!(node_version(&c, n), format!("shoal-v{NEXT}"));
        let (status, reason, message) = condition(&c, n, "AgentUpgrade");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Upgraded"),
            "{message}"
        );
    }
    let rows = u["status"]["nodes"].as_array().expect("status.nodes");
    assert!(
        rows.iter()
            .all(|r| r["state"] == "Upgraded" && r["version"] == NEXT),
        "{u}"
    );
    let table = c.shoal(&["get", "agentupgrades"]).ok();
    assert!(
        table.contains("Complete") && table.contains("2/2"),
        "{table}"
    );
    // In place: the same processes, now running the new binary.
    for (i, d) in agent_dirs.iter().enumerate() {
        assert_eq!(
            agent_pid(d),
            first_pids[i],
            "node-{} restarted in place",
            i + 1
        );
        let exe = dir.path().join(format!("bin-{}/shoal", i + 1));
        assert_eq!(digest_of(&exe), digest_of(&next));
    }
    assert_eq!(
        pod_marks(&c),
        marks,
        "the containers ran on through the upgrade"
    );

    // A binary that exits at once: the first node goes back by itself, the rollout pauses.
    c.shoal(&["push", broken.to_str().expect("path"), "shoal:broken"])
        .ok();
    c.apply(&upgrade("to-broken", "9.9.9-broken", "shoal:broken", 60));
    let at = std::time::Instant::now();
    c.wait_for("the rollout paused", Duration::from_secs(180), |c| {
        field(&upgrade_status(c, "to-broken"), "status.phase") == "Paused"
    });
    eprintln!("rolled back and paused in {:?}", at.elapsed());
    let u = upgrade_status(&c, "to-broken");
    let reason = field(&u, "status.reason");
    assert!(
        reason.contains("node node-1 went back to its previous binary")
            && reason.contains("exited before it reported Ready"),
        "{u}"
    );
    assert_eq!(field(&u, "status.nodes.0.state"), "RolledBack", "{u}");
    assert_eq!(field(&u, "status.nodes.1.state"), "Pending", "{u}");
    c.wait_for(
        "node-1 back on the rebuilt binary",
        Duration::from_secs(60),
        |c| {
            node_version(c, "node-1") == format!("shoal-v{NEXT}")
                && condition(c, "node-1", "AgentUpgrade").1 == "RolledBack"
        },
    );
    assert_eq!(node_version(&c, "node-2"), format!("shoal-v{NEXT}"));
    assert_eq!(digest_of(&dir.path().join("bin-1/shoal")), digest_of(&next));
    assert_eq!(digest_of(&dir.path().join("bin-2/shoal")), digest_of(&next));
    let respawned = agent_pid(&agent_dirs[0]);
    assert_ne!(
        respawned, first_pids[0],
        "the guard started the agent again"
    );
    assert!(alive(respawned));
    assert_eq!(
        agent_pid(&agent_dirs[1]),
        first_pids[1],
        "node-2 was never told"
    );
    // to-next yields its nodes to the newer upgrade.
    assert_eq!(
        field(&upgrade_status(&c, "to-next"), "status.phase"),
        "Superseded"
    );
    let events = c.shoal(&["get", "events"]).ok();
    for e in [
        "Upgrading node node-1",
        "Node node-2 runs",
        "went back to",
        "Rollout paused",
    ] {
        assert!(events.contains(e), "event {e:?}:\n{events}");
    }
    assert!(!events.contains("NodeNotReady"), "{events}");
    // The pods: the same ones, never restarted, never replaced.
    assert_eq!(
        pod_marks(&c),
        marks,
        "the containers ran on through the rollback"
    );

    // A binary that starts and never reports Ready: once readyTimeoutSeconds pass, the guard
    // ends it and puts the previous binary back.
    let stuck = hangs(dir.path());
    c.shoal(&["push", stuck.to_str().expect("path"), "shoal:stuck"])
        .ok();
    c.apply(&upgrade_of(
        "node-2",
        "to-stuck",
        "9.9.9-stuck",
        "shoal:stuck",
        10,
    ));
    let at = std::time::Instant::now();
    c.wait_for("the stuck rollout paused", Duration::from_secs(120), |c| {
        field(&upgrade_status(c, "to-stuck"), "status.phase") == "Paused"
    });
    eprintln!("timed out, rolled back and paused in {:?}", at.elapsed());
    let u = upgrade_status(&c, "to-stuck");
    assert!(
        field(&u, "status.reason").contains("did not report Ready within 10s"),
        "{u}"
    );
    c.wait_for(
        "node-2 back on the rebuilt binary",
        Duration::from_secs(60),
        |c| {
            node_version(c, "node-2") == format!("shoal-v{NEXT}")
                && condition(c, "node-2", "AgentUpgrade").1 == "RolledBack"
        },
    );
    assert_eq!(digest_of(&dir.path().join("bin-2/shoal")), digest_of(&next));
    let respawned = agent_pid(&agent_dirs[1]);
    assert_ne!(
        respawned, first_pids[1],
        "the guard started node-2's agent again"
    );
    assert!(
        alive(respawned) && !alive(first_pids[1]),
        "the stuck binary was ended"
    );
    assert_eq!(
        pod_marks(&c),
        marks,
        "the containers ran on through the timeout"
    );

    let all: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "pods", "-o", "json"]).ok()).expect("pods");
    assert_eq!(
        all["items"].as_array().map(Vec::len),
        Some(2),
        "no replacement was scheduled"
    );
}

/// An executable that runs on whatever it is told and never reports anything.
fn hangs(dir: &Path) -> PathBuf {
    let source = dir.join("hangs.rs");
    std::fs::write(
        &source,
        "fn main() { loop { std::thread::sleep(std::time::Duration::from_secs(60)); } }\n",
    )
    .expect("hangs.rs");
    let out = dir.join("shoal-stuck");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = Command::new(rustc)
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("rustc");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// Ends the agents the test's processes became: the first ones (whose processes exec'd the
/// new binary) and one a guard started again, by the pid it wrote.
struct Respawned(Vec<PathBuf>, Vec<u32>);

impl Drop for Respawned {
    fn drop(&mut self) {
        for (dir, first) in self.0.iter().zip(&self.1) {
            if let Ok(pid) = std::fs::read_to_string(dir.join("agent.pid")) {
                let pid = pid.trim();
                if pid != first.to_string() && alive(pid.parse().unwrap_or(0)) {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
    }
}
