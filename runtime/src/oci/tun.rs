//! The node's TUN device: the door between the kernel's routing and Shoal's links to other
//! nodes. Packets the node routes to another node's pod range come out of it whole (IPv4, no
//! packet-information header), and packets from other nodes' pods are written into it, so
//! the kernel delivers them to the pod bridge as if they had come in on a wire. The device
//! is not persistent: it and every route through it go when the agent's process ends, crash
//! or not, so nothing of it outlives the agent.

use crate::error::{Error, Result};
use crate::oci::netns::ip;
use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `TUNSETIFF`: `_IOW('T', 202, int)`, which the kernel reads a `struct ifreq` through.
const TUNSETIFF: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<i32>(b'T', 202);
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
/// The metric of the routes through the device: above the kernel's own routes (0) to the
/// host's address ranges.
pub const ROUTE_METRIC: u32 = 100;
/// The longest interface name (`IFNAMSIZ` less its NUL).
pub const NAME_MAX: usize = 15;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags; 40 bytes covers it on
/// every Linux ABI (32 on 32-bit ones, 40 on 64-bit ones).
type IfReq = [u8; 40];

/// An open TUN device.
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
}

/// The name of the TUN device beside pod bridge `bridge`.
pub fn name_for(bridge: &str) -> String {
    let stem: String = bridge.chars().take(NAME_MAX - 4).collect();
    format!("{stem}-tun")
}

impl Tun {
    /// Creates TUN device `name` with `mtu`, up. Needs root (CAP_NET_ADMIN) and `/dev/net/tun`.
    pub fn create(name: &str, mtu: u32) -> Result<Tun> {
        let failed = |m: String| Error::Start {
            id: name.to_string(),
            message: format!("the node's TUN device: {m}"),
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(failed("made outside the async runtime".into()));
        }
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(failed(format!(
                "{name:?} is not an interface name (1 to {NAME_MAX} bytes)"
            )));
        }
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::open("/dev/net/tun", flags, Mode::empty())
            .map_err(|e| failed(format!("/dev/net/tun: {e}")))?;
        let mut req: IfReq = [0; 40];
        req[..name.len()].copy_from_slice(name.as_bytes());
        req[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
        set_iff(&fd, &mut req).map_err(|e| failed(format!("TUNSETIFF: {e}")))?;
        let fd =
            register(fd).map_err(|e| failed(format!("registering it with the runtime: {e}")))?;
        let mtu = mtu.to_string();
        ip(&["link", "set", "dev", name, "mtu", &mtu, "up"]).map_err(failed)?;
        Ok(Tun {
            fd,
            name: name.to_string(),
        })
    }

    /// The next packet the kernel routed into the device, into `buf`: its length.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *buf).map_err(Into::into)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Hands `packet` to the kernel, as if it had come in on the device.
    pub async fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        loop {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| rustix::io::write(fd.get_ref(), packet).map_err(Into::into)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Routes `cidr` through the device, unless the host routes it already: whether it did.
    /// The route has metric [`ROUTE_METRIC`], so an address of the host in the range (several
    /// nodes on one host sharing a pod bridge), even one added later, takes precedence.
    pub fn route(&self, cidr: &str) -> Result<bool> {
        let metric = ROUTE_METRIC.to_string();
        match ip(&["route", "add", cidr, "dev", &self.name, "metric", &metric]) {
            Ok(()) => Ok(true),
            Err(m) if m.contains("File exists") => Ok(false),
            Err(m) => Err(Error::Start {
                id: self.name.clone(),
                message: format!("routing {cidr} through the node's TUN device: {m}"),
            }),
        }
    }

    /// Removes the route to `cidr` through the device; gone already is fine.
    pub fn unroute(&self, cidr: &str) {
        let metric = ROUTE_METRIC.to_string();
        let _ = ip(&[
            "route", "delete", cidr, "dev", &self.name, "metric", &metric,
        ]);
    }
}

#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the descriptor from here on: nothing else holds, closes or
    // replaces it while it is registered.
    unsafe {
        Ok(AsyncFd::register_with_interest(
            fd,
            Interest::READABLE | Interest::WRITABLE,
        )?)
    }
}

#[allow(unsafe_code)]
fn set_iff(fd: &OwnedFd, req: &mut IfReq) -> rustix::io::Result<()> {
    // SAFETY: TUNSETIFF reads a `struct ifreq` (at most 40 bytes on any Linux ABI) through
    // its argument and writes the chosen name back into it; `req` is 40 initialised bytes
    // that live across the call, and `fd` is an open `/dev/net/tun`.
    unsafe {
        let call = rustix::ioctl::Updater::<TUNSETIFF, IfReq>::new(req);
        rustix::ioctl::ioctl(fd, call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tun_names_fit_an_interface_name() {
        assert_eq!(name_for("shoal0"), "shoal0-tun");
        assert!(name_for("a-very-long-bridge-name").len() <= NAME_MAX);
    }
}
