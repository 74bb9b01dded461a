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

mod affinity;
mod dial;
mod listeners;
mod overlay;
mod plan;
mod resolver;
mod udp;

pub use dial::dial_for_tunnel;
pub use plan::{plan, service_env, Backend, Listen, Route};
pub use udp::udp_tunnel_end;

use crate::config::Link;
use crate::sync::lock;
use plan::{key, Key};
use shoal_api::Kind;
use shoal_api::{Endpoints, Service};
use shoal_transport::proto::EventType;
use shoal_transport::{Seen, Selection, Watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(super) struct State {
    services: BTreeMap<Key, Service>,
    endpoints: BTreeMap<Key, Endpoints>,
    active: HashMap<Listen, listeners::Active>,
    /// Cluster IPs made local to the node.
    local: BTreeSet<Ipv4Addr>,
    /// Listeners that could not be had, so each is warned about once.
    failed: BTreeSet<Listen>,
    /// The cluster DNS server this node runs, on the DNS Service's address.
    dns: Option<(Ipv4Addr, CancellationToken)>,
    /// Whether the node was told that cluster IPs need root (said once).
    warned_local: bool,
}

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

    /// The ready endpoints' addresses of headless Service `svc` in `ns`, in order; `None`
    /// when there is no such Service or it is not headless.
    fn headless(&self, ns: &str, svc: &str) -> Option<Vec<Ipv4Addr>> {
        let key = (ns.to_string(), svc.to_string());
        let s = self.services.get(&key)?;
        if s.spec.cluster_ip.as_deref() != Some("None") {
            return None;
        }
        let mut ips: Vec<Ipv4Addr> = (self.endpoints.get(&key))
            .into_iter()
            .flat_map(|e| &e.subsets)
            .flat_map(|s| &s.addresses)
            .filter_map(|a| a.ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        Some(ips)
    }
}

impl crate::dns::Names for State {
    fn service(&self, ns: &str, svc: &str) -> Option<Vec<Ipv4Addr>> {
        if let Some(ips) = self.headless(ns, svc) {
            return Some(ips);
        }
        (self
            .services
            .contains_key(&(ns.to_string(), svc.to_string())))
        .then(|| self.cluster_ip(ns, svc).into_iter().collect())
    }

    /// A ready pod of headless Service `svc` by its name there: the hostname it has in the
    /// Service its subdomain names, or its dashed address.
    fn endpoint(&self, ns: &str, svc: &str, host: &str) -> Option<Ipv4Addr> {
        let ips = self.headless(ns, svc)?;
        let named = (self.endpoints.get(&(ns.to_string(), svc.to_string())))
            .into_iter()
            .flat_map(|e| &e.subsets)
            .flat_map(|s| &s.addresses)
            .find(|a| a.hostname.as_deref() == Some(host))
            .and_then(|a| a.ip.parse().ok());
        named.or_else(|| {
            ips.into_iter()
                .find(|ip| ip.to_string().replace('.', "-") == host)
        })
    }

    fn namespace_known(&self, ns: &str) -> bool {
        self.has_namespace(ns)
    }
}

struct Inner {
    node: String,
    link: Link,
    creds: crate::join::NodeCredentials,
    /// Where each node serves its peers: its InternalIP and its peer port.
    nodes: Mutex<HashMap<String, SocketAddr>>,
    /// Each node's pod range, so a peer speaks only for its own pods, and pods' packets go
    /// to the node that holds their destination.
    pod_ranges: Mutex<shoal_api::pod_routes::Routes>,
    /// Pods' packets to and from other nodes, once the node has pods with addresses of its
    /// range (`None`: it cannot carry them).
    overlay: std::sync::OnceLock<Option<Arc<overlay::Overlay>>>,
    peers: dial::Peers,
    state: Mutex<State>,
    /// Held while the listeners are made what the plan says, so two changes never interleave.
    applying: tokio::sync::Mutex<()>,
    /// The next endpoint in turn.
    next: AtomicUsize,
    /// Clients' endpoints, for Services with `sessionAffinity: ClientIP`.
    sticky: Mutex<affinity::Sticky>,
    /// The proxy's tasks (listeners, the DNS server, connections), and what stops them.
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// The node's local state: what the proxy routes by, kept for when the controller is away.
    local: Arc<crate::local::Local>,
    /// Changes to keep in it, written in batches off the async threads.
    keeping: tokio::sync::mpsc::Sender<Keep>,
    /// The NetworkPolicies of this node's pods: which endpoints a client may be given.
    policies: crate::policy::Policies,
}

/// A change for the node's local state, in the order the proxy learnt of them.
enum Keep {
    Listed(shoal_api::Kind, Vec<shoal_api::Object>),
    Changed(crate::local::Change),
}

/// The most changes waiting to be kept; past it, following the watches waits for the disk.
const KEEP_QUEUE: usize = 1024;

/// The node's service proxy; cheap to clone.
#[derive(Clone)]
pub struct Proxy(Arc<Inner>);

impl Proxy {
    pub fn new(
        node: &str,
        link: Link,
        creds: crate::join::NodeCredentials,
        local: Arc<crate::local::Local>,
    ) -> Proxy {
        let (keeping, queue) = tokio::sync::mpsc::channel(KEEP_QUEUE);
        let tasks = TaskTracker::new();
        tasks.spawn(keep_locally(local.clone(), queue));
        let policies = crate::policy::Policies::new(node, Some(local.clone()));
        Proxy(Arc::new(Inner {
            node: node.to_string(),
            link,
            creds,
            nodes: Mutex::new(HashMap::new()),
            pod_ranges: Mutex::default(),
            overlay: std::sync::OnceLock::new(),
            peers: Mutex::default(),
            state: Mutex::new(State {
                services: BTreeMap::new(),
                endpoints: BTreeMap::new(),
                active: HashMap::new(),
                local: BTreeSet::new(),
                failed: BTreeSet::new(),
                dns: None,
                warned_local: false,
            }),
            applying: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
            sticky: Mutex::default(),
            tasks,
            cancel: CancellationToken::new(),
            local,
            keeping,
            policies,
        }))
    }

    /// The node's NetworkPolicies, which the proxy holds connections to.
    pub fn policies(&self) -> &crate::policy::Policies {
        &self.0.policies
    }

    /// Routes by what the node's local state holds (the Services, Endpoints and Nodes last
    /// known), before the controller is reached: a node started offline serves its Services.
    pub async fn restore(&self) {
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
        {
            let mut s = lock(&self.0.state);
            s.services = services
                .into_iter()
                .map(|o| (key(&o.metadata), o))
                .collect();
            s.endpoints = endpoints
                .into_iter()
                .map(|o| (key(&o.metadata), o))
                .collect();
        }
        self.apply().await;
    }

    /// Keeps a kind as listed in the node's local state.
    async fn keep_listed(&self, kind: shoal_api::Kind, items: &[Vec<u8>]) {
        let objects: Vec<shoal_api::Object> = items
            .iter()
            .filter_map(|b| shoal_api::Object::from_json(b).ok())
            .collect();
        let _ = self.0.keeping.send(Keep::Listed(kind, objects)).await;
    }

    /// Keeps (or forgets) one watched object in the node's local state.
    async fn keep_event(&self, object: &[u8], deleted: bool) {
        use crate::local::Change;
        let Ok(obj) = shoal_api::Object::from_json(object) else {
            return;
        };
        let change = if deleted {
            Change::Forget(crate::local::key_of(&obj))
        } else {
            Change::Keep(Box::new(obj))
        };
        let _ = self.0.keeping.send(Keep::Changed(change)).await;
    }

    /// The Services of `namespace` as the proxy knows them (for pods' environment variables).
    pub fn services_in(&self, namespace: &str) -> Vec<Service> {
        lock(&self.0.state)
            .services
            .iter()
            .filter(|(k, _)| k.0 == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The cluster IP of Service `name` in `namespace`, if it has one.
    pub fn cluster_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        lock(&self.0.state).cluster_ip(namespace, name)
    }

    /// A wasm pod's name lookup in `namespace`, as the cluster DNS answers an OCI pod with its
    /// search path: `Some` for the cluster's names (empty when there is no such Service),
    /// `None` for names that are not the cluster's.
    pub fn resolve(&self, name: &str, namespace: &str) -> Option<Vec<IpAddr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let st = lock(&self.0.state);
        let v4 = |ips: Vec<Ipv4Addr>| ips.into_iter().map(IpAddr::V4).collect();
        if !name.contains('.') {
            let qualified = format!("{name}.{namespace}.svc.{}", crate::dns::DOMAIN);
            if let crate::dns::Lookup::Addresses(ips) = crate::dns::lookup(&qualified, &*st) {
                return Some(v4(ips));
            }
        }
        match crate::dns::lookup(&name, &*st) {
            crate::dns::Lookup::Addresses(ips) => Some(v4(ips)),
            crate::dns::Lookup::NoSuchName => Some(vec![]),
            crate::dns::Lookup::Elsewhere => None,
        }
    }

    /// The cluster DNS Service's address, once this node knows it.
    pub fn dns_address(&self) -> Option<Ipv4Addr> {
        self.cluster_ip(crate::dns::SERVICE_NAMESPACE, crate::dns::SERVICE_NAME)
    }

    /// Follows the Services, Endpoints and Nodes over this connection until it fails; what
    /// was learnt stays when it does.
    pub async fn follow(&self, client: &shoal_transport::Client) -> crate::Result<()> {
        let mut services = Watcher::new(Selection::all("Service"));
        let mut endpoints = Watcher::new(Selection::all("Endpoints"));
        let mut nodes = Watcher::new(Selection::all("Node"));
        // Each watcher's first sight is its list: all three are in before the first plan, so
        // no plan is made of Services without their Endpoints.
        self.take(Kind::Service, services.next(client).await?).await;
        self.take(Kind::Endpoints, endpoints.next(client).await?)
            .await;
        self.take(Kind::Node, nodes.next(client).await?).await;
        self.apply().await;
        loop {
            let (kind, seen) = tokio::select! {
                seen = services.next(client) => (Kind::Service, seen?),
                seen = endpoints.next(client) => (Kind::Endpoints, seen?),
                seen = nodes.next(client) => (Kind::Node, seen?),
            };
            if self.take(kind, seen).await {
                self.apply().await;
            }
        }
    }

    /// Takes in what a watch saw, and keeps it on the node's disk; whether the plan may have
    /// changed (a Node only says where its peer serves).
    async fn take(&self, kind: Kind, seen: Seen) -> bool {
        match seen {
            Seen::Listed { items, .. } => {
                self.keep_listed(kind, &items).await;
                match kind {
                    Kind::Node => {
                        lock(&self.0.nodes).clear();
                        for n in items.iter().filter_map(|b| decode::<shoal_api::Node>(b)) {
                            self.learn_node(&n, false);
                        }
                        return false;
                    }
                    Kind::Service => {
                        lock(&self.0.state).services =
                            decoded_by_key::<Service>(items, |o| &o.metadata)
                    }
                    _ => {
                        lock(&self.0.state).endpoints =
                            decoded_by_key::<Endpoints>(items, |o| &o.metadata)
                    }
                }
            }
            Seen::Changed { type_, object, .. } => {
                let deleted = type_ == EventType::Deleted;
                if kind == Kind::Node {
                    if deleted || self.learnt_node_changed(&object) {
                        self.keep_event(&object, deleted).await;
                    }
                    if let Some(node) = decode::<shoal_api::Node>(&object) {
                        self.learn_node(&node, deleted);
                    }
                    return false;
                }
                self.keep_event(&object, deleted).await;
                let mut s = lock(&self.0.state);
                if kind == Kind::Service {
                    if let Some(o) = decode::<Service>(&object) {
                        changed(&mut s.services, key(&o.metadata), o, deleted);
                    }
                } else if let Some(o) = decode::<Endpoints>(&object) {
                    changed(&mut s.endpoints, key(&o.metadata), o, deleted);
                }
            }
        }
        true
    }

    /// Whether a watched Node says something new about where it serves its peers: Nodes change
    /// with every heartbeat, and only their addresses are worth a write to the node's disk.
    fn learnt_node_changed(&self, object: &[u8]) -> bool {
        let Some(node) = decode::<shoal_api::Node>(object) else {
            return false;
        };
        let addr = dial::peer_addr(&node);
        let known = lock(&self.0.nodes).get(&node.metadata.name).copied();
        addr != known
    }

    /// Where `node` serves its peers, from its Node: the InternalIP and the port annotation.
    fn learn_node(&self, node: &shoal_api::Node, deleted: bool) {
        let range = (node.spec.pod_cidr.as_deref()).and_then(|c| c.parse().ok());
        let range = range.filter(|_| !deleted);
        if lock(&self.0.pod_ranges).set(&node.metadata.name, range) {
            self.route_pod_ranges();
        }
        let addr = dial::peer_addr(node);
        let mut nodes = lock(&self.0.nodes);
        match addr.filter(|_| !deleted) {
            Some(a) => nodes.insert(node.metadata.name.clone(), a),
            None => nodes.remove(&node.metadata.name),
        };
    }

    /// Whether `ip` is this node's own: its address, or a cluster IP made local here (what a
    /// process of the node connects from when it reaches a Service).
    pub fn is_node_address(&self, ip: IpAddr) -> bool {
        let own = lock(&self.0.nodes).get(&self.0.node).map(|a| a.ip());
        own == Some(ip) || matches!(ip, IpAddr::V4(v4) if lock(&self.0.state).local.contains(&v4))
    }

    /// Whether node `peer` may give `from` as a tunnel's client: any address but one in
    /// another node's pod range (as the controller checks what it relays).
    pub fn speaks_for(&self, peer: &str, from: IpAddr) -> bool {
        let ranges = lock(&self.0.pod_ranges);
        match from {
            IpAddr::V4(v4) => ranges.node_of(v4).is_none_or(|node| node == peer),
            IpAddr::V6(_) => true,
        }
    }

    /// Closes every listener (the agent is stopping); open connections finish on their own.
    pub fn shutdown(&self) {
        lock(&self.0.state).active.clear();
        self.0.cancel.cancel();
        self.0.tasks.close();
    }
}

fn decode<T: TryFrom<shoal_api::Object, Error = shoal_api::Error>>(b: &[u8]) -> Option<T> {
    shoal_api::Object::from_json(b).ok()?.into_typed().ok()
}

/// Every object in `items` that decodes as `T`, by its key.
fn decoded_by_key<T>(
    items: Vec<Vec<u8>>,
    meta: impl Fn(&T) -> &shoal_api::ObjectMeta,
) -> BTreeMap<Key, T>
where
    T: TryFrom<shoal_api::Object, Error = shoal_api::Error>,
{
    items
        .iter()
        .filter_map(|b| decode::<T>(b))
        .map(|o| (key(meta(&o)), o))
        .collect()
}

/// One watched change to a map of what is known.
fn changed<T>(known: &mut BTreeMap<Key, T>, k: Key, o: T, deleted: bool) {
    if deleted {
        known.remove(&k);
    } else {
        known.insert(k, o);
    }
}

/// Writes what the proxy learns into the node's local state, in order, a batch per commit,
/// off the async threads; ends when the proxy is gone.
async fn keep_locally(
    local: Arc<crate::local::Local>,
    mut queue: tokio::sync::mpsc::Receiver<Keep>,
) {
    use crate::local::Change;
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 256).await > 0 {
        let local = local.clone();
        let work = std::mem::take(&mut batch);
        let kept = tokio::task::spawn_blocking(move || {
            let mut changes: Vec<Change> = Vec::new();
            for k in work {
                match k {
                    Keep::Changed(c) => changes.push(c),
                    Keep::Listed(kind, objects) => {
                        local.apply(&changes)?;
                        changes.clear();
                        local.replace(kind, &objects)?;
                    }
                }
            }
            local.apply(&changes)
        })
        .await;
        match kept {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %shoal_transport::report(&e), "cannot keep the proxy's state on the node")
            }
            Err(e) => {
                tracing::warn!(error = %shoal_transport::report(&e), "cannot keep the proxy's state on the node")
            }
        }
    }
}
