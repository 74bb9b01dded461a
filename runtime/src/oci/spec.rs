//! The OCI runtime spec (`config.json`) for a container: the image's configuration overridden
//! by the pod's, Kubernetes' argv rules, cgroup limits, and the hardening Docker and containerd
//! apply by default (the default capability set, `no_new_privileges`, a seccomp profile, masked
//! and read-only kernel paths). A pure function of its inputs.

use super::image::RunConfig;
use crate::{ContainerSpec, Network};
use oci_spec::runtime::{
    self as oci, Capabilities, Capability, Linux, LinuxCapabilities, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Process, RootBuilder, Spec,
    UserBuilder,
};
use serde_json::Value;

/// The capabilities a container gets unless it asks otherwise (Docker's and containerd's set).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability, for `privileged` and `add: [ALL]`.
const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
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

/// The capability set: Docker's default, or all when privileged or asked for with `ALL`, then
/// the container's `add` and `drop`. A name that is no Linux capability is refused by name
/// (runc would only warn and run the container without it).
fn capabilities(container: &ContainerSpec) -> Result<Capabilities, String> {
    let s = &container.security;
    if s.privileged {
        return Ok(ALL_CAPABILITIES.into_iter().collect());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL") || c.eq_ignore_ascii_case("CAP_ALL");
    let parse = |names: &[String], which: &str| -> Result<Vec<Capability>, String> {
        names
            .iter()
            .filter(|c| !is_all(c))
            .map(|c| {
                serde_json::from_value(Value::String(c.clone())).map_err(|_| {
                    format!("securityContext.capabilities.{which}: {c:?} is not a Linux capability")
                })
            })
            .collect()
    };
    let add = parse(&s.capabilities_add, "add")?;
    let drop = parse(&s.capabilities_drop, "drop")?;
    if s.capabilities_drop.iter().any(is_all) {
        return Ok(Capabilities::new());
    }
    let base = if s.capabilities_add.iter().any(is_all) {
        ALL_CAPABILITIES.as_slice()
    } else {
        DEFAULT_CAPABILITIES.as_slice()
    };
    let mut caps: Capabilities = base.iter().copied().chain(add).collect();
    for c in &drop {
        caps.remove(c);
    }
    Ok(caps)
}

/// Who the process runs as: uid, gid and supplementary groups, already resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The whole `config.json` for `container` started from an image with `image` as its config.
/// Every field is set here: oci-spec's defaults are youki's example container (a hostname
/// "youki", a NOFILE limit, its own mounts), never what a pod asked for.
pub fn runtime_spec(
    container: &ContainerSpec,
    image: &RunConfig,
    user: &User,
    cgroups_path: &str,
) -> Result<Spec, String> {
    let s = &container.security;
    let caps = capabilities(container)?;
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let mut additional_gids = user.additional_gids.clone();
    for g in &s.supplemental_groups {
        if !additional_gids.contains(g) && *g != user.gid {
            additional_gids.push(*g);
        }
    }
    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_console_size(None);
    process.set_user(
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(additional_gids)
            .build()
            .map_err(|e| e.to_string())?,
    );
    process.set_args(Some(argv(container, image)));
    process.set_command_line(None);
    process.set_env(Some(env(container, image)));
    process.set_cwd(cwd.into());
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    process.set_capabilities(Some(capabilities));
    process.set_rlimits(None);
    process.set_no_new_privileges(Some(!(s.privileged || s.allow_privilege_escalation)));
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(None);
    process.set_selinux_label(None);
    process.set_io_priority(None);
    process.set_scheduler(None);
    process.set_exec_cpu_affinity(None);

    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(s.read_only_root_filesystem)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    spec.set_mounts(Some(mounts(container)?));
    spec.set_process(Some(process));
    // The host network keeps the node's name.
    spec.set_hostname((container.network != Network::Host).then(|| container.hostname.clone()));
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(None);
    spec.set_linux(Some(linux(container, cgroups_path)?));
    Ok(spec)
}

/// The kernel filesystems every container has, then the pod's volumes as bind mounts.
fn mounts(container: &ContainerSpec) -> Result<Vec<oci::Mount>, String> {
    let kernel: [(&str, &str, &str, &[&str]); 7] = [
        ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    let kernel = kernel
        .into_iter()
        .map(|(destination, typ, source, options)| {
            oci::MountBuilder::default()
                .destination(destination)
                .typ(typ)
                .source(source)
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
        });
    let volumes = container.mounts.iter().map(|m| {
        let access = if m.read_only { "ro" } else { "rw" };
        oci::MountBuilder::default()
            .destination(&m.guest_path)
            .typ("bind")
            .source(&m.host_path)
            .options(vec!["rbind".into(), "rprivate".into(), access.to_string()])
            .build()
    });
    kernel
        .chain(volumes)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// Namespaces, cgroup limits and the kernel's hardening: masked and read-only paths and the
/// seccomp filter, unless privileged.
fn linux(container: &ContainerSpec, cgroups_path: &str) -> Result<Linux, String> {
    let s = &container.security;
    let namespace = |typ, path: Option<&std::path::Path>| {
        let b = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => b.path(p),
            None => b,
        }
        .build()
    };
    let mut kinds = vec![
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Ipc, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Mount, None),
    ];
    match &container.network {
        Network::Host => {}
        Network::Pod(path) => kinds.push((LinuxNamespaceType::Network, Some(path.as_path()))),
        Network::Isolated => kinds.push((LinuxNamespaceType::Network, None)),
    }
    let namespaces = kinds
        .into_iter()
        .map(|(t, p)| namespace(t, p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources(container)?));
    linux.set_cgroups_path(Some(cgroups_path.into()));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_devices(devices(container)?);
    linux.set_rootfs_propagation(None);
    linux.set_mount_label(None);
    let hardened = !s.privileged;
    let paths = |p: &[&str]| Some(p.iter().map(|p| p.to_string()).collect());
    linux.set_masked_paths(if hardened { paths(&MASKED_PATHS) } else { None });
    linux.set_readonly_paths(if hardened {
        paths(&READONLY_PATHS)
    } else {
        None
    });
    linux.set_seccomp(match &s.seccomp_localhost {
        _ if !hardened || s.seccomp_unconfined => None,
        Some(path) => Some(super::seccomp::localhost(path)?),
        None => Some(super::seccomp::profile().map_err(|e| e.to_string())?),
    });
    linux.set_sysctl((!s.sysctls.is_empty()).then(|| s.sysctls.iter().cloned().collect()));
    Ok(linux)
}

/// The host devices the node gave the container, made in its `/dev` as on the host.
fn devices(container: &ContainerSpec) -> Result<Option<Vec<oci::LinuxDevice>>, String> {
    if container.devices.is_empty() {
        return Ok(None);
    }
    container
        .devices
        .iter()
        .map(|d| {
            let to_i64 = |n: u64| i64::try_from(n).map_err(|_| format!("device number {n}"));
            oci::LinuxDeviceBuilder::default()
                .path(&d.container_path)
                .typ(device_type(d))
                .major(to_i64(d.major)?)
                .minor(to_i64(d.minor)?)
                .file_mode(d.file_mode & 0o7777)
                .uid(d.uid)
                .gid(d.gid)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn device_type(d: &crate::Device) -> oci::LinuxDeviceType {
    if d.block {
        oci::LinuxDeviceType::B
    } else {
        oci::LinuxDeviceType::C
    }
}

/// The container's cgroup limits: no devices but those the node gave it, a pids limit,
/// memory (and swap) and CPU.
fn resources(container: &ContainerSpec) -> Result<LinuxResources, String> {
    let err = |e: oci_spec::OciSpecError| e.to_string();
    let no_devices = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(err)?;
    let mut device_rules = vec![no_devices];
    for d in &container.devices {
        let to_i64 = |n: u64| i64::try_from(n).map_err(|_| format!("device number {n}"));
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(device_type(d))
                .major(to_i64(d.major)?)
                .minor(to_i64(d.minor)?)
                .access("rwm")
                .build()
                .map_err(err)?,
        );
    }
    let pids = LinuxPidsBuilder::default()
        .limit(container.pids_limit.unwrap_or(4096))
        .build()
        .map_err(err)?;
    let mut resources = LinuxResourcesBuilder::default()
        .devices(device_rules)
        .pids(pids)
        .build()
        .map_err(err)?;
    if let Some(limit) = container.memory_limit {
        // Swap is not extra room: the limit holds for memory and swap together.
        let limit =
            i64::try_from(limit).map_err(|_| format!("memory limit {limit} is too large"))?;
        let memory = LinuxMemoryBuilder::default()
            .limit(limit)
            .swap(limit)
            .build()
            .map_err(err)?;
        resources.set_memory(Some(memory));
    }
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(millis) = container.cpu_limit_millis {
        let quota = (millis * CPU_PERIOD / 1000).max(1000);
        cpu = cpu
            .quota(i64::try_from(quota).map_err(|_| format!("CPU limit {millis}m is too large"))?)
            .period(CPU_PERIOD);
    }
    if let Some(millis) = container.cpu_request_millis {
        cpu = cpu.shares((millis * 1024 / 1000).max(2));
    }
    if container.cpu_limit_millis.is_some() || container.cpu_request_millis.is_some() {
        resources.set_cpu(Some(cpu.build().map_err(err)?));
    }
    Ok(resources)
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
pub(super) mod tests {
    use super::*;
    use crate::{Mount, Security};

    /// An image config with every field the spec reads (also the golden files').
    pub(in crate::oci) fn image() -> RunConfig {
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

    fn json_of(c: &ContainerSpec, user: &User) -> Value {
        let spec = runtime_spec(c, &image(), user, "/shoal/x").expect("spec");
        serde_json::to_value(spec).expect("serializes")
    }

    #[test]
    fn only_the_devices_the_node_gave_are_made_and_allowed() {
        let plain = json_of(&ContainerSpec::default(), &User::default());
        assert!(plain["linux"].get("devices").is_none());
        assert_eq!(
            plain["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
        let c = ContainerSpec {
            devices: vec![crate::Device {
                container_path: "/dev/ttyUSB0".into(),
                block: false,
                major: 188,
                minor: 0,
                file_mode: 0o20660,
                uid: 0,
                gid: 20,
            }],
            ..Default::default()
        };
        let s = json_of(&c, &User::default());
        assert_eq!(
            s["linux"]["devices"],
            serde_json::json!([{"path": "/dev/ttyUSB0", "type": "c", "major": 188, "minor": 0,
                "fileMode": 0o660, "uid": 0, "gid": 20}])
        );
        assert_eq!(
            s["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 188, "minor": 0, "access": "rwm"}])
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
        let s = json_of(&c, &User::default());
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
        let s = json_of(&c, &User::default());
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
        let s = json_of(&c, &User::default());
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
        let s = json_of(&c, &user);
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

        // A Localhost profile is the file's, as written; one missing is named.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("no-mkdir.json");
        let profile = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
        std::fs::write(&file, profile.to_string()).expect("profile");
        c.security = Security {
            seccomp_localhost: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(json_of(&c, &User::default())["linux"]["seccomp"], profile);
        std::fs::write(&file, "{\"defaultAction\": \"ALLOW\"}").expect("profile");
        let bad = runtime_spec(&c, &image(), &User::default(), "/b").expect_err("not a profile");
        assert!(
            bad.contains("no-mkdir.json") && bad.contains("unknown variant `ALLOW`"),
            "{bad}"
        );
        std::fs::remove_file(&file).expect("rm");
        let missing = runtime_spec(&c, &image(), &User::default(), "/b").expect_err("missing");
        assert!(missing.contains("no-mkdir.json"), "{missing}");

        // A name that is no capability is refused by name, not dropped as runc would.
        c.security = Security {
            capabilities_add: vec!["NET_ADMN".into()],
            ..Default::default()
        };
        let err = runtime_spec(&c, &image(), &user, "/x").expect_err("unknown capability");
        assert!(err.contains("capabilities.add: \"NET_ADMN\""), "{err}");
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
