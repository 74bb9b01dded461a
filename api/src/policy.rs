//! NetworkPolicies resolved to addresses: for each pod a policy selects, the peers and ports it
//! may take connections from (ingress) and make them to (egress), with every pod and namespace
//! selector turned into pods' addresses. The controller resolves them (it alone sees every
//! pod), and gives each node only what the pods bound to it need; the node enforces them
//! (nftables in an OCI pod's network namespace, the service proxy, a wasm pod's socket check)
//! by [`PodRules::allows`], without ever learning other nodes' pods' labels.
//!
//! As Kubernetes documents: a pod no policy selects (for a direction) is not isolated and
//! allows everything; a selected pod allows what at least one of its policies' rules allows;
//! replies to an allowed connection always pass. Traffic from the pod's own node is allowed.

use crate::intstr::IntOrString;
use crate::objects::{
    Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, Pod,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The label Kubernetes gives every namespace, its own name, so a policy can select one
/// namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace and ConfigMap name prefix of what the controller resolves for each node:
/// `shoal-system/network-policy.NODE`, key [`POLICY_KEY`].
pub const POLICY_NAMESPACE: &str = "shoal-system";
pub const POLICY_PREFIX: &str = "network-policy.";
pub const POLICY_KEY: &str = "pods.json";
/// The key of the same ConfigMap that holds the Service range.
pub const SERVICES_KEY: &str = "services";

/// The ConfigMap that holds node `node`'s resolved policies.
pub fn policy_config_map(node: &str) -> String {
    format!("{POLICY_PREFIX}{node}")
}

/// An address range, `10.42.0.0/16` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address range such as 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether `ip` is in the range (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ((net, width), (other, other_width)) = (Cidr::bits(self.addr), Cidr::bits(ip));
        if width != other_width {
            return false;
        }
        let shift = u32::from(width - self.prefix);
        shift >= 128 || (net >> shift) == (other >> shift)
    }

    /// Whether `other` lies wholly inside this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// The range with its host bits cleared, as nftables wants it.
    pub fn network(&self) -> Cidr {
        let (bits, width) = Cidr::bits(self.addr);
        let shift = u32::from(width - self.prefix);
        let net = if shift >= 128 {
            0
        } else {
            (bits >> shift) << shift
        };
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(net as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(net)),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// A policy's or a container port's protocol (TCP when unset); `None` for one unknown.
    pub fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// UDP or TCP, as a socket or a port's flag says.
    pub fn of(udp: bool) -> Protocol {
        if udp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    }

    /// nftables' name for it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Ports `first..=last` of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

/// A range of peers' addresses, less the ranges in `except`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub cidr: Cidr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Cidr>,
}

impl Peer {
    fn host(ip: IpAddr) -> Peer {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Peer {
            cidr: Cidr { addr: ip, prefix },
            except: Vec::new(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// One rule: connections with these peers (`None`: any peer) on these ports (empty: any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
}

impl Allow {
    fn allows(&self, peer: IpAddr, port: u16, protocol: Protocol) -> bool {
        let peer_ok = self
            .peers
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.contains(peer)));
        let port_ok = self.ports.is_empty()
            || self
                .ports
                .iter()
                .any(|r| r.protocol == protocol && (r.first..=r.last).contains(&port));
        peer_ok && port_ok
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// What one pod may take in and send out; a direction that is `None` is not isolated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRules {
    /// `namespace/name`, for whoever reads the ConfigMap.
    pub pod: String,
    /// The pod's own address, when it has one (an OCI pod in its network namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<Allow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Allow>>,
}

impl PodRules {
    /// Whether a connection with `peer` on `port` (the pod's port for ingress, the peer's for
    /// egress) is allowed in `direction`.
    pub fn allows(
        &self,
        direction: Direction,
        peer: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> bool {
        let rules = match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        rules
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|r| r.allows(peer, port, protocol)))
    }
}

/// What a node is given: the rules of each of its isolated pods, by the pod's uid.
pub type NodeRules = BTreeMap<String, PodRules>;

fn types(spec: &NetworkPolicySpec) -> (bool, bool) {
    if spec.policy_types.is_empty() {
        return (true, !spec.egress.is_empty());
    }
    let has = |t: &str| spec.policy_types.iter().any(|p| p == t);
    (has("Ingress"), has("Egress"))
}

/// The policies of `pod`'s namespace that select it, with whether each isolates its ingress and
/// its egress.
fn selecting<'a>(
    policies: &'a [NetworkPolicy],
    pod: &Pod,
) -> impl Iterator<Item = (&'a NetworkPolicy, bool, bool)> {
    let ns = pod.metadata.namespace_or_default().to_string();
    let labels = pod.metadata.labels.clone();
    policies
        .iter()
        .filter(move |p| {
            p.metadata.namespace_or_default() == ns && p.spec.pod_selector.matches(&labels)
        })
        .map(|p| {
            let (i, e) = types(&p.spec);
            (p, i, e)
        })
}

/// Why `pod` may not run under `policies`, if it may not: a pod on its node's network (a wasm
/// pod, a hostNetwork pod) has no address of its own to guard, so a policy that isolates its
/// ingress (or a hostNetwork pod's egress) could not be enforced; it is refused rather than
/// ignored. A wasm pod's egress is enforced, by its socket check.
pub fn node_network_refusal(policies: &[NetworkPolicy], pod: &Pod) -> Option<String> {
    if !pod.uses_node_network() {
        return None;
    }
    let what = if pod.spec.host_network {
        "a hostNetwork pod"
    } else {
        "a wasm pod"
    };
    for (p, ingress, egress) in selecting(policies, pod) {
        let direction = if ingress {
            "ingress"
        } else if egress && pod.spec.host_network {
            "egress"
        } else {
            continue;
        };
        return Some(format!(
            "NetworkPolicy {:?} isolates the {direction} of pod {:?}, {what} on its node's network, where it cannot be enforced: narrow the policy's podSelector{}",
            p.metadata.name,
            pod.metadata.name,
            if pod.spec.host_network {
                ", or run the pod without hostNetwork"
            } else {
                " (a wasm pod's egress is enforced), or run the pod with runc"
            },
        ));
    }
    None
}

/// The pods' addresses and labels, and the namespaces' labels, that selectors are matched to.
pub struct Cluster<'a> {
    pods: Vec<(&'a Pod, IpAddr)>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Cluster<'a> {
    /// `pods` with an address of their own (not finished; a pod on its node's network is not
    /// a policy peer, as in Kubernetes); `namespaces` with [`NAMESPACE_NAME_LABEL`] added.
    pub fn new(pods: &'a [Pod], namespaces: &[Namespace]) -> Cluster<'a> {
        let mut ns: BTreeMap<String, BTreeMap<String, String>> = namespaces
            .iter()
            .map(|n| (n.metadata.name.clone(), n.metadata.labels.clone()))
            .collect();
        let pods: Vec<(&Pod, IpAddr)> = pods
            .iter()
            .filter(|p| !p.uses_node_network() && !p.is_terminal())
            .filter_map(|p| {
                let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
                Some((p, ip))
            })
            .collect();
        for (p, _) in &pods {
            ns.entry(p.metadata.namespace_or_default().to_string())
                .or_default();
        }
        for (name, labels) in ns.iter_mut() {
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
        }
        Cluster {
            pods,
            namespaces: ns,
        }
    }

    /// The pods a peer (of a policy in `ns`) names; `None` for an ipBlock.
    fn peer_pods(&self, ns: &str, peer: &NetworkPolicyPeer) -> Option<Vec<(&'a Pod, IpAddr)>> {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return None;
        }
        let in_ns = |pod_ns: &str| match &peer.namespace_selector {
            None => pod_ns == ns,
            Some(sel) => self
                .namespaces
                .get(pod_ns)
                .is_some_and(|labels| sel.matches(labels)),
        };
        Some(
            self.pods
                .iter()
                .filter(|(p, _)| in_ns(p.metadata.namespace_or_default()))
                .filter(|(p, _)| {
                    peer.pod_selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&p.metadata.labels))
                })
                .copied()
                .collect(),
        )
    }

    /// The peers one rule's `from`/`to` list resolves to; `None` when it is empty (anyone).
    fn peers(&self, ns: &str, list: &[NetworkPolicyPeer]) -> Option<Vec<Peer>> {
        if list.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for peer in list {
            match (self.peer_pods(ns, peer), &peer.ip_block) {
                (Some(pods), _) => out.extend(pods.into_iter().map(|(_, ip)| Peer::host(ip))),
                (None, Some(block)) => {
                    if let Ok(cidr) = block.cidr.parse::<Cidr>() {
                        let except = block.except.iter().filter_map(|e| e.parse().ok()).collect();
                        out.push(Peer { cidr, except });
                    }
                }
                (None, None) => {}
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    }

    /// One rule of a policy in `ns`, for `pod`, as allows: numbered ports apply to every peer;
    /// a named port is the port of that name on the pod (ingress) or on each peer pod
    /// (egress, so a named egress port reaches only pods, never an ipBlock).
    fn rule(
        &self,
        ns: &str,
        pod: &Pod,
        direction: Direction,
        peers: &[NetworkPolicyPeer],
        ports: &[NetworkPolicyPort],
    ) -> Vec<Allow> {
        let resolved = self.peers(ns, peers);
        let mut numbered = Vec::new();
        let mut named = Vec::new();
        for p in ports {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            match &p.port {
                None => numbered.push(PortRange {
                    protocol,
                    first: 0,
                    last: u16::MAX,
                }),
                Some(IntOrString::Int(n)) => {
                    let first = u16::try_from(*n).unwrap_or(0);
                    let last = p
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .unwrap_or(first);
                    numbered.push(PortRange {
                        protocol,
                        first,
                        last: last.max(first),
                    });
                }
                Some(IntOrString::String(name)) => named.push((name.as_str(), protocol)),
            }
        }
        let mut out = Vec::new();
        if ports.is_empty() || !numbered.is_empty() {
            out.push(Allow {
                peers: resolved.clone(),
                ports: numbered,
            });
        }
        if named.is_empty() {
            return out;
        }
        match direction {
            Direction::Ingress => {
                let ports: Vec<PortRange> = named
                    .iter()
                    .filter_map(|(n, proto)| named_port(pod, n, *proto))
                    .collect();
                if !ports.is_empty() {
                    out.push(Allow {
                        peers: resolved,
                        ports,
                    });
                }
            }
            Direction::Egress => {
                let candidates: Vec<(&Pod, IpAddr)> = match resolved {
                    None => self.pods.clone(),
                    Some(ref ps) => (self.pods.iter())
                        .filter(|(_, ip)| ps.iter().any(|p| p.contains(*ip)))
                        .copied()
                        .collect(),
                };
                for (peer, ip) in candidates {
                    let ports: Vec<PortRange> = named
                        .iter()
                        .filter_map(|(n, proto)| named_port(peer, n, *proto))
                        .collect();
                    if !ports.is_empty() {
                        out.push(Allow {
                            peers: Some(vec![Peer::host(ip)]),
                            ports,
                        });
                    }
                }
            }
        }
        out
    }

    /// What `pod` may do under `policies`; `None` when no policy isolates it.
    pub fn rules_of(&self, policies: &[NetworkPolicy], pod: &Pod) -> Option<PodRules> {
        let mut rules = PodRules {
            pod: format!(
                "{}/{}",
                pod.metadata.namespace_or_default(),
                pod.metadata.name
            ),
            address: (!pod.uses_node_network())
                .then(|| pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
                .flatten(),
            ..PodRules::default()
        };
        for (p, ingress, egress) in selecting(policies, pod) {
            let ns = p.metadata.namespace_or_default();
            if ingress {
                let list = rules.ingress.get_or_insert_with(Vec::new);
                for r in &p.spec.ingress {
                    list.extend(self.rule(ns, pod, Direction::Ingress, &r.from, &r.ports));
                }
            }
            if egress {
                let list = rules.egress.get_or_insert_with(Vec::new);
                for r in &p.spec.egress {
                    list.extend(self.rule(ns, pod, Direction::Egress, &r.to, &r.ports));
                }
            }
        }
        (rules.ingress.is_some() || rules.egress.is_some()).then_some(rules)
    }
}

/// The container port named `name` of `pod`, for `protocol`.
fn named_port(pod: &Pod, name: &str, protocol: Protocol) -> Option<PortRange> {
    let port = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|p| {
            p.name.as_deref() == Some(name)
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        })?;
    let n = u16::try_from(port.container_port).ok()?;
    Some(PortRange {
        protocol,
        first: n,
        last: n,
    })
}

/// For each of `nodes`, the rules of each of its pods, while any policy is in force (none
/// at all when none is): an isolated pod with its rules, any other open (both directions
/// `None`), so a node can tell a pod whose rules have not come yet from an open one.
pub fn resolve(
    policies: &[NetworkPolicy],
    pods: &[Pod],
    namespaces: &[Namespace],
    nodes: &[&str],
) -> BTreeMap<String, NodeRules> {
    if policies.is_empty() {
        return BTreeMap::new();
    }
    let cluster = Cluster::new(pods, namespaces);
    let mut out: BTreeMap<String, NodeRules> = nodes
        .iter()
        .map(|n| (n.to_string(), NodeRules::new()))
        .collect();
    for pod in pods.iter().filter(|p| !p.is_terminal()) {
        let Some(node) = pod.spec.node_name.as_deref() else {
            continue;
        };
        let rules = cluster.rules_of(policies, pod).unwrap_or_else(|| PodRules {
            pod: format!(
                "{}/{}",
                pod.metadata.namespace_or_default(),
                pod.metadata.name
            ),
            ..PodRules::default()
        });
        out.entry(node.to_string())
            .or_default()
            .insert(pod.metadata.uid.clone(), rules);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, labels: serde_json::Value, ip: &str, wasm: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .expect("pod");
        if wasm {
            p.spec.runtime_class_name = Some("wasm".into());
        }
        p
    }

    fn policy(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
            .expect("policy")
    }

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn unselected_pods_are_open_and_an_empty_ingress_denies_all() {
        let pods = [
            pod("a", "web", json!({"app": "web"}), "10.42.0.2", false),
            pod("a", "db", json!({"app": "db"}), "10.42.0.3", false),
        ];
        let deny = [policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "db"}}}),
        )];
        let r = resolve(&deny, &pods, &[], &["n1", "n2"]);
        let node = &r["n1"];
        let web = &node["uid-web"];
        assert_eq!(
            (&web.ingress, &web.egress),
            (&None, &None),
            "web is listed, and open"
        );
        assert!(
            r["n2"].is_empty(),
            "a node with no pods is told that policies are in force"
        );
        assert!(
            resolve(&[], &pods, &[], &["n1"]).is_empty(),
            "none in force: nothing"
        );
        let db = &node["uid-db"];
        assert_eq!(db.ingress, Some(vec![]));
        assert_eq!(db.egress, None, "egress is not isolated unless asked");
        assert!(!db.allows(Direction::Ingress, ip("10.42.0.2"), 80, Protocol::Tcp));
        assert!(db.allows(Direction::Egress, ip("1.2.3.4"), 80, Protocol::Tcp));
    }

    #[test]
    fn a_namespace_selector_lets_in_that_namespace_only() {
        let pods = [
            pod("a", "db", json!({"app": "db"}), "10.42.0.3", false),
            pod("b", "client", json!({}), "10.42.0.4", false),
            pod("c", "other", json!({}), "10.42.0.5", false),
        ];
        let allow = [policy(
            "a",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector":
                {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}],
                "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010, "protocol": "UDP"}]}]}),
        )];
        let r = resolve(&allow, &pods, &[ns("b", json!({"team": "x"}))], &[]);
        let db = &r["n1"]["uid-db"];
        assert!(db.allows(Direction::Ingress, ip("10.42.0.4"), 8080, Protocol::Tcp));
        assert!(db.allows(Direction::Ingress, ip("10.42.0.4"), 9005, Protocol::Udp));
        assert!(!db.allows(Direction::Ingress, ip("10.42.0.4"), 9005, Protocol::Tcp));
        assert!(!db.allows(Direction::Ingress, ip("10.42.0.4"), 22, Protocol::Tcp));
        assert!(!db.allows(Direction::Ingress, ip("10.42.0.5"), 8080, Protocol::Tcp));
    }

    #[test]
    fn egress_by_ip_block_with_exceptions_and_named_ports_of_peers() {
        let pods = [
            pod("a", "app", json!({"app": "app"}), "10.42.0.3", false),
            pod("a", "api", json!({"app": "api"}), "10.42.1.7", false),
        ];
        let p = [policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "app"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.9.0/24"]}}]},
                           {"ports": [{"port": "http"}]}]}),
        )];
        let r = resolve(&p, &pods, &[], &[]);
        let app = &r["n1"]["uid-app"];
        assert_eq!(app.ingress, None);
        assert!(app.allows(Direction::Egress, ip("192.168.1.1"), 1883, Protocol::Tcp));
        assert!(!app.allows(Direction::Egress, ip("192.168.9.1"), 1883, Protocol::Tcp));
        assert!(app.allows(Direction::Egress, ip("10.42.1.7"), 8080, Protocol::Tcp));
        assert!(!app.allows(Direction::Egress, ip("10.42.1.7"), 8081, Protocol::Tcp));
        assert!(!app.allows(Direction::Egress, ip("8.8.8.8"), 8080, Protocol::Tcp));
    }

    #[test]
    fn pods_on_the_node_network_are_refused_where_they_cannot_be_enforced() {
        let wasm = pod("a", "w", json!({"app": "w"}), "192.168.1.5", true);
        let ingress = [policy("a", json!({"podSelector": {}}))];
        let why = node_network_refusal(&ingress, &wasm).expect("refused");
        assert!(why.contains("wasm pod") && why.contains("ingress"), "{why}");
        let egress = [policy(
            "a",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        )];
        assert_eq!(node_network_refusal(&egress, &wasm), None);
        let other_ns = [policy("b", json!({"podSelector": {}}))];
        assert_eq!(node_network_refusal(&other_ns, &wasm), None);
        // And as a peer it is no pod address at all.
        let r = resolve(&egress, std::slice::from_ref(&wasm), &[], &[]);
        assert!(r["n1"]["uid-w"].egress == Some(vec![]));
    }

    #[test]
    fn cidrs_parse_contain_and_normalise() {
        let c: Cidr = "10.42.1.9/16".parse().expect("cidr");
        assert_eq!(c.network().to_string(), "10.42.0.0/16");
        assert!(c.contains(ip("10.42.200.1")) && !c.contains(ip("10.43.0.1")));
        assert!(!c.contains(ip("::1")));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .expect("all")
            .contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/8"
            .parse::<Cidr>()
            .expect("v6")
            .contains(ip("fd12::1")));
    }
}
