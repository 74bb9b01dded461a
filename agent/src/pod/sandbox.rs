//! What a pod has beside its containers: its network namespace and address on the pod
//! bridge, the /etc files that go with them, its host ports, and their removal.

use super::prepare::NotReady;
use super::{events::event, netns_name, Inner};
use crate::sync::lock;
use shoal_api::{Pod, RuntimeClass};
use shoal_runtime::oci::netns;
use shoal_runtime::Mount;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A pod's own network: its namespace, its address on the pod bridge (when the node has a
/// pod range), and the /etc files its containers mount.
pub(super) struct Sandbox {
    pub netns: PathBuf,
    pub ip: Option<std::net::Ipv4Addr>,
    pub etc: Vec<Mount>,
}

/// A sandbox being made: what its containers' specs need is known at once (the namespace's
/// path, the address, the /etc files), while the namespace and its veth are made on a thread
/// beside the rest of the pod's preparation; [`Pending::ready`] waits for them.
pub(super) struct Pending {
    pub sandbox: Sandbox,
    plumbing: tokio::task::JoinHandle<Result<std::time::Duration, NotReady>>,
}

fn failed(e: &dyn std::fmt::Display) -> NotReady {
    ("CreateContainerError".to_string(), e.to_string())
}

/// Leases the pod's address, writes its /etc files under `dir`, and starts making its network
/// namespace and attaching it to the pod bridge.
pub(super) async fn begin(inner: &Inner, pod: &Pod, dir: &Path) -> Result<Pending, NotReady> {
    let name = netns_name(pod);
    let uid = pod.metadata.uid.clone();
    let network = lock(&inner.network).clone();
    let leasing = network.clone();
    let ip = tokio::task::spawn_blocking(move || leasing.map(|n| n.address_for(&uid)).transpose())
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&shoal_transport::report(&e)))?;
    let dns = inner.proxy.dns_address();
    let etc = etc_files(pod, dir, ip, dns)
        .map_err(|e| failed(&format!("/etc files: {}", shoal_transport::report(&e))))?;
    let netns = netns::path(&name);
    let plumbing = tokio::task::spawn_blocking(move || {
        let begun = std::time::Instant::now();
        let made = match (network, ip) {
            (Some(n), Some(ip)) => n.connect(&name, ip),
            _ => netns::create(&name).map(drop),
        };
        made.map_err(|e| failed(&shoal_transport::report(&e)))?;
        Ok(begun.elapsed())
    });
    Ok(Pending {
        sandbox: Sandbox { netns, ip, etc },
        plumbing,
    })
}

impl Pending {
    /// Waits for the namespace and its veth, then puts the pod's NetworkPolicy in place: all
    /// of it before any of its containers runs. Returns how long the namespace took to make.
    pub async fn ready(
        self,
        inner: &Inner,
        pod: &Pod,
    ) -> Result<(Sandbox, std::time::Duration), NotReady> {
        let took = self.plumbing.await.map_err(|e| failed(&e))??;
        if self.sandbox.ip.is_some() {
            // The node's first pod with an address of its range: other nodes' pods reach it.
            inner.proxy.start_pod_network(&inner.pod_bridge);
        }
        let policies = inner.proxy.policies().clone();
        let uid = pod.metadata.uid.clone();
        tokio::task::spawn_blocking(move || policies.enforce_new(&uid))
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&format!("writing the pod's NetworkPolicy: {e}")))?;
        Ok((self.sandbox, took))
    }
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf for a pod with its own network, written in
/// the pod's directory and bind-mounted into each container, as the kubelet does.
fn etc_files(
    pod: &Pod,
    dir: &Path,
    ip: Option<std::net::Ipv4Addr>,
    cluster_dns: Option<std::net::Ipv4Addr>,
) -> std::io::Result<Vec<Mount>> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let hostname = pod
        .spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone());
    let own = ip
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.1.1".into());
    // With a subdomain, the pod's full name first, as the kubelet writes it.
    let names = match &pod.spec.subdomain {
        Some(sub) => format!(
            "{hostname}.{sub}.{}.svc.{}\t{hostname}",
            pod.metadata.namespace_or_default(),
            crate::dns::DOMAIN
        ),
        None => hostname.clone(),
    };
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{names}\n"
    );
    // The cluster's resolver when the node knows it (pods' default dnsPolicy, ClusterFirst),
    // else the node's own.
    let resolv = match cluster_dns {
        Some(dns) if pod.spec.dns_policy.as_deref() != Some("Default") => {
            crate::dns::resolv_conf(dns, pod.metadata.namespace_or_default())
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    let mut mounts = Vec::new();
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let path = etc.join(name);
        std::fs::write(&path, text)?;
        mounts.push(Mount {
            host_path: path,
            guest_path: format!("/etc/{name}"),
            read_only: false,
        });
    }
    Ok(mounts)
}

/// Forwards each container port with a hostPort from the node to the pod, for as long as the
/// pod lives. A port the node cannot bind is reported as an event, not fatal.
pub(super) async fn publish_host_ports(
    inner: &Arc<Inner>,
    pod: &Pod,
    ip: std::net::Ipv4Addr,
    cancel: &CancellationToken,
) {
    for c in pod.spec.long_running() {
        for p in &c.ports {
            let Some(host_port) = p.host_port.and_then(|h| u16::try_from(h).ok()) else {
                continue;
            };
            let Ok(container_port) = u16::try_from(p.container_port) else {
                continue;
            };
            let udp = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => false,
                "UDP" => true,
                other => {
                    let message =
                        format!("hostPort {host_port}/{other}: only TCP and UDP are forwarded");
                    event(inner, pod, "Warning", "HostPortUnsupported", message).await;
                    continue;
                }
            };
            let host_ip: std::net::IpAddr = p
                .host_ip
                .as_deref()
                .and_then(|h| h.parse().ok())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let listen = std::net::SocketAddr::new(host_ip, host_port);
            let to = std::net::SocketAddr::new(ip.into(), container_port);
            let admit = admit(inner, to, udp);
            let (cancel, tasks) = (cancel.clone(), inner.tracker.clone());
            let bound = if udp {
                (tokio::net::UdpSocket::bind(listen).await).map(|s| {
                    let forward = crate::ports::forward_udp(s, to, admit, cancel, tasks);
                    inner.tracker.spawn(forward)
                })
            } else {
                (tokio::net::TcpListener::bind(listen).await).map(|l| {
                    let forward = crate::ports::forward_tcp(l, to, admit, cancel, tasks);
                    inner.tracker.spawn(forward)
                })
            };
            if let Err(e) = bound {
                let proto = if udp { "UDP" } else { "TCP" };
                let message = format!("hostPort {listen}/{proto} cannot be bound: {e}");
                event(inner, pod, "Warning", "HostPortUnavailable", message).await;
            }
        }
    }
}

/// Who may reach the pod at `to` through a hostPort: the clients its NetworkPolicy ingress
/// lets in (the node forwards from its own address, which the pod's table always takes).
fn admit(inner: &Inner, to: std::net::SocketAddr, udp: bool) -> crate::ports::Admit {
    use shoal_api::policy::Protocol;
    let policies = inner.proxy.policies().clone();
    let protocol = Protocol::of(udp);
    let proxy = inner.proxy.clone();
    Arc::new(move |client| {
        let node = |a| proxy.is_node_address(a);
        policies.connection_allowed(client, to.ip(), to.port(), protocol, &node)
    })
}

/// Removes what a pod had beside its containers: volumes, its network namespace and address.
pub(super) async fn remove_sandbox(inner: &Inner, pod: &Pod, dir: &Path) {
    // subPath binds first: they may show a volume's (or a hostPath's) insides.
    crate::subpath::release(&dir.join("subpaths"));
    crate::secret_volume::release(&dir.join("volumes"), &pod.metadata.uid);
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    if pod.runtime_class() == RuntimeClass::Runc && !pod.spec.host_network {
        let name = netns_name(pod);
        let network = lock(&inner.network).clone();
        let uid = pod.metadata.uid.clone();
        let _ = tokio::task::spawn_blocking(move || {
            netns::delete(&name);
            if let Some(n) = network {
                n.release(&uid);
            }
        })
        .await;
    }
    // Deleted: its logs go with it, as the kubelet's do.
    if !inner
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        let (uid, dir) = (pod.metadata.uid.clone(), dir.to_path_buf());
        let _ = tokio::task::spawn_blocking(move || remove_pod_dir(&uid, &dir)).await;
    }
}

/// Removes what a pod deleted while no agent ran left here (`dir`, its namespace, its
/// address): its subPath binds and Secret volumes are unmounted first, and the directory is
/// removed only once nothing is mounted beneath it, so a removal never reaches into a
/// mounted filesystem.
pub(super) async fn sweep_leftover(inner: &Inner, uid: &str, dir: &Path) {
    crate::subpath::release(&dir.join("subpaths"));
    crate::secret_volume::release(&dir.join("volumes"), uid);
    let name = format!("shoal-{uid}");
    let network = lock(&inner.network).clone();
    let (uid, dir) = (uid.to_string(), dir.to_path_buf());
    let _ = tokio::task::spawn_blocking(move || {
        netns::delete(&name);
        if let Some(n) = network {
            n.release(&uid);
        }
        remove_pod_dir(&uid, &dir);
    })
    .await;
}

/// Removes a deleted pod's directory, once nothing is mounted beneath it.
fn remove_pod_dir(uid: &str, dir: &Path) {
    match mounted_beneath(dir) {
        Ok(mounts) if mounts.is_empty() => match std::fs::remove_dir_all(dir) {
            Ok(()) => tracing::debug!(pod = %uid, "pod directory removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted pod's directory")
            }
        },
        Ok(mounts) => {
            tracing::warn!(dir = %dir.display(), ?mounts, "a deleted pod's directory stays: still mounted beneath it")
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the mount table"),
    }
}

/// The mount points at or beneath `dir`, from this process's mount table.
fn mounted_beneath(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points_beneath(&table, dir))
}

/// The mount points of a mountinfo `table` at or beneath `dir`. The fifth field is the mount
/// point, its space, tab, newline and backslash octal-escaped.
pub(crate) fn mount_points_beneath(table: &str, dir: &Path) -> Vec<PathBuf> {
    let unescape = |p: &str| {
        [
            ("\\040", " "),
            ("\\011", "\t"),
            ("\\012", "\n"),
            ("\\134", "\\"),
        ]
        .iter()
        .fold(p.to_string(), |p, (from, to)| p.replace(from, to))
    };
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_beneath_a_pods_directory_are_found_unescaped() {
        let table = "22 1 8:1 / / rw - ext4 /dev/sda1 rw
97 22 0:50 / /var/lib/shoal/pods/u1/volumes/sec rw - tmpfs tmpfs rw
98 22 8:1 /x /var/lib/shoal/pods/u1/subpaths/my\\040app/0 rw - ext4 /dev/sda1 rw
99 22 8:1 /y /var/lib/shoal/pods/u10/volumes/a rw - ext4 /dev/sda1 rw";
        let found = mount_points_beneath(table, Path::new("/var/lib/shoal/pods/u1"));
        assert_eq!(
            found,
            [
                PathBuf::from("/var/lib/shoal/pods/u1/volumes/sec"),
                PathBuf::from("/var/lib/shoal/pods/u1/subpaths/my app/0"),
            ]
        );
    }
}
