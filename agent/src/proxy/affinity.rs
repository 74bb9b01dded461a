//! `sessionAffinity: ClientIP`: a client's connections (and UDP flows) to a Service port go to
//! the endpoint its last one went to, while it comes back within the Service's timeout and
//! that endpoint is still ready; otherwise the next in turn, which it then keeps. Kept in
//! memory per node, as kube-proxy keeps it per node, and bounded: a node remembers at most
//! [`MOST_CLIENTS`] clients, the expired and then the longest unseen forgotten first.

use super::plan::{Backend, Route};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The most clients a node remembers.
pub(super) const MOST_CLIENTS: usize = 16384;

/// Each client's endpoint per Service port (`namespace/name:port`), and when it last came.
#[derive(Default)]
pub(super) struct Sticky {
    entries: HashMap<(String, IpAddr), ((String, u16), Instant)>,
}

impl Sticky {
    /// Where `client` starts among `route`'s endpoints: the one it had, if that is still
    /// there and it came back within `timeout`.
    pub(super) fn start(
        &self,
        route: &Route,
        client: IpAddr,
        timeout: Duration,
        now: Instant,
    ) -> Option<usize> {
        let (endpoint, seen) = self.entries.get(&(route.service.clone(), client))?;
        if now.saturating_duration_since(*seen) >= timeout {
            return None;
        }
        (route.backends.iter()).position(|b| b.ip == endpoint.0 && b.port == endpoint.1)
    }

    /// `client` reached `route` through `backend` at `now`.
    pub(super) fn remember(
        &mut self,
        route: &Route,
        client: IpAddr,
        backend: &Backend,
        timeout: Duration,
        now: Instant,
    ) {
        let key = (route.service.clone(), client);
        if self.entries.len() >= MOST_CLIENTS && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < timeout);
            if self.entries.len() >= MOST_CLIENTS {
                let oldest = (self.entries.iter())
                    .min_by_key(|(_, (_, seen))| *seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries
            .insert(key, ((backend.ip.clone(), backend.port), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ips: &[&str]) -> Route {
        Route {
            service: "default/web:80".into(),
            backends: ips
                .iter()
                .map(|ip| Backend {
                    ip: ip.to_string(),
                    port: 8080,
                    node: None,
                })
                .collect(),
            affinity: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn a_client_keeps_its_endpoint_while_it_is_ready_and_the_timeout_has_not_passed() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let (a, b): (IpAddr, IpAddr) = ("10.42.0.7".parse().unwrap(), "10.42.0.8".parse().unwrap());
        let r = route(&["10.42.1.2", "10.42.1.3", "10.42.1.4"]);
        let mut s = Sticky::default();
        assert_eq!(s.start(&r, a, minute, t0), None, "new clients take turns");
        s.remember(&r, a, &r.backends[1], minute, t0);
        assert_eq!(
            s.start(&r, a, minute, t0 + Duration::from_secs(59)),
            Some(1)
        );
        assert_eq!(s.start(&r, b, minute, t0), None, "per client");
        assert_eq!(s.start(&r, a, minute, t0 + minute), None, "expired");
        // Its endpoint gone from the ready ones: it takes the next in turn.
        let fewer = route(&["10.42.1.2", "10.42.1.4"]);
        assert_eq!(s.start(&fewer, a, minute, t0), None);
        // Refreshed by each connection.
        s.remember(&r, a, &r.backends[1], minute, t0 + Duration::from_secs(50));
        assert_eq!(
            s.start(&r, a, minute, t0 + Duration::from_secs(100)),
            Some(1)
        );
    }

    #[test]
    fn the_clients_remembered_are_bounded() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let r = route(&["10.42.1.2"]);
        let mut s = Sticky::default();
        for i in 0..(MOST_CLIENTS as u32 + 10) {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            s.remember(
                &r,
                client,
                &r.backends[0],
                minute,
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(s.entries.len(), MOST_CLIENTS);
        let first = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000));
        assert_eq!(
            s.start(&r, first, minute, t0),
            None,
            "the longest unseen went first"
        );
    }
}
