//! Pod network namespaces: one per pod, shared by its containers, with loopback up, and (when
//! the node has a pod range) an address on the node's pod bridge. Made with iproute2's
//! `ip`, so they are visible to `ip netns` on the node and survive the agent; no iptables.

use crate::error::{Error, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `ip netns` keeps the namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// Runs iproute2's `ip` with `args`; its stderr becomes the error.
pub fn ip(args: &[&str]) -> std::result::Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e} (is iproute2 installed?)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs `lines` through one `ip -batch` (in the namespace `netns`, if given): one process
/// for several changes, each `ip` costing a couple of milliseconds to start. It stops at the
/// first that fails, whose error it returns.
pub fn ip_batch(netns: Option<&str>, lines: &[String]) -> std::result::Result<(), String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ip: {e} (is iproute2 installed?)"))?;
    let script = lines.join("\n") + "\n";
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let out = child.wait_with_output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() && written.is_ok() {
        Ok(())
    } else {
        // `ip` names the line that failed as `Command failed -:N`.
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        let failed = (text.lines())
            .find_map(|l| l.strip_prefix("Command failed -:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .and_then(|n| lines.get(n.checked_sub(1)?));
        let said: Vec<&str> = (text.lines())
            .filter(|l| !l.starts_with("Command failed"))
            .collect();
        Err(match failed {
            Some(line) => format!("ip {line}: {}", said.join("; ")),
            None => format!("ip -batch: {}", said.join("; ")),
        })
    }
}

/// Creates the namespace (or keeps the one already there) with loopback up.
pub fn create(name: &str) -> Result<PathBuf> {
    let p = path(name);
    if !p.exists() {
        ip(&["netns", "add", name]).map_err(|m| Error::Start {
            id: name.to_string(),
            message: format!("creating the pod's network namespace: {m}"),
        })?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"]).map_err(|m| Error::Start {
        id: name.to_string(),
        message: format!("bringing up loopback: {m}"),
    })?;
    Ok(p)
}

/// Whether this network namespace has the interface `name` (`/proc/self/net/dev` is the
/// reader's namespace, as `/sys/class/net` is not when entered with nsenter).
fn has_link(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/net/dev").is_ok_and(|dev| {
        dev.lines()
            .any(|l| l.trim_start().split(':').next() == Some(name))
    })
}

/// Removes the namespace; gone already is fine.
pub fn delete(name: &str) {
    if path(name).exists() {
        if let Err(m) = ip(&["netns", "delete", name]) {
            tracing::warn!(netns = name, error = %m, "cannot remove a pod network namespace");
        }
    }
}

/// An IPv4 subnet, `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Subnet, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/len)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: a pod range needs a prefix from /8 to /30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Subnet {
    /// The node's own address on the pod bridge: the first of the range.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// The addresses pods may get: after the gateway, before the broadcast address.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.base) + 2;
        let last = u32::from(self.base) + (1u32 << (32 - self.prefix)) - 2;
        (first..=last).map(Ipv4Addr::from)
    }
}

/// Pod networking on one node: a Linux bridge holding the node's pod range, and for each pod a
/// veth pair from the bridge to `eth0` in the pod's namespace, with an address from the range
/// (recorded on disk, so a restarted agent keeps it) and a default route via the bridge.
pub struct PodNetwork {
    bridge: String,
    subnet: Subnet,
    leases: PathBuf,
    /// Where what the node changed on the host is kept for `shoal reset` (the data dir).
    state_dir: PathBuf,
    lock: std::sync::Mutex<()>,
    /// Whether the bridge is known to be there: it is made by the first pod that needs it,
    /// so a node that runs no OCI pod changes nothing in the host's network.
    bridge_up: std::sync::atomic::AtomicBool,
}

fn net_err(what: &str, m: String) -> Error {
    Error::Start {
        id: what.to_string(),
        message: m,
    }
}

impl PodNetwork {
    /// The network of a node's pods: `bridge` holding `subnet`, leases under `data_dir`.
    pub fn new(bridge: &str, subnet: Subnet, data_dir: &Path) -> Result<PodNetwork> {
        let leases = data_dir
            .join("ipam")
            .join(subnet.to_string().replace('/', "_"));
        std::fs::create_dir_all(&leases).map_err(|e| Error::io(&leases, e))?;
        Ok(PodNetwork {
            bridge: bridge.to_string(),
            subnet,
            leases,
            state_dir: data_dir.to_path_buf(),
            lock: std::sync::Mutex::new(()),
            bridge_up: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Makes (or finds) the bridge with the range's gateway address, up.
    fn ensure_bridge(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.bridge_up.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Pods start at once: one of them makes the bridge, the others find it.
        let _held = self
            .lock
            .lock()
            .map_err(|_| Error::Internal("ipam lock poisoned".into()))?;
        if self.bridge_up.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (bridge, subnet) = (self.bridge.as_str(), self.subnet);
        if ip(&["link", "show", bridge]).is_err() {
            ip(&["link", "add", bridge, "type", "bridge"])
                .map_err(|m| net_err(bridge, format!("creating the pod bridge: {m}")))?;
        }
        let gateway = format!("{}/{}", subnet.gateway(), subnet.prefix);
        let shown = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        if !shown.contains(&format!(" {gateway} ")) {
            ip(&["addr", "add", &gateway, "dev", bridge])
                .map_err(|m| net_err(bridge, format!("addressing the pod bridge: {m}")))?;
        }
        ip(&["link", "set", bridge, "up"])
            .map_err(|m| net_err(bridge, format!("bringing up the pod bridge: {m}")))?;
        // Without it pods reach their node and the cluster's Services, not beyond: a pod
        // still starts, and the node says why in its log.
        if let Err(e) = crate::oci::nat::ensure(bridge, subnet, &self.state_dir) {
            tracing::warn!(error = %e, "pods on this node cannot reach beyond it");
        }
        self.bridge_up.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The address leased to `owner`, leasing a free one if it has none.
    fn lease(&self, owner: &str) -> Result<Ipv4Addr> {
        let _held = self
            .lock
            .lock()
            .map_err(|_| Error::Internal("ipam lock poisoned".into()))?;
        for addr in self.subnet.pod_addresses() {
            let file = self.leases.join(addr.to_string());
            match std::fs::read_to_string(&file) {
                Ok(holder) if holder == owner => return Ok(addr),
                Ok(_) => continue,
                Err(_) => {}
            }
        }
        for addr in self.subnet.pod_addresses() {
            let file = self.leases.join(addr.to_string());
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                std::io::Write::write_all(&mut f, owner.as_bytes())
                    .map_err(|e| Error::io(&file, e))?;
                return Ok(addr);
            }
        }
        Err(net_err(
            owner,
            format!("the node's pod range {} is full", self.subnet),
        ))
    }

    /// Creates the pod's namespace `netns` (owned by `owner`, the pod's uid), if it is not
    /// there, with loopback up and its `eth0` on the bridge; returns its address. Done
    /// already (after an agent restart) is fine. Two `ip` processes: the namespace with the
    /// node's end of the veth, then the pod's end.
    pub fn attach(&self, netns: &str, owner: &str) -> Result<Ipv4Addr> {
        self.ensure_bridge()?;
        let addr = self.lease(owner)?;
        use sha2::Digest;
        let host_end = format!(
            "shv{}",
            &hex::encode(sha2::Sha256::digest(netns.as_bytes()))[..12]
        );
        // The pair goes with the pod's namespace: the node's end there means the pod's is.
        if has_link(&host_end) && path(netns).exists() {
            return Ok(addr);
        }
        let gateway = self.subnet.gateway();
        let cidr = format!("{addr}/{}", self.subnet.prefix);
        let mut host = Vec::new();
        if !path(netns).exists() {
            host.push(format!("netns add {netns}"));
        }
        host.extend([
            format!("link add {host_end} type veth peer name eth0 netns {netns}"),
            format!("link set {host_end} master {} up", self.bridge),
        ]);
        let pod = [
            "link set lo up".to_string(),
            format!("addr add {cidr} dev eth0"),
            "link set eth0 up".to_string(),
            format!("route add default via {gateway}"),
        ];
        let made = ip_batch(None, &host)
            .map_err(|m| format!("the node's end: {m}"))
            .and_then(|_| ip_batch(Some(netns), &pod).map_err(|m| format!("the pod's end: {m}")));
        if let Err(m) = made {
            // Half made is not made: the next try starts again.
            let _ = ip(&["link", "delete", &host_end]);
            return Err(net_err(netns, m));
        }
        Ok(addr)
    }

    /// Returns the pod's address to the range (its veth went with its namespace).
    pub fn release(&self, owner: &str) {
        let Ok(_held) = self.lock.lock() else { return };
        if let Ok(entries) = std::fs::read_dir(&self.leases) {
            for e in entries.flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|h| h == owner) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_that_fails_names_the_line() {
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!(
                "SKIPPED a_batch_that_fails_names_the_line: no ip (apt-get install iproute2)"
            );
            return;
        }
        let lines = [
            "link show lo".to_string(),
            "link set shoal-nosuch0 up".to_string(),
        ];
        let err = ip_batch(None, &lines).unwrap_err();
        assert!(err.starts_with("ip link set shoal-nosuch0 up: "), "{err}");
        assert!(err.contains("shoal-nosuch0"), "{err}");
        assert!(has_link("lo") && !has_link("shoal-nosuch0"));
    }

    #[test]
    fn subnets_parse_and_give_pod_addresses() {
        let s: Subnet = "10.42.3.7/24".parse().expect("cidr");
        assert_eq!(s.to_string(), "10.42.3.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let all: Vec<Ipv4Addr> = s.pod_addresses().collect();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(all[252], Ipv4Addr::new(10, 42, 3, 254));
        assert!("10.42.3.0".parse::<Subnet>().is_err());
        assert!("10.42.3.0/31".parse::<Subnet>().is_err());
    }
}
