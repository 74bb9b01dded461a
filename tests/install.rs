//! install.sh, run into a scratch root (`SHOAL_INSTALL_ROOT`): the binary (for the machine's
//! architecture, checked against its checksum), the systemd units and the agent's environment
//! file, unit command lines the binary accepts, and `uninstall`, which also stops the pods an
//! agent left running (the `runc_` test: root and runc, skipped with the reason where they
//! are missing, failing when `SHOAL_REQUIRE_RUNC=1`).

mod kit;

use kit::{field, runc_missing};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn install(root: &Path, role: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec![("SHOAL_BIN", kit::shoal_bin())];
    all.extend_from_slice(env);
    run_script(&kit::repo_path("install.sh"), root, &[role], &all)
}

/// Runs `script` (an install.sh) with `args` into `root`, with only `env` set of Shoal's.
fn run_script(
    script: &Path,
    root: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg(script).args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHOAL_")) {
        cmd.env_remove(k);
    }
    cmd.env("SHOAL_INSTALL_ROOT", root)
        .envs(env.iter().copied())
        .output()
        .expect("run install.sh")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The unit's ExecStart, run with `--help` appended: clap refuses an unknown flag before it
/// gets to the help, so this proves the unit's command line is one the binary takes.
fn exec_start_is_accepted(root: &Path, unit: &str) {
    let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = line.split_whitespace();
    let program = words.next().unwrap();
    assert_eq!(program, "/usr/local/bin/shoal");
    let out = Command::new(root.join("usr/local/bin/shoal"))
        .args(words)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{unit}: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_script_writes_the_binary_units_and_a_private_agent_env_file() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), "controller", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.path().join("usr/local/bin/shoal");
    assert!(bin.metadata().unwrap().permissions().mode() & 0o111 != 0);
    exec_start_is_accepted(root.path(), "shoal-controller.service");

    // An agent needs its controller, and a token the first time.
    let refused = install(root.path(), "agent", &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("SHOAL_SERVER is required"));
    let refused = install(root.path(), "agent", &[("SHOAL_SERVER", "10.0.0.2:7443")]);
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("SHOAL_TOKEN_FILE (or SHOAL_TOKEN) is required"));

    let out = install(
        root.path(),
        "agent",
        &[
            ("SHOAL_SERVER", "10.0.0.2:7443"),
            ("SHOAL_TOKEN", "SHOAL1::abc::secret"),
            ("SHOAL_NODE_NAME", "pi-7"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exec_start_is_accepted(root.path(), "shoal-agent.service");
    let env_file = root.path().join("etc/shoal/agent.env");
    assert_eq!(
        env_file.metadata().unwrap().permissions().mode() & 0o777,
        0o600,
        "the agent's settings are readable by root only"
    );
    // The token is in a file of its own (which the agent removes after joining), never in
    // the environment or on a command line.
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "SHOAL_SERVER=10.0.0.2:7443\nSHOAL_TOKEN_FILE=/etc/shoal/token\nSHOAL_NODE_NAME=pi-7\n"
    );
    let token_file = root.path().join("etc/shoal/token");
    assert_eq!(
        token_file.metadata().unwrap().permissions().mode() & 0o777,
        0o600,
        "the token is readable by root only"
    );
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        "SHOAL1::abc::secret\n"
    );
    let unit = std::fs::read_to_string(root.path().join("etc/systemd/system/shoal-agent.service"))
        .unwrap();
    assert!(
        unit.contains("EnvironmentFile=/etc/shoal/agent.env"),
        "{unit}"
    );
    assert!(
        unit.contains("--data-dir /var/lib/shoal/agent"),
        "the unit's data dir is the one a root agent run by hand uses: {unit}"
    );
}

/// The layout `./build-static.sh` leaves in dist/: install.sh beside a binary per
/// architecture and their SHA256SUMS.
fn dist(dir: &Path, binaries: &[(&str, &[u8])]) {
    std::fs::copy(kit::repo_path("install.sh"), dir.join("install.sh")).unwrap();
    for (name, bytes) in binaries {
        std::fs::write(dir.join(name), bytes).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let names: Vec<&str> = binaries.iter().map(|(n, _)| *n).collect();
    let sums = Command::new("sha256sum")
        .args(&names)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(sums.status.success());
    std::fs::write(dir.join("SHA256SUMS"), sums.stdout).unwrap();
}

#[test]
fn install_picks_the_binary_for_the_architecture_and_refuses_one_whose_checksum_differs() {
    // Unpacked where a path has spaces, as a download folder may.
    let d = tempfile::Builder::new()
        .prefix("shoal dist ")
        .tempdir()
        .unwrap();
    let real = std::fs::read(kit::shoal_bin()).unwrap();
    dist(
        d.path(),
        &[
            ("shoal-x86_64", &real),
            (
                "shoal-aarch64",
                b"an aarch64 build, as far as this test goes",
            ),
            ("shoal-agent-aarch64", b"the agent-only aarch64 build"),
        ],
    );
    let script = d.path().join("install.sh");
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/local/bin/shoal");

    let out = run_script(
        &script,
        root.path(),
        &["controller"],
        &[("SHOAL_ARCH", "aarch64")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("verified"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        b"an aarch64 build, as far as this test goes"
    );

    // An agent takes the agent-only build.
    let agent_root = tempfile::tempdir().unwrap();
    let out = run_script(
        &script,
        agent_root.path(),
        &["agent", "--server", "10.0.0.2:7443"],
        &[
            ("SHOAL_ARCH", "arm64"),
            ("SHOAL_TOKEN", "SHOAL1::abc::secret"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(agent_root.path().join("usr/local/bin/shoal")).unwrap(),
        b"the agent-only aarch64 build",
        "{}",
        stdout(&out)
    );

    // One byte changed after the sums were made: refused, and the installed binary stays.
    let mut tampered = real.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    std::fs::write(d.path().join("shoal-x86_64"), &tampered).unwrap();
    let out = run_script(
        &script,
        root.path(),
        &["controller"],
        &[("SHOAL_ARCH", "x86_64")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        b"an aarch64 build, as far as this test goes"
    );

    // A pinned digest wins over the file; a binary missing from the file is refused.
    let pinned = Command::new("sha256sum")
        .arg(d.path().join("shoal-x86_64"))
        .output()
        .unwrap();
    let pinned = String::from_utf8_lossy(&pinned.stdout);
    let pinned = pinned.split_whitespace().next().unwrap_or_default();
    let out = run_script(
        &script,
        root.path(),
        &["controller"],
        &[("SHOAL_ARCH", "x86_64"), ("SHOAL_SHA256", pinned)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&bin).unwrap(), tampered);
    std::fs::write(d.path().join("shoal-armv7"), b"unlisted").unwrap();
    let out = run_script(
        &script,
        root.path(),
        &["controller"],
        &[("SHOAL_ARCH", "armv7l")],
    );
    assert!(stderr(&out).contains("not listed"), "{}", stderr(&out));
    let out = run_script(
        &script,
        root.path(),
        &["controller"],
        &[("SHOAL_ARCH", "riscv64")],
    );
    assert!(
        stderr(&out).contains("no shoal build for this architecture: riscv64"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn install_takes_flags_on_one_line_keeps_the_identity_of_an_old_layout_and_uninstalls() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // An agent installed by an earlier install.sh, into /var/lib/shoal-agent.
    std::fs::create_dir_all(r.join("var/lib/shoal-agent")).unwrap();
    std::fs::write(
        r.join("var/lib/shoal-agent/node.conf"),
        "the node's identity",
    )
    .unwrap();
    let token = r.join("token");
    std::fs::write(&token, "SHOAL1::abc::secret\n").unwrap();
    let out = install(r, "agent", &[]);
    assert!(
        stderr(&out).contains("SHOAL_SERVER is required"),
        "{}",
        stderr(&out)
    );
    let bin = kit::shoal_bin();
    let out = run_script(
        &kit::repo_path("install.sh"),
        r,
        &["agent", "--server", "10.0.0.2:7443", "--name", "pi-7"],
        &[("SHOAL_BIN", bin)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!r.join("var/lib/shoal-agent").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("var/lib/shoal/agent/node.conf")).unwrap(),
        "the node's identity",
        "no token needed: the node joined before, and keeps its identity"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/shoal/agent.env")).unwrap(),
        "SHOAL_SERVER=10.0.0.2:7443\nSHOAL_NODE_NAME=pi-7\n"
    );
    let out = run_script(
        &kit::repo_path("install.sh"),
        r,
        &["controller"],
        &[("SHOAL_BIN", bin)],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // --keep-data keeps /var/lib/shoal; a plain uninstall removes everything.
    let uninstall = |args: &[&str]| {
        let mut all = vec!["uninstall"];
        all.extend_from_slice(args);
        let out = run_script(
            &kit::repo_path("install.sh"),
            r,
            &all,
            &[("SHOAL_POD_BRIDGE", "shoal-t90-none")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    uninstall(&["--keep-data"]);
    assert!(!r.join("usr/local/bin/shoal").exists());
    assert!(!r.join("etc/shoal").exists());
    assert!(!r.join("etc/systemd/system/shoal-agent.service").exists());
    assert!(!r
        .join("etc/systemd/system/shoal-controller.service")
        .exists());
    assert!(r.join("var/lib/shoal/agent/node.conf").exists());
    let out = run_script(
        &kit::repo_path("install.sh"),
        r,
        &["agent", "--server", "10.0.0.2:7443", "--token-file"],
        &[("SHOAL_BIN", bin)],
    );
    assert!(!out.status.success(), "a flag without its value is refused");
    let out = run_script(
        &kit::repo_path("install.sh"),
        r,
        &[
            "agent",
            "--server",
            "10.0.0.2:7443",
            "--token-file",
            token.to_str().unwrap_or_default(),
        ],
        &[("SHOAL_BIN", bin)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    uninstall(&[]);
    let left: Vec<_> = walk(r);
    assert_eq!(left, vec![r.join("token")], "nothing of shoal's is left");
}

/// Every file beneath `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An agent stopped by its unit leaves its OCI containers running; uninstalling stops them
/// and removes their network namespaces, the pod bridge, the mounts and the data.
#[test]
fn runc_uninstall_stops_the_pods_an_agent_left_and_removes_what_it_made() {
    if runc_missing("runc_uninstall_stops_the_pods_an_agent_left_and_removes_what_it_made") {
        return;
    }
    let (mut c, _leftovers) = kit::oci_cluster(89, 0, &[]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let data = r.join("var/lib/shoal/agent");
    let _agent_leftovers = kit::Leftovers(vec![data.clone()], Some("shoal-t89".into()));
    let token = std::fs::read_to_string(c.controller.dir.join("token")).expect("token");
    let out = install(
        r,
        "agent",
        &[
            ("SHOAL_SERVER", &c.controller.addr),
            ("SHOAL_TOKEN", token.trim()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    c.agents.push(
        kit::Agent::with(&c.controller, "node-1", &data)
            .token(token.trim())
            .args(&["--pod-bridge", "shoal-t89"])
            .start(),
    );
    c.wait_nodes_ready();
    kit::push_busybox(&c);
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(
                r#"apiVersion: v1
kind: Pod
metadata: {name: left}
spec:
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, "echo started; exec sleep 3589"]
"#,
            ),
        )
        .ok();
    c.wait_for("the pod running", Duration::from_secs(90), |c| {
        c.shoal(&["logs", "left"]).stdout() == "started\n"
    });
    let uid = field(&c.pod("left"), "metadata.uid");
    let netns = Path::new("/var/run/netns").join(format!("shoal-{uid}"));
    assert!(netns.exists());
    c.agents[0].terminate();
    c.agents[0].wait_exit(Duration::from_secs(20));
    assert_eq!(
        kit::runc_list(&data).len(),
        1,
        "the container outlives the agent"
    );
    assert!(sleeping(), "the container's process runs");

    let out = run_script(
        &kit::repo_path("install.sh"),
        r,
        &["uninstall"],
        &[("SHOAL_POD_BRIDGE", "shoal-t89")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("stopped 1 container(s)"), "{said}");
    assert!(said.contains("removed the pod bridge shoal-t89"), "{said}");
    assert!(!sleeping(), "the container's process is gone");
    assert!(!netns.exists(), "the pod's network namespace is gone");
    let bridge = Command::new("ip")
        .args(["link", "show", "shoal-t89"])
        .output()
        .unwrap();
    assert!(!bridge.status.success(), "the pod bridge is gone");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(r.to_str().unwrap_or_default()),
        "nothing mounted beneath the root is left"
    );
    assert!(!r.join("var/lib/shoal").exists());
    assert!(!r.join("usr/local/bin/shoal").exists());
}

/// Whether the test container's `sleep 3589` runs.
fn sleeping() -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x003589\x00"))
}
