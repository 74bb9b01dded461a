//! hostPort: a container port published on the node's own address, TCP or UDP. Forwarded in
//! user space to the pod's address, connection by connection (TCP) or flow by flow, one per
//! client (UDP), so the default path needs no iptables. Each client is held to the pod's
//! NetworkPolicy ingress first (the pod sees the node's address, which its own table lets in).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Whether a client may reach the published port (the pod's NetworkPolicy ingress).
pub type Admit = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Listens on `listen` and forwards each TCP connection to `to`, until `cancel`; each
/// connection is a task of `tasks`.
pub async fn forward_tcp(
    listener: TcpListener,
    to: SocketAddr,
    admit: Admit,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (mut inbound, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %shoal_transport::report(&e), "hostPort accept failed");
                continue;
            }
        };
        if !admit(peer.ip()) {
            tracing::debug!(%peer, %to, "hostPort connection refused: a NetworkPolicy does not let it in");
            continue;
        }
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let mut outbound = match TcpStream::connect(to).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, %to, error = %shoal_transport::report(&e), "hostPort target unreachable");
                    return;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

/// The most UDP flows (distinct clients) one hostPort keeps at once; a datagram from one more
/// client is dropped until one goes idle.
pub const UDP_FLOWS: usize = 1024;

/// How long a UDP flow lasts with no datagram either way (kube-proxy's conntrack default for
/// UDP streams is 120 s; a single exchange, 30 s).
pub const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Forwards the datagrams `socket` receives to `to`, each client through a socket of its own
/// (so the pod's replies find their way back), until `cancel`; each flow is a task of `tasks`
/// and ends after [`UDP_IDLE`].
pub async fn forward_udp(
    socket: tokio::net::UdpSocket,
    to: SocketAddr,
    admit: Admit,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    while let Some((n, client)) = next_datagram(&socket, &mut buf, &cancel, "hostPort").await {
        let existing = crate::sync::lock(&flows).get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                if !admit(client.ip()) {
                    tracing::debug!(%client, %to, "hostPort datagram dropped: a NetworkPolicy does not let it in");
                    continue;
                }
                if crate::sync::lock(&flows).len() >= UDP_FLOWS {
                    tracing::debug!(%client, "too many hostPort flows: a datagram dropped");
                    continue;
                }
                let Ok(u) = open_flow(to).await else {
                    continue;
                };
                let u = Arc::new(u);
                crate::sync::lock(&flows).insert(client, u.clone());
                let (u2, socket, flows, cancel) =
                    (u.clone(), socket.clone(), flows.clone(), cancel.clone());
                tasks.spawn(async move {
                    let mut back = vec![0u8; 65536];
                    loop {
                        let got = tokio::select! {
                            _ = cancel.cancelled() => break,
                            r = tokio::time::timeout(UDP_IDLE, u2.recv(&mut back)) => r,
                        };
                        match got {
                            Ok(Ok(m)) => {
                                let _ = socket.send_to(&back[..m], client).await;
                            }
                            _ => break,
                        }
                    }
                    crate::sync::lock(&flows).remove(&client);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// The next datagram on `socket` into `buf` (its length and sender), or `None` once `cancel`
/// fires. A failed receive (an ICMP error for an earlier send) is logged, by `what` receives,
/// and skipped.
pub async fn next_datagram(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    cancel: &CancellationToken,
    what: &str,
) -> Option<(usize, SocketAddr)> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = socket.recv_from(buf) => match r {
                Ok(r) => return Some(r),
                Err(e) => {
                    tracing::debug!(error = %shoal_transport::report(&e), "{what} receive failed")
                }
            },
        }
    }
}

/// A socket of the node's connected to `to`, for one client's flow.
async fn open_flow(to: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
    let u = tokio::net::UdpSocket::bind(any).await?;
    u.connect(to).await?;
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_datagrams_reach_the_target_and_its_replies_each_client() {
        // The "pod": an echo server on loopback.
        let pod = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("pod");
        let to = pod.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = pod.recv_from(&mut buf).await {
                let reply = [b"echo: ", &buf[..n]].concat();
                let _ = pod.send_to(&reply, from).await;
            }
        });
        let host = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("host port");
        let published = host.local_addr().expect("addr");
        let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
        let all: Admit = Arc::new(|_| true);
        tokio::spawn(forward_udp(host, to, all, cancel.clone(), tasks.clone()));
        let mut clients = Vec::new();
        for i in 0..3 {
            let c = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("client");
            c.connect(published).await.expect("connect");
            c.send(format!("hello {i}").as_bytes()).await.expect("send");
            clients.push(c);
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 1500];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.recv(&mut buf))
                .await
                .expect("an answer in time")
                .expect("recv");
            assert_eq!(&buf[..n], format!("echo: hello {i}").as_bytes());
        }
        // A client the pod's NetworkPolicy does not let in gets nothing through.
        let shut = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("host port");
        let shut_at = shut.local_addr().expect("addr");
        let none: Admit = Arc::new(|_| false);
        tokio::spawn(forward_udp(shut, to, none, cancel.clone(), tasks.clone()));
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("client");
        c.connect(shut_at).await.expect("connect");
        c.send(b"let me in").await.expect("send");
        let mut buf = [0u8; 1500];
        let answer =
            tokio::time::timeout(std::time::Duration::from_millis(300), c.recv(&mut buf)).await;
        assert!(answer.is_err(), "a refused client got an answer");
        cancel.cancel();
    }
}
