//! The direct path between nodes: each agent serves the other nodes' service proxies on a
//! QUIC endpoint of its own (`--peer-listen`, 7444 by default), with a serving certificate the
//! controller signs for the node's name, and takes only clients with a node certificate of the
//! cluster. A proxy reaches a pod on another node through it when it can, and through the
//! controller when it cannot (the nodes need not share a network). Its port is announced in
//! the Node's `shoal.dev/peer-port` annotation, beside the node's InternalIP.

use super::Pods;
use crate::error::{Error, Result};
use shoal_transport::proto::Request;
use shoal_transport::{frame, Client, Identity, Server};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Gets the node's serving certificate, binds `listen` and serves peers until `shutdown`;
/// returns the port bound.
pub async fn serve<P: Pods>(
    client: &Client,
    node: &str,
    listen: SocketAddr,
    pods: P,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<u16> {
    let (key_pem, csr_pem) = shoal_transport::pki::node_key_and_csr(node)?;
    let signed = client
        .call(&Request::PeerCert { csr_pem })
        .await?
        .into_signed()
        .map_err(Error::Server)?;
    let issued = shoal_transport::pki::Issued {
        cert_pem: signed.cert_pem,
        key_pem,
    };
    let server = Server::bind_peer(listen, &signed.ca_pem, &signed.peer_ca_pem, &issued)?;
    let port = server.local_addr()?.port();
    let inner_tasks = tasks.clone();
    tasks.spawn(async move {
        let tasks = inner_tasks;
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                i = server.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            let (pods, streams) = (pods.clone(), tasks.clone());
            tasks.spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let who = shoal_transport::quic::peer_identity(&conn);
                if !matches!(who, Identity::Node(_)) {
                    conn.close(1u32.into(), b"only nodes of the cluster");
                    return;
                }
                let Identity::Node(peer) = who else { return };
                // The peer's pods' packets come as datagrams on the same connection.
                streams.spawn(pods.take_packets(peer.clone(), conn.clone()));
                while let Ok((send, mut recv)) = conn.accept_bi().await {
                    let (pods, peer) = (pods.clone(), peer.clone());
                    streams.spawn(async move {
                        // A peer always says whose connection it carries, and may speak only
                        // for its own pods (a port-forward comes from the controller alone).
                        if let Ok(Some(Request::Dial {
                            ip,
                            port,
                            udp,
                            from: Some(from),
                        })) = frame::read::<Request, _>(&mut recv, frame::MAX_FRAME).await
                        {
                            if from.parse().is_ok_and(|f| pods.speaks_for(&peer, f)) {
                                let target = super::serve::Target { ip, port, udp };
                                super::serve::dial(send, recv, &pods, target, Some(&from)).await;
                            }
                        }
                    });
                }
            });
        }
        server.close();
    });
    Ok(port)
}
