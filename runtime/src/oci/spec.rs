//! The OCI runtime spec (`config.json`) for a container: the image's configuration overridden
//! by the pod's, Kubernetes' argv rules, cgroup limits, and the hardening Docker and containerd
//! apply by default (the default capability set, `no_new_privileges`, a seccomp profile, masked
//! and read-only kernel paths). A pure function of its inputs.

use super::image::RunConfig;
use crate::{ContainerSpec, Network};
use serde_json::{json, Value};

/// The capabilities a container gets unless it asks otherwise (Docker's and containerd's set).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, for `privileged` and `add: [ALL]`.
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/sys/devices/virtual/powercap",
];

/// CFS period the CPU limit is expressed in.
const CPU_PERIOD: u64 = 100_000;

/// The process's argv, by Kubernetes' rules: `command` replaces the image's Entrypoint (and
/// drops its Cmd), `args` replaces its Cmd.
pub fn argv(container: &ContainerSpec, image: &RunConfig) -> Vec<String> {
    let entrypoint = image.entrypoint().clone().unwrap_or_default();
    let cmd = image.cmd().clone().unwrap_or_default();
    match (container.command.is_empty(), container.args.is_empty()) {
        (false, _) => container
            .command
            .iter()
            .chain(container.args.iter())
            .cloned()
            .collect(),
        (true, false) => entrypoint
            .into_iter()
            .chain(container.args.iter().cloned())
            .collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// The environment: the image's, then the pod's (which wins on the same name).
pub fn env(container: &ContainerSpec, image: &RunConfig) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(n, _)| n == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for kv in image.env().iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    set("HOSTNAME", &container.hostname);
    for (k, v) in &container.env {
        set(k, v);
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn capabilities(container: &ContainerSpec) -> Vec<String> {
    let s = &container.security;
    if s.privileged {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let norm = |c: &String| {
        let c = c.to_ascii_uppercase();
        if c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let add: Vec<String> = s.capabilities_add.iter().map(norm).collect();
    let drop: Vec<String> = s.capabilities_drop.iter().map(norm).collect();
    let base: &[&str] = if add.iter().any(|c| c == "CAP_ALL") {
        &ALL_CAPABILITIES
    } else {
        &DEFAULT_CAPABILITIES
    };
    let mut caps: Vec<String> = base.iter().map(|c| c.to_string()).collect();
    for c in add {
        if c != "CAP_ALL" && !caps.contains(&c) {
            caps.push(c);
        }
    }
    if drop.iter().any(|c| c == "CAP_ALL") {
        caps.clear();
    }
    caps.retain(|c| !drop.contains(c));
    caps
}

/// Who the process runs as: uid, gid and supplementary groups, already resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The whole `config.json` for `container` started from an image with `image` as its config.
pub fn runtime_spec(
    container: &ContainerSpec,
    image: &RunConfig,
    user: &User,
    cgroups_path: &str,
) -> Value {
    let s = &container.security;
    let caps = capabilities(container);
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &container.mounts {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if m.read_only { "ro" } else { "rw" });
        mounts.push(json!({
            "destination": m.guest_path,
            "type": "bind",
            "source": m.host_path,
            "options": options,
        }));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &container.network {
        Network::Host => {}
        Network::Pod(path) => namespaces.push(json!({"type": "network", "path": path})),
        Network::Isolated => namespaces.push(json!({"type": "network"})),
    }
    let resources = resources(container);
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path,
    });
    if !s.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS.as_slice());
        linux["readonlyPaths"] = json!(READONLY_PATHS.as_slice());
        if !s.seccomp_unconfined {
            linux["seccomp"] = super::seccomp::profile();
        }
    }
    if !s.sysctls.is_empty() {
        let sysctls: serde_json::Map<String, Value> = s
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        linux["sysctl"] = Value::Object(sysctls);
    }
    let mut additional_gids = user.additional_gids.clone();
    for g in &s.supplemental_groups {
        if !additional_gids.contains(g) && *g != user.gid {
            additional_gids.push(*g);
        }
    }
    let hostname = (container.network != Network::Host).then(|| container.hostname.clone());
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": additional_gids},
            "args": argv(container, image),
            "env": env(container, image),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": !(s.privileged || s.allow_privilege_escalation),
        },
        "root": {"path": "rootfs", "readonly": s.read_only_root_filesystem},
        "mounts": mounts,
        "linux": linux,
    });
    if let Some(h) = hostname {
        spec["hostname"] = json!(h);
    }
    spec
}

/// The container's cgroup limits: no devices, a pids limit, memory (and swap) and CPU.
fn resources(container: &ContainerSpec) -> Value {
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "pids": {"limit": container.pids_limit.unwrap_or(4096)},
    });
    if let Some(limit) = container.memory_limit {
        // Swap is not extra room: the limit holds for memory and swap together.
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(millis) = container.cpu_limit_millis {
        cpu.insert(
            "quota".into(),
            json!((millis * CPU_PERIOD / 1000).max(1000)),
        );
        cpu.insert("period".into(), json!(CPU_PERIOD));
    }
    if let Some(millis) = container.cpu_request_millis {
        cpu.insert("shares".into(), json!((millis * 1024 / 1000).max(2)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    resources
}

/// Resolves the image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the root
/// filesystem's /etc/passwd and /etc/group; `securityContext` overrides win.
pub fn resolve_user(
    image_user: Option<&str>,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    passwd: &str,
    group: &str,
) -> Result<User, String> {
    let spec = image_user.unwrap_or("").trim();
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && pred(f))
    };
    let (mut uid, mut gid, name) = if u.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(n) = u.parse::<u32>() {
        let entry = passwd_entry(&|f| f[2] == u);
        let gid = entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(n);
        (n, gid, entry.map(|f| f[0].to_string()))
    } else {
        let f = passwd_entry(&|f| f[0] == u)
            .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?;
        (
            f[2].parse().map_err(|_| format!("bad uid for {u:?}"))?,
            f[3].parse().map_err(|_| format!("bad gid for {u:?}"))?,
            Some(u.to_string()),
        )
    };
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        };
    }
    if let Some(r) = run_as_user {
        uid = r;
    }
    if let Some(r) = run_as_group {
        gid = r;
    }
    let additional_gids = name
        .map(|n| {
            group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == n))
                .filter_map(|f| f[2].parse::<u32>().ok())
                .filter(|g| *g != gid)
                .collect()
        })
        .unwrap_or_default();
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mount, Security};

    fn image() -> RunConfig {
        oci_spec::image::ConfigBuilder::default()
            .entrypoint(vec!["/bin/server".to_string()])
            .cmd(vec!["--port".to_string(), "80".to_string()])
            .env(vec![
                "PATH=/opt/bin:/bin".to_string(),
                "MODE=image".to_string(),
            ])
            .working_dir("/srv")
            .build()
            .expect("config")
    }

    #[test]
    fn argv_follows_kubernetes() {
        let mut c = ContainerSpec::default();
        assert_eq!(argv(&c, &image()), ["/bin/server", "--port", "80"]);
        c.args = vec!["--port".into(), "8080".into()];
        assert_eq!(argv(&c, &image()), ["/bin/server", "--port", "8080"]);
        c.command = vec!["sh".into(), "-c".into()];
        c.args = vec!["echo hi".into()];
        assert_eq!(argv(&c, &image()), ["sh", "-c", "echo hi"]);
        c.args.clear();
        assert_eq!(
            argv(&c, &image()),
            ["sh", "-c"],
            "command drops the image's Cmd"
        );
    }

    #[test]
    fn env_is_image_then_pod() {
        let c = ContainerSpec {
            hostname: "web-1".into(),
            env: vec![("MODE".into(), "pod".into()), ("X".into(), "1".into())],
            ..Default::default()
        };
        assert_eq!(
            env(&c, &image()),
            ["PATH=/opt/bin:/bin", "MODE=pod", "HOSTNAME=web-1", "X=1"]
        );
    }

    #[test]
    fn hardened_by_default_and_security_context_honoured() {
        let mut c = ContainerSpec {
            hostname: "p".into(),
            memory_limit: Some(64 << 20),
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            mounts: vec![Mount {
                host_path: "/data/v".into(),
                guest_path: "/v".into(),
                read_only: true,
            }],
            ..Default::default()
        };
        let s = runtime_spec(&c, &image(), &User::default(), "/shoal/x");
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["process"]["cwd"], "/srv");
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .map(Vec::len),
            Some(14)
        );
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(s["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .is_some_and(|n| !n.iter().any(|x| x == "mount") && n.iter().any(|x| x == "read")));
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64u64 << 20);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(s["linux"]["cgroupsPath"], "/shoal/x");
        assert!(s["linux"]["maskedPaths"].is_array());
        assert_eq!(s["mounts"][7]["options"][2], "ro");
        assert_eq!(s["hostname"], "p");

        c.security = Security {
            read_only_root_filesystem: true,
            capabilities_add: vec!["NET_ADMIN".into()],
            capabilities_drop: vec!["CHOWN".into(), "KILL".into()],
            ..Default::default()
        };
        c.network = Network::Host;
        let s = runtime_spec(&c, &image(), &User::default(), "/shoal/x");
        let caps = s["process"]["capabilities"]["effective"].clone();
        assert!(caps.as_array().is_some_and(|c| c.len() == 13
            && c.iter().any(|x| x == "CAP_NET_ADMIN")
            && !c.iter().any(|x| x == "CAP_CHOWN")));
        assert_eq!(s["root"]["readonly"], true);
        assert!(
            s.get("hostname").is_none(),
            "host network keeps the node's name"
        );
        assert!(!s["linux"]["namespaces"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x["type"] == "network")));

        c.security = Security {
            privileged: true,
            ..Default::default()
        };
        let s = runtime_spec(&c, &image(), &User::default(), "/shoal/x");
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert!(s["linux"].get("seccomp").is_none());
        assert!(s["process"]["capabilities"]["bounding"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == "CAP_SYS_ADMIN")));

        // The pod's groups join the user's; its sysctls are set; Unconfined lifts seccomp.
        c.security = Security {
            supplemental_groups: vec![44, 2000, 1000],
            sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "0".into())],
            seccomp_unconfined: true,
            ..Default::default()
        };
        let user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![29],
        };
        let s = runtime_spec(&c, &image(), &user, "/shoal/x");
        assert_eq!(
            s["process"]["user"]["additionalGids"],
            serde_json::json!([29, 44, 2000])
        );
        assert_eq!(
            s["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert!(s["linux"].get("seccomp").is_none());
        assert!(s["linux"]["maskedPaths"].is_array(), "still not privileged");
    }

    #[test]
    fn users_resolve_against_the_image() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n";
        let group = "root:x:0:\nweb:x:1000:\naudio:x:29:web\n";
        let r = |u: Option<&str>, ru: Option<u32>, rg: Option<u32>| {
            resolve_user(u, ru, rg, passwd, group)
        };
        assert_eq!(r(None, None, None), Ok(User::default()));
        assert_eq!(
            r(Some("web"), None, None),
            Ok(User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![29]
            })
        );
        assert_eq!(
            r(Some("1000:29"), None, None).map(|u| (u.uid, u.gid)),
            Ok((1000, 29))
        );
        assert_eq!(
            r(Some("web"), Some(5), Some(6)).map(|u| (u.uid, u.gid)),
            Ok((5, 6))
        );
        assert_eq!(
            r(Some("4242"), None, None).map(|u| (u.uid, u.gid)),
            Ok((4242, 4242))
        );
        assert!(r(Some("nobody-here"), None, None)
            .is_err_and(|e| e.contains("not in the image's /etc/passwd")));
    }
}
