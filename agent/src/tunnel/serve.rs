//! Requests the controller sends to this node over the node's own connection: container logs
//! and the images it holds.

use super::Pods;
use shoal_transport::frame;
use shoal_transport::proto::{ErrorCode, Request, Response, Since, WireError};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::task::TaskTracker;

/// Serves streams the controller opens until the connection closes.
pub async fn serve<P: Pods>(conn: quinn::Connection, pods: P, tasks: TaskTracker) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let pods = pods.clone();
        tasks.spawn(async move {
            let response = match frame::read::<Request, _>(&mut recv, frame::MAX_FRAME).await {
                // From the controller: a relayed service tunnel (with its client) or an
                // admin's port-forward (without).
                Ok(Some(Request::Dial {
                    ip,
                    port,
                    udp,
                    from,
                })) => {
                    let target = Target { ip, port, udp };
                    dial(send, recv, &pods, target, from.as_deref()).await;
                    return;
                }
                Ok(Some(request @ Request::Exec { .. })) => {
                    super::exec::exec(send, recv, &pods, request).await;
                    return;
                }
                Ok(Some(request @ Request::Logs { .. })) => {
                    logs(&mut send, &pods, request).await;
                    None
                }
                Ok(Some(Request::Images { .. })) => {
                    let answer = match pods.images().await {
                        Ok(json) => Response::Json(json),
                        Err(e) => {
                            Response::Error(WireError::new(ErrorCode::Internal, e.to_string()))
                        }
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
                    &Response::Error(WireError::new(ErrorCode::BadRequest, message)),
                )
                .await;
            }
            let _ = send.finish();
        });
    }
}

/// Where a tunnel goes: a pod's address and port here.
pub(crate) struct Target {
    pub ip: String,
    pub port: u16,
    pub udp: bool,
}

/// Connects a tunnel from another node's service proxy to a pod of this node: only to the
/// address of a pod running here, so a node cannot be used to reach anything else, and only
/// as far as the pod's NetworkPolicy ingress lets the tunnel's client in (`from`; `None` is an
/// admin's port-forward).
pub(crate) async fn dial<P: Pods>(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    pods: &P,
    target: Target,
    from: Option<&str>,
) {
    let Target { ip, port, udp } = target;
    let addr: Option<std::net::IpAddr> = ip.parse().ok();
    let Some(addr) = addr.filter(|a| pods.serves_at(*a, port, udp)) else {
        let message = format!(
            "no pod on this node takes connections at {ip}:{port}: only pods' own addresses and their declared ports are reachable"
        );
        refuse(&mut send, ErrorCode::NotFound, message).await;
        let _ = send.finish();
        return;
    };
    let client = from.map(|f| f.parse::<std::net::IpAddr>());
    if let Some(refusal) = match client {
        Some(Err(_)) => Some(format!("the tunnel's client {from:?} is not an address")),
        Some(Ok(c)) if !pods.admits(c, addr, port, udp) => Some(format!(
            "a NetworkPolicy does not let {c} reach {ip}:{port}"
        )),
        _ => None,
    } {
        refuse(&mut send, ErrorCode::Forbidden, refusal).await;
        let _ = send.finish();
        return;
    }
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
    let _ = frame::write(send, &Response::Error(WireError::new(code, message))).await;
}

/// How often a followed log is looked at for more.
const FOLLOW_PERIOD: Duration = Duration::from_millis(250);

/// The most of a log sent in one chunk while following it.
const FOLLOW_CHUNK: u64 = 64 * 1024;

/// Serves `shoal logs`: the log (or its tail), then, with `follow`, what is appended to it
/// while the pod runs here, read from where the last read ended.
async fn logs<P: Pods>(send: &mut quinn::SendStream, pods: &P, request: Request) {
    let Request::Logs {
        namespace,
        pod,
        container,
        follow,
        previous,
        tail,
        timestamps,
        since,
    } = request
    else {
        return;
    };
    let since = match since_time(since, chrono::Utc::now()) {
        Ok(since) => since,
        Err(message) => return refuse(send, ErrorCode::BadRequest, message).await,
    };
    let view = shoal_runtime::logs::View { timestamps, since };
    let path = match pods.log_path(&namespace, &pod, container.as_deref(), previous) {
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
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            shoal_runtime::logs::read_whole(&path, tail.map(|t| t as usize), &view)
        })
        .await
    };
    let (text, mut at, mut renderer) = match read {
        Ok(Ok(shown)) => {
            let at = Position {
                inode: shown.inode,
                offset: shown.end,
            };
            (shown.text, at, shown.renderer)
        }
        Ok(Err(e)) => return refuse(send, ErrorCode::Internal, e.to_string()).await,
        Err(e) => return refuse(send, ErrorCode::Internal, e.to_string()).await,
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
    while pods.has(&namespace, &pod) {
        tokio::select! {
            _ = send.stopped() => return,
            _ = tokio::time::sleep(FOLLOW_PERIOD) => {}
        }
        loop {
            let chunk = match read_from(&path, &mut at).await {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => chunk,
                Err(_) => break,
            };
            let mut shown = Vec::with_capacity(chunk.len());
            renderer.render(&chunk, &mut shown);
            if !shown.is_empty() && frame::write(send, &Response::Chunk(shown)).await.is_err() {
                return;
            }
        }
    }
}

/// From when a log is shown, as its records write times; a time that cannot be read is the
/// error to answer with. Seconds ago count back from `now`, the node's clock.
fn since_time(
    since: Option<Since>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, String> {
    let at = match since {
        None => return Ok(None),
        // Past a century ago is every line (and no overflow).
        Some(Since::SecondsAgo(s)) => {
            now - chrono::Duration::seconds(s.min(100 * 366 * 86_400) as i64)
        }
        Some(Since::Time(t)) => chrono::DateTime::parse_from_rfc3339(&t)
            .map_err(|e| format!("since {t:?} is not an RFC 3339 time: {e}"))?
            .to_utc(),
    };
    Ok(Some(shoal_runtime::logs::time_of(at)))
}

/// Where following a log got to: the file (by inode) and the offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Position {
    inode: u64,
    offset: u64,
}

/// What was appended to the log at `path` since `at` (at most [`FOLLOW_CHUNK`]), moving `at`
/// past it. Another file under the name, or one shorter than the offset, is a log rotated by
/// a restart: it is read from its start.
async fn read_from(path: &Path, at: &mut Position) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    if meta.ino() != at.inode || meta.len() < at.offset {
        *at = Position {
            inode: meta.ino(),
            offset: 0,
        };
    }
    file.seek(std::io::SeekFrom::Start(at.offset)).await?;
    let mut chunk = Vec::new();
    file.take(FOLLOW_CHUNK).read_to_end(&mut chunk).await?;
    // Whole lines only: a record is written in one write, but read it may be cut.
    chunk.truncate(shoal_runtime::logs::whole_lines(&chunk));
    at.offset += chunk.len() as u64;
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_in_the_records_format() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .expect("time")
            .to_utc();
        let time = |t: &str| Some(Since::Time(t.into()));
        // What each answers, written out: the time, "none", or the error's start.
        let table = [
            (None, "none"),
            (
                Some(Since::SecondsAgo(90)),
                "2026-12-06T09:58:30.000000000Z",
            ),
            (
                Some(Since::SecondsAgo(u64::MAX)),
                "1926-09-22T10:00:00.000000000Z",
            ),
            (
                time("2026-12-06T11:00:00+02:00"),
                "2026-12-06T09:00:00.000000000Z",
            ),
            (
                time("yesterday"),
                "error: since \"yesterday\" is not an RFC 3339 time",
            ),
        ];
        for (since, want) in table {
            let got = match since_time(since.clone(), now) {
                Ok(None) => "none".to_string(),
                Ok(Some(t)) => t,
                Err(e) => format!("error: {e}"),
            };
            let whole = !want.starts_with("error");
            assert!(
                if whole {
                    got == want
                } else {
                    got.starts_with(want)
                },
                "{since:?}: {got}"
            );
        }
    }

    #[tokio::test]
    async fn a_followed_log_is_read_from_where_the_last_read_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"one\n").expect("write");
        let mut at = Position::default();
        let read = async |at: &mut Position| read_from(&path, at).await.expect("read");
        assert_eq!(read(&mut at).await, b"one\n");
        assert!(read(&mut at).await.is_empty());
        std::fs::write(&path, b"one\ntwo\n").expect("write");
        assert_eq!(read(&mut at).await, b"two\n");
        // Rotated by a restart: the old log renamed, a new one under the name, already
        // longer than where the last read ended.
        std::fs::rename(&path, dir.path().join("app.log.1")).expect("rotate");
        std::fs::write(&path, b"after the restart\n").expect("write");
        assert_eq!(read(&mut at).await, b"after the restart\n");
        // Truncated in place: shorter than the offset.
        std::fs::write(&path, b"3\n").expect("write");
        assert_eq!(read(&mut at).await, b"3\n");
        assert_eq!(at.offset, 2);
        // A line not yet whole waits for its end.
        std::fs::write(&path, b"3\nhal").expect("write");
        assert!(read(&mut at).await.is_empty());
        std::fs::write(&path, b"3\nhalf\n").expect("write");
        assert_eq!(read(&mut at).await, b"half\n");
        // A big append comes in bounded chunks of whole lines.
        let line = [vec![b'x'; 99], vec![b'\n']].concat();
        std::fs::write(&path, line.repeat(700)).expect("write");
        at = Position::default();
        let first = read(&mut at).await;
        assert!(first.len() as u64 <= FOLLOW_CHUNK && first.ends_with(b"\n"));
        assert_eq!(first.len() + read(&mut at).await.len(), 70_000);
    }
}
