//! The controller's relay of pods' packets between nodes that cannot reach each other (see
//! `shoal_api::pod_routes`): what a node sends as a QUIC datagram on its session goes, as it
//! is, on the session of the node holding its destination, once the service layer has said
//! the sender may send it (from its own pods, to another node's).

use super::NodeLinks;
use crate::service::Service;
use shoal_api::pod_routes::Routes;
use std::time::{Duration, Instant};

/// How old the pod ranges a relay goes by may be.
const ROUTES_FOR: Duration = Duration::from_secs(5);
/// How often a packet that finds no way has the ranges read again (a node just registered).
const RETRY: Duration = Duration::from_secs(1);

/// The relay of one node's packets, for the life of its session.
pub(super) struct Relay {
    service: Service,
    links: NodeLinks,
    node: String,
}

impl Relay {
    pub(super) fn new(service: &Service, links: &NodeLinks, node: &str) -> Relay {
        Relay {
            service: service.clone(),
            links: links.clone(),
            node: node.to_string(),
        }
    }

    /// Relays what the node sends on `conn` until it closes.
    pub(super) async fn run(self, conn: quinn::Connection) {
        let mut routes = Routes::default();
        let mut fetched: Option<Instant> = None;
        let (mut relayed, mut refused) = (0u64, 0u64);
        while let Ok(packet) = conn.read_datagram().await {
            let due = fetched.is_none_or(|at| {
                at.elapsed() >= ROUTES_FOR
                    || (at.elapsed() >= RETRY && routes.relay(&self.node, &packet).is_err())
            });
            if due {
                match self.service.pod_routes(&self.node).await {
                    Ok(r) => routes = r,
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e.message, "its pods' packets are not relayed");
                        return;
                    }
                }
                fetched = Some(Instant::now());
            }
            match routes.relay(&self.node, &packet) {
                Ok(to) => match self.links.get(to) {
                    Some(c) => {
                        relayed += 1;
                        if relayed == 1 {
                            tracing::info!(from = %self.node, %to, "relaying the node's pods' packets");
                        }
                        if let Err(e) = c.send_datagram(packet) {
                            tracing::debug!(from = %self.node, %to, error = %e, "a relayed packet dropped");
                        }
                    }
                    None => {
                        tracing::debug!(from = %self.node, %to, "a packet for a node that is not connected dropped")
                    }
                },
                Err(why) => {
                    refused += 1;
                    // Said once in a while: a node's flood of refusals must not flood the log.
                    if refused.is_power_of_two() {
                        tracing::info!(node = %self.node, refused, "{why}: the packet is not relayed");
                    }
                }
            }
        }
        tracing::debug!(node = %self.node, relayed, refused, "the node's session closed: its packets' relay ends");
    }
}
