//! install.sh, run into a scratch root (`SHOAL_INSTALL_ROOT`): the binary, the systemd units
//! and the agent's environment file, and unit command lines the binary accepts.

mod kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn install(root: &Path, role: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new("sh")
        .arg(kit::repo_path("install.sh"))
        .arg(role)
        .env("SHOAL_INSTALL_ROOT", root)
        .env("SHOAL_BIN", kit::shoal_bin())
        .envs(env.iter().copied())
        .output()
        .expect("run install.sh")
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
}
