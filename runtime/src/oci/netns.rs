//! Pod network namespaces: one per pod, shared by its containers, with loopback up, and (when
//! the node has a pod range) an address on the node's pod bridge. Made from the agent's own
//! process (a thread unshares and binds its namespace where `ip netns` keeps them; the links,
//! address and route by rtnetlink), so they are visible to `ip netns` on the node and
//! survive the agent; no iptables.

use crate::error::{Error, Result};
use crate::oci::rtnl::Rtnl;
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

/// Makes `/var/run/netns` a shared mount point, as `ip netns` does, so the namespaces bound
/// there are seen from the mount namespaces that share it (runc's, `ip netns exec`'s).
fn shared_run_dir() -> std::io::Result<()> {
    use rustix::io::Errno;
    use rustix::mount::{mount_bind_recursive, mount_change, MountPropagationFlags as P};
    let dir = Path::new("/var/run/netns");
    std::fs::create_dir_all(dir)?;
    match mount_change(dir, P::SHARED | P::REC) {
        Err(Errno::INVAL) => {
            // Not a mount point yet: it becomes one, bound on itself.
            mount_bind_recursive(dir, dir)?;
            Ok(mount_change(dir, P::SHARED | P::REC)?)
        }
        other => Ok(other?),
    }
}

/// A route netlink socket inside the namespace `name`, making the namespace first (as `ip
/// netns add` does: a new one, bound on its file) when `make`. The work is done on a thread
/// of its own, which alone moves into the namespace and ends there; the socket stays in it.
fn socket_in(name: &str, make: bool) -> std::result::Result<Rtnl, String> {
    let file = path(name);
    let work = || -> std::result::Result<Rtnl, String> {
        use rustix::thread::{move_into_link_name_space, LinkNameSpaceType, UnshareFlags};
        if make {
            shared_run_dir().map_err(|e| format!("/var/run/netns: {e}"))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            // SAFETY: only the network namespace is unshared, which touches no memory or file
            // descriptor of the process; this thread alone moves, and ends when done.
            #[allow(unsafe_code)]
            let moved = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) };
            let bound =
                moved.and_then(|()| rustix::mount::mount_bind("/proc/thread-self/ns/net", &file));
            if let Err(e) = bound {
                let _ = std::fs::remove_file(&file);
                return Err(format!(
                    "a new network namespace at {}: {e}",
                    file.display()
                ));
            }
        } else {
            let ns = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(LinkNameSpaceType::Network),
            )
            .map_err(|e| format!("entering {}: {e}", file.display()))?;
        }
        Rtnl::open().map_err(|e| format!("a netlink socket in {name}: {e}"))
    };
    std::thread::scope(|s| match s.spawn(work).join() {
        Ok(made) => made,
        Err(_) => Err(format!("the thread making {name} panicked")),
    })
}

/// Whether a namespace is bound at `file` (an nsfs inode there), not the empty file that an
/// agent stopped between creating it and binding the namespace on it leaves.
fn bound(file: &Path) -> bool {
    rustix::fs::statfs(file).is_ok_and(|s| {
        // NSFS_MAGIC, in the width the platform gives it.
        let nsfs = 0x6e73_6673;
        s.f_type == nsfs
    })
}

/// Whether the namespace `name` is to be made: it is not there, or only its file is, which is
/// removed (entering it would fail with EINVAL on every try, and making it with EEXIST).
fn to_make(name: &str) -> std::result::Result<bool, String> {
    let file = path(name);
    if bound(&file) {
        return Ok(false);
    }
    match std::fs::remove_file(&file) {
        Ok(()) => {
            tracing::warn!(
                netns = name,
                "a namespace file with no namespace on it (the agent stopped while making it) removed; making it again"
            );
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

/// Creates the namespace (or keeps the one already there) with loopback up.
pub fn create(name: &str) -> Result<PathBuf> {
    let p = path(name);
    let made = to_make(name)
        .and_then(|make| socket_in(name, make))
        .and_then(|mut nl| {
            nl.up("lo")
                .map_err(|e| format!("bringing up loopback: {e}"))
        });
    made.map_err(|m| Error::Start {
        id: name.to_string(),
        message: format!("the pod's network namespace: {m}"),
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

/// Removes the namespace, as `ip netns delete` does: its file unmounted (the namespace
/// goes with the last process in it) and removed; gone already is fine.
pub fn delete(name: &str) {
    let p = path(name);
    if !p.exists() {
        return;
    }
    let unmounted = match rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH) {
        // Not a mount point: a file the namespace was never bound on.
        Err(rustix::io::Errno::INVAL) => Ok(()),
        other => other,
    };
    let removed = unmounted
        .map_err(std::io::Error::from)
        .and_then(|()| std::fs::remove_file(&p));
    if let Err(e) = removed {
        tracing::warn!(netns = name, error = %e, "cannot remove a pod network namespace");
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
    /// The leases on disk (address to owner), read once: this agent alone writes them.
    leased: std::sync::Mutex<Option<std::collections::HashMap<Ipv4Addr, String>>>,
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

/// Makes the namespace `netns` (or enters the one there) and its network: loopback up, a
/// veth from the bridge (`host_end` there) to its `eth0`, `addr` on it and the default route
/// via the range's gateway. Half made is not made: the veth goes again on failure, so the
/// next try starts over.
fn plumb(
    netns: &str,
    host_end: &str,
    bridge: &str,
    addr: Ipv4Addr,
    subnet: Subnet,
) -> std::result::Result<(), String> {
    let mut pod = socket_in(netns, to_make(netns)?)?;
    let mut host = Rtnl::open().map_err(|e| format!("a netlink socket: {e}"))?;
    let master = host
        .index(bridge)
        .map_err(|e| format!("the pod bridge {bridge}: {e}"))?;
    let ns = std::fs::File::open(path(netns)).map_err(|e| format!("{netns}: {e}"))?;
    use std::os::fd::AsFd;
    host.add_veth(host_end, master, "eth0", ns.as_fd())
        .map_err(|e| format!("the veth {host_end} to eth0 in {netns}: {e}"))?;
    let cidr = format!("{addr}/{}", subnet.prefix);
    let gateway = subnet.gateway();
    let mut inside = || -> std::result::Result<(), String> {
        pod.up("lo")
            .map_err(|e| format!("bringing up loopback: {e}"))?;
        pod.up("eth0")
            .map_err(|e| format!("bringing up eth0: {e}"))?;
        let eth0 = pod.index("eth0").map_err(|e| format!("eth0: {e}"))?;
        pod.add_address(eth0, addr, subnet.prefix)
            .map_err(|e| format!("adding {cidr} to eth0: {e}"))?;
        pod.add_default_route(gateway)
            .map_err(|e| format!("the default route via {gateway}: {e}"))
    };
    if let Err(m) = inside() {
        let _ = host.delete(host_end);
        return Err(format!("the pod's end: {m}"));
    }
    Ok(())
}

/// The first of the range's pod addresses that nobody holds.
fn first_free(
    subnet: Subnet,
    leased: &std::collections::HashMap<Ipv4Addr, String>,
) -> Option<Ipv4Addr> {
    subnet.pod_addresses().find(|a| !leased.contains_key(a))
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
            leased: std::sync::Mutex::new(None),
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

    /// The leases recorded in the leases directory.
    fn read_leases(&self) -> std::collections::HashMap<Ipv4Addr, String> {
        let entries = std::fs::read_dir(&self.leases)
            .into_iter()
            .flatten()
            .flatten();
        entries
            .filter_map(|e| {
                let addr: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                Some((addr, std::fs::read_to_string(e.path()).ok()?))
            })
            .collect()
    }

    /// The address leased to `owner`, leasing a free one if it has none: one file created
    /// for a new lease, none read (the map of them is kept from the first).
    fn lease(&self, owner: &str) -> Result<Ipv4Addr> {
        let mut held = self
            .leased
            .lock()
            .map_err(|_| Error::Internal("ipam lock poisoned".into()))?;
        let leased = held.get_or_insert_with(|| self.read_leases());
        if let Some((addr, _)) = leased.iter().find(|(_, h)| *h == owner) {
            return Ok(*addr);
        }
        // Each turn leases the address or learns it is taken, so the loop ends.
        while let Some(addr) = first_free(self.subnet, leased) {
            let file = self.leases.join(addr.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, owner.as_bytes())
                        .map_err(|e| Error::io(&file, e))?;
                    leased.insert(addr, owner.to_string());
                    return Ok(addr);
                }
                // Someone else's after all: its holder is learnt, the next is tried.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&file).unwrap_or_default();
                    leased.insert(addr, holder);
                }
                Err(e) => return Err(Error::io(&file, e)),
            }
        }
        Err(net_err(
            owner,
            format!("the node's pod range {} is full", self.subnet),
        ))
    }

    /// The address leased to `owner` (the pod's uid), leasing a free one if it has none; the
    /// bridge is made first if it is not there.
    pub fn address_for(&self, owner: &str) -> Result<Ipv4Addr> {
        self.ensure_bridge()?;
        self.lease(owner)
    }

    /// Connects the pod's namespace `netns` to the bridge with `addr` (from
    /// [`PodNetwork::address_for`]): the namespace made if it is not there, loopback up, its
    /// `eth0` on the bridge. Done already (after an agent restart) is fine. Netlink from this
    /// process: no `ip`.
    pub fn connect(&self, netns: &str, addr: Ipv4Addr) -> Result<()> {
        use sha2::Digest;
        let host_end = format!(
            "shv{}",
            &hex::encode(sha2::Sha256::digest(netns.as_bytes()))[..12]
        );
        // The pair goes with the pod's namespace: the node's end there means the pod's is.
        if has_link(&host_end) && path(netns).exists() {
            return Ok(());
        }
        plumb(netns, &host_end, &self.bridge, addr, self.subnet).map_err(|m| net_err(netns, m))
    }

    /// Returns the pod's address to the range (its veth went with its namespace).
    pub fn release(&self, owner: &str) {
        let Ok(mut held) = self.leased.lock() else {
            return;
        };
        let leased = held.get_or_insert_with(|| self.read_leases());
        leased.retain(|addr, holder| {
            let keep = holder != owner;
            if !keep {
                let _ = std::fs::remove_file(self.leases.join(addr.to_string()));
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the root-only test can run here, saying why not (a failure with
    /// SHOAL_REQUIRE_RUNC=1, which CI sets, as for every test that needs root).
    fn root_or_skip(test: &str) -> bool {
        let why = if !rustix::process::geteuid().is_root() {
            "not root"
        } else if Command::new("ip").arg("-V").output().is_err() {
            "no ip (apt-get install iproute2)"
        } else {
            return true;
        };
        if std::env::var("SHOAL_REQUIRE_RUNC").as_deref() == Ok("1") {
            panic!("{test} needs root and iproute2: {why}");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        false
    }

    fn shown(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    #[test]
    fn root_namespace_veth_address_and_route_made_in_process() {
        if !root_or_skip("root_namespace_veth_address_and_route_made_in_process") {
            return;
        }
        let id = std::process::id();
        let (bridge, ns, host_end) = (
            format!("shtb{}", id % 100_000),
            format!("shoal-test-{id}"),
            format!("shtv{}", id % 100_000),
        );
        let subnet: Subnet = "10.254.77.0/24".parse().expect("cidr");
        ip(&["link", "add", &bridge, "type", "bridge"]).expect("a test bridge");
        let addr = Ipv4Addr::new(10, 254, 77, 9);
        let made = plumb(&ns, &host_end, &bridge, addr, subnet);
        let links = shown(&["-n", &ns, "-o", "link", "show"]);
        let addrs = shown(&["-n", &ns, "-o", "-4", "addr", "show", "dev", "eth0"]);
        let routes = shown(&["-n", &ns, "route", "show"]);
        let host = shown(&["-o", "link", "show", &host_end]);
        // Entered, not made again: a second veth into the same namespace fails on its eth0.
        let again = plumb(&ns, &format!("{host_end}b"), &bridge, addr, subnet);
        let lo_up =
            socket_in(&ns, false).and_then(|mut nl| nl.index("lo").map_err(|e| e.to_string()));
        delete(&ns);
        let gone = !path(&ns).exists() && !shown(&["netns", "list"]).contains(&ns);
        // The kernel tears a namespace down in the background, its veths with it.
        let veth_gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            ip(&["link", "show", &host_end]).is_err()
        });
        let _ = ip(&["link", "delete", &bridge]);
        made.expect("the pod's network");
        assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
        assert!(links.contains("eth0@"), "{links}");
        assert!(addrs.contains("inet 10.254.77.9/24"), "{addrs}");
        assert!(
            routes.contains("default via 10.254.77.1 dev eth0"),
            "{routes}"
        );
        assert!(
            host.contains(&format!("master {bridge}")) && host.contains(",UP"),
            "{host}"
        );
        let err = again.expect_err("eth0 is there already");
        assert!(
            err.contains(&format!("the veth {host_end}b to eth0 in {ns}")),
            "{err}"
        );
        assert!(ip(&["link", "show", &format!("{host_end}b")]).is_err());
        assert_eq!(lo_up.expect("entered"), 1);
        assert!(gone, "the namespace is removed");
        assert!(veth_gone, "its veth went with it");
    }

    /// An agent stopped between creating a namespace's file and binding the namespace on it
    /// leaves an empty file: the next start makes the namespace again rather than failing to
    /// enter it on every try, and a deletion removes such a file too.
    #[test]
    fn root_a_namespace_file_left_by_a_stopped_agent_is_made_again() {
        if !root_or_skip("root_a_namespace_file_left_by_a_stopped_agent_is_made_again") {
            return;
        }
        let ns = format!("shoal-test-left-{}", std::process::id());
        shared_run_dir().expect("/var/run/netns");
        std::fs::write(path(&ns), b"").expect("the leftover file");
        assert!(!bound(&path(&ns)), "an empty file is no namespace");
        let made = create(&ns);
        let is_bound = bound(&path(&ns));
        let listed = shown(&["netns", "list"]).contains(&ns);
        let lo = shown(&["-n", &ns, "-o", "link", "show", "lo"]);
        delete(&ns);
        let gone = !path(&ns).exists();

        std::fs::write(path(&ns), b"").expect("another leftover file");
        delete(&ns);
        let leftover_removed = !path(&ns).exists();

        made.expect("made again over the leftover file");
        assert!(is_bound && listed, "a namespace is bound there now");
        assert!(lo.contains("LOOPBACK,UP"), "{lo}");
        assert!(gone, "deleted");
        assert!(leftover_removed, "a leftover file is deleted too");
    }

    #[test]
    fn leases_are_kept_across_restarts_and_freed_by_release() {
        let dir = tempfile::tempdir().expect("tmp");
        let subnet: Subnet = "10.254.78.0/24".parse().expect("cidr");
        let net = PodNetwork::new("shtb-unused", subnet, dir.path()).expect("network");
        let a = net.lease("pod-a").expect("a");
        let b = net.lease("pod-b").expect("b");
        assert_eq!(a, Ipv4Addr::new(10, 254, 78, 2));
        assert_eq!(b, Ipv4Addr::new(10, 254, 78, 3));
        assert_eq!(net.lease("pod-a").expect("a again"), a);
        // A lease file this process did not write (a previous agent's) is someone's.
        let leases = dir.path().join("ipam").join("10.254.78.0_24");
        std::fs::write(leases.join("10.254.78.4"), "pod-old").expect("stale");
        assert_eq!(
            net.lease("pod-c").expect("c"),
            Ipv4Addr::new(10, 254, 78, 5)
        );
        // A restarted agent reads the leases: each pod keeps its address.
        let again = PodNetwork::new("shtb-unused", subnet, dir.path()).expect("network");
        assert_eq!(again.lease("pod-b").expect("b"), b);
        assert_eq!(
            again.lease("pod-old").expect("old"),
            Ipv4Addr::new(10, 254, 78, 4)
        );
        again.release("pod-a");
        assert!(!leases.join("10.254.78.2").exists());
        assert_eq!(
            again.lease("pod-d").expect("d"),
            a,
            "a freed address is reused"
        );
    }

    #[test]
    fn the_first_address_nobody_holds_is_leased() {
        let subnet: Subnet = "10.1.0.0/29".parse().expect("cidr");
        let held = |addrs: &[u8]| {
            addrs
                .iter()
                .map(|&d| (Ipv4Addr::new(10, 1, 0, d), format!("pod-{d}")))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let cases: [(&[u8], Option<u8>); 5] = [
            (&[], Some(2)),
            (&[2], Some(3)),
            (&[2, 4], Some(3)),
            (&[3, 4, 5, 6], Some(2)),
            (&[2, 3, 4, 5, 6], None),
        ];
        for (taken, want) in cases {
            assert_eq!(
                first_free(subnet, &held(taken)),
                want.map(|d| Ipv4Addr::new(10, 1, 0, d)),
                "held: {taken:?}"
            );
        }
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
