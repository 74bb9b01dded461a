//! How the proxy reaches an endpoint: a pod on this node directly; one on another node
//! through a tunnel, straight to that node when it can be reached ([`Peer`]), else relayed
//! through the controller.

use super::plan::{Backend, Route};
use super::udp::Upstream;
use super::Proxy;
use crate::sync::lock;
use shoal_api::policy::Protocol;
use shoal_transport::proto::{Request, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a dial to an endpoint may take before the next endpoint is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a proxy reaches another node directly.
#[derive(Default)]
pub(super) enum Peer {
    /// Not tried yet (or forgotten after a failure).
    #[default]
    Unknown,
    Up(Arc<shoal_transport::Client>),
    /// Not reachable directly; relay until then, and try again after.
    Down(std::time::Instant),
}

/// Each node's direct connection, behind a lock of its own: a connect to one node that does
/// not answer holds up only the tunnels to that node.
pub(super) type Peers = Mutex<HashMap<String, Arc<tokio::sync::Mutex<Peer>>>>;

/// How long a node that could not be reached directly is left to the relay.
const PEER_RETRY: Duration = Duration::from_secs(30);
/// How long a direct connection to a peer may take to open.
const PEER_CONNECT: Duration = Duration::from_secs(2);

impl Proxy {
    pub(super) fn peer_slot(&self, node: &str) -> Arc<tokio::sync::Mutex<Peer>> {
        lock(&self.0.peers)
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    /// A direct connection to `node`, if it can be had: kept while it lasts; a node that
    /// cannot be reached is left to the relay for [`PEER_RETRY`].
    pub(super) async fn peer(&self, node: &str) -> Option<Arc<shoal_transport::Client>> {
        let slot = self.peer_slot(node);
        let mut peer = slot.lock().await;
        match &*peer {
            Peer::Up(c) if c.connection().close_reason().is_none() => return Some(c.clone()),
            Peer::Down(until) if std::time::Instant::now() < *until => return None,
            _ => {}
        }
        let addr = lock(&self.0.nodes).get(node).copied()?;
        let creds = self.0.creds.get()?;
        match shoal_transport::Client::connect_peer(addr, node, &creds, PEER_CONNECT).await {
            Ok(c) => {
                tracing::info!(peer = node, %addr, "reaching the node directly");
                let c = Arc::new(c);
                *peer = Peer::Up(c.clone());
                // The node's pods' packets may come back on it.
                let (proxy, from, conn) = (self.clone(), node.to_string(), c.connection().clone());
                self.0
                    .tasks
                    .spawn(async move { proxy.take_packets(Some(&from), &conn).await });
                Some(c)
            }
            Err(e) => {
                tracing::info!(peer = node, %addr, error = %shoal_transport::report(&e), "cannot reach the node directly; relaying through the controller");
                *peer = Peer::Down(std::time::Instant::now() + PEER_RETRY);
                None
            }
        }
    }

    /// Forgets the direct connection to `node` (it failed): the next tunnel tries again.
    async fn forget_peer(&self, node: &str) {
        *self.peer_slot(node).lock().await = Peer::Unknown;
    }

    /// Opens a connection to one of `route`'s endpoints, starting at the next in turn and
    /// trying the others when one cannot be reached.
    pub(super) async fn connect(&self, route: &Route, client: IpAddr) -> Option<Box<dyn Conn>> {
        let n = route.backends.len();
        let start = self.first(route, client);
        for i in 0..n {
            let b = &route.backends[(start + i) % n];
            if !self.allowed(client, b, Protocol::Tcp) {
                continue;
            }
            let local = b.node.as_deref().is_none_or(|node| node == self.0.node);
            let dialled = if local {
                dial_local(b).await.map(|s| Box::new(s) as Box<dyn Conn>)
            } else {
                self.dial_remote(b, client).await
            };
            match dialled {
                Ok(c) => {
                    self.reached(route, client, b);
                    return Some(c);
                }
                Err(e) => {
                    tracing::debug!(service = %route.service, endpoint = %format!("{}:{}", b.ip, b.port), error = %e, "endpoint unreachable; trying the next")
                }
            }
        }
        None
    }

    /// A UDP flow's upstream: the next endpoint in turn (a datagram cannot tell whether a
    /// pod is there, so only a tunnel that cannot be opened moves on to the next).
    pub(super) async fn connect_udp(&self, route: &Route, client: IpAddr) -> Option<Upstream> {
        let n = route.backends.len();
        let start = self.first(route, client);
        for i in 0..n {
            let b = &route.backends[(start + i) % n];
            if !self.allowed(client, b, Protocol::Udp) {
                continue;
            }
            let local = b.node.as_deref().is_none_or(|node| node == self.0.node);
            let opened = if local {
                async {
                    let ip: IpAddr = b.ip.parse().map_err(|e| format!("{}: {e}", b.ip))?;
                    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
                    let s = tokio::net::UdpSocket::bind(any)
                        .await
                        .map_err(|e| e.to_string())?;
                    s.connect((ip, b.port)).await.map_err(|e| e.to_string())?;
                    Ok(Upstream::Local(s))
                }
                .await
            } else {
                self.tunnel(b, true, client)
                    .await
                    .map(|(send, recv)| Upstream::Tunnel(send, recv))
            };
            match opened {
                Ok(u) => {
                    self.reached(route, client, b);
                    return Some(u);
                }
                Err(e) => {
                    tracing::debug!(service = %route.service, endpoint = %format!("{}:{}", b.ip, b.port), error = %e, "endpoint unreachable; trying the next")
                }
            }
        }
        None
    }

    /// Whether NetworkPolicy lets `client` reach endpoint `b`: the client's egress, when it is
    /// a pod of this node, and the endpoint's ingress, when it is.
    fn allowed(&self, client: IpAddr, b: &Backend, protocol: Protocol) -> bool {
        let Ok(ip) = b.ip.parse::<IpAddr>() else {
            return false;
        };
        let node = |a: IpAddr| self.is_node_address(a);
        let ok = (self.0.policies).connection_allowed(client, ip, b.port, protocol, &node);
        if !ok {
            tracing::debug!(%client, endpoint = %format!("{ip}:{}", b.port), "endpoint skipped: a NetworkPolicy does not allow it");
        }
        ok
    }

    /// Where `client` starts among `route`'s endpoints: the one it keeps under ClientIP
    /// affinity, else the next in turn.
    fn first(&self, route: &Route, client: IpAddr) -> usize {
        let now = std::time::Instant::now();
        (route.affinity)
            .and_then(|t| lock(&self.0.sticky).start(route, client, t, now))
            .unwrap_or_else(|| self.0.next.fetch_add(1, Ordering::Relaxed))
    }

    /// `client` reached `route` through `b`: what it keeps under ClientIP affinity.
    fn reached(&self, route: &Route, client: IpAddr, b: &Backend) {
        if let Some(t) = route.affinity {
            let now = std::time::Instant::now();
            lock(&self.0.sticky).remember(route, client, b, t, now);
        }
    }

    async fn dial_remote(&self, b: &Backend, client: IpAddr) -> Result<Box<dyn Conn>, String> {
        let (send, recv) = self.tunnel(b, false, client).await?;
        Ok(Box::new(tokio::io::join(recv, send)))
    }

    /// Opens a tunnel for `client` to endpoint `b` on its node: directly when the node can be
    /// reached, else through the controller.
    async fn tunnel(
        &self,
        b: &Backend,
        udp: bool,
        client: IpAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let node = b.node.clone().unwrap_or_default();
        if let Some(peer) = self.peer(&node).await {
            let dial = Request::Dial {
                ip: b.ip.clone(),
                port: b.port,
                udp,
                from: Some(client.to_string()),
            };
            match tokio::time::timeout(DIAL_TIMEOUT, open(peer.connection(), &dial)).await {
                Ok(Ok(streams)) => return Ok(streams),
                // The pod refused: the relay would hear the same.
                Ok(Err((e, true))) => return Err(e),
                Ok(Err((e, false))) => {
                    tracing::info!(peer = %node, error = %e, "the direct connection failed; relaying through the controller");
                    self.forget_peer(&node).await;
                }
                Err(_) => {
                    self.forget_peer(&node).await;
                }
            }
        }
        self.relay(b, udp, client).await
    }

    /// Opens a tunnel through the controller to endpoint `b` on its node.
    async fn relay(
        &self,
        b: &Backend,
        udp: bool,
        from: IpAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let controller = self
            .0
            .link
            .borrow()
            .clone()
            .ok_or("not connected to the controller")?;
        let req = Request::Tunnel {
            node: b.node.clone().unwrap_or_default(),
            ip: b.ip.clone(),
            port: b.port,
            udp,
            from: from.to_string(),
        };
        let opened = async {
            open(controller.connection(), &req)
                .await
                .map_err(|(e, _)| e)
        };
        match tokio::time::timeout(DIAL_TIMEOUT, opened).await {
            Ok(r) => r,
            Err(_) => Err("the tunnel did not open in time".into()),
        }
    }
}

/// Opens a stream on `conn` and sends `req`; the streams once the far end says Ok. An error
/// says whether the far end answered (`true`: it refused) or the connection failed.
async fn open(
    conn: &quinn::Connection,
    req: &Request,
) -> Result<(quinn::SendStream, quinn::RecvStream), (String, bool)> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| (e.to_string(), false))?;
    shoal_transport::frame::write(&mut send, req)
        .await
        .map_err(|e| (e.to_string(), false))?;
    match shoal_transport::frame::read::<Response, _>(&mut recv, shoal_transport::frame::MAX_FRAME)
        .await
    {
        Ok(Some(Response::Ok)) => Ok((send, recv)),
        Ok(Some(Response::Error(e))) => Err((e.message, true)),
        Ok(Some(other)) => Err((other.unexpected(), true)),
        Ok(None) => Err((
            "the far end closed the stream without answering".into(),
            false,
        )),
        Err(e) => Err((e.to_string(), false)),
    }
}

/// Either end of a proxied connection.
pub(super) trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

async fn dial_local(b: &Backend) -> Result<TcpStream, String> {
    let ip: IpAddr = b.ip.parse().map_err(|e| format!("{}: {e}", b.ip))?;
    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect((ip, b.port))).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Opens a connection to a pod on this node for a tunnel from another node.
pub async fn dial_for_tunnel(ip: IpAddr, port: u16) -> Result<TcpStream, String> {
    dial_local(&Backend {
        ip: ip.to_string(),
        port,
        node: None,
    })
    .await
}

/// Where a node serves its peers: its InternalIP and its peer port annotation.
pub(super) fn peer_addr(node: &shoal_api::Node) -> Option<SocketAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse::<IpAddr>().ok())
        .zip(
            node.metadata
                .annotations
                .get(shoal_api::node_restriction::PEER_PORT_ANNOTATION)
                .and_then(|p| p.parse::<u16>().ok()),
        )
        .map(|(ip, port)| SocketAddr::new(ip, port))
}
