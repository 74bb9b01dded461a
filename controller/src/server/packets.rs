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

/// A token bucket: how many bytes may pass now, refilled at `rate` a second up to `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        // A quarter of a second at the rate, and at least a few packets.
        let burst = (rate as f64 / 4.0).max(64.0 * 1024.0);
        Bucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Whether `bytes` may pass at `now` (taking them from the bucket if so).
    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
        let bytes = bytes as f64;
        if self.tokens < bytes {
            return false;
        }
        self.tokens -= bytes;
        true
    }
}

/// The relay of one node's packets, for the life of its session.
pub(super) struct Relay {
    service: Service,
    links: NodeLinks,
    node: String,
    /// Bytes per second of the node's packets relayed; beyond it they are dropped, as a
    /// router's policer does, so one node cannot take the controller's link from the others.
    rate: u64,
}

impl Relay {
    pub(super) fn new(service: &Service, links: &NodeLinks, node: &str) -> Relay {
        Relay {
            service: service.clone(),
            links: links.clone(),
            node: node.to_string(),
            rate: links.relay_rate(),
        }
    }

    /// Relays what the node sends on `conn` until it closes.
    pub(super) async fn run(self, conn: quinn::Connection) {
        let mut routes = Routes::default();
        let mut fetched: Option<Instant> = None;
        let (mut relayed, mut refused, mut over) = (0u64, 0u64, 0u64);
        let mut bucket = Bucket::new(self.rate, Instant::now());
        while let Ok(packet) = conn.read_datagram().await {
            if !bucket.take(packet.len(), Instant::now()) {
                over += 1;
                if over.is_power_of_two() {
                    tracing::info!(node = %self.node, dropped = over, rate = self.rate, "the node's packets are over its relay rate (--relay-rate): the excess is dropped");
                }
                continue;
            }
            let due = fetched.is_none_or(|at| {
                at.elapsed() >= ROUTES_FOR
                    || (at.elapsed() >= RETRY && routes.relay(&self.node, &packet).is_err())
            });
            if due {
                match self.service.pod_routes(&self.node).await {
                    Ok(r) => routes = r,
                    // The node is gone: nothing more of its is relayed.
                    Err(e) if e.code == shoal_transport::proto::ErrorCode::Forbidden => {
                        tracing::warn!(node = %self.node, error = %e.message, "its pods' packets are not relayed");
                        return;
                    }
                    // The store did not answer: the ranges known go on, and are read again
                    // at the next refresh.
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e.message, "cannot read the pod ranges; relaying by the ones known")
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
        tracing::debug!(node = %self.node, relayed, refused, over, "the node's session closed: its packets' relay ends");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_through_its_burst_then_its_rate() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 1 MiB/s: a burst of 256 KiB.
        let mut b = Bucket::new(1 << 20, start);
        let packet = 1024;
        let passed = (0..1000).filter(|_| b.take(packet, at(0))).count();
        assert_eq!(passed, 256, "the burst");
        assert!(!b.take(packet, at(0)), "nothing left at once");
        assert!(b.take(packet, at(1)), "1 ms refills 1 KiB");
        assert!(!b.take(packet, at(1)));
        // A second later the bucket is full again, not fuller.
        let passed = (0..1000).filter(|_| b.take(packet, at(1001))).count();
        assert_eq!(passed, 256);
        // A clock that goes back lends nothing.
        assert!(!b.take(packet, at(500)));
    }

    #[test]
    fn a_slow_rate_still_passes_a_few_packets() {
        let start = Instant::now();
        let mut b = Bucket::new(1, start);
        assert!(b.take(1500, start), "the burst is at least 64 KiB");
    }
}
