//! The cluster DNS server a node runs on the DNS Service's address, for its pods: over UDP,
//! and over TCP for what does not fit in a UDP reply.

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
    let upstreams = node_upstreams(ip);
    let forwards = Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    while let Some((n, client)) =
        crate::ports::next_datagram(&socket, &mut buf, &cancel, "DNS").await
    {
        let msg = buf[..n].to_vec();
        let q = match crate::dns::parse_query(&msg) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(%client, error = %e, "bad DNS query");
                continue;
            }
        };
        // Each query in a task of its own (the node's resolvers may be slow to answer), at
        // most FORWARDS_IN_FLIGHT at a time: past that the query is dropped, as a busy
        // server's would be, and the client asks again.
        let Ok(permit) = forwards.clone().try_acquire_owned() else {
            tracing::debug!(%client, "too many DNS queries in flight: one dropped");
            continue;
        };
        let (socket, upstreams, proxy2) = (socket.clone(), upstreams.clone(), proxy.clone());
        proxy.0.tasks.spawn(async move {
            let _permit = permit;
            let answer = answer(&proxy2, &q, &msg, &upstreams, crate::dns::UDP_ANSWERS).await;
            let _ = socket.send_to(&answer, client).await;
        });
    }
}

/// The node's own resolvers (its /etc/resolv.conf), never the cluster DNS at `ip` itself.
fn node_upstreams(ip: Ipv4Addr) -> Vec<std::net::SocketAddr> {
    crate::dns::upstreams(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ip,
    )
}

/// The reply to query `q` (the message `msg`): the cluster's names from what the proxy
/// knows (at most `most` addresses), the rest from the node's resolvers.
async fn answer(
    proxy: &Proxy,
    q: &crate::dns::Query,
    msg: &[u8],
    upstreams: &[std::net::SocketAddr],
    most: usize,
) -> Vec<u8> {
    let found = crate::dns::lookup(&q.name, &*lock(&proxy.0.state));
    if found == crate::dns::Lookup::Elsewhere {
        if let Some(a) = crate::dns::forward(msg, upstreams).await {
            return a;
        }
    }
    crate::dns::reply_within(q, &found, most)
}

/// The most DNS connections over TCP a node's resolver keeps at once.
const TCP_CONNECTIONS: usize = 64;

/// How long a DNS connection over TCP may sit idle before it is closed (RFC 7766 asks for
/// seconds, not minutes).
const TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers pods' DNS queries over TCP on `listener` (clients ask there when a UDP reply was
/// truncated, or by choice): each message with its two-byte length, several per connection.
pub(super) async fn serve_dns_tcp(
    proxy: Proxy,
    listener: tokio::net::TcpListener,
    ip: Ipv4Addr,
    cancel: CancellationToken,
) {
    let upstreams = Arc::new(node_upstreams(ip));
    let connections = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
    loop {
        let (stream, client) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "too many DNS connections: one refused");
            continue;
        };
        let (proxy2, upstreams, cancel) = (proxy.clone(), upstreams.clone(), cancel.clone());
        proxy.0.tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = converse(&proxy2, stream, &upstreams) => {}
            }
        });
    }
}

/// One DNS connection over TCP, until the client closes it, sends something that is not a
/// query, or is idle for [`TCP_IDLE`].
async fn converse(
    proxy: &Proxy,
    mut stream: tokio::net::TcpStream,
    upstreams: &[std::net::SocketAddr],
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Ok(q) = crate::dns::parse_query(&msg) else {
            return;
        };
        let reply = answer(proxy, &q, &msg, upstreams, crate::dns::TCP_ANSWERS).await;
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(2 + reply.len());
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
