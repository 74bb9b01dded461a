//! `pods/portforward` (`kubectl port-forward`): kubectl 1.31 and later open a WebSocket with
//! the `SPDY/3.1+portforward.k8s.io` protocol and speak SPDY inside it ([`super::spdy`]).
//! Each connection kubectl accepts locally becomes two streams with the same `requestID`
//! header: `error` (where a failure is written) and `data` (the bytes), to the `port` header.
//! The service authorizes each (admins only; the pod running; a wasm or hostNetwork pod only
//! at a declared port) and names the pod's node, which dials the pod as it does for the
//! service proxy; the door relays the bytes.

use super::exec::Caller;
use super::spdy::{self, Encoder, Frame};
use super::status::Doing;
use super::websocket::{self, Incoming};
use super::{error_response, Response};
use crate::server::NodeLinks;
use crate::service::{Reply, Service};
use hyper::header::HeaderMap;
use shoal_transport::proto::{ErrorCode, Request, Response as Answer, WireError};
use shoal_transport::Identity;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Streams a session may hold waiting for their mates or taking input, and connections it
/// may forward at once.
const MAX_STREAMS: usize = 256;
const MAX_CONNECTIONS: usize = 128;

/// The most read from the pod at once, sent as one DATA frame.
const CHUNK: usize = 32 * 1024;

/// What goes to the client: a SYN_REPLY (its header block is the writer's to encode),
/// frames already encoded, or the answer to a WebSocket ping.
enum Out {
    Reply(u32),
    Frame(Vec<u8>),
    Pong(Vec<u8>),
}

pub async fn handle(
    caller: Caller<'_>,
    target: &super::path::Target,
    headers: &HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let who = caller.who;
    let doing = Doing {
        verb: "create",
        who,
        target: Some(target),
    };
    let namespace = target.namespace.clone().unwrap_or_else(|| "default".into());
    let pod = target.name.clone().unwrap_or_default();
    // Authorized, and the pod able to take connections, before the upgrade.
    let check = Request::PortForward {
        namespace: namespace.clone(),
        pod: pod.clone(),
        port: None,
    };
    match caller.service.handle(who, check).await {
        Reply::One(Answer::Ok) => {}
        Reply::One(Answer::Error(e)) => return error_response(&e, &doing),
        _ => {
            let e = WireError::new(ErrorCode::Internal, "port-forward was not checked");
            return error_response(&e, &doing);
        }
    }
    let (Some(key), Some(protocol), Some(upgrade), true) = (
        headers.get(hyper::header::SEC_WEBSOCKET_KEY),
        websocket::chosen(headers, &[PROTOCOL]),
        upgrade,
        websocket::is_upgrade(headers),
    ) else {
        let message = format!("port-forward is served over WebSocket with the {PROTOCOL} protocol (kubectl 1.31 or later), not over a SPDY upgrade");
        return error_response(&WireError::new(ErrorCode::BadRequest, message), &doing);
    };
    let session = Session {
        service: caller.service.clone(),
        links: caller.links.clone(),
        who: who.clone(),
        namespace,
        pod,
        ended: CancellationToken::new(),
        connections: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
    };
    let credential = caller.key.map(String::from);
    caller.upgrades.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ended = session.ended.clone();
                let (service, who) = (session.service.clone(), session.who.clone());
                tokio::select! {
                    _ = session.run(io) => {}
                    _ = super::until_revoked(&service, &who, credential.as_deref()) => {
                        tracing::info!(identity = %who, "ended a port-forward of a revoked certificate");
                    }
                }
                ended.cancel();
            }
            Err(e) => tracing::debug!(error = %e, "port-forward: the upgrade failed"),
        }
    });
    websocket::switching(key, protocol)
}

/// One kubectl port-forward: its pod, and what ends every connection it forwards.
#[derive(Clone)]
struct Session {
    service: Service,
    links: NodeLinks,
    who: Identity,
    namespace: String,
    pod: String,
    ended: CancellationToken,
    connections: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A stream whose mate (same `requestID`) has not come yet.
enum Half {
    Error(u32),
    Data {
        id: u32,
        input: mpsc::Receiver<Option<Vec<u8>>>,
    },
}

impl Session {
    /// Reads the client's SPDY until it goes away, opening a forward for each pair of streams.
    async fn run<S>(self, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (rd, mut wr) = tokio::io::split(io);
        let (out, mut out_rx) = mpsc::channel::<Out>(64);
        let writer = tokio::spawn(async move {
            let mut encoder = Encoder::default();
            while let Some(o) = out_rx.recv().await {
                let (opcode, bytes) = match o {
                    Out::Reply(id) => (websocket::BINARY, encoder.syn_reply(id)),
                    Out::Frame(f) => (websocket::BINARY, f),
                    Out::Pong(p) => (websocket::PONG, p),
                };
                if websocket::write(&mut wr, opcode, &bytes).await.is_err() {
                    return;
                }
            }
        });
        let mut reader = websocket::Reader::new(rd);
        let mut decoder = spdy::Decoder::default();
        let mut buf = Vec::new();
        // Data streams' inputs by stream id; streams waiting for their mates by requestID.
        let mut inputs: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
        let mut waiting: HashMap<String, Half> = HashMap::new();
        'session: loop {
            match reader.next().await {
                Ok(Incoming::Data(m)) => buf.extend_from_slice(&m),
                Ok(Incoming::Ping(p)) => {
                    let _ = out.send(Out::Pong(p)).await;
                    continue;
                }
                Ok(Incoming::Close) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward: the client's WebSocket ended");
                    break;
                }
            }
            loop {
                let frame = match decoder.next(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(error = %e, "port-forward: ended a session");
                        break 'session;
                    }
                };
                match frame {
                    Frame::SynStream { id, headers, .. } => {
                        let open = inputs.len() + waiting.len();
                        self.open(id, &headers, open, &mut inputs, &mut waiting, &out)
                            .await;
                    }
                    Frame::Data { id, fin, data } => {
                        if let Some(input) = inputs.get(&id) {
                            let gone = !data.is_empty() && input.send(Some(data)).await.is_err();
                            if gone || fin {
                                let _ = input.send(None).await;
                                inputs.remove(&id);
                            }
                        }
                    }
                    // The forward sees its input gone and resets the pod's connection.
                    Frame::RstStream { id } => {
                        inputs.remove(&id);
                    }
                    Frame::Ping(id) => {
                        let _ = out.send(Out::Frame(Encoder::ping(id))).await;
                    }
                    Frame::GoAway => break 'session,
                    Frame::Other => {}
                }
            }
        }
        self.ended.cancel();
        drop(out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    }

    /// A stream the client opened: accepted, and once its mate is there, forwarded.
    async fn open(
        &self,
        id: u32,
        headers: &[(String, String)],
        open: usize,
        inputs: &mut HashMap<u32, mpsc::Sender<Option<Vec<u8>>>>,
        waiting: &mut HashMap<String, Half>,
        out: &mpsc::Sender<Out>,
    ) {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let port = header("port").and_then(|p| p.parse::<u16>().ok());
        let request = header("requestid").unwrap_or("").to_string();
        let (Some(port), Some(kind), true) = (port, header("streamtype"), open < MAX_STREAMS)
        else {
            let refused = Encoder::rst_stream(id, spdy::REFUSED_STREAM);
            let _ = out.send(Out::Frame(refused)).await;
            return;
        };
        let _ = out.send(Out::Reply(id)).await;
        let half = match kind {
            "error" => Half::Error(id),
            "data" => {
                let (tx, input) = mpsc::channel(16);
                inputs.insert(id, tx);
                Half::Data { id, input }
            }
            _ => return,
        };
        let (error, data, input) = match (waiting.remove(&request), half) {
            (Some(Half::Error(e)), Half::Data { id, input })
            | (Some(Half::Data { id, input }), Half::Error(e)) => (e, id, input),
            (_, half) => {
                waiting.insert(request, half);
                return;
            }
        };
        let (session, out) = (self.clone(), out.clone());
        let slot = self.connections.clone().try_acquire_owned();
        tokio::spawn(async move {
            let ended = session.ended.clone();
            let failed = match slot {
                Ok(_slot) => tokio::select! {
                    r = session.forward(port, data, input, &out) => r.err(),
                    _ = ended.cancelled() => None,
                },
                Err(_) => Some(format!(
                    "more than {MAX_CONNECTIONS} connections forwarded at once in one port-forward"
                )),
            };
            // Both our sides end, as the kubelet ends them: kubectl reads the error stream
            // once the data stream is done.
            let _ = out.send(Out::Frame(Encoder::data(data, b"", true))).await;
            if let Some(message) = failed {
                let _ = out
                    .send(Out::Frame(Encoder::data(error, message.as_bytes(), false)))
                    .await;
            }
            let _ = out.send(Out::Frame(Encoder::data(error, b"", true))).await;
        });
    }

    /// Connects to the pod through its node and relays until the pod's side ends, or the
    /// client resets the stream.
    async fn forward(
        &self,
        port: u16,
        data: u32,
        mut input: mpsc::Receiver<Option<Vec<u8>>>,
        out: &mpsc::Sender<Out>,
    ) -> Result<(), String> {
        let pod = &self.pod;
        let failed = |why: String| format!("error forwarding port {port} to pod {pod}: {why}");
        let request = Request::PortForward {
            namespace: self.namespace.clone(),
            pod: pod.clone(),
            port: Some(port),
        };
        let (node, dial) = match self.service.handle(&self.who, request).await {
            Reply::ToNode { node, request } => (node, request),
            Reply::One(Answer::Error(e)) => return Err(failed(e.message)),
            _ => return Err(failed("not relayed to a node".into())),
        };
        let (mut to_node, mut from_node) =
            super::exec::opened(&self.links, &node, &dial, "connect to the pod")
                .await
                .map_err(|e| failed(e.message))?;
        let upstream = async {
            loop {
                match input.recv().await {
                    Some(Some(bytes)) => {
                        if to_node.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    // The client is done sending: the pod reads the end, and may answer on.
                    Some(None) => {
                        let _ = to_node.finish();
                        return std::future::pending().await;
                    }
                    None => return,
                }
            }
        };
        let downstream = async {
            let mut chunk = vec![0u8; CHUNK];
            loop {
                match from_node.read(&mut chunk).await {
                    Ok(Some(n)) => {
                        let f = Encoder::data(data, &chunk[..n], false);
                        if out.send(Out::Frame(f)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(failed(format!("the node's stream broke: {e}"))),
                }
            }
        };
        tokio::select! {
            r = downstream => r,
            _ = upstream => Ok(()),
        }
    }
}
