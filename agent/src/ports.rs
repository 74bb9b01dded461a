//! hostPort: a container port published on the node's own address. Forwarded in user space,
//! connection by connection, to the pod's address, so the default path needs no iptables.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Listens on `listen` and forwards each TCP connection to `to`, until `cancel`; each
/// connection is a task of `tasks`.
pub async fn forward_tcp(
    listener: TcpListener,
    to: SocketAddr,
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
