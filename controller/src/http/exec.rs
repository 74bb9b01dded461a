//! `pods/exec` (`kubectl exec`) over WebSocket, with Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`): each binary message starts with its channel,
//! 0 stdin, 1 stdout, 2 stderr, 3 the outcome as a `Status`, 4 terminal sizes, and in v5 255
//! to close a channel (kubectl's end of stdin). The service authorizes the request and finds
//! the pod's node as for the QUIC door's exec; the node runs the command, and this relays its
//! [`ExecFrame`]s. `pods/attach` (`kubectl attach`) is the same protocol over the container's
//! log followed from now: Shoal's containers take no input, so attach only shows output.
//! kubectl 1.30 and later speak WebSocket first; their older SPDY upgrade is refused with a
//! message that says so.

use super::status::Doing;
use super::websocket::{self, Incoming};
use super::{error_response, Response};
use crate::server::NodeLinks;
use crate::service::{Reply, Service};
use hyper::header::HeaderMap;
use serde_json::json;
use shoal_transport::frame;
use shoal_transport::proto::{ErrorCode, ExecFrame, Request, Response as Answer, WireError};
use shoal_transport::Identity;
use tokio::sync::mpsc;

/// The channel protocols served, the one preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_CHANNEL: u8 = 255;

/// How long the node gets to start the command (or to connect to the pod).
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What `kubectl exec` asks for, from the query.
struct Options {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    tty: bool,
}

fn options(query: &str) -> Result<Options, String> {
    let mut o = Options {
        command: Vec::new(),
        container: None,
        stdin: false,
        tty: false,
    };
    let truthy = |v: &str| matches!(v, "1" | "true" | "True");
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => o.command.push(v.into_owned()),
            "container" => o.container = Some(v.into_owned()).filter(|c| !c.is_empty()),
            "stdin" => o.stdin = truthy(&v),
            "tty" => o.tty = truthy(&v),
            // Output always goes where kubectl reads it; with a terminal stderr is stdout.
            "stdout" | "stderr" | "pretty" => {}
            other => return Err(format!("exec does not take the query parameter {other:?}")),
        }
    }
    Ok(o)
}

/// Who asks, and what the door serves them with.
pub struct Caller<'a> {
    pub service: &'a Service,
    pub links: &'a NodeLinks,
    pub who: &'a Identity,
    pub key: Option<&'a str>,
    /// Where the upgraded connection's session runs: the connection (and its slot) is held
    /// until it ends.
    pub upgrades: &'a tokio_util::task::TaskTracker,
}

pub async fn handle(
    caller: Caller<'_>,
    target: &super::path::Target,
    query: &str,
    headers: &HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let Caller {
        service,
        links,
        who,
        key: credential,
        upgrades,
    } = caller;
    let doing = Doing {
        verb: "create",
        who,
        target: Some(target),
    };
    let bad =
        |message: String| error_response(&WireError::new(ErrorCode::BadRequest, message), &doing);
    let o = match options(query) {
        Ok(o) => o,
        Err(e) => return bad(e),
    };
    let attach = target.subresource.as_deref() == Some("attach");
    let namespace = target.namespace.clone().unwrap_or_else(|| "default".into());
    let pod = target.name.clone().unwrap_or_default();
    let request = if attach {
        if o.stdin || o.tty || !o.command.is_empty() {
            return bad("attach only shows a container's output: containers in Shoal take no input (spec.containers[].stdin is not served); use exec".into());
        }
        // From now on, as the container writes it, while the pod runs.
        Request::Logs {
            namespace,
            pod,
            container: o.container,
            follow: true,
            previous: false,
            tail: Some(0),
            timestamps: false,
            since: None,
        }
    } else {
        Request::Exec {
            namespace,
            pod,
            container: o.container,
            command: o.command,
            stdin: o.stdin,
            tty: o.tty,
        }
    };
    // Authorized, and what the pod's spec rules out refused, before anything else.
    let (node, request) = match service.handle(who, request).await {
        Reply::ToNode { node, request } => (node, request),
        Reply::One(Answer::Error(e)) => return error_response(&e, &doing),
        _ => return bad("exec not relayed to a node".into()),
    };
    let (Some(key), Some(protocol), Some(upgrade), true) = (
        headers.get(hyper::header::SEC_WEBSOCKET_KEY),
        websocket::chosen(headers, &PROTOCOLS),
        upgrade,
        websocket::is_upgrade(headers),
    ) else {
        return bad(format!(
            "exec and attach are served over WebSocket with the {} protocols (kubectl 1.30 or later), not SPDY",
            PROTOCOLS.join(" or ")
        ));
    };
    let (to_node, from_node) = match start(links, &node, &request, attach).await {
        Ok(streams) => streams,
        Err(e) => return error_response(&e, &doing),
    };
    let (service, who, credential) = (service.clone(), who.clone(), credential.map(String::from));
    upgrades.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let relayed = relay(io, to_node, from_node, protocol, attach);
                tokio::select! {
                    _ = relayed => {}
                    _ = super::until_revoked(&service, &who, credential.as_deref()) => {
                        tracing::info!(identity = %who, "ended an exec of a revoked certificate");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "exec: the upgrade failed"),
        }
    });
    websocket::switching(key, protocol)
}

/// Asks the node: an exec must have started before the client is answered; an attach's
/// output comes when the container writes it (and a refusal as its first frame).
async fn start(
    links: &NodeLinks,
    node: &str,
    request: &Request,
    attach: bool,
) -> Result<(quinn::SendStream, quinn::RecvStream), WireError> {
    if attach {
        return Ok(links.ask(node, request).await?);
    }
    opened(links, node, request, "start the command").await
}

/// Opens a stream to `node` with `request` and waits (at most [`START_TIMEOUT`]) for its Ok,
/// after which the stream carries the bytes; `what` says what the node did not do in time.
pub(super) async fn opened(
    links: &NodeLinks,
    node: &str,
    request: &Request,
    what: &str,
) -> Result<(quinn::SendStream, quinn::RecvStream), WireError> {
    let (to_node, mut from_node) = links.open(node, request).await?;
    let started = tokio::time::timeout(
        START_TIMEOUT,
        frame::read::<Answer, _>(&mut from_node, frame::MAX_FRAME),
    )
    .await;
    match started {
        Ok(Ok(Some(Answer::Ok))) => Ok((to_node, from_node)),
        Ok(Ok(Some(Answer::Error(e)))) => Err(e),
        Ok(Ok(Some(other))) => Err(WireError::new(ErrorCode::Internal, other.unexpected())),
        Ok(Ok(None)) | Err(_) => {
            Err(crate::Error::Unreachable(format!("node {node:?} did not {what}")).into())
        }
        Ok(Err(e)) => Err(crate::Error::unreachable(node, &e).into()),
    }
}

/// What the node sends next, as exec frames: an attach's log chunks are output, the end of
/// its stream (the pod stopped running there) a success; `Err` says why it ended otherwise.
async fn from_node(from: &mut quinn::RecvStream, attach: bool) -> Result<ExecFrame, String> {
    let ended = "the node ended the stream before the command exited".to_string();
    if !attach {
        return match frame::read::<ExecFrame, _>(from, ExecFrame::MAX_FRAME).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) | Err(_) => Err(ended),
        };
    }
    match frame::read::<Answer, _>(from, frame::MAX_FRAME).await {
        Ok(Some(Answer::Chunk(d))) => Ok(ExecFrame::Stdout(d)),
        Ok(Some(Answer::Error(e))) => Err(e.message),
        Ok(Some(other)) => Err(other.unexpected()),
        Ok(None) => Ok(ExecFrame::Exit(0)),
        Err(e) => Err(e.to_string()),
    }
}

/// The `Status` kubectl reads on the error channel: success, or the exit code it exits with.
fn outcome(code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// Relays between the client's WebSocket and the node's stream until the command exits or
/// either side goes away.
async fn relay<S>(
    io: S,
    mut to_node: quinn::SendStream,
    mut from_node_stream: quinn::RecvStream,
    protocol: &'static str,
    attach: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    // One writer for the socket: the node's output and the answers to the client's pings.
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let writer = tokio::spawn(async move {
        while let Some((opcode, payload)) = out_rx.recv().await {
            if websocket::write(&mut wr, opcode, &payload).await.is_err() {
                return;
            }
            if opcode == websocket::CLOSE {
                return;
            }
        }
    });
    let pongs = out_tx.clone();
    let from_client = async move {
        let mut reader = websocket::Reader::new(rd);
        loop {
            let frames = match reader.next().await {
                Ok(Incoming::Data(_)) if attach => continue,
                Ok(Incoming::Data(m)) => client_frames(&m, protocol),
                Ok(Incoming::Ping(p)) => {
                    let _ = pongs.send((websocket::PONG, p)).await;
                    continue;
                }
                Ok(Incoming::Close) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "exec: the client's WebSocket ended");
                    return;
                }
            };
            for f in frames {
                if frame::write(&mut to_node, &f).await.is_err() {
                    return;
                }
            }
        }
        // Dropping the node's sending side resets it: the node ends the command.
    };
    let to_client = async move {
        let ended = loop {
            match from_node(&mut from_node_stream, attach).await {
                Ok(ExecFrame::Stdout(d)) => send_channel(&out_tx, STDOUT, d).await,
                Ok(ExecFrame::Stderr(d)) => send_channel(&out_tx, STDERR, d).await,
                Ok(ExecFrame::Exit(code)) => break Ok(code),
                Ok(_) => {}
                Err(why) => break Err(why),
            }
        };
        let status = match ended {
            Ok(code) => outcome(code),
            Err(why) => json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": why}),
        };
        let body = serde_json::to_vec(&status).unwrap_or_default();
        send_channel(&out_tx, ERROR, body).await;
        let _ = out_tx
            .send((websocket::CLOSE, 1000u16.to_be_bytes().to_vec()))
            .await;
    };
    tokio::select! {
        _ = from_client => {}
        _ = to_client => {}
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
}

async fn send_channel(out: &mpsc::Sender<(u8, Vec<u8>)>, channel: u8, data: Vec<u8>) {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(&data);
    let _ = out.send((websocket::BINARY, message)).await;
}

/// What one client message asks of the command: input in pieces the node takes, a terminal
/// size, the end of input (v5). Anything else is dropped.
fn client_frames(message: &[u8], protocol: &str) -> Vec<ExecFrame> {
    let Some((&channel, data)) = message.split_first() else {
        return Vec::new();
    };
    match channel {
        STDIN => data
            .chunks(ExecFrame::MAX_DATA)
            .map(|c| ExecFrame::Stdin(c.to_vec()))
            .collect(),
        RESIZE => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Size {
                width: u16,
                height: u16,
            }
            serde_json::from_slice::<Size>(data)
                .map(|s| {
                    vec![ExecFrame::Resize {
                        width: s.width,
                        height: s.height,
                    }]
                })
                .unwrap_or_default()
        }
        CLOSE_CHANNEL if protocol == PROTOCOLS[0] && data.first() == Some(&STDIN) => {
            vec![ExecFrame::StdinClosed]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_query_and_messages_become_exec_frames() {
        let o = options("command=sh&command=-c&command=echo+hi&container=app&stdin=true&stdout=true&stderr=true&tty=false").unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert_eq!(o.container.as_deref(), Some("app"));
        assert!(o.stdin && !o.tty);
        let e = options("command=ls&follow=true").err().unwrap();
        assert!(e.contains("\"follow\""), "{e}");

        let big = [vec![STDIN], vec![b'x'; ExecFrame::MAX_DATA + 1]].concat();
        assert_eq!(client_frames(&big, PROTOCOLS[0]).len(), 2);
        assert_eq!(
            client_frames(b"\x04{\"Width\":80,\"Height\":24}", PROTOCOLS[0]),
            [ExecFrame::Resize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(
            client_frames(&[CLOSE_CHANNEL, STDIN], PROTOCOLS[0]),
            [ExecFrame::StdinClosed]
        );
        assert!(client_frames(&[CLOSE_CHANNEL, STDIN], PROTOCOLS[1]).is_empty());
        assert!(client_frames(b"", PROTOCOLS[0]).is_empty());
        assert_eq!(outcome(3)["details"]["causes"][0]["message"], "3");
        assert_eq!(outcome(0)["status"], "Success");
    }
}
