//! UDP Service ports: each client address a flow pinned to one endpoint until idle, and the
//! far end of a UDP tunnel on the pod's node. Datagrams cross a tunnel length-prefixed.

use super::plan::Route;
use super::Proxy;
use crate::sync::lock;
use shoal_transport::proto::Response;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a UDP flow (one client address to one endpoint) lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// One UDP flow's way to its endpoint: a socket connected to a pod on this node, or a tunnel
/// through the controller carrying length-prefixed datagrams.
pub(super) enum Upstream {
    Local(tokio::net::UdpSocket),
    Tunnel(quinn::SendStream, quinn::RecvStream),
}

/// Serves a UDP Service port: each client address is a flow, pinned to the endpoint its first
/// datagram went to, until it is idle for [`UDP_IDLE`].
pub(super) async fn serve_udp(
    proxy: Proxy,
    socket: tokio::net::UdpSocket,
    route: Arc<RwLock<Route>>,
    cancel: CancellationToken,
) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    while let Some((n, client)) =
        crate::ports::next_datagram(&socket, &mut buf, &cancel, "service").await
    {
        let datagram = buf[..n].to_vec();
        let existing = lock(&flows).get(&client).cloned();
        if let Some(tx) = existing {
            if tx.try_send(datagram).is_ok() {
                continue;
            }
            continue; // the flow is closing or full: drop, as a busy link would
        }
        let current = route
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
        let _ = tx.try_send(datagram);
        lock(&flows).insert(client, tx);
        let (proxy2, socket, flows) = (proxy.clone(), socket.clone(), flows.clone());
        proxy.0.tasks.spawn(async move {
            match proxy2.connect_udp(&current, client.ip()).await {
                Some(up) => udp_flow(up, rx, socket, client).await,
                None => {
                    tracing::info!(service = %current.service, %client, "no endpoint of the service could be reached")
                }
            }
            lock(&flows).remove(&client);
        });
    }
}

/// Moves one flow's datagrams both ways until it is idle.
async fn udp_flow(
    up: Upstream,
    mut from_client: tokio::sync::mpsc::Receiver<Vec<u8>>,
    socket: Arc<tokio::net::UdpSocket>,
    client: SocketAddr,
) {
    let mut buf = vec![0u8; 65536];
    match up {
        Upstream::Local(pod) => loop {
            tokio::select! {
                d = from_client.recv() => match d {
                    Some(d) => { let _ = pod.send(&d).await; }
                    None => return,
                },
                r = pod.recv(&mut buf) => match r {
                    Ok(n) => { let _ = socket.send_to(&buf[..n], client).await; }
                    Err(_) => return,
                },
                _ = tokio::time::sleep(UDP_IDLE) => return,
            }
        },
        Upstream::Tunnel(mut send, mut recv) => loop {
            tokio::select! {
                d = from_client.recv() => match d {
                    Some(d) => {
                        if write_datagram(&mut send, &d).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                r = read_datagram(&mut recv, &mut buf) => match r {
                    Ok(Some(n)) => { let _ = socket.send_to(&buf[..n], client).await; }
                    _ => return,
                },
                _ = tokio::time::sleep(UDP_IDLE) => {
                    let _ = send.finish();
                    return;
                }
            }
        },
    }
}

async fn write_datagram(send: &mut quinn::SendStream, d: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let len = u16::try_from(d.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "datagram too long"))?;
    let mut framed = Vec::with_capacity(d.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(d);
    AsyncWriteExt::write_all(send, &framed).await
}

/// Reads one length-prefixed datagram into `buf`; `None` at the end of the stream.
async fn read_datagram<R: tokio::io::AsyncRead + Unpin>(
    recv: &mut R,
    buf: &mut [u8],
) -> std::io::Result<Option<usize>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 2];
    match recv.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = usize::from(u16::from_be_bytes(len));
    let into = buf.get_mut(..n).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "datagram longer than the buffer",
        )
    })?;
    recv.read_exact(into).await?;
    Ok(Some(n))
}

/// The far end of a UDP tunnel, on the pod's node: datagrams from the stream go to the pod
/// from one socket, and the pod's answers come back, until the flow is idle or closed.
pub async fn udp_tunnel_end(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    pod: SocketAddr,
) {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let sock = match tokio::net::UdpSocket::bind(any).await {
        Ok(s) => s,
        Err(e) => {
            let _ = shoal_transport::frame::write(
                &mut send,
                &Response::Error(shoal_transport::proto::WireError::new(
                    shoal_transport::proto::ErrorCode::Internal,
                    format!("udp socket: {e}"),
                )),
            )
            .await;
            return;
        }
    };
    if sock.connect(pod).await.is_err()
        || shoal_transport::frame::write(&mut send, &Response::Ok)
            .await
            .is_err()
    {
        return;
    }
    let mut from_stream = vec![0u8; 65536];
    let mut from_pod = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = read_datagram(&mut recv, &mut from_stream) => match r {
                Ok(Some(n)) => { let _ = sock.send(&from_stream[..n]).await; }
                _ => break,
            },
            r = sock.recv(&mut from_pod) => match r {
                Ok(n) => {
                    if write_datagram(&mut send, &from_pod[..n]).await.is_err() {
                        break;
                    }
                }
                Err(_) => continue, // the pod refused one datagram (nothing listening yet)
            },
            _ = tokio::time::sleep(UDP_IDLE) => break,
        }
    }
    let _ = send.finish();
}
