//! Requests the controller sends to this node over the node's own connection: container logs
//! and the images it holds.

use crate::supervisor::Supervisor;
use shoal_transport::frame;
use shoal_transport::proto::{ErrorCode, Request, Response, WireError};
use std::time::Duration;

/// Serves streams the controller opens until the connection closes.
pub async fn serve(conn: quinn::Connection, supervisor: Supervisor) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            let response = match frame::read::<Request, _>(&mut recv, frame::MAX_FRAME).await {
                Ok(Some(Request::Dial { ip, port, udp })) => {
                    dial(send, recv, &supervisor, &ip, port, udp).await;
                    return;
                }
                Ok(Some(Request::Logs {
                    namespace,
                    pod,
                    container,
                    follow,
                    previous,
                    tail,
                })) => {
                    logs(
                        &mut send,
                        &supervisor,
                        &namespace,
                        &pod,
                        container.as_deref(),
                        follow,
                        previous,
                        tail,
                    )
                    .await;
                    None
                }
                Ok(Some(Request::Images { .. })) => {
                    let answer = match supervisor.images().await {
                        Ok(json) => Response::Json(json),
                        Err(e) => Response::Error(WireError {
                            code: ErrorCode::Internal,
                            message: e.to_string(),
                        }),
                    };
                    let _ = frame::write(&mut send, &answer).await;
                    None
                }
                Ok(Some(other)) => Some(format!("a node does not serve {other:?}")),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(message) = response {
                let _ = frame::write(
                    &mut send,
                    &Response::Error(WireError {
                        code: ErrorCode::BadRequest,
                        message,
                    }),
                )
                .await;
            }
            let _ = send.finish();
        });
    }
}

/// Connects a tunnel from another node's service proxy to a pod of this node: only to the
/// address of a pod running here, so a node cannot be used to reach anything else.
pub(crate) async fn dial(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    supervisor: &Supervisor,
    ip: &str,
    port: u16,
    udp: bool,
) {
    let addr: Option<std::net::IpAddr> = ip.parse().ok();
    let Some(addr) = addr.filter(|a| supervisor.serves_at(*a, port, udp)) else {
        let message = format!(
            "no pod on this node takes connections at {ip}:{port}: only pods' own addresses and their declared ports are reachable"
        );
        refuse(&mut send, ErrorCode::NotFound, message).await;
        let _ = send.finish();
        return;
    };
    if udp {
        crate::proxy::udp_tunnel_end(send, recv, std::net::SocketAddr::new(addr, port)).await;
        return;
    }
    let mut conn = match crate::proxy::dial_for_tunnel(addr, port).await {
        Ok(c) => c,
        Err(e) => {
            refuse(&mut send, ErrorCode::NotFound, format!("{ip}:{port}: {e}")).await;
            let _ = send.finish();
            return;
        }
    };
    if frame::write(&mut send, &Response::Ok).await.is_err() {
        return;
    }
    let mut tunnel = tokio::io::join(recv, send);
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut tunnel).await;
}

async fn refuse(send: &mut quinn::SendStream, code: ErrorCode, message: String) {
    let _ = frame::write(send, &Response::Error(WireError { code, message })).await;
}

#[allow(clippy::too_many_arguments)]
async fn logs(
    send: &mut quinn::SendStream,
    supervisor: &Supervisor,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    follow: bool,
    previous: bool,
    tail: Option<u64>,
) {
    let path = match supervisor.log_path(namespace, pod, container, previous) {
        Ok(p) => p,
        Err(message) => {
            refuse(send, ErrorCode::NotFound, message).await;
            return;
        }
    };
    if previous && !path.exists() {
        let message = format!("previous terminated container of pod {pod:?} not found");
        refuse(send, ErrorCode::NotFound, message).await;
        return;
    }
    let text = match shoal_runtime::logs::read(&path, tail.map(|t| t as usize)) {
        Ok(t) => t,
        Err(e) => {
            refuse(send, ErrorCode::Internal, e.to_string()).await;
            return;
        }
    };
    if !text.is_empty()
        && frame::write(send, &Response::Chunk(text.into_bytes()))
            .await
            .is_err()
    {
        return;
    }
    if !follow {
        return;
    }
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    while supervisor.has(namespace, pod) {
        tokio::select! {
            _ = send.stopped() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated by a restart
        }
        if len > offset {
            let bytes = std::fs::read(&path).unwrap_or_default();
            let end = (len as usize).min(bytes.len());
            let chunk = bytes[(offset as usize).min(end)..end].to_vec();
            offset = end as u64;
            if frame::write(send, &Response::Chunk(chunk)).await.is_err() {
                return;
            }
        }
    }
}
