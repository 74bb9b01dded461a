//! The service proxy (kube-proxy's job, in user space, with no iptables): every agent listens
//! on each Service's cluster IP and node ports while the Service has ready endpoints, and
//! passes each connection to one of them, round-robin, on whichever node it runs. An endpoint
//! on this node is dialled directly; one on another node through a tunnel over the nodes'
//! mutual-TLS QUIC connections to the controller, so nodes need not share a network.
//!
//! Cluster IPs are made local to the node with a `local` route on loopback per address (the
//! "AnyIP" trick), so pods reach them through their default route to the node and the node
//! reaches them itself; with no listener, the kernel refuses a connection at once.
//!
//! What to listen on is a pure function of the Services and Endpoints ([`plan`]); the proxy
//! keeps the last ones it heard of, and its listeners, while the controller is away.

use crate::Link;
use shoal_api::{Endpoints, Service};
use shoal_transport::proto::{Request, Response};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Where a Service port is served on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listen {
    pub addr: SocketAddr,
    pub udp: bool,
}

/// One ready endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub ip: String,
    pub port: u16,
    /// The node the pod runs on; `None` when the Endpoints do not say.
    pub node: Option<String>,
}

/// What one listener serves: `namespace/name:port` and its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    pub backends: Vec<Backend>,
}

type Key = (String, String);

fn key(m: &shoal_api::ObjectMeta) -> Key {
    (m.namespace_or_default().to_string(), m.name.clone())
}

/// Every listener this node should have: each Service port on its cluster IP and, for
/// NodePort and LoadBalancer Services, on the node port of every address, for as long as the
/// port has ready endpoints (none: no listener, so a connection is refused, not hung).
pub fn plan(
    services: &BTreeMap<Key, Service>,
    endpoints: &BTreeMap<Key, Endpoints>,
) -> BTreeMap<Listen, Route> {
    let mut out = BTreeMap::new();
    for (k, svc) in services {
        let cluster_ip: Option<Ipv4Addr> = svc
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok());
        let single = svc.spec.ports.len() == 1;
        for p in &svc.spec.ports {
            let udp = p.protocol.as_deref() == Some("UDP");
            let backends: Vec<Backend> = endpoints
                .get(k)
                .into_iter()
                .flat_map(|e| &e.subsets)
                .flat_map(|s| {
                    let port = s
                        .ports
                        .iter()
                        .find(|ep| ep.name == p.name || (single && s.ports.len() == 1));
                    port.into_iter().flat_map(move |ep| {
                        s.addresses.iter().filter_map(move |a| {
                            Some(Backend {
                                ip: a.ip.clone(),
                                port: u16::try_from(ep.port).ok()?,
                                node: a.node_name.clone(),
                            })
                        })
                    })
                })
                .collect();
            if backends.is_empty() {
                continue;
            }
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let route = Route {
                service: format!("{}/{}:{}", k.0, k.1, p.port),
                backends,
            };
            if let Some(ip) = cluster_ip {
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                out.insert(Listen { addr, udp }, route.clone());
            }
            if let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), np);
                out.insert(Listen { addr, udp }, route);
            }
        }
    }
    out
}

struct Active {
    route: Arc<RwLock<Route>>,
    cancel: CancellationToken,
}

struct State {
    services: BTreeMap<Key, Service>,
    endpoints: BTreeMap<Key, Endpoints>,
    active: HashMap<Listen, Active>,
    /// Cluster IPs made local to the node.
    local: BTreeSet<Ipv4Addr>,
    /// Listeners that could not be had, so each is warned about once.
    failed: BTreeSet<Listen>,
    /// The cluster DNS server this node runs, on the DNS Service's address.
    dns: Option<(Ipv4Addr, CancellationToken)>,
    /// Whether the node was told that cluster IPs need root (said once).
    warned_local: bool,
}

/// How a proxy reaches another node directly.
enum Peer {
    Up(Arc<shoal_transport::Client>),
    /// Not reachable directly; relay until then, and try again after.
    Down(std::time::Instant),
}

/// How long a node that could not be reached directly is left to the relay.
const PEER_RETRY: Duration = Duration::from_secs(30);
/// How long a direct connection to a peer may take to open.
const PEER_CONNECT: Duration = Duration::from_secs(2);

impl State {
    /// The cluster IP of Service `svc` in `ns`, if it has one.
    fn cluster_ip(&self, ns: &str, svc: &str) -> Option<Ipv4Addr> {
        self.services
            .get(&(ns.to_string(), svc.to_string()))?
            .spec
            .cluster_ip
            .as_deref()?
            .parse()
            .ok()
    }

    /// Whether any Service is in `ns` (so `web.ns` is the cluster's name to answer).
    fn has_namespace(&self, ns: &str) -> bool {
        self.services.keys().any(|k| k.0 == ns)
    }
}

struct Inner {
    node: String,
    link: Link,
    creds: crate::join::NodeCredentials,
    /// Where each node serves its peers: its InternalIP and its peer port.
    nodes: Mutex<HashMap<String, SocketAddr>>,
    peers: tokio::sync::Mutex<HashMap<String, Peer>>,
    state: Mutex<State>,
    next: AtomicUsize,
    connections: tokio_util::task::TaskTracker,
    /// The node's local state: what the proxy routes by, kept for when the controller is away.
    local: Arc<crate::local::Local>,
}

/// The node's service proxy; cheap to clone.
#[derive(Clone)]
pub struct Proxy(Arc<Inner>);

/// How long a dial to an endpoint may take before the next endpoint is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

impl Proxy {
    pub fn new(
        node: &str,
        link: Link,
        creds: crate::join::NodeCredentials,
        local: Arc<crate::local::Local>,
    ) -> Proxy {
        Proxy(Arc::new(Inner {
            node: node.to_string(),
            link,
            creds,
            nodes: Mutex::new(HashMap::new()),
            peers: tokio::sync::Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                services: BTreeMap::new(),
                endpoints: BTreeMap::new(),
                active: HashMap::new(),
                local: BTreeSet::new(),
                failed: BTreeSet::new(),
                dns: None,
                warned_local: false,
            }),
            next: AtomicUsize::new(0),
            connections: tokio_util::task::TaskTracker::new(),
            local,
        }))
    }

    /// Routes by what the node's local state holds (the Services, Endpoints and Nodes last
    /// known), before the controller is reached: a node started offline serves its Services.
    pub fn restore(&self) {
        use shoal_api::Kind;
        let local = &self.0.local;
        for n in local.list_typed::<shoal_api::Node>(Kind::Node) {
            self.learn_node(&n, false);
        }
        let services: Vec<Service> = local.list_typed(Kind::Service);
        let endpoints: Vec<Endpoints> = local.list_typed(Kind::Endpoints);
        if services.is_empty() {
            return;
        }
        tracing::info!(
            services = services.len(),
            "routing by the Services and Endpoints last known, from the node's local state"
        );
        if let Ok(mut s) = self.0.state.lock() {
            s.services = services
                .into_iter()
                .map(|o| (key(&o.metadata), o))
                .collect();
            s.endpoints = endpoints
                .into_iter()
                .map(|o| (key(&o.metadata), o))
                .collect();
        }
        self.apply();
    }

    /// Keeps a kind as listed in the node's local state.
    fn keep_listed(&self, kind: shoal_api::Kind, items: &[Vec<u8>]) {
        let objects: Vec<shoal_api::Object> = items
            .iter()
            .filter_map(|b| shoal_api::Object::from_json(b).ok())
            .collect();
        if let Err(e) = self.0.local.replace(kind, &objects) {
            tracing::warn!(error = %e, "cannot keep the proxy's state on the node");
        }
    }

    /// Keeps (or forgets) one watched object in the node's local state.
    fn keep_event(&self, object: &[u8], deleted: bool) {
        let Ok(obj) = shoal_api::Object::from_json(object) else {
            return;
        };
        if deleted {
            self.0.local.forget(&crate::local::key_of(&obj));
        } else {
            self.0.local.keep(&obj);
        }
    }

    /// The Services of `namespace` as the proxy knows them (for pods' environment variables).
    pub fn services_in(&self, namespace: &str) -> Vec<Service> {
        self.0
            .state
            .lock()
            .map(|s| {
                s.services
                    .iter()
                    .filter(|(k, _)| k.0 == namespace)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cluster IP of Service `name` in `namespace`, if it has one.
    pub fn cluster_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.0.state.lock().ok()?.cluster_ip(namespace, name)
    }

    /// A wasm pod's name lookup in `namespace`, as the cluster DNS answers an OCI pod with its
    /// search path: `Some` for the cluster's names (empty when there is no such Service),
    /// `None` for names that are not the cluster's.
    pub fn resolve(&self, name: &str, namespace: &str) -> Option<Vec<IpAddr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let st = self.0.state.lock().ok()?;
        let ip_of = |ns: &str, svc: &str| st.cluster_ip(ns, svc);
        let known = |ns: &str| st.has_namespace(ns);
        if !name.contains('.') {
            let qualified = format!("{name}.{namespace}.svc.{}", crate::dns::DOMAIN);
            if let crate::dns::Lookup::Address(ip) = crate::dns::lookup(&qualified, ip_of, known) {
                return Some(vec![IpAddr::V4(ip)]);
            }
        }
        match crate::dns::lookup(&name, ip_of, known) {
            crate::dns::Lookup::Address(ip) => Some(vec![IpAddr::V4(ip)]),
            crate::dns::Lookup::NoSuchName => Some(vec![]),
            crate::dns::Lookup::Elsewhere => None,
        }
    }

    /// The cluster DNS Service's address, once this node knows it.
    pub fn dns_address(&self) -> Option<Ipv4Addr> {
        self.cluster_ip(crate::dns::SERVICE_NAMESPACE, crate::dns::SERVICE_NAME)
    }

    /// Follows the Services and Endpoints over this connection until it fails; what was
    /// learnt stays when it does.
    pub async fn follow(&self, client: &shoal_transport::Client) -> crate::Result<()> {
        let (services, srev) = list(client, "Service").await?;
        let (endpoints, erev) = list(client, "Endpoints").await?;
        let (nodes, nrev) = list(client, "Node").await?;
        self.keep_listed(shoal_api::Kind::Service, &services);
        self.keep_listed(shoal_api::Kind::Endpoints, &endpoints);
        self.keep_listed(shoal_api::Kind::Node, &nodes);
        for n in nodes.iter().filter_map(|b| decode::<shoal_api::Node>(b)) {
            self.learn_node(&n, false);
        }
        if let Ok(mut s) = self.0.state.lock() {
            s.services = services
                .into_iter()
                .filter_map(|b| decode::<Service>(&b))
                .map(|o| (key(&o.metadata), o))
                .collect();
            s.endpoints = endpoints
                .into_iter()
                .filter_map(|b| decode::<Endpoints>(&b))
                .map(|o| (key(&o.metadata), o))
                .collect();
        }
        self.apply();
        let mut sw = client.stream(&watch("Service", srev)).await?;
        let mut ew = client.stream(&watch("Endpoints", erev)).await?;
        let mut nw = client.stream(&watch("Node", nrev)).await?;
        loop {
            let (next, is_service) = tokio::select! {
                n = sw.next() => (n?, true),
                n = ew.next() => (n?, false),
                n = nw.next() => {
                    if let Some(Response::Event { type_, object, .. }) = n? {
                        let deleted = type_ == shoal_transport::proto::EventType::Deleted;
                        if deleted || self.learnt_node_changed(&object) {
                            self.keep_event(&object, deleted);
                        }
                        if let Some(node) = decode::<shoal_api::Node>(&object) {
                            self.learn_node(&node, type_ == shoal_transport::proto::EventType::Deleted);
                        }
                    }
                    continue;
                }
            };
            let (type_, object) = match next {
                Some(Response::Event { type_, object, .. }) => (type_, object),
                Some(Response::Error(e)) => return Err(crate::Error::Server(e.message)),
                Some(_) => continue,
                None => return Err(crate::Error::Server("the controller ended a watch".into())),
            };
            let deleted = type_ == shoal_transport::proto::EventType::Deleted;
            self.keep_event(&object, deleted);
            if let Ok(mut s) = self.0.state.lock() {
                if is_service {
                    if let Some(o) = decode::<Service>(&object) {
                        let k = key(&o.metadata);
                        if deleted {
                            s.services.remove(&k);
                        } else {
                            s.services.insert(k, o);
                        }
                    }
                } else if let Some(o) = decode::<Endpoints>(&object) {
                    let k = key(&o.metadata);
                    if deleted {
                        s.endpoints.remove(&k);
                    } else {
                        s.endpoints.insert(k, o);
                    }
                }
            }
            self.apply();
        }
    }

    /// Whether a watched Node says something new about where it serves its peers: Nodes change
    /// with every heartbeat, and only their addresses are worth a write to the node's disk.
    fn learnt_node_changed(&self, object: &[u8]) -> bool {
        let Some(node) = decode::<shoal_api::Node>(object) else {
            return false;
        };
        let addr = peer_addr(&node);
        let known = self
            .0
            .nodes
            .lock()
            .ok()
            .and_then(|n| n.get(&node.metadata.name).copied());
        addr != known
    }

    /// Where `node` serves its peers, from its Node: the InternalIP and the port annotation.
    fn learn_node(&self, node: &shoal_api::Node, deleted: bool) {
        let addr = peer_addr(node);
        if let Ok(mut nodes) = self.0.nodes.lock() {
            match addr.filter(|_| !deleted) {
                Some(a) => nodes.insert(node.metadata.name.clone(), a),
                None => nodes.remove(&node.metadata.name),
            };
        }
    }

    /// A direct connection to `node`, if it can be had: kept while it lasts; a node that
    /// cannot be reached is left to the relay for [`PEER_RETRY`].
    async fn peer(&self, node: &str) -> Option<Arc<shoal_transport::Client>> {
        let mut peers = self.0.peers.lock().await;
        match peers.get(node) {
            Some(Peer::Up(c)) if c.connection().close_reason().is_none() => return Some(c.clone()),
            Some(Peer::Down(until)) if std::time::Instant::now() < *until => return None,
            _ => {}
        }
        let addr = self.0.nodes.lock().ok()?.get(node).copied()?;
        match shoal_transport::Client::connect_peer(addr, node, &self.0.creds.get(), PEER_CONNECT)
            .await
        {
            Ok(c) => {
                tracing::info!(peer = node, %addr, "reaching the node directly");
                let c = Arc::new(c);
                peers.insert(node.to_string(), Peer::Up(c.clone()));
                Some(c)
            }
            Err(e) => {
                tracing::info!(peer = node, %addr, error = %e, "cannot reach the node directly; relaying through the controller");
                peers.insert(
                    node.to_string(),
                    Peer::Down(std::time::Instant::now() + PEER_RETRY),
                );
                None
            }
        }
    }

    /// Makes the listeners what [`plan`] says: new ones bound, gone ones closed, the rest
    /// given their new endpoints in place (connections already open are left alone).
    fn apply(&self) {
        let Ok(mut s) = self.0.state.lock() else {
            return;
        };
        let want = plan(&s.services, &s.endpoints);
        let wanted_ips: BTreeSet<Ipv4Addr> = s
            .services
            .values()
            .filter_map(|svc| svc.spec.cluster_ip.as_deref()?.parse().ok())
            .collect();
        for ip in wanted_ips.difference(&s.local.clone()) {
            match local_route("replace", *ip) {
                Ok(()) => {
                    s.local.insert(*ip);
                }
                Err(e) => {
                    if !s.warned_local {
                        s.warned_local = true;
                        tracing::warn!(%ip, error = %e, "cannot make a cluster IP local to this node (the agent needs root for cluster IPs); node ports still work");
                    }
                }
            }
        }
        for ip in s.local.difference(&wanted_ips).copied().collect::<Vec<_>>() {
            let _ = local_route("delete", ip);
            s.local.remove(&ip);
        }
        let dns = s.cluster_ip(crate::dns::SERVICE_NAMESPACE, crate::dns::SERVICE_NAME);
        if s.dns.as_ref().map(|d| d.0) != dns {
            if let Some((_, cancel)) = s.dns.take() {
                cancel.cancel();
            }
            if let Some(ip) = dns.filter(|ip| s.local.contains(ip)) {
                match bind_udp(SocketAddr::new(IpAddr::V4(ip), 53)) {
                    Ok(socket) => {
                        tracing::info!(%ip, "serving the cluster's names to pods");
                        let cancel = CancellationToken::new();
                        tokio::spawn(serve_dns(self.clone(), socket, ip, cancel.clone()));
                        s.dns = Some((ip, cancel));
                    }
                    Err(e) => tracing::warn!(%ip, error = %e, "cannot serve cluster DNS"),
                }
            }
        }
        s.active.retain(|listen, a| {
            let keep = want.contains_key(listen);
            if !keep {
                a.cancel.cancel();
                tracing::info!(listen = %listen.addr, "service has no ready endpoints: closed");
            }
            keep
        });
        s.failed.retain(|l| want.contains_key(l));
        for (listen, route) in want {
            if let Some(a) = s.active.get(&listen) {
                if let Ok(mut r) = a.route.write() {
                    if *r != route {
                        *r = route;
                    }
                }
                continue;
            }
            if listen.udp {
                let socket = match bind_udp(listen.addr) {
                    Ok(sock) => sock,
                    Err(e) => {
                        if s.failed.insert(listen) {
                            tracing::warn!(listen = %listen.addr, service = %route.service, error = %e, "cannot serve a service port");
                        }
                        continue;
                    }
                };
                s.failed.remove(&listen);
                tracing::info!(listen = %listen.addr, protocol = "UDP", service = %route.service, endpoints = route.backends.len(), "serving service");
                let route = Arc::new(RwLock::new(route));
                let cancel = CancellationToken::new();
                tokio::spawn(serve_udp(
                    self.clone(),
                    socket,
                    route.clone(),
                    cancel.clone(),
                ));
                s.active.insert(listen, Active { route, cancel });
                continue;
            }
            let std_listener = match bind_tcp(listen.addr) {
                Ok(l) => l,
                Err(e) => {
                    if s.failed.insert(listen) {
                        tracing::warn!(listen = %listen.addr, service = %route.service, error = %e, "cannot serve a service port");
                    }
                    continue;
                }
            };
            let listener = match TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(listen = %listen.addr, error = %e, "cannot serve a service port");
                    continue;
                }
            };
            s.failed.remove(&listen);
            tracing::info!(listen = %listen.addr, service = %route.service, endpoints = route.backends.len(), "serving service");
            let route = Arc::new(RwLock::new(route));
            let cancel = CancellationToken::new();
            tokio::spawn(accept(
                self.clone(),
                listener,
                route.clone(),
                cancel.clone(),
            ));
            s.active.insert(listen, Active { route, cancel });
        }
    }

    /// Closes every listener (the agent is stopping); open connections finish on their own.
    pub fn shutdown(&self) {
        if let Ok(mut s) = self.0.state.lock() {
            if let Some((_, cancel)) = s.dns.take() {
                cancel.cancel();
            }
            for (_, a) in s.active.drain() {
                a.cancel.cancel();
            }
        }
        self.0.connections.close();
    }

    /// Opens a connection to one of `route`'s endpoints, starting at the next in turn and
    /// trying the others when one cannot be reached.
    async fn connect(&self, route: &Route) -> Option<Box<dyn Conn>> {
        let n = route.backends.len();
        let start = self.0.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let b = &route.backends[(start + i) % n];
            let local = b.node.as_deref().is_none_or(|node| node == self.0.node);
            let dialled = if local {
                dial_local(b).await.map(|s| Box::new(s) as Box<dyn Conn>)
            } else {
                self.dial_remote(b).await
            };
            match dialled {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::debug!(service = %route.service, endpoint = %format!("{}:{}", b.ip, b.port), error = %e, "endpoint unreachable; trying the next")
                }
            }
        }
        None
    }

    /// A UDP flow's upstream: the next endpoint in turn (a datagram cannot tell whether a
    /// pod is there, so only a tunnel that cannot be opened moves on to the next).
    async fn connect_udp(&self, route: &Route) -> Option<Upstream> {
        let n = route.backends.len();
        let start = self.0.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let b = &route.backends[(start + i) % n];
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
                self.tunnel(b, true)
                    .await
                    .map(|(send, recv)| Upstream::Tunnel(send, recv))
            };
            match opened {
                Ok(u) => return Some(u),
                Err(e) => {
                    tracing::debug!(service = %route.service, endpoint = %format!("{}:{}", b.ip, b.port), error = %e, "endpoint unreachable; trying the next")
                }
            }
        }
        None
    }

    async fn dial_remote(&self, b: &Backend) -> Result<Box<dyn Conn>, String> {
        let (send, recv) = self.tunnel(b, false).await?;
        Ok(Box::new(tokio::io::join(recv, send)))
    }

    /// Opens a tunnel to endpoint `b` on its node: directly when the node can be reached,
    /// else through the controller.
    async fn tunnel(
        &self,
        b: &Backend,
        udp: bool,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let node = b.node.clone().unwrap_or_default();
        if let Some(peer) = self.peer(&node).await {
            let dial = Request::Dial {
                ip: b.ip.clone(),
                port: b.port,
                udp,
            };
            match tokio::time::timeout(DIAL_TIMEOUT, open(peer.connection(), &dial)).await {
                Ok(Ok(streams)) => return Ok(streams),
                // The pod refused: the relay would hear the same.
                Ok(Err((e, true))) => return Err(e),
                Ok(Err((e, false))) => {
                    tracing::info!(peer = %node, error = %e, "the direct connection failed; relaying through the controller");
                    self.0.peers.lock().await.remove(&node);
                }
                Err(_) => {
                    self.0.peers.lock().await.remove(&node);
                }
            }
        }
        self.relay(b, udp).await
    }

    /// Opens a tunnel through the controller to endpoint `b` on its node.
    async fn relay(
        &self,
        b: &Backend,
        udp: bool,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let client = self
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
        };
        let opened = async { open(client.connection(), &req).await.map_err(|(e, _)| e) };
        match tokio::time::timeout(DIAL_TIMEOUT, opened).await {
            Ok(r) => r,
            Err(_) => Err("the tunnel did not open in time".into()),
        }
    }
}

/// Answers pods' DNS queries on `socket`: the cluster's names from what the proxy knows, the
/// rest from the node's resolvers.
async fn serve_dns(
    proxy: Proxy,
    socket: tokio::net::UdpSocket,
    ip: Ipv4Addr,
    cancel: CancellationToken,
) {
    let socket = Arc::new(socket);
    let upstreams = crate::dns::upstreams(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ip,
    );
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, client) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let msg = buf[..n].to_vec();
        let q = match crate::dns::parse_query(&msg) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(%client, error = %e, "bad DNS query");
                continue;
            }
        };
        let found = {
            let state = proxy.0.state.lock();
            let Ok(st) = state else { return };
            crate::dns::lookup(
                &q.name,
                |ns, svc| st.cluster_ip(ns, svc),
                |ns| st.has_namespace(ns),
            )
        };
        let socket = socket.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let answer = match found {
                crate::dns::Lookup::Elsewhere => {
                    match crate::dns::forward(&msg, &upstreams).await {
                        Some(a) => a,
                        None => crate::dns::reply(&q, &found),
                    }
                }
                _ => crate::dns::reply(&q, &found),
            };
            let _ = socket.send_to(&answer, client).await;
        });
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
        Ok(other) => Err((format!("unexpected answer {other:?}"), true)),
        Err(e) => Err((e.to_string(), false)),
    }
}

/// How long a UDP flow (one client address to one endpoint) lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(30);

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}

/// One UDP flow's way to its endpoint: a socket connected to a pod on this node, or a tunnel
/// through the controller carrying length-prefixed datagrams.
enum Upstream {
    Local(tokio::net::UdpSocket),
    Tunnel(quinn::SendStream, quinn::RecvStream),
}

/// Serves a UDP Service port: each client address is a flow, pinned to the endpoint its first
/// datagram went to, until it is idle for [`UDP_IDLE`].
async fn serve_udp(
    proxy: Proxy,
    socket: tokio::net::UdpSocket,
    route: Arc<RwLock<Route>>,
    cancel: CancellationToken,
) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "service receive failed");
                    continue;
                }
            },
        };
        let datagram = buf[..n].to_vec();
        let existing = flows.lock().ok().and_then(|f| f.get(&client).cloned());
        if let Some(tx) = existing {
            if tx.try_send(datagram).is_ok() {
                continue;
            }
            continue; // the flow is closing or full: drop, as a busy link would
        }
        let current = match route.read() {
            Ok(r) => r.clone(),
            Err(_) => return,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
        let _ = tx.try_send(datagram);
        if let Ok(mut f) = flows.lock() {
            f.insert(client, tx);
        }
        let (proxy2, socket, flows) = (proxy.clone(), socket.clone(), flows.clone());
        proxy.0.connections.spawn(async move {
            match proxy2.connect_udp(&current).await {
                Some(up) => udp_flow(up, rx, socket, client).await,
                None => {
                    tracing::info!(service = %current.service, %client, "no endpoint of the service could be reached")
                }
            }
            if let Ok(mut f) = flows.lock() {
                f.remove(&client);
            }
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
                &Response::Error(shoal_transport::proto::WireError {
                    code: shoal_transport::proto::ErrorCode::Internal,
                    message: format!("udp socket: {e}"),
                }),
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

/// Either end of a proxied connection.
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
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

/// A listener for `addr` (std sets SO_REUSEADDR, so a port is had again at once).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

async fn accept(
    proxy: Proxy,
    listener: TcpListener,
    route: Arc<RwLock<Route>>,
    cancel: CancellationToken,
) {
    loop {
        let (mut inbound, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "service accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = inbound.set_nodelay(true);
        let current = match route.read() {
            Ok(r) => r.clone(),
            Err(_) => return,
        };
        let proxy2 = proxy.clone();
        proxy.0.connections.spawn(async move {
            match proxy2.connect(&current).await {
                Some(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut *outbound).await;
                }
                None => {
                    tracing::info!(service = %current.service, %peer, "no endpoint of the service could be reached");
                }
            }
        });
    }
}

/// Adds or removes the `local` route that makes `ip` an address of this node.
fn local_route(op: &str, ip: Ipv4Addr) -> Result<(), String> {
    let net = format!("{ip}/32");
    shoal_runtime::oci::netns::ip(&["route", op, "local", &net, "dev", "lo", "table", "local"])
}

/// Where a node serves its peers: its InternalIP and its peer port annotation.
fn peer_addr(node: &shoal_api::Node) -> Option<SocketAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse::<IpAddr>().ok())
        .zip(
            node.metadata
                .annotations
                .get(crate::peer::PORT_ANNOTATION)
                .and_then(|p| p.parse::<u16>().ok()),
        )
        .map(|(ip, port)| SocketAddr::new(ip, port))
}

fn decode<T: TryFrom<shoal_api::Object, Error = shoal_api::Error>>(b: &[u8]) -> Option<T> {
    shoal_api::Object::from_json(b).ok()?.into_typed().ok()
}

async fn list(client: &shoal_transport::Client, kind: &str) -> crate::Result<(Vec<Vec<u8>>, u64)> {
    let req = Request::List {
        kind: kind.into(),
        namespace: None,
        selector: String::new(),
        fields: String::new(),
    };
    match client.call(&req).await? {
        Response::List { items, revision } => Ok((items, revision)),
        Response::Error(e) => Err(crate::Error::Server(e.message)),
        other => Err(crate::Error::Internal(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

fn watch(kind: &str, revision: u64) -> Request {
    Request::Watch {
        kind: kind.into(),
        namespace: None,
        selector: String::new(),
        fields: String::new(),
        revision,
    }
}

/// The variables a pod gets for each Service of its namespace that exists when it starts, as
/// the kubelet sets them: `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT` (and one per named
/// port), and the Docker-link style `{NAME}_PORT`, `{NAME}_PORT_{P}_{PROTO}[_PROTO|_PORT|_ADDR]`.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in services {
        let Some(ip) = svc
            .spec
            .cluster_ip
            .as_deref()
            .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
        else {
            continue;
        };
        let Some(first) = svc.spec.ports.first() else {
            continue;
        };
        let name = svc.metadata.name.to_uppercase().replace('-', "_");
        env.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &svc.spec.ports {
            if let Some(pn) = &p.name {
                let pn = pn.to_uppercase().replace('-', "_");
                env.push((format!("{name}_SERVICE_PORT_{pn}"), p.port.to_string()));
            }
        }
        let proto = |p: &shoal_api::ServicePort| {
            p.protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase()
        };
        env.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first), first.port),
        ));
        for p in &svc.spec.ports {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            env.push((base.clone(), format!("{pr}://{ip}:{}", p.port)));
            env.push((format!("{base}_PROTO"), pr));
            env.push((format!("{base}_PORT"), p.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{
        EndpointAddress, EndpointPort, EndpointSubset, ObjectMeta, ServicePort, ServiceSpec,
    };

    fn svc(ty: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: ServiceSpec {
                type_: Some(ty.into()),
                cluster_ip: Some("10.43.0.7".into()),
                ports,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn port(name: Option<&str>, port: i32, node_port: Option<i32>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            port,
            node_port,
            ..Default::default()
        }
    }

    fn endpoints(ports: Vec<(Option<&str>, i32)>, addrs: &[(&str, &str)]) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            subsets: vec![EndpointSubset {
                addresses: addrs
                    .iter()
                    .map(|(ip, node)| EndpointAddress {
                        ip: ip.to_string(),
                        node_name: Some(node.to_string()),
                        target_ref: None,
                    })
                    .collect(),
                ports: ports
                    .into_iter()
                    .map(|(n, p)| EndpointPort {
                        name: n.map(str::to_string),
                        port: p,
                        protocol: Some("TCP".into()),
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn maps(
        s: Service,
        e: Option<Endpoints>,
    ) -> (BTreeMap<Key, Service>, BTreeMap<Key, Endpoints>) {
        let k = ("default".to_string(), "web".to_string());
        (
            [(k.clone(), s)].into(),
            e.into_iter().map(|e| (k.clone(), e)).collect(),
        )
    }

    #[test]
    fn cluster_ips_and_node_ports_listen_only_with_ready_endpoints() {
        let ep = endpoints(
            vec![(None, 8080)],
            &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
        );
        let (s, e) = maps(svc("NodePort", vec![port(None, 80, Some(30080))]), Some(ep));
        let p = plan(&s, &e);
        let addrs: Vec<String> = p.keys().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["0.0.0.0:30080", "10.43.0.7:80"]);
        let route = p.values().next().expect("route");
        assert_eq!(route.service, "default/web:80");
        assert_eq!(route.backends.len(), 2);
        assert_eq!(route.backends[1].node.as_deref(), Some("n2"));
        assert_eq!(route.backends[0].port, 8080);
        // No endpoints, or none ready: nothing listens.
        let (s, e) = maps(svc("NodePort", vec![port(None, 80, Some(30080))]), None);
        assert!(plan(&s, &e).is_empty());
        let (s, e) = maps(
            svc("ClusterIP", vec![port(None, 80, None)]),
            Some(endpoints(vec![(None, 8080)], &[])),
        );
        assert!(plan(&s, &e).is_empty());
    }

    #[test]
    fn named_ports_go_to_their_own_endpoint_ports() {
        let ep = endpoints(
            vec![(Some("http"), 8080), (Some("metrics"), 9090)],
            &[("10.42.1.2", "n1")],
        );
        let (s, e) = maps(
            svc(
                "ClusterIP",
                vec![
                    port(Some("http"), 80, None),
                    port(Some("metrics"), 9100, None),
                ],
            ),
            Some(ep),
        );
        let p = plan(&s, &e);
        let got: Vec<(String, u16)> = p
            .iter()
            .map(|(l, r)| (l.addr.to_string(), r.backends[0].port))
            .collect();
        assert_eq!(
            got,
            [
                ("10.43.0.7:80".to_string(), 8080),
                ("10.43.0.7:9100".to_string(), 9090)
            ]
        );
    }

    #[test]
    fn pods_get_the_kubelet_service_variables() {
        let mut s = svc("ClusterIP", vec![port(Some("http"), 80, None)]);
        s.metadata.name = "redis-primary".into();
        let env: BTreeMap<String, String> = service_env(&[s]).into_iter().collect();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "10.43.0.7");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "80");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://10.43.0.7:80");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP"], "tcp://10.43.0.7:80");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP_PROTO"], "tcp");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP_PORT"], "80");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP_ADDR"], "10.43.0.7");
        let mut headless = svc("ClusterIP", vec![port(None, 80, None)]);
        headless.spec.cluster_ip = Some("None".into());
        assert!(service_env(&[headless]).is_empty());
    }
}
