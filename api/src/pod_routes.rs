//! Pod packets between nodes: every pod reaches every pod by its address, with no NAT between
//! them, as Kubernetes' network model has it. A node hands a packet for another node's pod
//! range to that node over their mutual-TLS QUIC link (a QUIC datagram holding the IPv4
//! packet as it is, nothing added), directly or through the controller. What each end checks
//! is here, for the agents and the controller alike:
//! - a node sends only packets from its own pods ([`Routes::relay`], [`Routes::admits`]): a
//!   stolen node cannot pass itself off as another node's pod, so NetworkPolicy on the far
//!   side holds;
//! - a packet goes only to a pod range a node holds.

use crate::policy::Cidr;
use std::net::{IpAddr, Ipv4Addr};

/// The MTU of a node's TUN device: the largest packet that fits one QUIC datagram on any path
/// QUIC works on. QUIC needs 1200-byte UDP payloads; a datagram frame in one short-header
/// packet leaves 1200 - 1 (flags) - 20 (the longest connection ID) - 4 (packet number) - 16
/// (AEAD tag) - 9 (frame header) = 1150 bytes for the packet. TCP's segments are clamped to it
/// as they leave for the device, so connections between pods never need fragments.
pub const TUN_MTU: u32 = 1150;

/// The source and destination of an IPv4 packet, or `None` when it is not one whole.
pub fn ipv4_ends(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if header < 20 || total < header || total > packet.len() {
        return None;
    }
    let at = |i: usize| Ipv4Addr::new(packet[i], packet[i + 1], packet[i + 2], packet[i + 3]);
    Some((at(12), at(16)))
}

/// Each node's pod range, as the Nodes say (`spec.podCIDR`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes(Vec<(String, Cidr)>);

impl Routes {
    /// The pod ranges of `nodes` (each node's name and `spec.podCIDR`); a range that does not
    /// parse is left out.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Routes {
        let mut v: Vec<(String, Cidr)> = nodes
            .into_iter()
            .filter_map(|(n, c)| Some((n.to_string(), c?.parse().ok()?)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Routes(v)
    }

    /// Sets `node`'s range (`None`: it has none, or is gone); whether that changed anything.
    pub fn set(&mut self, node: &str, range: Option<Cidr>) -> bool {
        let at = self.0.iter().position(|(n, _)| n == node);
        match (at, range) {
            (Some(i), Some(r)) if self.0[i].1 == r => false,
            (Some(i), Some(r)) => {
                self.0[i].1 = r;
                true
            }
            (Some(i), None) => {
                self.0.remove(i);
                true
            }
            (None, Some(r)) => {
                self.0.push((node.to_string(), r));
                self.0.sort_by(|a, b| a.0.cmp(&b.0));
                true
            }
            (None, None) => false,
        }
    }

    /// The node whose pods `ip` belongs to.
    pub fn node_of(&self, ip: Ipv4Addr) -> Option<&str> {
        let ip = IpAddr::V4(ip);
        (self.0.iter())
            .find(|(_, c)| c.contains(ip))
            .map(|(n, _)| n.as_str())
    }

    /// The range of `node`'s pods.
    pub fn range_of(&self, node: &str) -> Option<Cidr> {
        self.0.iter().find(|(n, _)| n == node).map(|(_, c)| *c)
    }

    /// Every node's range but `node`'s: what `node` routes to its TUN device.
    pub fn others<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a str, Cidr)> + 'a {
        (self.0.iter())
            .filter(move |(n, _)| n != node)
            .map(|(n, c)| (n.as_str(), *c))
    }

    /// Where the controller relays a packet node `from` sent: the node holding its
    /// destination, or why it is dropped (not an IPv4 packet, not from `from`'s own pods, or
    /// for no other node's pods).
    pub fn relay(&self, from: &str, packet: &[u8]) -> Result<&str, String> {
        let (src, dst) = ipv4_ends(packet).ok_or("not a whole IPv4 packet")?;
        if !self
            .range_of(from)
            .is_some_and(|c| c.contains(IpAddr::V4(src)))
        {
            return Err(format!(
                "node {from:?} sent a packet from {src}, which is not one of its pods"
            ));
        }
        match self.node_of(dst) {
            Some(to) if to != from => Ok(to),
            _ => Err(format!("no other node holds {dst}")),
        }
    }

    /// Whether node `me` takes `packet` from node `peer` (or, with `None`, relayed by the
    /// controller, which checked its source): for one of `me`'s pods, from one of `peer`'s.
    pub fn admits(&self, me: &str, peer: Option<&str>, packet: &[u8]) -> bool {
        let Some((src, dst)) = ipv4_ends(packet) else {
            return false;
        };
        let mine = self
            .range_of(me)
            .is_some_and(|c| c.contains(IpAddr::V4(dst)));
        let from = match peer {
            Some(p) => self
                .range_of(p)
                .is_some_and(|c| c.contains(IpAddr::V4(src))),
            None => self.node_of(src).is_some_and(|n| n != me),
        };
        mine && from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn routes() -> Routes {
        Routes::new([
            ("a", Some("10.42.0.0/24")),
            ("b", Some("10.42.1.0/24")),
            ("c", None),
            ("d", Some("not a range")),
        ])
    }

    #[test]
    fn only_whole_ipv4_packets_have_ends() {
        let mut p = packet([10, 42, 0, 2], [10, 42, 1, 3]);
        let (src, dst) = ipv4_ends(&p).expect("a packet");
        assert_eq!(
            (src, dst),
            (Ipv4Addr::new(10, 42, 0, 2), Ipv4Addr::new(10, 42, 1, 3))
        );
        assert_eq!(ipv4_ends(&p[..19]), None, "shorter than a header");
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(ipv4_ends(&p), None, "says it is longer than it is");
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[0] = 0x44;
        assert_eq!(ipv4_ends(&p), None, "a header shorter than 20 bytes");
        p[0] = 0x60;
        assert_eq!(ipv4_ends(&p), None, "IPv6");
    }

    #[test]
    fn the_controller_relays_a_nodes_own_pods_packets_to_the_node_holding_the_destination() {
        let r = routes();
        assert_eq!(
            r.relay("a", &packet([10, 42, 0, 2], [10, 42, 1, 3])),
            Ok("b")
        );
        let spoofed = r.relay("a", &packet([10, 42, 1, 9], [10, 42, 1, 3]));
        assert!(spoofed.is_err_and(|e| e.contains("not one of its pods")));
        let nowhere = r.relay("a", &packet([10, 42, 0, 2], [192, 168, 1, 1]));
        assert!(nowhere.is_err_and(|e| e.contains("no other node")));
        assert!(
            r.relay("a", &packet([10, 42, 0, 2], [10, 42, 0, 3]))
                .is_err(),
            "its own"
        );
        assert!(
            r.relay("c", &packet([10, 42, 0, 2], [10, 42, 1, 3]))
                .is_err(),
            "no range"
        );
        assert!(r.relay("a", b"junk").is_err());
    }

    #[test]
    fn a_node_takes_packets_for_its_pods_from_the_senders_pods_only() {
        let r = routes();
        let from_a = packet([10, 42, 0, 2], [10, 42, 1, 3]);
        assert!(r.admits("b", Some("a"), &from_a));
        assert!(r.admits("b", None, &from_a), "relayed");
        assert!(!r.admits("a", Some("b"), &from_a), "not for a's pods");
        let spoofed = packet([10, 42, 1, 7], [10, 42, 1, 3]);
        assert!(
            !r.admits("b", Some("a"), &spoofed),
            "b's own pod as the source"
        );
        assert!(!r.admits("b", None, &spoofed));
        let outside = packet([8, 8, 8, 8], [10, 42, 1, 3]);
        assert!(!r.admits("b", Some("a"), &outside));
        assert!(!r.admits("b", None, &outside));
        let others: Vec<String> = r.others("a").map(|(n, c)| format!("{n} {c}")).collect();
        assert_eq!(others, ["b 10.42.1.0/24"]);
    }

    #[test]
    fn ranges_change_as_nodes_come_and_go() {
        let mut r = routes();
        let range = |s: &str| s.parse::<Cidr>().ok();
        assert!(!r.set("b", range("10.42.1.0/24")), "the same");
        assert!(r.set("e", range("10.42.4.0/24")));
        assert_eq!(r.node_of(Ipv4Addr::new(10, 42, 4, 9)), Some("e"));
        assert!(r.set("e", range("10.42.5.0/24")));
        assert_eq!(r.node_of(Ipv4Addr::new(10, 42, 4, 9)), None);
        assert!(r.set("e", None));
        assert!(!r.set("e", None));
        assert_eq!(r.node_of(Ipv4Addr::new(10, 42, 5, 9)), None);
    }
}
