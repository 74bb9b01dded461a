//! `seccompProfile: Localhost` through real runc as root: the node's own profile, a file under
//! the agent's `<data-dir>/seccomp` (as the kubelet's are under `/var/lib/kubelet/seccomp`),
//! filters the container's syscalls in place of the default. Needs runc and root: skipped,
//! saying why, where they are missing; fails instead when SHOAL_REQUIRE_RUNC=1 (CI sets it).

mod kit;

use kit::{field, runc_missing};
use std::time::Duration;

/// A profile that refuses `mkdir` (EPERM) and allows the rest: a container under it cannot
/// make a directory, the same container under RuntimeDefault can, and a pod naming a profile
/// the node does not have fails its container with the file named.
#[test]
fn runc_a_localhost_seccomp_profile_filters_the_containers_syscalls() {
    if runc_missing("runc_a_localhost_seccomp_profile_filters_the_containers_syscalls") {
        return;
    }
    let (c, _leftovers) = kit::oci_cluster(85, 1, &[]);
    kit::push_busybox(&c);
    let profiles = c.agents[0].dir.join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).expect("seccomp dir");
    let no_mkdir = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    std::fs::write(profiles.join("no-mkdir.json"), no_mkdir.to_string()).expect("profile");
    let pod = |name: &str, profile: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  securityContext: {{seccompProfile: {profile}}}
  containers:
  - name: c
    image: busybox:1
    command: [sh, -c, "mkdir /tmp/made; echo rc=$?"]
"#
        )
    };
    c.apply(&pod(
        "filtered",
        "{type: Localhost, localhostProfile: profiles/no-mkdir.json}",
    ));
    c.apply(&pod("default", "{type: RuntimeDefault}"));
    c.apply(&pod(
        "missing",
        "{type: Localhost, localhostProfile: profiles/absent.json}",
    ));
    for name in ["filtered", "default", "missing"] {
        c.wait_for(name, Duration::from_secs(60), |c| {
            ["Succeeded", "Failed"].contains(&field(&c.pod(name), "status.phase").as_str())
        });
    }
    let filtered = c.shoal(&["logs", "filtered"]).ok();
    assert!(
        filtered.contains("Operation not permitted") && filtered.contains("rc=1"),
        "{filtered}"
    );
    assert_eq!(c.shoal(&["logs", "default"]).ok(), "rc=0\n");
    let missing = c.pod("missing");
    assert_eq!(field(&missing, "status.phase"), "Failed", "{missing}");
    let message = field(
        &missing,
        "status.containerStatuses.0.state.terminated.message",
    );
    assert!(
        message.contains("seccomp profile") && message.contains("profiles/absent.json"),
        "{message}"
    );
}
