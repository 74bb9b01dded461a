//! `shoal reset`: what an agent changed on its host, undone, as `kubeadm reset` and K3s'
//! uninstall script do. An agent stop leaves its OCI containers running for the next agent
//! (an upgrade is no downtime), so removing Shoal from a device needs this: the containers
//! (and their wrappers) stopped, the pods' network namespaces, the pod bridge, the TUN device and the pods'
//! nftables table removed (IPv4 forwarding put back as it was),
//! everything mounted beneath the data dir unmounted, then the data dir itself removed (the
//! node's identity with it) unless it is kept.

use crate::error::{Error, Result};
use shoal_runtime::oci::netns;
use std::path::{Path, PathBuf};

/// What a reset found and undid.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Undone {
    /// OCI containers stopped and removed.
    pub containers: Vec<String>,
    /// Pod network namespaces removed.
    pub namespaces: Vec<String>,
    /// File systems unmounted beneath the data dir.
    pub unmounted: Vec<PathBuf>,
    /// Whether the pod bridge was there and is gone.
    pub bridge: bool,
    /// Whether the node's TUN device (pods' packets to other nodes, and the routes through
    /// it) was there and is gone.
    pub tun: bool,
    /// Whether Shoal's nftables table (the pods' outbound NAT) was there and is gone; IPv4
    /// forwarding is put back as it was before the node switched it on.
    pub nat: bool,
    /// Whether the data dir is gone.
    pub data_removed: bool,
}

/// Undoes what an agent with `data_dir` and pod bridge `bridge` did; the data dir stays when
/// `keep_data`. Refused while an agent runs with the data dir. Each step goes on past what is
/// already gone, so a reset that stopped halfway can be run again.
pub fn reset(data_dir: &Path, bridge: &str, keep_data: bool) -> Result<Undone> {
    crate::local::ensure_unused(data_dir)?;
    let mut undone = Undone {
        containers: stop_containers(data_dir)?,
        ..Undone::default()
    };
    remove_network(data_dir, bridge, &mut undone)?;
    undone.unmounted = unmount_beneath(data_dir)?;
    if !keep_data && data_dir.exists() {
        std::fs::remove_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        undone.data_removed = true;
    }
    Ok(undone)
}

/// Removes what the node made in the host's network: its pods' network namespaces, Shoal's
/// nftables table (forwarding put back as it was) and the pod bridge. What `shoal reset` does
/// to the network, and what a stop with `--cleanup` does once its pods are stopped.
pub fn remove_network(data_dir: &Path, bridge: &str, undone: &mut Undone) -> Result<()> {
    for uid in dir_names(&data_dir.join("pods")) {
        let name = format!("shoal-{uid}");
        if netns::path(&name).exists() {
            netns::delete(&name);
            undone.namespaces.push(name);
        }
    }
    undone.nat = shoal_runtime::oci::nat::remove(bridge, data_dir)?;
    // The device goes with the agent's process; a stop with `--cleanup` removes it before
    // the process ends, and the routes through it go with it.
    let tun = shoal_runtime::oci::tun::name_for(bridge);
    if netns::ip(&["link", "show", &tun]).is_ok() {
        netns::ip(&["link", "delete", &tun])
            .map_err(|m| Error::Config(format!("removing the TUN device {tun}: {m}")))?;
        undone.tun = true;
    }
    if netns::ip(&["link", "show", bridge]).is_ok() {
        netns::ip(&["link", "delete", bridge])
            .map_err(|m| Error::Config(format!("removing the pod bridge {bridge}: {m}")))?;
        undone.bridge = true;
    }
    Ok(())
}

/// [`remove_network`] as a stop with `--cleanup` does it, once the pods are stopped: what it
/// removed, or why it could not, said in the log.
pub fn clean_up_network(data_dir: &Path, bridge: &str) {
    let mut undone = Undone::default();
    match remove_network(data_dir, bridge, &mut undone) {
        Ok(()) => tracing::info!(
            bridge = undone.bridge,
            tun = undone.tun,
            nftables = undone.nat,
            namespaces = undone.namespaces.len(),
            "removed what this node made in the host's network"
        ),
        Err(e) => {
            tracing::warn!(error = %shoal_transport::report(&e), "cannot remove what this node made in the host's network; `shoal reset` does it")
        }
    }
}

/// Stops and removes every container runc holds under the data dir (the wrapper that ran each
/// ends with it). Needs runc and root only when there are containers.
fn stop_containers(data_dir: &Path) -> Result<Vec<String>> {
    if dir_names(&data_dir.join("runc")).is_empty() {
        return Ok(Vec::new());
    }
    let runc = shoal_runtime::oci::find_runc().map_err(|why| {
        Error::Config(format!(
            "{} holds OCI containers, which cannot be stopped: {why}",
            data_dir.display()
        ))
    })?;
    let images = std::sync::Arc::new(shoal_runtime::oci::image::ImageStore::new(
        &data_dir.join("images"),
    )?);
    let runtime = shoal_runtime::oci::RuncRuntime::new(runc, data_dir, images)?;
    Ok(runtime.remove_except(&[])?)
}

/// The names of the entries of `dir`; none when it is missing.
fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// Unmounts every file system mounted at or beneath `dir` (Secret volumes, subPath binds,
/// container roots), the deepest first; fails when one stays, so nothing is removed through
/// a mount.
fn unmount_beneath(dir: &Path) -> Result<Vec<PathBuf>> {
    let table = Path::new("/proc/self/mountinfo");
    let read = || std::fs::read_to_string(table).map_err(|e| Error::io(table, e));
    let mut mounts = crate::pod::mount_points_beneath(&read()?, dir);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    for m in &mounts {
        // Detached: a file system busy in a process the reset does not own goes once free.
        if let Err(e) = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH) {
            if e != rustix::io::Errno::INVAL && e != rustix::io::Errno::NOENT {
                return Err(Error::io(m, std::io::Error::from(e)));
            }
        }
    }
    let left = crate::pod::mount_points_beneath(&read()?, dir);
    if !left.is_empty() {
        return Err(Error::Config(format!(
            "still mounted beneath {}: {left:?}",
            dir.display()
        )));
    }
    Ok(mounts)
}
