//! The proxy's listeners, made what [`super::plan`] says: cluster IPs made local to the node,
//! the cluster DNS server on its Service's address, and a TCP or UDP listener per Service
//! port with ready endpoints.

use super::plan::{plan, Listen, Route};
use super::{resolver, udp, Proxy};
use crate::sync::lock;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A listener serving a Service port: its route, updated in place, and how to close it.
pub(super) struct Active {
    route: Arc<RwLock<Route>>,
    cancel: CancellationToken,
}

impl Proxy {
    /// Makes the listeners what [`plan`] says: new ones bound, gone ones closed, the rest
    /// given their new endpoints in place (connections already open are left alone). The
    /// routes that make cluster IPs local are changed first, off the proxy's lock.
    pub(super) async fn apply(&self) {
        let _one_at_a_time = self.0.applying.lock().await;
        let (wanted_ips, local) = {
            let s = lock(&self.0.state);
            let wanted: BTreeSet<Ipv4Addr> = s
                .services
                .values()
                .filter_map(|svc| svc.spec.cluster_ip.as_deref()?.parse().ok())
                .collect();
            (wanted, s.local.clone())
        };
        let (added, removed) =
            tokio::task::spawn_blocking(move || local_routes(&wanted_ips, &local))
                .await
                .unwrap_or_default();
        let mut s = lock(&self.0.state);
        for (ip, made) in added {
            match made {
                Ok(()) => {
                    s.local.insert(ip);
                }
                Err(e) if !s.warned_local => {
                    s.warned_local = true;
                    tracing::warn!(%ip, error = %e, "cannot make a cluster IP local to this node (the agent needs root for cluster IPs); node ports still work");
                }
                Err(_) => {}
            }
        }
        for ip in removed {
            s.local.remove(&ip);
        }
        self.serve_dns(&mut s);
        let want = plan(&s.services, &s.endpoints);
        s.active.retain(|listen, a| {
            let keep = want.contains_key(listen);
            if !keep {
                a.cancel.cancel();
                tracing::info!(listen = %listen.addr, "service has no ready endpoints: closed");
            }
            keep
        });
        s.failed.retain(|l| want.contains_key(l));
        for (listen, route) in want {
            if let Some(a) = s.active.get(&listen) {
                let mut r = a
                    .route
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *r != route {
                    *r = route;
                }
                continue;
            }
            match self.listen(listen, &route) {
                Ok(active) => {
                    s.failed.remove(&listen);
                    s.active.insert(listen, active);
                }
                Err(e) => {
                    if s.failed.insert(listen) {
                        tracing::warn!(listen = %listen.addr, service = %route.service, error = %shoal_transport::report(&e), "cannot serve a service port");
                    }
                }
            }
        }
    }

    /// Serves the cluster's names on the DNS Service's address, once it is local to the node;
    /// moves with the address.
    fn serve_dns(&self, s: &mut super::State) {
        let dns = s.cluster_ip(crate::dns::SERVICE_NAMESPACE, crate::dns::SERVICE_NAME);
        if s.dns.as_ref().map(|d| d.0) == dns {
            return;
        }
        if let Some((_, cancel)) = s.dns.take() {
            cancel.cancel();
        }
        let Some(ip) = dns.filter(|ip| s.local.contains(ip)) else {
            return;
        };
        let at = SocketAddr::new(IpAddr::V4(ip), 53);
        match bind_udp(at) {
            Ok(socket) => {
                tracing::info!(%ip, "serving the cluster's names to pods");
                let cancel = self.0.cancel.child_token();
                let served = resolver::serve_dns(self.clone(), socket, ip, cancel.clone());
                self.0.tasks.spawn(served);
                match bind_tcp(at).and_then(TcpListener::from_std) {
                    Ok(listener) => {
                        let served =
                            resolver::serve_dns_tcp(self.clone(), listener, ip, cancel.clone());
                        self.0.tasks.spawn(served);
                    }
                    Err(e) => {
                        tracing::warn!(%ip, error = %e, "cannot serve cluster DNS over TCP")
                    }
                }
                s.dns = Some((ip, cancel));
            }
            Err(e) => {
                tracing::warn!(%ip, error = %shoal_transport::report(&e), "cannot serve cluster DNS")
            }
        }
    }

    /// Binds a Service port's listener and starts serving it.
    fn listen(&self, listen: Listen, route: &Route) -> std::io::Result<Active> {
        let cancel = self.0.cancel.child_token();
        let shared = Arc::new(RwLock::new(route.clone()));
        let n = route.backends.len();
        if listen.udp {
            let socket = bind_udp(listen.addr)?;
            tracing::info!(listen = %listen.addr, protocol = "UDP", service = %route.service, endpoints = n, "serving service");
            let served = udp::serve_udp(self.clone(), socket, shared.clone(), cancel.clone());
            self.0.tasks.spawn(served);
        } else {
            let listener = TcpListener::from_std(bind_tcp(listen.addr)?)?;
            tracing::info!(listen = %listen.addr, service = %route.service, endpoints = n, "serving service");
            let served = accept(self.clone(), listener, shared.clone(), cancel.clone());
            self.0.tasks.spawn(served);
        }
        Ok(Active {
            route: shared,
            cancel,
        })
    }
}

/// Makes the addresses in `wanted` local to the node and those only in `local` not: what
/// each route change of the first kind came to, and the addresses no longer local. Runs
/// `ip`, so it is called off the async threads.
#[allow(clippy::type_complexity)]
fn local_routes(
    wanted: &BTreeSet<Ipv4Addr>,
    local: &BTreeSet<Ipv4Addr>,
) -> (Vec<(Ipv4Addr, Result<(), String>)>, Vec<Ipv4Addr>) {
    let added = wanted
        .difference(local)
        .map(|ip| (*ip, local_route("replace", *ip)))
        .collect();
    let removed = local
        .difference(wanted)
        .map(|ip| {
            let _ = local_route("delete", *ip);
            *ip
        })
        .collect();
    (added, removed)
}

/// Adds or removes the `local` route that makes `ip` an address of this node.
fn local_route(op: &str, ip: Ipv4Addr) -> Result<(), String> {
    let net = format!("{ip}/32");
    shoal_runtime::oci::netns::ip(&["route", op, "local", &net, "dev", "lo", "table", "local"])
}

pub(super) fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}

/// A listener for `addr` (std sets SO_REUSEADDR, so a port is had again at once).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

async fn accept(
    proxy: Proxy,
    listener: TcpListener,
    route: Arc<RwLock<Route>>,
    cancel: CancellationToken,
) {
    loop {
        let (mut inbound, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %shoal_transport::report(&e), "service accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = inbound.set_nodelay(true);
        let current = route
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let proxy2 = proxy.clone();
        proxy.0.tasks.spawn(async move {
            match proxy2.connect(&current, peer.ip()).await {
                Some(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut *outbound).await;
                }
                None => {
                    tracing::info!(service = %current.service, %peer, "no endpoint of the service could be reached");
                }
            }
        });
    }
}

impl Proxy {
    /// Whether a wasm pod (`uid`) may connect to `addr` under its NetworkPolicy's egress. A
    /// Service's cluster IP and port are reached through this proxy, which cannot tell one
    /// wasm pod from another (they share the node's address), so that connection may go only
    /// if every endpoint it could be given is allowed.
    pub fn wasm_egress_allowed(&self, uid: &str, addr: SocketAddr, udp: bool) -> bool {
        use shoal_api::policy::{Direction, Protocol};
        // Loopback is the node's own, as for any pod.
        let Some(rules) = self
            .0
            .policies
            .rules(uid)
            .filter(|_| !addr.ip().is_loopback())
        else {
            return true;
        };
        let protocol = Protocol::of(udp);
        let listen = Listen { addr, udp };
        let route = lock(&self.0.state)
            .active
            .get(&listen)
            .map(|a| a.route.read().unwrap_or_else(|p| p.into_inner()).clone());
        match route {
            Some(route) => route.backends.iter().all(|b| {
                b.ip.parse()
                    .is_ok_and(|ip| rules.allows(Direction::Egress, ip, b.port, protocol))
            }),
            None => rules.allows(Direction::Egress, addr.ip(), addr.port(), protocol),
        }
    }
}
