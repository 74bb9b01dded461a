//! The HTTPS door: the Kubernetes REST API over TCP, so kubectl and its ecosystem work. It
//! authenticates with the same client certificates and bindings as the QUIC door and turns
//! each HTTP request into the service's own requests: no operation is served here that the
//! QUIC door could not make, and nothing is decided here that the service decides.

use crate::service::Service;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use hyper::{Method, StatusCode};
use serde_json::Value;
use shoal_transport::proto::WireError;
use shoal_transport::Identity;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod discovery;
mod exec;
mod logs;
mod objects;
mod pages;
mod path;
mod portforward;
mod protobuf;
mod query;
mod scale;
mod spdy;
mod status;
mod table;
mod watch;
mod websocket;

use path::Route;
use status::Doing;

/// A client gets this long for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// The largest request body taken (kube-apiserver's limit is 3 MiB as well).
const MAX_BODY: usize = 3 << 20;
/// Headers a request may send, in bytes.
const MAX_HEADERS: usize = 64 << 10;

/// A response body: all at once, or a stream (a watch) fed by a channel.
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

pub type Response = hyper::Response<Body>;

pub fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = hyper::Response::new(Body::Full(Some(body.into())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error_response(e: &WireError, doing: &Doing<'_>) -> Response {
    let (code, body) = status::status(e, doing);
    json_response(code, &body)
}

/// Connections one node may hold at once (the agent needs none; kubectl with a node's
/// credential a few), and connections without a certificate per address (they are only
/// ever answered 401). Admins are bounded only by [`MAX_CONNECTIONS`].
const NODE_CONNECTIONS: usize = 16;
const ANONYMOUS_PER_ADDRESS: usize = 8;

/// The connections each bounded identity holds.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

struct HeldSlot(Held, String);

impl Held {
    /// A slot for one more connection of `who` (none needed for an admin), or `None`: it
    /// holds as many as it may.
    fn enter(&self, who: &Identity, ip: std::net::IpAddr) -> Option<Option<HeldSlot>> {
        let (key, max) = match who {
            Identity::Admin(_) => return Some(None),
            Identity::Node(n) => (format!("node {n}"), NODE_CONNECTIONS),
            Identity::Anonymous => (format!("anonymous {ip}"), ANONYMOUS_PER_ADDRESS),
        };
        let mut m = self.0.lock().ok()?;
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Some(HeldSlot(self.clone(), key)))
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = (self.0).0.lock() {
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
    }
}

/// One authenticated caller's requests.
#[derive(Clone)]
struct Caller {
    service: Service,
    links: crate::server::NodeLinks,
    /// The lists being read in pages, every caller's.
    pages: Arc<pages::Pages>,
    who: Identity,
    key: Option<String>,
    /// The sessions of upgraded requests (exec, attach, port-forward), which the
    /// connection outlives.
    upgrades: TaskTracker,
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Service,
    links: crate::server::NodeLinks,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let held = Held::default();
    let pages = Arc::new(pages::Pages::default());
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting an HTTPS connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let held = held.clone();
        let service = service.clone();
        let links = links.clone();
        let pages = pages.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let (who, key) =
                shoal_transport::quic::tls_peer(stream.get_ref().1.peer_certificates());
            tracing::debug!(%remote, identity = %who, "HTTPS connection");
            let Some(_held) = held.enter(&who, remote.ip()) else {
                tracing::info!(%remote, identity = %who, "refused an HTTPS connection: too many from this identity");
                return;
            };
            let checker = service.clone();
            let upgrades = TaskTracker::new();
            let caller = Caller {
                service,
                links,
                pages,
                who: who.clone(),
                key: key.clone(),
                upgrades: upgrades.clone(),
            };
            let handler = hyper::service::service_fn(move |req| {
                let caller = caller.clone();
                async move { Ok::<_, std::convert::Infallible>(caller.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEADERS.max(8192))
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                .with_upgrades();
            tokio::pin!(conn);
            let revoked = until_revoked(&checker, &who, key.as_deref());
            tokio::pin!(revoked);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%remote, error = %e, "HTTPS connection ended");
                    }
                    // An upgraded connection goes on in its session: its slot is held (so
                    // execs and port-forwards count against the bounds) until that ends.
                    upgrades.close();
                    tokio::select! {
                        _ = upgrades.wait() => {}
                        _ = shutdown.cancelled() => {}
                        _ = &mut revoked => {}
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
                // A revoked credential or a deleted node loses its open watches and log
                // streams at once, as its QUIC connections are closed.
                _ = &mut revoked => {
                    tracing::info!(%remote, identity = %who, "closing the HTTPS connection of a revoked certificate");
                }
            }
        });
    }
}

/// Resolves once `who`'s credential is revoked or its node deleted, for what it holds open.
async fn until_revoked(service: &Service, who: &Identity, key: Option<&str>) {
    let mut revocations = service.revocations();
    loop {
        let recheck = match revocations.recv().await {
            Ok(revoked) => revoked == *who,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await
            }
        };
        if recheck && service.authenticate(who.clone(), key).await.is_err() {
            return;
        }
    }
}

impl Caller {
    async fn handle(&self, req: hyper::Request<Incoming>) -> Response {
        let anonymous = Doing {
            verb: "get",
            who: &self.who,
            target: None,
        };
        // The binding is checked at every request, as on QUIC: a revoked credential or a
        // deleted node stops working at once, also on a connection already open.
        let who = match self
            .service
            .authenticate(self.who.clone(), self.key.as_deref())
            .await
        {
            Ok(Identity::Anonymous) => {
                let e = crate::Error::Unauthenticated(
                    "Unauthorized: present a client certificate of the cluster (the kubeconfig the controller wrote, DATA_DIR/admin.conf)".into(),
                );
                return error_response(&e.into(), &anonymous);
            }
            Ok(who) => who,
            Err(e) => return error_response(&e, &anonymous),
        };
        let (mut parts, body) = req.into_parts();
        let Some(route) = path::route(parts.uri.path()) else {
            return not_found();
        };
        let ok = |v: Value| json_response(StatusCode::OK, &v);
        match route {
            Route::Version => ok(discovery::version()),
            Route::Health => {
                let mut r = hyper::Response::new(Body::Full(Some(Bytes::from_static(b"ok"))));
                *r.status_mut() = StatusCode::OK;
                r
            }
            Route::CoreVersions => ok(discovery::core_versions()),
            Route::Groups => ok(discovery::group_list()),
            Route::Group(g) => ok(discovery::group(&g)),
            Route::Resources { group, version } => ok(discovery::resources(&group, &version)),
            Route::OpenApiRoot => ok(discovery::open_api_root()),
            Route::OpenApi { group, version } => ok(discovery::open_api(&group, &version)),
            // What upgrades to a WebSocket and reaches into a pod through its node.
            Route::Objects(target)
                if matches!(
                    target.subresource.as_deref(),
                    Some("exec" | "attach" | "portforward")
                ) =>
            {
                let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                let caller = exec::Caller {
                    service: &self.service,
                    links: &self.links,
                    who: &who,
                    key: self.key.as_deref(),
                    upgrades: &self.upgrades,
                };
                if target.subresource.as_deref() == Some("portforward") {
                    return portforward::handle(caller, &target, &parts.headers, upgrade).await;
                }
                let query = parts.uri.query().unwrap_or("");
                exec::handle(caller, &target, query, &parts.headers, upgrade).await
            }
            Route::Objects(target) => {
                let body = if matches!(parts.method, Method::GET | Method::DELETE | Method::HEAD)
                    && parts.headers.get(hyper::header::CONTENT_LENGTH).is_none()
                {
                    Bytes::new()
                } else {
                    match read_body(body).await {
                        Ok(b) => b,
                        Err(r) => return r,
                    }
                };
                let request = objects::ApiRequest {
                    method: parts.method,
                    target,
                    query: query::Query::parse(parts.uri.query().unwrap_or("")),
                    accept: header(&parts.headers, hyper::header::ACCEPT),
                    content_type: header(&parts.headers, hyper::header::CONTENT_TYPE),
                    user_agent: header(&parts.headers, hyper::header::USER_AGENT),
                    body,
                };
                if request.target.subresource.as_deref() == Some("log") {
                    return logs::handle(&self.service, &self.links, &who, &request).await;
                }
                objects::handle(&self.service, &self.pages, &who, request).await
            }
        }
    }
}

/// A request header as text; empty if it is missing or not text.
fn header(headers: &hyper::HeaderMap, name: hyper::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn read_body(body: Incoming) -> Result<Bytes, Response> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("the request body is larger than the {MAX_BODY} bytes the server takes"),
        )),
        Err(e) => Err(failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("reading the request body: {e}"),
        )),
    }
}

/// A failure that is about the request itself, not an object.
fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = status::failure(code, reason, message, Default::default());
    json_response(code, &body)
}

fn not_found() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_holds_a_bounded_number_of_connections_an_admin_any() {
        let held = Held::default();
        let ip: std::net::IpAddr = [127, 0, 0, 1].into();
        let node = Identity::Node("pi".into());
        let slots: Vec<_> = (0..NODE_CONNECTIONS)
            .map(|_| held.enter(&node, ip))
            .collect();
        assert!(slots.iter().all(Option::is_some));
        assert!(held.enter(&node, ip).is_none(), "one more is refused");
        drop(slots);
        assert!(
            held.enter(&node, ip).is_some(),
            "freed slots are given again"
        );
        let admin = Identity::Admin("admin".into());
        assert!((0..100).all(|_| matches!(held.enter(&admin, ip), Some(None))));
        let anonymous: Vec<_> = (0..ANONYMOUS_PER_ADDRESS)
            .map(|_| held.enter(&Identity::Anonymous, ip))
            .collect();
        assert!(held.enter(&Identity::Anonymous, ip).is_none());
        assert!(held
            .enter(&Identity::Anonymous, [10, 0, 0, 1].into())
            .is_some());
        drop(anonymous);
    }
}
