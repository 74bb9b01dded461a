//! The cluster DNS server a node runs on the DNS Service's address, for its pods.

use super::Proxy;
use crate::sync::lock;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The most DNS queries a node's resolver answers at once (each may wait on an upstream).
const FORWARDS_IN_FLIGHT: usize = 64;

/// Answers pods' DNS queries on `socket`: the cluster's names from what the proxy knows, the
/// rest from the node's resolvers.
pub(super) async fn serve_dns(
    proxy: Proxy,
    socket: tokio::net::UdpSocket,
    ip: Ipv4Addr,
    cancel: CancellationToken,
) {
    let socket = Arc::new(socket);
    let upstreams = crate::dns::upstreams(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ip,
    );
    let forwards = Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, client) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let msg = buf[..n].to_vec();
        let q = match crate::dns::parse_query(&msg) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(%client, error = %e, "bad DNS query");
                continue;
            }
        };
        let found = crate::dns::lookup(&q.name, &*lock(&proxy.0.state));
        // Names the node answers itself are answered at once; the rest are forwarded, at
        // most FORWARDS_IN_FLIGHT at a time (past that the query is dropped, as a busy
        // server's would be, and the client asks again).
        let Ok(permit) = forwards.clone().try_acquire_owned() else {
            tracing::debug!(%client, "too many DNS queries in flight: one dropped");
            continue;
        };
        let socket = socket.clone();
        let upstreams = upstreams.clone();
        proxy.0.tasks.spawn(async move {
            let _permit = permit;
            let answer = match found {
                crate::dns::Lookup::Elsewhere => {
                    match crate::dns::forward(&msg, &upstreams).await {
                        Some(a) => a,
                        None => crate::dns::reply(&q, &found),
                    }
                }
                _ => crate::dns::reply(&q, &found),
            };
            let _ = socket.send_to(&answer, client).await;
        });
    }
}
