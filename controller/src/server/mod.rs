//! The controller process: opens the store and the PKI in the data dir, writes the admin
//! credential and the join token, and serves the API over QUIC (UDP) and, on the same port
//! number, the Kubernetes API over HTTPS (TCP) until shut down.

use crate::artifacts::Artifacts;
use crate::error::{Error, Result};
use crate::service::{Reply, Service};
use crate::store::{Store, StoreConfig};
use shoal_transport::pki::{Ca, JoinToken, ADMIN_ORG, DEFAULT_CERT_TTL};
use shoal_transport::proto::{Request, Response, WireError};
use shoal_transport::quic::{peer_identity, peer_key, send_response};
use shoal_transport::{Credentials, Identity, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod links;
mod packets;
mod transfers;

use links::Anonymous;
pub use links::NodeLinks;
use transfers::{compile_upload, receive_push, send_blob};

/// Streams one connection may have open at once; more wait (QUIC flow control enforces the
/// same limit on the client's side).
const STREAMS_PER_CONNECTION: usize = shoal_transport::quic::SERVER_STREAMS as usize;
/// A client gets this long to send its request once it opened a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What a connection without a certificate may do at most: it can only join, which takes one
/// small request.
const ANONYMOUS_STREAMS: u32 = 2;
const ANONYMOUS_FRAME: usize = 64 * 1024;
const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(30);
/// Bytes an authenticated connection may have in flight to the controller (the endpoint
/// grants anonymous ones only the small default of [`shoal_transport::quic`]).
const AUTHENTICATED_WINDOW: u32 = 64 << 20;
/// How long a connection whose certificate was just revoked may finish what it has in flight.
const REVOKED_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra names and addresses for the server certificate.
    pub tls_san: Vec<String>,
    /// The address written into admin.conf; by default the listen address (loopback when the
    /// controller listens on every interface).
    pub advertise: Option<String>,
    pub store: StoreConfig,
    /// Silence after which a node is marked NotReady.
    pub node_grace: Duration,
    /// How long pods without a toleration of their own stay on an unreachable node before
    /// they are evicted; `None`: never (the edge default may well be never).
    pub default_unreachable_toleration: Option<Duration>,
    /// The pods' address range; each node gets a /24 of it.
    pub cluster_cidr: crate::ipam::ClusterCidr,
    /// How long a node's client certificate lives (the agent renews it after two thirds).
    pub node_cert_ttl: Duration,
    /// The range Services get their virtual address from.
    pub service_cidr: crate::service_ips::ServiceCidr,
    /// Bytes per second of each node's pods' packets the controller relays.
    pub relay_rate: u64,
}

pub struct Controller {
    node_grace: Duration,
    default_toleration: Option<Duration>,
    links: NodeLinks,
    service: Service,
    server: Server,
    /// The Kubernetes API over HTTPS, on the same port number over TCP.
    https: std::net::TcpListener,
    https_tls: Arc<rustls::ServerConfig>,
    admin_config: PathBuf,
    token: String,
}

impl Controller {
    pub async fn start(config: ControllerConfig) -> Result<Controller> {
        let dir = &config.data_dir;
        shoal_transport::pki::make_private_dir(dir)?;
        let tls_dir = dir.join("tls");
        shoal_transport::pki::make_private_dir(&tls_dir)?;
        let ca = Arc::new(Ca::load_or_create(&tls_dir)?);
        let peer_ca = Arc::new(Ca::load_or_create_peer(&tls_dir)?);
        let store = Store::open(dir, config.store.clone())?;
        let artifacts = Arc::new(Artifacts::open(dir)?);

        // Shoal's own clients verify the name `shoal-controller`; these are for everyone else.
        let mut sans = config.tls_san.clone();
        sans.push("127.0.0.1".to_string());
        if !config.listen.ip().is_unspecified() {
            sans.push(config.listen.ip().to_string());
        }
        // Names no node may take. The machine's host name is not among them: the node that
        // runs beside the controller (`shoal up`) carries it, as a K3s server's node does, and
        // a node's serving certificate comes from the peer CA, which no client of the
        // controller trusts.
        let reserved = sans.clone();
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim().to_ascii_lowercase();
            if shoal_api::validate::check_dns1123_subdomain(&host).is_ok() {
                sans.push(host);
            }
        }
        let service = Service::new(store, ca.clone(), peer_ca, artifacts, config.cluster_cidr)
            .with_service_cidr(config.service_cidr)
            .with_trust(crate::trust::TrustConfig {
                node_cert_ttl: config.node_cert_ttl,
                reserved_names: reserved,
            });
        service.bootstrap().await?;
        let server_cert = ca.issue_server(&sans)?;
        let (server, https) = bind_doors(config.listen, ca.cert_pem(), &server_cert)?;
        let https_tls = shoal_transport::quic::https_config(ca.cert_pem(), &server_cert)?;
        let bound = server.local_addr()?;

        let admin_config = dir.join("admin.conf");
        if !admin_config.exists() {
            let admin = ca.issue_client("admin", ADMIN_ORG, DEFAULT_CERT_TTL)?;
            let host = if bound.ip().is_unspecified() {
                SocketAddr::new([127, 0, 0, 1].into(), bound.port()).to_string()
            } else {
                bound.to_string()
            };
            Credentials {
                server: config.advertise.clone().unwrap_or(host),
                certificate_authority: ca.cert_pem().to_string(),
                client_certificate: admin.cert_pem,
                client_key: admin.key_pem,
                peer_certificate_authority: None,
            }
            .save(&admin_config)?;
        } else if let Ok(mut creds) = Credentials::load(&admin_config) {
            // Keep the credential pointing at the port actually bound (tests bind port 0).
            let port = bound.port().to_string();
            if !creds.server.ends_with(&format!(":{port}")) && config.advertise.is_none() {
                if let Some((host, _)) = creds.server.rsplit_once(':') {
                    creds.server = format!("{host}:{port}");
                    creds.save(&admin_config)?;
                }
            }
        }

        // The credential the controller wrote is bound to its key like every other one (and
        // one written before keys were bound is bound now); past two thirds of its life it is
        // renewed for the same key at start, as K3s renews its certificates.
        let mut admin = Credentials::load(&admin_config)?;
        service
            .adopt_credential("admin", &admin.client_certificate)
            .await?;
        let (until, lifetime) = shoal_transport::pki::lifetime_of(&admin.client_certificate)?;
        if shoal_transport::pki::renewal_due(until, lifetime, std::time::SystemTime::now()) {
            let csr = shoal_transport::pki::csr_for(&admin.client_key, "admin")?;
            admin.client_certificate = ca.sign_admin(&csr, "admin", DEFAULT_CERT_TTL)?;
            admin.save(&admin_config)?;
            let (until, _) = shoal_transport::pki::lifetime_of(&admin.client_certificate)?;
            let der = shoal_transport::pki::pem_to_der(&admin.client_certificate)?;
            let key = shoal_transport::pki::fingerprint_of_cert(&der)?;
            service.bind_credential("admin", &key, until.into()).await?;
            tracing::info!(path = %admin_config.display(), "renewed the admin credential for another year");
        }

        let token_path = dir.join("token");
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let token = service
                    .create_token(
                        "bootstrap token",
                        Some(JoinToken::new(ca.hash())),
                        None,
                        None,
                    )
                    .await?;
                shoal_transport::pki::write_private(&token_path, format!("{token}\n").as_bytes())?;
                // Never the token itself: logs travel further than the data dir.
                tracing::info!(
                    "the join token for agents is in {} (readable by root only); list and revoke tokens with `shoal token`",
                    token_path.display()
                );
                token
            }
        };
        tracing::info!(listen = %bound, data_dir = %dir.display(), "controller ready");
        Ok(Controller {
            node_grace: config.node_grace,
            default_toleration: config.default_unreachable_toleration,
            links: NodeLinks::new(config.relay_rate),
            service,
            server,
            https,
            https_tls,
            admin_config,
            token,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.server.local_addr()?)
    }

    pub fn admin_config(&self) -> &PathBuf {
        &self.admin_config
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and waits for open requests.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let tracker = TaskTracker::new();
        tracker.spawn(crate::scheduler_loop::run(
            self.service.store().clone(),
            self.service.artifacts().clone(),
            shutdown.clone(),
        ));
        tracker.spawn(crate::reconcile::run(
            self.service.store().clone(),
            self.links.clone(),
            self.service.service_cidr().to_string(),
            shutdown.clone(),
        ));
        tracker.spawn(crate::upgrades::run(
            self.service.store().clone(),
            self.service.artifacts().clone(),
            shutdown.clone(),
        ));
        tracker.spawn(crate::node_lifecycle::run(
            self.service.store().clone(),
            self.node_grace,
            self.default_toleration,
            shutdown.clone(),
        ));
        match tokio::net::TcpListener::from_std(self.https) {
            Ok(listener) => {
                tracker.spawn(crate::http::serve(
                    listener,
                    self.https_tls.clone(),
                    self.service.clone(),
                    self.links.clone(),
                    shutdown.clone(),
                    tracker.clone(),
                ));
            }
            Err(e) => tracing::error!(error = %e, "cannot serve the Kubernetes API over HTTPS"),
        }
        let anonymous = Anonymous::default();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                i = self.server.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            let service = self.service.clone();
            let shutdown = shutdown.clone();
            let conn_tracker = tracker.clone();
            let links = self.links.clone();
            let anonymous = anonymous.clone();
            tracker.spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %shoal_transport::report(&e), "handshake failed");
                        return;
                    }
                };
                serve_connection(conn, service, links, anonymous, shutdown, conn_tracker).await;
            });
        }
        self.server.close();
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

/// The QUIC endpoint (UDP) and the HTTPS listener (TCP) on one port number. When the port is
/// chosen by the system (0), a number free for UDP may be taken for TCP: another is tried.
fn bind_doors(
    listen: SocketAddr,
    ca_pem: &str,
    cert: &shoal_transport::pki::Issued,
) -> Result<(Server, std::net::TcpListener)> {
    let mut attempts = if listen.port() == 0 { 20 } else { 1 };
    loop {
        let server = Server::bind(listen, ca_pem, cert)?;
        let bound = server.local_addr()?;
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => {
                tcp.set_nonblocking(true)
                    .map_err(|e| Error::Config(format!("HTTPS listener {bound}: {e}")))?;
                return Ok((server, tcp));
            }
            Err(e) => {
                attempts -= 1;
                if attempts == 0 {
                    return Err(Error::Config(format!(
                        "cannot listen for HTTPS (the Kubernetes API) on TCP {bound}: {e}"
                    )));
                }
                server.close();
            }
        }
    }
}

/// Serves one connection's streams. The identity its certificate claims is checked against
/// the bindings when it connects, at every request, and again whenever a binding of that
/// identity changes (a deleted node, a revoked or rotated credential): then it is closed.
async fn serve_connection(
    conn: quinn::Connection,
    service: Service,
    links: NodeLinks,
    anonymous: Anonymous,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let claimed = peer_identity(&conn);
    let key = peer_key(&conn);
    tracing::debug!(remote = %conn.remote_address(), identity = %claimed, "connection");
    let refuse = |conn: &quinn::Connection, why: &str| {
        let why: String = why.chars().take(200).collect();
        conn.close(4u32.into(), why.as_bytes());
    };
    let mut _slot = None;
    let (streams, frame_max, lifetime) = if claimed == Identity::Anonymous {
        match anonymous.enter(conn.remote_address().ip()) {
            Some(slot) => _slot = Some(slot),
            None => {
                refuse(&conn, "too many connections without a certificate");
                return;
            }
        }
        conn.set_max_concurrent_bi_streams(ANONYMOUS_STREAMS.into());
        (
            ANONYMOUS_STREAMS as usize,
            ANONYMOUS_FRAME,
            ANONYMOUS_LIFETIME,
        )
    } else {
        let lifetime = shoal_transport::quic::peer_lifetime(&conn);
        if let Err(e) = service
            .adopt_legacy_node(&claimed, key.as_deref(), lifetime)
            .await
        {
            tracing::warn!(identity = %claimed, error = %shoal_transport::report(&e), "cannot bind a node that joined before keys were bound");
        }
        if let Err(e) = service.authenticate(claimed.clone(), key.as_deref()).await {
            tracing::info!(remote = %conn.remote_address(), identity = %claimed, "refused a revoked certificate");
            refuse(&conn, &e.message);
            return;
        }
        conn.set_receive_window(AUTHENTICATED_WINDOW.into());
        (
            STREAMS_PER_CONNECTION,
            shoal_transport::frame::MAX_FRAME,
            Duration::MAX,
        )
    };
    let expired = tokio::time::sleep(lifetime.min(Duration::from_secs(100 * 365 * 24 * 3600)));
    tokio::pin!(expired);
    let mut revocations = service.revocations();
    let limit = Arc::new(Semaphore::new(streams));
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = &mut expired => {
                refuse(&conn, "a connection without a certificate may only join");
                break;
            }
            r = revocations.recv() => {
                let recheck = match r {
                    Ok(who) => who == claimed,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if recheck {
                    if let Err(e) = service.authenticate(claimed.clone(), key.as_deref()).await {
                        tracing::info!(identity = %claimed, "closing the connection of a revoked certificate");
                        // What is in flight (the answer to a rotation on this very
                        // connection) ends first, briefly; every new request is refused.
                        let _ = tokio::time::timeout(
                            REVOKED_GRACE,
                            limit.acquire_many(streams as u32),
                        )
                        .await;
                        refuse(&conn, &e.message);
                        break;
                    }
                }
                continue;
            }
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let stream = Stream {
            service: service.clone(),
            links: links.clone(),
            conn: conn.clone(),
            claimed: claimed.clone(),
            key: key.clone(),
            frame_max,
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            stream.serve(send, recv, shutdown).await;
            drop(permit);
        });
    }
    if let Identity::Node(n) = &claimed {
        links.remove(n, &conn);
    }
}

/// An error as the answer to a stream: its wire code comes from [`Error::code`], the one
/// mapping.
fn refusal(e: Error) -> Response {
    Response::Error(e.into())
}

/// Relays a request to a node over its own connection and pipes the answers back.
async fn relay(
    send: &mut quinn::SendStream,
    links: &NodeLinks,
    node: &str,
    request: &Request,
    shutdown: &CancellationToken,
) {
    let (_to_node, mut from_node) = match links.ask(node, request).await {
        Ok(s) => s,
        Err(e) => {
            let _ = send_response(send, &refusal(e)).await;
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = send.stopped() => break,
            r = shoal_transport::frame::read::<Response, _>(&mut from_node, shoal_transport::frame::MAX_FRAME) => r,
        };
        match next {
            Ok(Some(r)) => {
                if send_response(send, &r).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = send_response(send, &refusal(Error::unreachable(node, &e))).await;
                break;
            }
        }
    }
}

/// Joins a stream to one the controller opens to `node` with `request`: a node's service
/// connection to a pod on another node ([`Request::Dial`]), or an admin's exec
/// ([`Request::Exec`]). Passes on the node's answer, then copies bytes both ways until both
/// ends are done. Both legs are mutual-TLS QUIC connections.
async fn tunnel(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    links: &NodeLinks,
    node: &str,
    dial: Request,
    shutdown: &CancellationToken,
) {
    let Some(conn) = links.get(node) else {
        let e = refusal(Error::Unreachable(format!(
            "node {node:?} is not connected"
        )));
        let _ = send_response(&mut send, &e).await;
        let _ = send.finish();
        return;
    };
    let dialed = async {
        let (mut to_node, mut from_node) = conn
            .open_bi()
            .await
            .map_err(|e| shoal_transport::Error::Connection(e.to_string()))?;
        shoal_transport::frame::write(&mut to_node, &dial).await?;
        let answer = shoal_transport::frame::read::<Response, _>(
            &mut from_node,
            shoal_transport::frame::MAX_FRAME,
        )
        .await?
        .unwrap_or_else(|| {
            refusal(Error::Unreachable(format!(
                "node {node:?} closed the stream"
            )))
        });
        Ok::<_, shoal_transport::Error>((to_node, from_node, answer))
    };
    let (mut to_node, mut from_node) = match tokio::time::timeout(REQUEST_TIMEOUT, dialed).await {
        Ok(Ok((to, from, Response::Ok))) => {
            if send_response(&mut send, &Response::Ok).await.is_err() {
                return;
            }
            (to, from)
        }
        Ok(Ok((_, _, answer))) => {
            let _ = send_response(&mut send, &answer).await;
            let _ = send.finish();
            return;
        }
        Ok(Err(e)) => {
            let e = refusal(Error::unreachable(node, &e));
            let _ = send_response(&mut send, &e).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            let e = refusal(Error::Unreachable(format!("node {node:?} did not answer")));
            let _ = send_response(&mut send, &e).await;
            let _ = send.finish();
            return;
        }
    };
    let up = async {
        let _ = tokio::io::copy(&mut recv, &mut to_node).await;
        let _ = to_node.finish();
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_node, &mut send).await;
        let _ = send.finish();
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

/// What one stream is served with: the connection it came on and who that claims to be.
struct Stream {
    service: Service,
    links: NodeLinks,
    conn: quinn::Connection,
    claimed: Identity,
    key: Option<String>,
    frame_max: usize,
}

impl Stream {
    async fn serve(
        self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        shutdown: CancellationToken,
    ) {
        let read = shoal_transport::frame::read::<Request, _>(&mut recv, self.frame_max);
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => {
                let e = refusal(Error::BadRequest(
                    "the stream ended before a request".into(),
                ));
                let _ = send_response(&mut send, &e).await;
                let _ = send.finish();
                return;
            }
            Ok(Err(e)) => {
                let e = refusal(Error::BadRequest(shoal_transport::report(&e).to_string()));
                let _ = send_response(&mut send, &e).await;
                let _ = send.finish();
                return;
            }
            Err(_) => return,
        };
        // Every request, not only the connection, passes the bindings.
        let who = match self
            .service
            .authenticate(self.claimed.clone(), self.key.as_deref())
            .await
        {
            Ok(who) => who,
            Err(e) => {
                let _ = send_response(&mut send, &Response::Error(e)).await;
                let _ = send.finish();
                return;
            }
        };
        if let (Request::PutNode { object }, Identity::Node(n)) = (&request, &who) {
            // What the node may not write at all is refused before it can claim a session.
            if let Err(e) = self.service.admit_node(n, object) {
                let _ = send_response(&mut send, &Response::Error(e.into())).await;
                let _ = send.finish();
                return;
            }
            match self.links.claim(n, &self.conn).await {
                Ok(true) => {
                    let relay = packets::Relay::new(&self.service, &self.links, n);
                    tokio::spawn(relay.run(self.conn.clone()));
                }
                Ok(false) => {}
                Err(why) => {
                    tracing::warn!(node = %n, remote = %self.conn.remote_address(), "{why}");
                    let _ = send_response(&mut send, &refusal(Error::Conflict(why))).await;
                    let _ = send.finish();
                    return;
                }
            }
        }
        serve_stream(
            send,
            recv,
            &self.service,
            &self.links,
            &who,
            request,
            shutdown,
        )
        .await
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: &Service,
    links: &NodeLinks,
    who: &Identity,
    request: Request,
    shutdown: CancellationToken,
) {
    if let Request::Push {
        reference,
        size,
        digest,
        platforms,
    } = &request
    {
        let response = match who {
            Identity::Admin(_) => {
                receive_push(&mut recv, service, reference, *size, digest, platforms).await
            }
            _ => refusal(Error::Forbidden("only admins may push artifacts".into())),
        };
        let _ = send_response(&mut send, &response).await;
        let _ = send.finish();
        return;
    }
    if let Request::Compile {
        digest,
        size,
        target,
    } = &request
    {
        let done = match service.authorize_compile(who, *size, target).await {
            Ok(node) => compile_upload(&mut send, &mut recv, service, node, digest, *size, target)
                .await
                .map_err(WireError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = send_response(&mut send, &Response::Error(e)).await;
        }
        let _ = send.finish();
        return;
    }
    if let Request::Tunnel {
        node,
        ip,
        port,
        udp,
        from,
    } = &request
    {
        match service
            .authorize_tunnel(who, node, ip, *port, *udp, from)
            .await
        {
            Ok(()) => {
                let dial = Request::Dial {
                    ip: ip.clone(),
                    port: *port,
                    udp: *udp,
                    from: Some(from.clone()),
                };
                tunnel(send, recv, links, node, dial, &shutdown).await
            }
            Err(e) => {
                let _ = send_response(&mut send, &Response::Error(e)).await;
                let _ = send.finish();
            }
        }
        return;
    }
    match service.handle(who, request).await {
        Reply::One(response) => {
            let _ = send_response(&mut send, &response).await;
        }
        Reply::Fetch { blob, offset } => {
            if let Err(e) = send_blob(&mut send, &blob, offset).await {
                tracing::debug!(error = %shoal_transport::report(&e), "artifact transfer ended early");
            }
        }
        // An exec's stream goes both ways, as a tunnel's does, and so does a port-forward.
        Reply::ToNode {
            node,
            request: request @ (Request::Exec { .. } | Request::Dial { .. }),
        } => return tunnel(send, recv, links, &node, request, &shutdown).await,
        Reply::ToNode { node, request } => {
            relay(&mut send, links, &node, &request, &shutdown).await
        }
        Reply::Watch(mut stream) => loop {
            let response = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = send.stopped() => break,
                r = stream.next() => r,
            };
            let last = matches!(response, Response::Error(_));
            if send_response(&mut send, &response).await.is_err() || last {
                break;
            }
        },
    }
    let _ = send.finish();
}
