//! NetworkPolicy on this node: the rules the controller resolved for the pods bound here
//! (`shoal-system/network-policy.NODE`, [`shoal_api::policy`]), enforced three ways:
//! - an OCI pod's own network namespace gets one nftables table, `inet shoal-policy`, whose
//!   input and output chains drop what its rules do not allow (replies to allowed
//!   connections, loopback and its node's traffic always pass). The table goes with the
//!   namespace, so a removed pod leaves nothing behind;
//! - the service proxy, which connects on a pod's behalf, only picks endpoints that the
//!   client's egress and a local endpoint's ingress allow;
//! - a wasm pod's outbound sockets, checked against its egress rules as they connect.
//!
//! The rules arrive over the node's watch, are kept in the node's local state, and stay in
//! the kernel when the controller is away or the agent restarts; they change only when the
//! controller says so. While any policy is in force, the controller lists every pod of the
//! node, isolated or not, so a pod's network namespace waits for its pod to be listed before
//! its containers start: a new pod never runs unguarded while its rules are on their way.

use crate::sync::lock;
use shoal_api::policy::{
    policy_config_map, Allow, Cidr, Direction, NodeRules, Peer, PodRules, Protocol, POLICY_KEY,
    POLICY_NAMESPACE, SERVICES_KEY,
};
use shoal_api::{ConfigMap, Kind, Object};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The table in each isolated pod's network namespace.
const TABLE: &str = "shoal-policy";

/// The network namespace of the pod with `uid`, shared by its OCI containers.
pub fn netns_of(uid: &str) -> String {
    format!("shoal-{uid}")
}

#[derive(Default)]
struct State {
    /// Each pod's rules, by uid; `None` until the controller's first word (or what the node
    /// kept of the last), so an agent started offline leaves the kernel's tables as they are.
    rules: Option<NodeRules>,
    /// Whether any policy is in force (the node has its ConfigMap): then every pod of the
    /// node is listed, and one not listed yet waits for its rules.
    in_force: bool,
    /// The node's address on the pod bridge: its own traffic to its pods always passes.
    gateway: Option<Ipv4Addr>,
    /// The Service range: a pod's packets to a cluster IP reach this node's proxy, which
    /// holds the connection to the endpoints' rules itself.
    services: Option<Cidr>,
}

/// What the controller gives a node: its pods' rules, and the Service range.
#[derive(Debug, Default)]
pub struct Given {
    pub rules: NodeRules,
    pub services: Option<Cidr>,
}

impl Given {
    /// What the node's ConfigMap says; an error names what does not decode.
    pub fn of(cm: &ConfigMap) -> Result<Given, String> {
        let json = cm
            .data
            .get(POLICY_KEY)
            .ok_or_else(|| format!("it has no {POLICY_KEY}"))?;
        let rules = serde_json::from_str(json).map_err(|e| format!("{POLICY_KEY}: {e}"))?;
        let services = match cm.data.get(SERVICES_KEY) {
            Some(s) => Some(s.parse().map_err(|e| format!("{SERVICES_KEY}: {e}"))?),
            None => None,
        };
        Ok(Given { rules, services })
    }
}

/// How long a new pod's network namespace waits for the pod's rules while policies are in
/// force (they follow its binding within moments); past it, the pod starts and says so.
pub const RULES_WAIT: Duration = Duration::from_secs(10);

/// What every pod's table allows besides its rules: its node, and the Service range.
#[derive(Clone, Copy, Debug, Default)]
pub struct Table {
    pub gateway: Option<Ipv4Addr>,
    pub services: Option<Cidr>,
}

impl Table {
    fn of(st: &State) -> Table {
        Table {
            gateway: st.gateway,
            services: st.services,
        }
    }
}

struct Inner {
    state: Mutex<State>,
    /// Told of every update, for namespaces waiting for their pod's rules.
    changed: tokio::sync::Notify,
    /// Where the last rules are kept, and under which key.
    local: Option<(Arc<crate::local::Local>, String)>,
}

/// The node's policies; cheap to clone.
#[derive(Clone)]
pub struct Policies(Arc<Inner>);

impl Default for Policies {
    fn default() -> Policies {
        Policies::new("", None)
    }
}

impl Policies {
    /// The policies of node `node`, starting from what its local state kept of the last.
    pub fn new(node: &str, local: Option<Arc<crate::local::Local>>) -> Policies {
        let key = crate::local::key(
            Kind::ConfigMap,
            Some(POLICY_NAMESPACE),
            &policy_config_map(node),
        );
        let mut state = State::default();
        let kept = (local.as_ref())
            .and_then(|l| l.get(&key).ok().flatten())
            .and_then(|o| o.into_typed::<ConfigMap>().ok());
        if let Some(given) = kept.and_then(|cm| Given::of(&cm).ok()) {
            state.rules = Some(given.rules);
            state.services = given.services;
            state.in_force = true;
        }
        Policies(Arc::new(Inner {
            state: Mutex::new(state),
            changed: tokio::sync::Notify::new(),
            local: local.map(|l| (l, key)),
        }))
    }

    pub fn set_gateway(&self, gateway: Ipv4Addr) {
        lock(&self.0.state).gateway = Some(gateway);
    }

    /// Takes the node's ConfigMap as the controller has it (`None`: no policy is in force),
    /// keeps it in the node's local state, and enforces it. One that does not decode changes
    /// nothing: the rules in force stay.
    pub async fn take(&self, cm: Option<ConfigMap>) {
        let given = match cm.as_ref().map(Given::of).transpose() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "the controller's network policy for this node does not decode; keeping the rules in force");
                return;
            }
        };
        if let Some((local, key)) = self.0.local.clone() {
            let _ = tokio::task::spawn_blocking(move || match cm {
                Some(cm) => local.keep(&Object::ConfigMap(cm)),
                None => local.forget(&key),
            })
            .await;
        }
        self.update(given).await;
    }

    /// Whether the pod with `uid` may start as far as its rules go: they are known, or no
    /// policy is in force (or the controller has not been heard from: the kernel keeps the
    /// tables it had). Waits up to `within` for them.
    pub async fn wait_for(&self, uid: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.0.changed.notified();
            {
                let st = lock(&self.0.state);
                match &st.rules {
                    Some(rules) if st.in_force && !rules.contains_key(uid) => {}
                    _ => return true,
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// The rules of the pod with `uid`, if it is isolated.
    pub fn rules(&self, uid: &str) -> Option<PodRules> {
        lock(&self.0.state).rules.as_ref()?.get(uid).cloned()
    }

    /// Whether the pod at `ip` may connect to `peer:port` (its egress) and the pod at `peer`
    /// may take it (its ingress), as far as they are pods of this node; a side that is not
    /// one of this node's isolated pods is not held back here. As Kubernetes has it, a pod
    /// never blocks itself, and traffic to and from its own node always passes: `node` says
    /// which addresses are this node's (loopback and its pod bridge address are).
    pub fn connection_allowed(
        &self,
        ip: IpAddr,
        peer: IpAddr,
        port: u16,
        protocol: Protocol,
        node: &dyn Fn(IpAddr) -> bool,
    ) -> bool {
        let st = lock(&self.0.state);
        let Some(all) = st.rules.as_ref() else {
            return true;
        };
        if ip == peer {
            return true;
        }
        let ours = |a: IpAddr| a.is_loopback() || st.gateway.is_some_and(|g| a == g) || node(a);
        let at = |addr: IpAddr| all.values().find(|r| r.address == Some(addr));
        let egress =
            ours(peer) || at(ip).is_none_or(|r| r.allows(Direction::Egress, peer, port, protocol));
        let ingress =
            ours(ip) || at(peer).is_none_or(|r| r.allows(Direction::Ingress, ip, port, protocol));
        egress && ingress
    }

    /// Takes the rules the controller gave (`None`: it has none for this node) and writes
    /// them into the pods' namespaces: new and changed tables are written, and the tables of
    /// pods no longer isolated are deleted.
    async fn update(&self, given: Option<Given>) {
        let in_force = given.is_some();
        let Given { rules, services } = given.unwrap_or_default();
        let (before, moved, table) = {
            let mut st = lock(&self.0.state);
            // A new Service range changes every table.
            let moved = st.services != services;
            st.services = services;
            st.in_force = in_force;
            let before = st.rules.replace(rules.clone());
            (before, moved, Table::of(&st))
        };
        self.0.changed.notify_waiters();
        let work = changes(&before.unwrap_or_default(), &rules, moved);
        if work.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for (uid, r) in work {
                enforce(&uid, r.as_ref(), table);
            }
        })
        .await;
    }

    /// Writes the table of a pod whose namespace was just made, before its containers start.
    pub fn enforce_new(&self, uid: &str) -> Result<(), String> {
        let (rules, table) = {
            let st = lock(&self.0.state);
            (
                st.rules.as_ref().and_then(|r| r.get(uid)).cloned(),
                Table::of(&st),
            )
        };
        match rules.filter(isolated) {
            Some(r) => write_table(&netns_of(uid), &ruleset(&r, table)),
            None => Ok(()),
        }
    }
}

/// The tables to write (`Some`) and delete (`None`) to go from `before` to `rules`; with
/// `all`, every table is written again.
fn changes(before: &NodeRules, rules: &NodeRules, all: bool) -> Vec<(String, Option<PodRules>)> {
    let mut work: Vec<(String, Option<PodRules>)> = Vec::new();
    for (uid, r) in rules {
        if all || before.get(uid) != Some(r) {
            work.push((uid.clone(), Some(r.clone())));
        }
    }
    for uid in before.keys().filter(|u| !rules.contains_key(*u)) {
        work.push((uid.clone(), None));
    }
    work
}

/// Makes the pod's namespace hold `rules` (or no table); a pod whose namespace is not here
/// (a wasm pod, or one not started yet) has nothing to write.
fn enforce(uid: &str, rules: Option<&PodRules>, table: Table) {
    let netns = netns_of(uid);
    if !shoal_runtime::oci::netns::path(&netns).exists() {
        return;
    }
    let script = match rules.filter(|r| isolated(r)) {
        Some(r) => ruleset(r, table),
        None => format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"),
    };
    match write_table(&netns, &script) {
        Ok(()) => {
            tracing::info!(%uid, isolated = rules.is_some_and(isolated), "network policy enforced")
        }
        Err(e) => tracing::warn!(%uid, error = %e, "cannot write a pod's network policy"),
    }
}

/// Whether a pod's rules hold it in either direction (a pod listed only because policies are
/// in force is open).
fn isolated(r: &PodRules) -> bool {
    r.ingress.is_some() || r.egress.is_some()
}

fn write_table(netns: &str, script: &str) -> Result<(), String> {
    shoal_runtime::oci::nat::nft_in(Some(netns), script)
}

/// The match of one side's addresses: `ip saddr { a, b }`, with exceptions as `!= { .. }`.
fn address_matches(peers: &[Peer], side: &str) -> Vec<String> {
    let mut out = Vec::new();
    let family = |p: &Peer| if p.cidr.addr.is_ipv4() { "ip" } else { "ip6" };
    let mut plain: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in peers {
        if p.except.is_empty() {
            plain
                .entry(family(p))
                .or_default()
                .push(p.cidr.network().to_string());
        } else {
            let except: Vec<String> = p.except.iter().map(|e| e.network().to_string()).collect();
            out.push(format!(
                "{f} {side} {} {f} {side} != {{ {} }}",
                p.cidr.network(),
                except.join(", "),
                f = family(p)
            ));
        }
    }
    for (f, cidrs) in plain {
        out.push(format!("{f} {side} {{ {} }}", cidrs.join(", ")));
    }
    out
}

/// The port matches of one rule, a line each protocol: `meta l4proto tcp th dport { 80, 90-99 }`.
fn port_matches(allow: &Allow) -> Vec<String> {
    if allow.ports.is_empty() {
        return vec![String::new()];
    }
    let mut by: BTreeMap<Protocol, Vec<String>> = BTreeMap::new();
    for r in &allow.ports {
        let range = if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}-{}", r.first, r.last)
        };
        by.entry(r.protocol).or_default().push(range);
    }
    by.into_iter()
        .map(|(p, ranges)| {
            format!(
                "meta l4proto {} th dport {{ {} }}",
                p.nft(),
                ranges.join(", ")
            )
        })
        .collect()
}

/// The lines of one direction's chain for `rules`.
fn chain_rules(rules: &[Allow], side: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for allow in rules {
        let addresses = match &allow.peers {
            None => vec![String::new()],
            Some(peers) => address_matches(peers, side),
        };
        for a in &addresses {
            for p in port_matches(allow) {
                let line = [a.as_str(), p.as_str(), "accept"]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                lines.push(line);
            }
        }
    }
    lines
}

/// The pod's table, as `nft -f` reads it, replacing whatever table was there in one
/// transaction. A direction that is not isolated has no chain.
pub fn ruleset(rules: &PodRules, table: Table) -> String {
    let mut s =
        format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    let node = |side: &str| {
        let mut lines = (table.gateway)
            .map(|g| format!("\t\tip {side} {g} accept\n"))
            .unwrap_or_default();
        if let Some(range) = table.services.filter(|_| side == "daddr") {
            lines.push_str(&format!("\t\tip daddr {} accept\n", range.network()));
        }
        lines
    };
    for (name, hook, allowed, side, lo) in [
        ("ingress", "input", &rules.ingress, "saddr", "iifname"),
        ("egress", "output", &rules.egress, "daddr", "oifname"),
    ] {
        let Some(allowed) = allowed else { continue };
        s.push_str(&format!(
            "\tchain {name} {{\n\t\ttype filter hook {hook} priority filter; policy drop;\n\
             \t\tct state established,related accept\n\t\t{lo} \"lo\" accept\n{}",
            node(side)
        ));
        for line in chain_rules(allowed, side) {
            s.push_str(&format!("\t\t{line}\n"));
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::policy::{Cidr, PortRange};

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn a_pods_table_allows_its_peers_ports_and_node_and_drops_the_rest() {
        let rules = PodRules {
            pod: "a/db".into(),
            address: None,
            ingress: Some(vec![Allow {
                peers: Some(vec![
                    Peer {
                        cidr: cidr("10.42.0.4/32"),
                        except: vec![],
                    },
                    Peer {
                        cidr: cidr("192.168.1.9/16"),
                        except: vec![cidr("192.168.9.0/24")],
                    },
                ]),
                ports: vec![
                    PortRange {
                        protocol: Protocol::Tcp,
                        first: 8080,
                        last: 8080,
                    },
                    PortRange {
                        protocol: Protocol::Udp,
                        first: 9000,
                        last: 9010,
                    },
                ],
            }]),
            egress: Some(vec![]),
        };
        let table = Table {
            gateway: Some(Ipv4Addr::new(10, 42, 0, 1)),
            services: Some(cidr("10.43.0.0/16")),
        };
        let s = ruleset(&rules, table);
        assert!(s.starts_with("table inet shoal-policy {}\ndelete table inet shoal-policy\n"));
        for want in [
            "type filter hook input priority filter; policy drop;",
            "ct state established,related accept",
            "iifname \"lo\" accept",
            "ip saddr 10.42.0.1 accept",
            "ip saddr 192.168.0.0/16 ip saddr != { 192.168.9.0/24 } meta l4proto tcp th dport { 8080 } accept",
            "ip saddr { 10.42.0.4/32 } meta l4proto udp th dport { 9000-9010 } accept",
            "type filter hook output priority filter; policy drop;",
            "ip daddr 10.42.0.1 accept",
            "ip daddr 10.43.0.0/16 accept",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        // Egress denies all: its chain has nothing but the always-allowed.
        let egress = &s[s.find("chain egress").expect("egress chain")..];
        assert_eq!(egress.matches("accept").count(), 4, "{egress}");
    }

    #[test]
    fn only_changed_tables_are_written_and_gone_ones_deleted() {
        let rules = |pods: &[(&str, bool)]| -> NodeRules {
            pods.iter()
                .map(|(uid, deny)| {
                    let r = PodRules {
                        pod: format!("a/{uid}"),
                        ingress: Some(if *deny {
                            vec![]
                        } else {
                            vec![Allow {
                                peers: None,
                                ports: vec![],
                            }]
                        }),
                        ..PodRules::default()
                    };
                    (uid.to_string(), r)
                })
                .collect()
        };
        let before = rules(&[("a", true), ("b", true), ("c", true)]);
        let after = rules(&[("a", true), ("b", false)]);
        let work = changes(&before, &after, false);
        let named: Vec<(&str, bool)> = work
            .iter()
            .map(|(u, r)| (u.as_str(), r.is_some()))
            .collect();
        assert_eq!(named, [("b", true), ("c", false)]);
        // A new Service range: every table again, and the gone ones still deleted.
        let work = changes(&before, &after, true);
        let named: Vec<(&str, bool)> = work
            .iter()
            .map(|(u, r)| (u.as_str(), r.is_some()))
            .collect();
        assert_eq!(named, [("a", true), ("b", true), ("c", false)]);
        assert!(changes(&after, &after, false).is_empty());
    }

    fn config_map(uids: &[&str]) -> ConfigMap {
        let rules: NodeRules = uids
            .iter()
            .map(|u| (u.to_string(), PodRules::default()))
            .collect();
        let mut cm = ConfigMap::default();
        cm.metadata.name = policy_config_map("n1");
        cm.metadata.namespace = Some(POLICY_NAMESPACE.into());
        cm.data.insert(
            POLICY_KEY.into(),
            serde_json::to_string(&rules).expect("json"),
        );
        cm.data.insert(SERVICES_KEY.into(), "10.43.0.0/16".into());
        cm
    }

    #[tokio::test]
    async fn a_new_pod_waits_for_its_rules_and_the_last_rules_outlive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = Arc::new(crate::local::Local::open(dir.path()).expect("local"));
        let short = Duration::from_millis(50);
        let p = Policies::new("n1", Some(local.clone()));
        assert!(
            p.wait_for("new", short).await,
            "nothing heard: nothing to wait for"
        );
        p.take(Some(config_map(&["old"]))).await;
        assert!(
            !p.wait_for("new", short).await,
            "in force, and not listed yet"
        );
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.wait_for("new", Duration::from_secs(5)).await }
        });
        tokio::time::sleep(short).await;
        p.take(Some(config_map(&["old", "new"]))).await;
        assert!(waiting.await.expect("task"), "listed: it may start");
        // A ConfigMap that does not decode changes nothing.
        let mut broken = config_map(&[]);
        broken.data.insert(POLICY_KEY.into(), "{".into());
        p.take(Some(broken)).await;
        assert!(p.wait_for("new", short).await);
        // Restarted without the controller: the last rules are in force still.
        let again = Policies::new("n1", Some(local.clone()));
        assert!(again.wait_for("new", short).await);
        assert!(!again.wait_for("other", short).await);
        // With no policy in force, nothing waits, after a restart too.
        again.take(None).await;
        assert!(again.wait_for("other", short).await);
        let third = Policies::new("n1", Some(local));
        assert!(third.wait_for("other", short).await);
    }

    #[tokio::test]
    async fn a_pod_never_blocks_itself_and_its_node_always_passes() {
        let p = Policies::default();
        p.set_gateway(Ipv4Addr::new(10, 42, 0, 1));
        let shut = PodRules {
            pod: "a/db".into(),
            address: Some("10.42.0.5".parse().expect("ip")),
            ingress: Some(vec![]),
            egress: Some(vec![]),
        };
        let rules = NodeRules::from([("db".to_string(), shut)]);
        p.update(Some(Given {
            rules,
            services: None,
        }))
        .await;
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let node = |a: IpAddr| a == ip("192.168.1.20") || a == ip("10.43.0.7");
        let allowed =
            |from: &str, to: &str| p.connection_allowed(ip(from), ip(to), 80, Protocol::Tcp, &node);
        assert!(
            !allowed("10.42.0.9", "10.42.0.5"),
            "another pod is shut out"
        );
        assert!(!allowed("10.42.0.5", "10.42.0.9"), "and shut in");
        assert!(
            allowed("10.42.0.5", "10.42.0.5"),
            "itself, through a Service"
        );
        for own in ["10.42.0.1", "127.0.0.1", "192.168.1.20", "10.43.0.7"] {
            assert!(allowed(own, "10.42.0.5"), "from its node at {own}");
        }
        assert!(allowed("10.42.0.5", "192.168.1.20"), "to its node");
        assert!(
            !allowed("192.168.1.21", "10.42.0.5"),
            "another node is not its own"
        );
    }

    #[test]
    fn a_direction_not_isolated_has_no_chain() {
        let rules = PodRules {
            pod: "a/web".into(),
            address: None,
            ingress: None,
            egress: Some(vec![Allow {
                peers: None,
                ports: vec![],
            }]),
        };
        let s = ruleset(&rules, Table::default());
        assert!(!s.contains("chain ingress"), "{s}");
        assert!(s.contains("\t\taccept\n"), "{s}");
    }
}
