//! Everything a pod's containers need, resolved before any of them runs: volumes, the
//! executor, the sandbox, images, env, argv, mounts and security settings. A failure names
//! the waiting reason the pod reports (CreateContainerConfigError, ErrImagePull, ...).

use super::sandbox::{self, Sandbox};
use super::sources::{env_sources, fs_group, projected_files, volume_files, write_volume_files};
use super::{client, container_key, events::event, image::container_image, Inner};
use shoal_api::{Pod, RuntimeClass};
use shoal_runtime::oci::{Runc, RuncRuntime};
use shoal_runtime::{ContainerSpec, Mount, Network, Security, Workload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a pod cannot start yet: the waiting reason it reports, and the message.
pub(super) type NotReady = (String, String);

/// Everything a container needs from the pod, resolved: artifact paths, env and mounts, and
/// the executor that runs it.
pub(super) struct Prepared {
    /// The init containers, in order.
    pub init: Vec<ToRun>,
    pub specs: Vec<ToRun>,
    /// The manifest digests of its container images.
    pub images: Vec<String>,
    /// The pod's address on the node's pod bridge.
    pub pod_ip: Option<std::net::Ipv4Addr>,
    /// How long its sandbox (network namespace, veth, address) took to make, beside the rest
    /// of its preparing.
    pub sandbox_time: std::time::Duration,
}

/// One container, resolved, and the executor that runs it.
pub(super) struct ToRun {
    pub spec: ContainerSpec,
    pub workload: Arc<dyn Workload>,
    /// Its subPaths, resolved at each start.
    pub subpaths: Vec<crate::subpath::Pending>,
}

fn config_error(m: String) -> NotReady {
    ("CreateContainerConfigError".to_string(), m)
}

fn create_error(m: impl std::fmt::Display) -> NotReady {
    ("CreateContainerError".to_string(), m.to_string())
}

/// Resolves everything the pod's containers need, in the pod's directory `dir`. The pod's
/// network namespace is made beside the rest, and ready when this returns, failed or not.
pub(super) async fn prepare(inner: &Inner, pod: &Pod, dir: &Path) -> Result<Prepared, NotReady> {
    std::fs::create_dir_all(dir.join("logs")).map_err(create_error)?;
    let runc = executor(inner, pod)?;
    // The pod's network: its own namespace (with an address on the node's pod bridge when the
    // node has a pod range), or the node's.
    let pending = match &runc {
        Some(_) if !pod.spec.host_network => Some(sandbox::begin(inner, pod, dir).await?),
        _ => None,
    };
    let rest = prepare_containers(
        inner,
        pod,
        dir,
        runc.as_ref(),
        pending.as_ref().map(|p| &p.sandbox),
    )
    .await;
    let sandbox = match pending {
        Some(p) => Some(p.ready(inner, pod).await),
        None => None,
    };
    let mut prepared = rest?;
    if let Some(made) = sandbox {
        prepared.sandbox_time = made?.1;
    }
    Ok(prepared)
}

/// The pod's volumes, devices and its containers' specs, with `sandbox` its network.
async fn prepare_containers(
    inner: &Inner,
    pod: &Pod,
    dir: &Path,
    runc: Option<&Arc<RuncRuntime>>,
    sandbox: Option<&Sandbox>,
) -> Result<Prepared, NotReady> {
    let volumes = volumes(inner, pod, dir).await?;
    let devices = inner.devices.allocate(pod).map_err(create_error)?;
    // Its NetworkPolicy's rules are known before anything of it runs.
    let policies = inner.proxy.policies();
    if !(policies.wait_for(&pod.metadata.uid, crate::policy::RULES_WAIT)).await {
        tracing::warn!(pod = %pod.metadata.name, "NetworkPolicies are in force but this pod's rules have not come; starting it without them");
    }
    let placement = placement(inner, pod, sandbox.and_then(|s| s.ip));
    let mut prepared = Prepared {
        init: Vec::new(),
        specs: Vec::new(),
        images: Vec::new(),
        pod_ip: sandbox.and_then(|s| s.ip),
        sandbox_time: std::time::Duration::ZERO,
    };
    let pod_ctx = PodContext {
        inner,
        pod,
        dir,
        runc,
        sandbox,
        volumes: &volumes,
        devices: &devices,
        placement: &placement,
    };
    for c in &pod.spec.init_containers {
        let (to_run, image) = pod_ctx.container(c).await?;
        prepared.images.extend(image);
        prepared.init.push(to_run);
    }
    for c in &pod.spec.containers {
        let (to_run, image) = pod_ctx.container(c).await?;
        prepared.images.extend(image);
        prepared.specs.push(to_run);
    }
    Ok(prepared)
}

/// The pod's volumes, made under `dir` (ConfigMap and Secret ones with their files), by name.
async fn volumes(
    inner: &Inner,
    pod: &Pod,
    dir: &Path,
) -> Result<HashMap<String, PathBuf>, NotReady> {
    let ns = pod.metadata.namespace_or_default();
    let fs_group = fs_group(pod);
    let mut paths = HashMap::new();
    for v in &pod.spec.volumes {
        let failed = |e: std::io::Error| config_error(format!("volume {}: {e}", v.name));
        let path = if let Some(h) = &v.host_path {
            crate::host_path::prepare(Path::new(&h.path), h.type_.as_deref())
                .map_err(|m| config_error(format!("volume {}: {m}", v.name)))?;
            PathBuf::from(&h.path)
        } else if let Some(c) = &v.persistent_volume_claim {
            let p = super::claims::claim_dir(inner, ns, &c.claim_name)
                .await
                .map_err(|m| config_error(format!("volume {}: {m}", v.name)))?;
            if let Some(gid) = fs_group {
                // A local volume's ownership is managed, as Kubernetes does for local PVs:
                // what the pod (and the pods before it) wrote becomes fsGroup's.
                own_by_group(&p, gid, c.read_only).map_err(failed)?;
            }
            p
        } else {
            let mut p = dir.join("volumes").join(&v.name);
            if v.secret.is_some() || v.projected.as_ref().is_some_and(|p| p.has_secret()) {
                // A Secret's files never touch the node's disk.
                p = crate::secret_volume::prepare(&p, &pod.metadata.uid, &v.name)
                    .map_err(failed)?;
            } else {
                std::fs::create_dir_all(&p).map_err(failed)?;
                if v.empty_dir.is_some() {
                    // Writable by whoever the containers run as, as the kubelet makes it.
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                        .map_err(failed)?;
                }
            }
            let at = crate::env::Placement {
                allocatable: crate::node::allocatable(),
                ..Default::default()
            };
            let files = match (&v.downward_api, &v.projected) {
                (Some(d), _) => crate::volume::downward_files(d, pod, &at)
                    .map_err(|m| config_error(format!("volume {}: {m}", v.name)))?,
                (None, Some(p)) => projected_files(inner, pod, p, &at)
                    .await
                    .map_err(|(r, m)| (r, format!("volume {}: {m}", v.name)))?,
                (None, None) => volume_files(inner, ns, v).await?,
            };
            write_volume_files(&p, &files).map_err(failed)?;
            if let Some(gid) = fs_group {
                // An emptyDir is the pod's to write; projected files are read-only.
                own_by_group(&p, gid, v.empty_dir.is_none()).map_err(failed)?;
            }
            p
        };
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

/// Gives group `gid` the volume at `dir`, as the kubelet does for `fsGroup`: every file and
/// directory owned by the group, files group-readable (and writable unless `read_only`),
/// directories group-searchable and setgid, so what the pod creates there stays the group's.
fn own_by_group(dir: &Path, gid: u32, read_only: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mask = if read_only { 0o440 } else { 0o660 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        std::os::unix::fs::lchown(&path, None, Some(gid))?;
        let mode = meta.permissions().mode() & 0o7777;
        let mode = if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
            mode | mask | 0o110 | 0o2000
        } else {
            mode | mask
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The OCI executor for a runc pod (`None` for a wasm pod); a runc pod on a node without runc
/// cannot start.
fn executor(inner: &Inner, pod: &Pod) -> Result<Option<Arc<RuncRuntime>>, NotReady> {
    match (pod.runtime_class(), &inner.runc) {
        (RuntimeClass::Wasm, _) => Ok(None),
        (RuntimeClass::Runc, Some(r)) => Ok(Some(r.clone())),
        (RuntimeClass::Runc, None) => Err(create_error(
            "this node cannot run OCI containers (no runc, or the agent is not root); \
             set runtimeClassName: wasm for a wasm pod",
        )),
    }
}

/// What `fieldRef` reads: the node, the pod's address (its node's for wasm and hostNetwork
/// pods) and the node's.
fn placement(
    inner: &Inner,
    pod: &Pod,
    pod_ip: Option<std::net::Ipv4Addr>,
) -> crate::env::Placement {
    let host_ip = client(inner)
        .and_then(|c| crate::node::source_ip(c.connection().remote_address()))
        .map(|ip| ip.to_string())
        .or_else(|| pod.status.as_ref().and_then(|s| s.host_ip.clone()));
    crate::env::Placement {
        node: inner.node.clone(),
        pod_ip: match pod_ip {
            Some(ip) => Some(ip.to_string()),
            None => host_ip.clone(),
        },
        host_ip,
        allocatable: crate::node::allocatable(),
    }
}

/// What every container of a pod is prepared with.
struct PodContext<'a> {
    inner: &'a Inner,
    pod: &'a Pod,
    dir: &'a Path,
    runc: Option<&'a Arc<RuncRuntime>>,
    sandbox: Option<&'a Sandbox>,
    volumes: &'a HashMap<String, PathBuf>,
    /// The host devices the pod holds.
    devices: &'a crate::devices::Held,
    placement: &'a crate::env::Placement,
}

impl PodContext<'_> {
    /// The container's volume mounts, at their volumes' roots; a subPath (subPathExpr
    /// expanded with `env`) is left to be resolved when the container starts.
    fn mounts(
        &self,
        c: &shoal_api::Container,
        env: &[(String, String)],
    ) -> Result<(Vec<Mount>, Vec<crate::subpath::Pending>), NotReady> {
        let mut mounts = Vec::new();
        let mut subpaths = Vec::new();
        for m in &c.volume_mounts {
            let Some(root) = self.volumes.get(&m.name) else {
                continue;
            };
            let sub = match (m.sub_path.as_deref(), m.sub_path_expr.as_deref()) {
                (Some(s), _) if !s.is_empty() => Some(s.to_string()),
                (_, Some(e)) if !e.is_empty() => {
                    Some(crate::subpath::expand(e, env).map_err(config_error)?)
                }
                _ => None,
            };
            if let Some(sub) = sub {
                let at = self.dir.join("subpaths").join(&c.name);
                subpaths.push(crate::subpath::Pending {
                    mount: mounts.len(),
                    root: root.clone(),
                    sub,
                    bind_at: self.runc.map(|_| at.join(mounts.len().to_string())),
                });
            }
            // ConfigMap, Secret, downwardAPI and projected volumes are the node's to write:
            // mounted read-only whatever the mount says, as the kubelet mounts them.
            // A claim mounted readOnly is read-only in every container.
            let projected = self.pod.spec.volumes.iter().any(|v| {
                v.name == m.name
                    && (v.config_map.is_some()
                        || v.secret.is_some()
                        || v.downward_api.is_some()
                        || v.projected.is_some()
                        || v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.read_only))
            });
            mounts.push(Mount {
                host_path: root.clone(),
                guest_path: m.mount_path.clone(),
                read_only: m.read_only || projected,
            });
        }
        Ok((mounts, subpaths))
    }

    /// The host devices the container gets from what its pod holds: for OCI in the spec (runc
    /// makes them); for wasm, which has no device files of its own, as nodes in a directory
    /// of its pod's mounted at /dev.
    fn devices(
        &self,
        c: &shoal_api::Container,
        mounts: &mut Vec<Mount>,
    ) -> Result<Vec<shoal_runtime::Device>, NotReady> {
        let devices = self
            .inner
            .devices
            .for_container(self.pod, self.devices, &c.name)
            .map_err(create_error)?;
        if self.runc.is_some() || devices.is_empty() {
            return Ok(devices);
        }
        let at = self.dir.join("devices").join(&c.name);
        crate::devices::make_nodes(&at, &devices).map_err(create_error)?;
        mounts.push(Mount {
            host_path: at,
            guest_path: "/dev".into(),
            read_only: false,
        });
        Ok(Vec::new())
    }

    /// One container, resolved: its image fetched and checked, its env, argv and mounts; and
    /// the digest of its OCI image.
    async fn container(
        &self,
        c: &shoal_api::Container,
    ) -> Result<(ToRun, Option<String>), NotReady> {
        let (inner, pod) = (self.inner, self.pod);
        let ns = pod.metadata.namespace_or_default().to_string();
        let client = client(inner);
        let got = container_image(inner, pod, &ns, c, client.as_deref(), self.runc).await?;
        let pulled = if got.present {
            format!("Container image {:?} already present on machine", c.image)
        } else {
            format!("Successfully pulled image {:?}", c.image)
        };
        event(inner, pod, "Normal", "Pulled", pulled).await;
        let (artifact, image) = (got.path, got.digest);
        let workload: Arc<dyn Workload> = match self.runc {
            Some(r) => Arc::new(Runc(r.clone())),
            None => inner.wasm.clone(),
        };
        let (w, check) = (workload.clone(), artifact.clone());
        tokio::task::spawn_blocking(move || w.prepare(&check))
            .await
            .map_err(create_error)?
            .map_err(create_error)?;
        // The Services of the pod's namespace first, so the container's own env wins.
        let services = crate::proxy::service_env(&inner.proxy.services_in(&ns));
        let sources = env_sources(inner, &ns, c).await?;
        let env = crate::env::container_env(c, pod, self.placement, services, &sources)
            .map_err(config_error)?;
        if !env.skipped.is_empty() {
            let message = format!(
                "Keys [{}] from the EnvFrom of container {:?} were skipped since they are invalid environment variable names",
                env.skipped.join(", "),
                c.name
            );
            event(
                inner,
                pod,
                "Warning",
                "InvalidEnvironmentVariableNames",
                message,
            )
            .await;
        }
        let (command, args) = crate::env::command_line(c, &env);
        let mut argv: Vec<String> = if command.is_empty() {
            vec![c.name.clone()]
        } else {
            command.clone()
        };
        argv.extend(args.iter().cloned());
        let (mut mounts, subpaths) = self.mounts(c, &env.vars)?;
        let devices = self.devices(c, &mut mounts)?;
        let network = match (self.runc, self.sandbox) {
            (None, _) => Network::Isolated,
            (Some(_), None) => Network::Host,
            (Some(_), Some(sandbox)) => {
                mounts.extend(sandbox.etc.iter().cloned());
                Network::Pod(sandbox.netns.clone())
            }
        };
        let spec = ContainerSpec {
            id: format!("{ns}/{}/{}", pod.metadata.name, c.name),
            key: container_key(pod, &c.name),
            artifact,
            argv,
            command,
            args,
            cpu_request_millis: millis(c.resources.requests.get("cpu")),
            pids_limit: None,
            security: security(
                pod.spec.security_context.as_ref(),
                c.security_context.as_ref(),
                &inner.data_dir.join("seccomp"),
            )
            .map_err(config_error)?,
            network,
            hostname: pod
                .spec
                .hostname
                .clone()
                .unwrap_or_else(|| pod.metadata.name.clone()),
            env: env.vars,
            working_dir: c.working_dir.clone(),
            mounts,
            memory_limit: c
                .resources
                .limits
                .get("memory")
                .map(|q| q.value().max(0) as u64),
            cpu_limit_millis: millis(c.resources.limits.get("cpu")),
            log_path: self.dir.join("logs").join(format!("{}.log", c.name)),
            held: Vec::new(),
            devices,
            // Wasm pods resolve the cluster's names through the proxy.
            resolver: self.runc.is_none().then(|| {
                let proxy = inner.proxy.clone();
                shoal_runtime::Resolver(Arc::new(move |name: &str| proxy.resolve(name, &ns)))
            }),
            egress: self.runc.is_none().then(|| wasm_egress(inner, pod)),
            ports: c
                .ports
                .iter()
                .filter_map(|p| {
                    Some(shoal_runtime::Port {
                        port: u16::try_from(p.container_port).ok()?,
                        udp: p.protocol.as_deref() == Some("UDP"),
                    })
                })
                .collect(),
        };
        Ok((
            ToRun {
                spec,
                workload,
                subpaths,
            },
            image,
        ))
    }
}

fn millis(q: Option<&shoal_api::Quantity>) -> Option<u64> {
    q.map(|q| q.milli_value().max(0) as u64)
}

/// A container's securityContext as the runtime takes it, over the pod's: the container's
/// user, group, runAsNonRoot and seccompProfile win where it sets them; the pod's
/// supplementalGroups, fsGroup and sysctls hold for every container. Ids must fit in 32 bits.
/// A Localhost seccomp profile is a file under `seccomp_dir` (the kubelet's is
/// `/var/lib/kubelet/seccomp`).
pub(super) fn security(
    pod: Option<&shoal_api::PodSecurityContext>,
    sc: Option<&shoal_api::SecurityContext>,
    seccomp_dir: &Path,
) -> std::result::Result<Security, String> {
    let id = |what: &str, v: Option<i64>| {
        v.map(|n| {
            u32::try_from(n).map_err(|_| format!("securityContext.{what} {n} is not a valid id"))
        })
        .transpose()
    };
    let pod_default = shoal_api::PodSecurityContext::default();
    let p = pod.unwrap_or(&pod_default);
    let c_default = shoal_api::SecurityContext::default();
    let c = sc.unwrap_or(&c_default);
    let mut groups = Vec::new();
    for g in p.supplemental_groups.iter().chain(&p.fs_group) {
        groups.push(id("supplementalGroups", Some(*g))?.unwrap_or_default());
    }
    let seccomp = c.seccomp_profile.as_ref().or(p.seccomp_profile.as_ref());
    let caps = |f: fn(&shoal_api::Capabilities) -> &Vec<String>| {
        c.capabilities.as_ref().map(f).cloned().unwrap_or_default()
    };
    Ok(Security {
        run_as_user: id("runAsUser", c.run_as_user.or(p.run_as_user))?,
        run_as_group: id("runAsGroup", c.run_as_group.or(p.run_as_group))?,
        run_as_non_root: c.run_as_non_root.or(p.run_as_non_root).unwrap_or(false),
        read_only_root_filesystem: c.read_only_root_filesystem.unwrap_or(false),
        privileged: c.privileged.unwrap_or(false),
        allow_privilege_escalation: c.allow_privilege_escalation.unwrap_or(false),
        capabilities_add: caps(|c| &c.add),
        capabilities_drop: caps(|c| &c.drop),
        supplemental_groups: groups,
        sysctls: p
            .sysctls
            .iter()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
        seccomp_unconfined: seccomp.is_some_and(|s| s.type_ == "Unconfined"),
        seccomp_localhost: match seccomp {
            Some(s) if s.type_ == "Localhost" => {
                let file = s.localhost_profile.as_deref().unwrap_or_default();
                shoal_api::validate::check_relative_path(file)
                    .map_err(|e| format!("seccompProfile.localhostProfile {e}"))?;
                Some(seccomp_dir.join(file))
            }
            _ => None,
        },
    })
}

/// A wasm pod's connections out, held to its NetworkPolicy's egress.
fn wasm_egress(inner: &Inner, pod: &Pod) -> shoal_runtime::Egress {
    let proxy = inner.proxy.clone();
    let uid = pod.metadata.uid.clone();
    shoal_runtime::Egress(Arc::new(move |addr, udp| {
        proxy.wasm_egress_allowed(&uid, addr, udp)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{PodSecurityContext, SeccompProfile, SecurityContext};

    #[test]
    fn a_containers_security_is_its_own_over_the_pods() {
        let dir = Path::new("/var/lib/shoal/seccomp");
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(1000),
            run_as_non_root: Some(true),
            supplemental_groups: vec![44],
            fs_group: Some(2000),
            sysctls: vec![shoal_api::Sysctl {
                name: "net.ipv4.ip_unprivileged_port_start".into(),
                value: "0".into(),
            }],
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
        };
        let s = security(Some(&pod), None, dir).unwrap();
        assert_eq!((s.run_as_user, s.run_as_group), (Some(1000), Some(1000)));
        assert!(s.run_as_non_root && s.seccomp_unconfined);
        assert_eq!(s.supplemental_groups, vec![44, 2000]);
        assert_eq!(s.sysctls.len(), 1);
        let own = SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        };
        let s = security(Some(&pod), Some(&own), dir).unwrap();
        assert_eq!((s.run_as_user, s.run_as_group), (Some(0), Some(1000)));
        assert!(!s.run_as_non_root && !s.seccomp_unconfined);
        assert_eq!(
            s.supplemental_groups,
            vec![44, 2000],
            "the pod's groups hold"
        );
        assert_eq!(security(None, None, dir).unwrap(), Security::default());
        let local = SecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("profiles/audit.json".into()),
            }),
            ..Default::default()
        };
        let s = security(Some(&pod), Some(&local), dir).unwrap();
        assert!(!s.seccomp_unconfined, "the container's profile wins");
        assert_eq!(
            s.seccomp_localhost.as_deref(),
            Some(dir.join("profiles/audit.json").as_path())
        );
        let bad = PodSecurityContext {
            fs_group: Some(-1),
            ..Default::default()
        };
        assert!(security(Some(&bad), None, dir).unwrap_err().contains("-1"));
    }
}
