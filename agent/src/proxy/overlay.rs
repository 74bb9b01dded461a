//! Pods' packets to and from other nodes, by pod address with no NAT (see
//! [`shoal_api::pod_routes`]). The node routes every other node's pod range into its TUN
//! device; each packet that comes out goes, as one QUIC datagram, over a mutual-TLS link to
//! the node holding its destination:
//! - a direct connection between the two nodes: the one the node whose name sorts first
//!   opened while it lasts, else the one the other node was last heard on (which QUIC keeps
//!   through an address change of the node that opened it, and which also works where only
//!   one node can reach the other), else this node's own; else
//! - the controller, which relays it (while a direct connection is tried in the background).
//!
//! A packet that comes in is written into the TUN device only when it is for a pod of this
//! node and from a pod of the node that sent it (or, relayed, from another node's pods, which
//! the controller checked), so NetworkPolicy in the receiving pod's namespace sees its true
//! source.

use super::dial::Peer;
use super::Proxy;
use crate::sync::lock;
use shoal_api::pod_routes::{ipv4_ends, TUN_MTU};
use shoal_runtime::oci::tun::Tun;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How long a connection a node was heard on stays the way back to it without another packet
/// coming in on it: after that, this node's own connection (or the relay) is preferred.
const HEARD_FOR: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) struct Overlay {
    tun: Tun,
    /// The ranges routed into the device, by node.
    routed: Mutex<BTreeMap<String, String>>,
    /// The direct connection each node was last heard on, and when.
    heard: Mutex<HashMap<String, (quinn::Connection, Instant)>>,
    /// Nodes a direct connection is being opened to in the background.
    connecting: Mutex<HashSet<String>>,
}

/// Which way a packet goes to another node.
#[derive(Debug, PartialEq, Eq)]
enum Way {
    /// This node's own direct connection to it.
    Own,
    /// The direct connection it was last heard on.
    Heard,
    /// The controller's relay.
    Relay,
}

/// The way to another node, given whether this node has its own direct connection to it,
/// whether this node's name sorts first of the two, and whether it was heard on a direct
/// connection of late. Both nodes end up on one connection: the first one's, while it has one.
fn way(own: bool, first: bool, heard: bool) -> Way {
    match (own, first, heard) {
        (true, true, _) => Way::Own,
        (_, _, true) => Way::Heard,
        (true, false, false) => Way::Own,
        (false, _, false) => Way::Relay,
    }
}

impl Proxy {
    /// Starts carrying pods' packets to and from other nodes (once): makes the node's TUN
    /// device beside pod bridge `bridge` and routes the other nodes' pod ranges into it. A
    /// node that cannot (no `/dev/net/tun`, not root) says so: its pods then reach other
    /// nodes' pods through Services only.
    pub fn start_pod_network(&self, bridge: &str) {
        if self.0.overlay.get().is_some() {
            return;
        }
        let name = shoal_runtime::oci::tun::name_for(bridge);
        let overlay = match Tun::create(&name, TUN_MTU) {
            Ok(tun) => Arc::new(Overlay {
                tun,
                routed: Mutex::default(),
                heard: Mutex::default(),
                connecting: Mutex::default(),
            }),
            Err(e) => {
                // Said once: the node does without.
                if self.0.overlay.set(None).is_ok() {
                    tracing::warn!(error = %shoal_transport::report(&e), "pods cannot reach other nodes' pods by address (only through Services)");
                }
                return;
            }
        };
        if self.0.overlay.set(Some(overlay.clone())).is_err() {
            return;
        }
        tracing::info!(device = %name, mtu = TUN_MTU, "carrying pods' packets to other nodes");
        self.route_pod_ranges();
        let (proxy, cancel) = (self.clone(), self.0.cancel.clone());
        self.0.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = proxy.send_packets(&overlay) => {}
            }
        });
        let (proxy, cancel) = (self.clone(), self.0.cancel.clone());
        self.0.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = proxy.take_relayed_packets() => {}
            }
        });
    }

    /// The node's pod network beyond it, once started.
    fn overlay(&self) -> Option<&Arc<Overlay>> {
        self.0.overlay.get().and_then(Option::as_ref)
    }

    /// Makes the device's routes what the other nodes' pod ranges are.
    pub(super) fn route_pod_ranges(&self) {
        let Some(overlay) = self.overlay() else {
            return;
        };
        let wanted: BTreeMap<String, String> = (lock(&self.0.pod_ranges).others(&self.0.node))
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect();
        let mut routed = lock(&overlay.routed);
        for (node, range) in routed.iter() {
            if wanted.get(node) != Some(range) {
                overlay.tun.unroute(range);
            }
        }
        for (node, range) in &wanted {
            if routed.get(node) != Some(range) {
                match overlay.tun.route(range) {
                    Ok(true) => tracing::info!(peer = %node, %range, "pods of the node routed"),
                    Ok(false) => {
                        tracing::info!(peer = %node, %range, "pods of the node reached without the TUN device: the host routes them already")
                    }
                    Err(e) => {
                        tracing::warn!(peer = %node, error = %shoal_transport::report(&e), "cannot route the node's pods")
                    }
                }
            }
        }
        *routed = wanted;
    }

    /// Sends each packet the device gives to the node holding its destination, until the
    /// device fails.
    async fn send_packets(&self, overlay: &Overlay) {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match overlay.tun.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "the node's TUN device failed: pods' packets to other nodes stop");
                    return;
                }
            };
            let packet = &buf[..n];
            let Some((_, dst)) = ipv4_ends(packet) else {
                continue;
            };
            let Some(node) = lock(&self.0.pod_ranges).node_of(dst).map(str::to_string) else {
                continue;
            };
            if node == self.0.node {
                continue;
            }
            let Some(conn) = self.packet_path(overlay, &node) else {
                tracing::debug!(peer = %node, "a packet dropped: no way to the node");
                continue;
            };
            if let Err(e) = conn.send_datagram(bytes::Bytes::copy_from_slice(packet)) {
                tracing::debug!(peer = %node, error = %e, "a packet dropped");
            }
        }
    }

    /// The connection a packet for `node`'s pods takes (see the module's notes). Two nodes
    /// keep to one connection both ways, so each side's packets carry the other's
    /// acknowledgements at once: the one the node whose name sorts first opened. (Were each
    /// to follow the connection it last heard the other on, they would swap connections
    /// with every packet, and a TCP connection between their pods would see its segments
    /// out of order.)
    fn packet_path(&self, overlay: &Overlay, node: &str) -> Option<quinn::Connection> {
        let slot = self.peer_slot(node);
        let (own, connect) = match slot.try_lock() {
            Ok(p) => match &*p {
                Peer::Up(c) if c.connection().close_reason().is_none() => {
                    (Some(c.connection().clone()), false)
                }
                Peer::Down(until) => (None, Instant::now() >= *until),
                _ => (None, true),
            },
            Err(_) => (None, false),
        };
        if connect && lock(&overlay.connecting).insert(node.to_string()) {
            let (proxy, node) = (self.clone(), node.to_string());
            self.0.tasks.spawn(async move {
                proxy.peer(&node).await;
                if let Some(o) = proxy.overlay() {
                    lock(&o.connecting).remove(&node);
                }
            });
        }
        let heard = (lock(&overlay.heard).get(node))
            .filter(|(c, at)| c.close_reason().is_none() && at.elapsed() < HEARD_FOR)
            .map(|(c, _)| c.clone());
        let first = self.0.node.as_str() < node;
        match way(own.is_some(), first, heard.is_some()) {
            Way::Own => return own,
            Way::Heard => return heard,
            Way::Relay => {}
        }
        let controller = self.0.link.borrow().clone()?;
        Some(controller.connection().clone())
    }

    /// Reads the packets that come on `conn` until it closes: from node `peer` directly, or
    /// (`None`) relayed by the controller.
    pub(crate) async fn take_packets(&self, peer: Option<&str>, conn: &quinn::Connection) {
        while let Ok(packet) = conn.read_datagram().await {
            self.packet_in(peer, conn, &packet).await;
        }
    }

    /// Takes one packet from node `peer` (`None`: relayed) into the device, if it may come in.
    async fn packet_in(&self, peer: Option<&str>, conn: &quinn::Connection, packet: &[u8]) {
        let Some(overlay) = self.overlay() else {
            return;
        };
        if !lock(&self.0.pod_ranges).admits(&self.0.node, peer, packet) {
            tracing::debug!(peer = ?peer, "a packet refused: not from the sender's pods to this node's");
            return;
        }
        if let Some(p) = peer {
            let mut heard = lock(&overlay.heard);
            match heard.get_mut(p) {
                Some((c, at)) if c.stable_id() == conn.stable_id() => *at = Instant::now(),
                _ => {
                    heard.insert(p.to_string(), (conn.clone(), Instant::now()));
                }
            }
        }
        if let Err(e) = overlay.tun.send(packet).await {
            tracing::debug!(error = %e, "a packet from another node could not be delivered");
        }
    }

    /// Reads what the controller relays from other nodes, on each of the node's connections
    /// to it in turn.
    async fn take_relayed_packets(&self) {
        let mut link = self.0.link.clone();
        loop {
            let current = link.borrow_and_update().clone();
            let Some(client) = current else {
                if link.changed().await.is_err() {
                    return;
                }
                continue;
            };
            tokio::select! {
                // Closed: the session makes a new one.
                _ = self.take_packets(None, client.connection()) => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
                r = link.changed() => if r.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_settle_on_the_connection_the_first_opened() {
        // (own, first, heard) -> way. With both connections up and each node hearing the
        // other, the first sends on its own and the other on the one it hears the first on:
        // the same one, so neither swaps.
        let table = [
            ((true, true, true), Way::Own),
            ((true, true, false), Way::Own),
            ((true, false, true), Way::Heard),
            ((true, false, false), Way::Own),
            ((false, true, true), Way::Heard),
            ((false, false, true), Way::Heard),
            ((false, true, false), Way::Relay),
            ((false, false, false), Way::Relay),
        ];
        for ((own, first, heard), want) in table {
            assert_eq!(
                way(own, first, heard),
                want,
                "own {own} first {first} heard {heard}"
            );
        }
    }
}
