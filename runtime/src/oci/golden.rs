//! The `config.json` runc is given, held to files written when it was made by hand: a change
//! in what a container runs with shows here as a diff, not only in an end-to-end test that
//! may pass anyway (a missing masked path, a capability more, youki's example defaults).
//!
//! `SHOAL_BLESS=1 cargo test -p shoal-runtime golden` writes the files again; the diff is
//! then the review.

use super::spec::tests::image;
use super::spec::{runtime_spec, User};
use crate::{ContainerSpec, Mount, Network, Security};
use serde_json::Value;
use std::path::PathBuf;

/// Six containers that between them set every field the spec reads.
fn cases() -> Vec<(&'static str, ContainerSpec, User)> {
    let base = ContainerSpec {
        hostname: "web-1".into(),
        network: Network::Pod("/var/run/netns/shoal-abc".into()),
        env: vec![("MODE".into(), "pod".into())],
        ..Default::default()
    };
    let web = User {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![29],
    };
    vec![
        ("plain", base.clone(), User::default()),
        (
            "limits-and-mounts",
            ContainerSpec {
                memory_limit: Some(64 << 20),
                cpu_limit_millis: Some(5),
                cpu_request_millis: Some(250),
                pids_limit: Some(128),
                working_dir: Some("/work".into()),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo hi".into()],
                mounts: vec![
                    Mount {
                        host_path: "/data/v".into(),
                        guest_path: "/v".into(),
                        read_only: true,
                    },
                    Mount {
                        host_path: "/data/w".into(),
                        guest_path: "/w".into(),
                        read_only: false,
                    },
                ],
                ..base.clone()
            },
            web.clone(),
        ),
        (
            "host-network-caps",
            ContainerSpec {
                network: Network::Host,
                security: Security {
                    read_only_root_filesystem: true,
                    capabilities_add: vec!["NET_ADMIN".into(), "cap_sys_time".into()],
                    capabilities_drop: vec!["CHOWN".into(), "KILL".into()],
                    allow_privilege_escalation: true,
                    ..Default::default()
                },
                ..base.clone()
            },
            User::default(),
        ),
        (
            "privileged",
            ContainerSpec {
                security: Security {
                    privileged: true,
                    ..Default::default()
                },
                ..base.clone()
            },
            User::default(),
        ),
        (
            "groups-sysctls-unconfined",
            ContainerSpec {
                network: Network::Isolated,
                security: Security {
                    supplemental_groups: vec![44, 2000, 1000],
                    sysctls: vec![
                        ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                        ("kernel.shm_rmid_forced".into(), "1".into()),
                    ],
                    seccomp_unconfined: true,
                    ..Default::default()
                },
                ..base.clone()
            },
            web,
        ),
        (
            "all-caps-dropped-but-one",
            ContainerSpec {
                security: Security {
                    capabilities_add: vec!["ALL".into()],
                    capabilities_drop: vec!["SYS_ADMIN".into()],
                    ..Default::default()
                },
                ..base
            },
            User::default(),
        ),
    ]
}

/// Capabilities are a set: their order in the file means nothing. The seccomp allow-list
/// (tested in `seccomp`) is named instead of spelled out six times, when it is exactly that.
fn normalized(mut spec: Value) -> Value {
    if let Some(names) = spec.pointer_mut("/linux/seccomp/syscalls/0/names") {
        if *names == serde_json::json!(super::seccomp::ALLOWED_SYSCALLS) {
            *names = Value::String(format!(
                "seccomp::ALLOWED_SYSCALLS ({} names)",
                super::seccomp::ALLOWED_SYSCALLS.len()
            ));
        }
    }
    if let Some(Value::Object(caps)) = spec.pointer_mut("/process/capabilities") {
        for set in caps.values_mut() {
            if let Value::Array(names) = set {
                names.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    spec
}

#[test]
fn runtime_specs_match_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/oci/golden");
    let bless = std::env::var_os("SHOAL_BLESS").is_some();
    for (name, container, user) in cases() {
        let spec = runtime_spec(&container, &image(), &user, "/shoal/abc").expect(name);
        let got = normalized(serde_json::to_value(&spec).expect("serializes"));
        let path = dir.join(format!("{name}.json"));
        if bless {
            std::fs::create_dir_all(&dir).expect("golden dir");
            let text = serde_json::to_string_pretty(&got).expect("pretty");
            std::fs::write(&path, text + "\n").expect("golden file");
            continue;
        }
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")),
        )
        .expect("golden file is JSON");
        assert_eq!(
            got,
            want,
            "{name}: config.json differs from {path:?}\n{}",
            serde_json::to_string_pretty(&got).unwrap_or_default()
        );
    }
}
