//! AgentUpgrade rollouts: which nodes' agents are told to upgrade, a few at a time, and what
//! the rollout's status says. The decision is a pure function ([`plan`]) of the upgrade, the
//! nodes and the binaries as pinned; [`run`] feeds it the store and applies it.
//!
//! A node is told by an annotation on its Node ([`UPGRADE_ORDER`]); its agent answers in one of
//! its own ([`UPGRADE_STATE`]) and, once restarted, by the version it reports. A node that went
//! back to its previous binary pauses the rollout: no further node is told until the spec
//! changes (another version, another binary) or the upgrade is made again.

use crate::artifacts::Artifacts;
use crate::error::{Error, Result};
use crate::events;
use crate::store::{ObjectKey, Store};
use crate::wake::Waker;
use shoal_api::{
    condition_true, platform_runs_on, reported_version, AgentUpgrade, AgentUpgradeStatus, Kind,
    Node, NodeUpgradeStatus, Object, Selector, UpgradeOrder, UpgradeReport, UPGRADE_ORDER,
    UPGRADE_STATE,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RESYNC: Duration = Duration::from_secs(5);
const WATCHED: &[Kind] = &[Kind::AgentUpgrade, Kind::Node];

pub const PENDING: &str = "Pending";
pub const UPGRADING: &str = "Upgrading";
pub const UPGRADED: &str = "Upgraded";
pub const ROLLED_BACK: &str = "RolledBack";
pub const FAILED: &str = "Failed";
/// A newer AgentUpgrade selects the node: it is that one's to upgrade.
pub const SUPERSEDED: &str = "Superseded";

/// What one pass decides for one upgrade.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub status: AgentUpgradeStatus,
    /// Nodes to give the order to.
    pub order: Vec<(String, UpgradeOrder)>,
    /// Nodes whose order of this upgrade is done with.
    pub clear: Vec<String>,
    /// Events: (type, reason, message).
    pub events: Vec<(&'static str, &'static str, String)>,
}

/// The order a Node carries, if any.
pub fn order_of(node: &Node) -> Option<UpgradeOrder> {
    serde_json::from_str(node.metadata.annotations.get(UPGRADE_ORDER)?).ok()
}

fn report_of(node: &Node) -> Option<UpgradeReport> {
    serde_json::from_str(node.metadata.annotations.get(UPGRADE_STATE)?).ok()
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .is_some_and(|s| condition_true(&s.conditions, "Ready"))
}

fn arch(node: &Node) -> &str {
    node.metadata
        .labels
        .get("kubernetes.io/arch")
        .map(String::as_str)
        .unwrap_or("")
}

/// Where one selected node stands, and why.
fn node_state(
    u: &AgentUpgrade,
    node: &Node,
    before: Option<&NodeUpgradeStatus>,
    binaries: &[(String, String)],
) -> (&'static str, Option<String>) {
    let uid = &u.metadata.uid;
    let version = &u.spec.version;
    if reported_version(node) == Some(version.as_str()) {
        return (UPGRADED, None);
    }
    // The node's account of this upgrade, of one of its binaries as pinned now.
    let report = report_of(node).filter(|r| {
        &r.upgrade == uid && &r.version == version && binaries.iter().any(|(_, d)| *d == r.digest)
    });
    // Gave up on it: as the node says now, or as it said before in this spec's rollout.
    let gave_up = |state: &str| [ROLLED_BACK, FAILED].into_iter().find(|s| *s == state);
    if let Some((r, state)) = report.as_ref().and_then(|r| Some((r, gave_up(&r.state)?))) {
        return (state, Some(r.reason.clone()));
    }
    if let Some((b, state)) = before.and_then(|b| Some((b, gave_up(&b.state)?))) {
        return (state, b.reason.clone());
    }
    if order_of(node).is_some_and(|o| &o.upgrade == uid && &o.version == version) {
        let reason = report.map(|r| r.reason).filter(|r| !r.is_empty());
        return (UPGRADING, reason);
    }
    (PENDING, None)
}

/// Which AgentUpgrade each node is left to: the newest that selects it, by name.
pub fn owners(upgrades: &[AgentUpgrade], nodes: &[Node]) -> BTreeMap<String, String> {
    let mut newest_first: Vec<&AgentUpgrade> = upgrades.iter().collect();
    newest_first.sort_by(|a, b| {
        let at = |u: &AgentUpgrade| u.metadata.creation_timestamp.clone().unwrap_or_default();
        at(b)
            .cmp(&at(a))
            .then(b.metadata.name.cmp(&a.metadata.name))
    });
    let mut out = BTreeMap::new();
    for node in nodes {
        let owner = newest_first.iter().find(|u| {
            Selector::from_label_selector(&u.spec.node_selector)
                .is_ok_and(|s| s.matches(&node.metadata.labels))
        });
        if let Some(u) = owner {
            out.insert(node.metadata.name.clone(), u.metadata.name.clone());
        }
    }
    out
}

/// Decides one pass of `u` over `nodes`. `binaries`: the pinned binaries as
/// (platform, digest); `uids`: the AgentUpgrades that exist (an order of one that is gone is
/// not in the way); `owners`: which upgrade each node is left to ([`owners`]).
pub fn plan(
    u: &AgentUpgrade,
    nodes: &[Node],
    binaries: &[(String, String)],
    uids: &HashSet<String>,
    owners: &BTreeMap<String, String>,
) -> Plan {
    let mut plan = Plan::default();
    let old = u.status.clone().unwrap_or_default();
    let selector = Selector::from_label_selector(&u.spec.node_selector).ok();
    let mut selected: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            selector
                .as_ref()
                .is_some_and(|s| s.matches(&n.metadata.labels))
        })
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rows = rows(u, &selected, &old, owners, binaries);
    // Orders of this upgrade that are done with: the node got there, gave up, or is no
    // longer selected.
    for node in nodes {
        let ours = order_of(node).is_some_and(|o| o.upgrade == u.metadata.uid);
        let row = rows.iter().find(|r| r.name == node.metadata.name);
        if ours && row.is_none_or(|r| r.state != UPGRADING) {
            plan.clear.push(node.metadata.name.clone());
        }
    }
    let failed = rows
        .iter()
        .find(|r| r.state == ROLLED_BACK || r.state == FAILED);
    let mut reason = failed.map(|r| {
        let what = if r.state == ROLLED_BACK {
            "went back to its previous binary"
        } else {
            "could not upgrade"
        };
        format!(
            "node {} {what}: {}",
            r.name,
            r.reason.as_deref().unwrap_or("no reason given")
        )
    });
    if reason.is_none() {
        let (orders, why) = give_orders(u, &mut rows, &selected, binaries, uids);
        plan.order = orders;
        reason = why;
    }
    let own: Vec<&NodeUpgradeStatus> = rows.iter().filter(|r| r.state != SUPERSEDED).collect();
    let phase = if reason.is_some() {
        "Paused"
    } else if !rows.is_empty() && own.is_empty() {
        "Superseded"
    } else if !own.is_empty() && own.iter().all(|r| r.state == UPGRADED) {
        "Complete"
    } else {
        "Progressing"
    };
    if rows.is_empty() && reason.is_none() {
        reason = Some("no node matches spec.nodeSelector".into());
    }
    plan.events = events(u, &old, &rows, phase, reason.as_deref());
    plan.status = AgentUpgradeStatus {
        phase: phase.into(),
        reason,
        observed_generation: Some(u.metadata.generation),
        pinned: binaries.iter().map(|(p, d)| format!("{p}={d}")).collect(),
        nodes: rows,
    };
    plan
}

/// Where each selected node stands.
fn rows(
    u: &AgentUpgrade,
    selected: &[&Node],
    old: &AgentUpgradeStatus,
    owners: &BTreeMap<String, String>,
    binaries: &[(String, String)],
) -> Vec<NodeUpgradeStatus> {
    let same_spec = old.observed_generation == Some(u.metadata.generation);
    selected
        .iter()
        .map(|node| {
            let name = &node.metadata.name;
            let before = (old.nodes.iter())
                .find(|n| &n.name == name)
                .filter(|_| same_spec);
            let (state, reason) = match owners.get(name).filter(|o| **o != u.metadata.name) {
                Some(newer) => (SUPERSEDED, Some(format!("by AgentUpgrade {newer}"))),
                None => node_state(u, node, before, binaries),
            };
            NodeUpgradeStatus {
                name: name.clone(),
                version: reported_version(node).unwrap_or_default().to_string(),
                state: state.into(),
                reason,
            }
        })
        .collect()
}

/// Tells pending nodes, in name order, while fewer than `maxUnavailable` are upgrading.
/// Returns the orders, and why the rollout cannot go on if it cannot.
fn give_orders(
    u: &AgentUpgrade,
    rows: &mut [NodeUpgradeStatus],
    selected: &[&Node],
    binaries: &[(String, String)],
    uids: &HashSet<String>,
) -> (Vec<(String, UpgradeOrder)>, Option<String>) {
    let mut orders = Vec::new();
    let mut slots = u
        .spec
        .max_unavailable()
        .saturating_sub(rows.iter().filter(|r| r.state == UPGRADING).count());
    for (row, node) in rows.iter_mut().zip(selected) {
        if slots == 0 {
            break;
        }
        if row.state != PENDING {
            continue;
        }
        if let Some(other) = order_of(node).filter(|o| uids.contains(&o.upgrade)) {
            row.reason = Some(format!("upgrading by AgentUpgrade {}", other.name));
            continue;
        }
        if !ready(node) {
            row.reason = Some("the node is not Ready".into());
            continue;
        }
        let Some((_, digest)) = binaries
            .iter()
            .find(|(p, _)| platform_runs_on(p, arch(node)))
        else {
            let why = format!(
                "no binary in spec.binaries runs on node {} (linux/{})",
                row.name,
                arch(node)
            );
            return (orders, Some(why));
        };
        orders.push((
            row.name.clone(),
            UpgradeOrder {
                upgrade: u.metadata.uid.clone(),
                name: u.metadata.name.clone(),
                version: u.spec.version.clone(),
                digest: digest.clone(),
                ready_timeout_seconds: u.spec.ready_timeout_seconds(),
            },
        ));
        row.state = UPGRADING.into();
        row.reason = None;
        slots -= 1;
    }
    (orders, None)
}

/// The events of what changed since the last pass: each node's new state, the rollout's.
fn events(
    u: &AgentUpgrade,
    old: &AgentUpgradeStatus,
    rows: &[NodeUpgradeStatus],
    phase: &str,
    reason: Option<&str>,
) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let to = &u.spec.version;
    for row in rows {
        let was = old.nodes.iter().find(|n| n.name == row.name);
        if was.is_some_and(|w| w.state == row.state) {
            continue;
        }
        let (name, now) = (&row.name, &row.version);
        let from = was.map(|w| w.version.as_str()).unwrap_or(now);
        let why = row.reason.as_deref().unwrap_or("no reason given");
        out.push(match row.state.as_str() {
            UPGRADING => (
                "Normal",
                "Upgrading",
                format!("Upgrading node {name} from {from} to {to}"),
            ),
            UPGRADED => ("Normal", "Upgraded", format!("Node {name} runs {to}")),
            ROLLED_BACK => (
                "Warning",
                "RolledBack",
                format!("Node {name} went back to {now}: {why}"),
            ),
            FAILED => (
                "Warning",
                "UpgradeFailed",
                format!("Node {name} could not upgrade: {why}"),
            ),
            _ => continue,
        });
    }
    if phase != old.phase {
        let why = reason.unwrap_or("no reason given");
        match phase {
            "Paused" => out.push(("Warning", "Paused", format!("Rollout paused: {why}"))),
            "Complete" => out.push((
                "Normal",
                "Complete",
                format!("Every selected node runs {to}"),
            )),
            _ => {}
        }
    }
    out
}

/// The binaries of `u` as (platform, digest): as pinned when its spec was first seen, or
/// resolved from the artifact store now.
fn pinned(
    u: &AgentUpgrade,
    artifacts: &Artifacts,
) -> std::result::Result<Vec<(String, String)>, String> {
    let status = u.status.clone().unwrap_or_default();
    if status.observed_generation == Some(u.metadata.generation) && !status.pinned.is_empty() {
        return Ok(status
            .pinned
            .iter()
            .filter_map(|p| p.split_once('='))
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect());
    }
    let mut out = Vec::new();
    for reference in &u.spec.binaries {
        let blob = artifacts
            .resolve(reference)
            .map_err(|e| format!("spec.binaries: {e}"))?;
        let platforms = artifacts.platforms(reference).unwrap_or_default();
        let Some(platform) = platforms.first() else {
            return Err(format!(
                "spec.binaries: {reference:?} is not a Linux executable (push a shoal binary)"
            ));
        };
        out.push((platform.clone(), blob.digest));
    }
    Ok(out)
}

/// Rolls every AgentUpgrade through its nodes until `shutdown`.
pub async fn run(store: Store, artifacts: Arc<Artifacts>, shutdown: CancellationToken) {
    let mut waker = Waker::new(store.clone(), WATCHED, RESYNC);
    while waker.wait(&shutdown).await {
        if let Err(e) = pass(&store, &artifacts).await {
            tracing::warn!(error = %shoal_transport::report(&e), "agent upgrade pass failed");
        }
    }
}

async fn pass(store: &Store, artifacts: &Artifacts) -> Result<()> {
    let upgrades: Vec<AgentUpgrade> = store.list_typed(Kind::AgentUpgrade, None).await?;
    let nodes: Vec<Node> = store.list_typed(Kind::Node, None).await?;
    let uids: HashSet<String> = upgrades.iter().map(|u| u.metadata.uid.clone()).collect();
    // Orders of upgrades that are gone.
    for node in &nodes {
        if order_of(node).is_some_and(|o| !uids.contains(&o.upgrade)) {
            set_order(store, &node.metadata.name, None).await?;
        }
    }
    let owners = owners(&upgrades, &nodes);
    for u in &upgrades {
        let plan = match pinned(u, artifacts) {
            Ok(binaries) => plan(u, &nodes, &binaries, &uids, &owners),
            Err(why) => unpinned(u, why),
        };
        apply(store, u, plan).await?;
    }
    Ok(())
}

/// A rollout whose binaries cannot be pinned waits, saying why.
fn unpinned(u: &AgentUpgrade, why: String) -> Plan {
    let was_paused = u.status.as_ref().is_some_and(|s| s.phase == "Paused");
    Plan {
        events: match was_paused {
            true => vec![],
            false => vec![("Warning", "Paused", format!("Rollout paused: {why}"))],
        },
        status: AgentUpgradeStatus {
            phase: "Paused".into(),
            reason: Some(why),
            observed_generation: Some(u.metadata.generation),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn apply(store: &Store, u: &AgentUpgrade, plan: Plan) -> Result<()> {
    for name in &plan.clear {
        set_order(store, name, None).await?;
    }
    for (name, order) in &plan.order {
        tracing::info!(node = %name, version = %order.version, upgrade = %u.metadata.name, "telling the node's agent to upgrade");
        set_order(store, name, Some(order)).await?;
    }
    let about = events::reference(&Object::AgentUpgrade(u.clone()));
    for (type_, reason, message) in &plan.events {
        events::record(store, &about, type_, reason, message, "agent-upgrade").await;
    }
    if u.status.as_ref() != Some(&plan.status) {
        let mut next = u.clone();
        next.status = Some(plan.status);
        let revision = u.metadata.revision();
        match store
            .update_status(Object::AgentUpgrade(next), Some(revision))
            .await
        {
            Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Puts (or takes away) a node's order, unless the node changed meanwhile (the next pass
/// sees it again).
async fn set_order(store: &Store, node: &str, order: Option<&UpgradeOrder>) -> Result<()> {
    let key = ObjectKey::new(Kind::Node, None, node);
    let Some(stored) = store.get(&key).await? else {
        return Ok(());
    };
    let mut n: Node = stored.clone().into_typed()?;
    let annotations: &mut BTreeMap<String, String> = &mut n.metadata.annotations;
    match order {
        Some(o) => {
            let text = serde_json::to_string(o).map_err(|e| Error::Internal(e.to_string()))?;
            annotations.insert(UPGRADE_ORDER.into(), text);
        }
        None => {
            annotations.remove(UPGRADE_ORDER);
        }
    }
    match store
        .update(Object::Node(n), Some(stored.metadata().revision()))
        .await
    {
        Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Condition, NodeStatus, NodeSystemInfo, ObjectMeta};

    fn node(name: &str, arch: &str, version: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: name.into(),
                labels: [("kubernetes.io/arch".to_string(), arch.to_string())].into(),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                node_info: Some(NodeSystemInfo {
                    kubelet_version: format!("shoal-v{version}"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn upgrade() -> AgentUpgrade {
        let mut u = AgentUpgrade::default();
        u.metadata.name = "fleet".into();
        u.metadata.uid = "u1".into();
        u.metadata.generation = 1;
        u.spec.version = "0.2.0".into();
        u
    }

    fn amd64() -> Vec<(String, String)> {
        vec![("linux/amd64".into(), "sha256:aa".into())]
    }

    fn uids() -> HashSet<String> {
        ["u1".to_string()].into()
    }

    /// Runs passes as the loop does: the status and the orders are stored between them.
    fn again(u: &mut AgentUpgrade, nodes: &mut [Node], plan: &Plan) {
        u.status = Some(plan.status.clone());
        for n in nodes.iter_mut() {
            if plan.clear.contains(&n.metadata.name) {
                n.metadata.annotations.remove(UPGRADE_ORDER);
            }
            if let Some((_, o)) = plan.order.iter().find(|(m, _)| *m == n.metadata.name) {
                let text = serde_json::to_string(o).unwrap();
                n.metadata.annotations.insert(UPGRADE_ORDER.into(), text);
            }
        }
    }

    fn states(p: &Plan) -> Vec<&str> {
        p.status.nodes.iter().map(|n| n.state.as_str()).collect()
    }

    #[test]
    fn nodes_upgrade_one_at_a_time_and_a_rollback_pauses_the_rollout() {
        let mut u = upgrade();
        let mut nodes = vec![
            node("a", "amd64", "0.1.0"),
            node("b", "amd64", "0.1.0"),
            node("c", "amd64", "0.1.0"),
        ];
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert_eq!(states(&p), [UPGRADING, PENDING, PENDING]);
        assert_eq!(p.order.len(), 1);
        assert_eq!(p.order[0].1.digest, "sha256:aa");
        assert_eq!(p.status.phase, "Progressing");
        assert_eq!(p.events[0].1, "Upgrading");
        again(&mut u, &mut nodes, &p);

        // Still on its way: nobody else is told.
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert!(p.order.is_empty() && p.clear.is_empty() && p.events.is_empty());

        // a reports the new version: its order goes, b's comes.
        nodes[0] = node("a", "amd64", "0.2.0");
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert_eq!(states(&p), [UPGRADED, UPGRADING, PENDING]);
        assert_eq!(p.order[0].0, "b");
        again(&mut u, &mut nodes, &p);

        // b goes back: the rollout pauses, c is never told.
        let report = UpgradeReport {
            upgrade: "u1".into(),
            version: "0.2.0".into(),
            digest: "sha256:aa".into(),
            state: ROLLED_BACK.into(),
            reason: "exited at once".into(),
        };
        nodes[1].metadata.annotations.insert(
            UPGRADE_STATE.into(),
            serde_json::to_string(&report).unwrap(),
        );
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert_eq!(states(&p), [UPGRADED, ROLLED_BACK, PENDING]);
        assert!(p.order.is_empty());
        assert_eq!(p.clear, ["b"]);
        assert_eq!(p.status.phase, "Paused");
        assert!(p
            .status
            .reason
            .as_deref()
            .unwrap()
            .contains("node b went back"));
        assert!(p.events.iter().any(|e| e.1 == "RolledBack"));
        again(&mut u, &mut nodes, &p);
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert!(p.order.is_empty() && p.events.is_empty(), "{p:?}");

        // Another binary for the version (the spec changed): b is told again.
        u.metadata.generation = 2;
        let fixed = vec![("linux/amd64".to_string(), "sha256:bb".to_string())];
        let p = plan(&u, &nodes, &fixed, &uids(), &BTreeMap::new());
        assert_eq!(states(&p), [UPGRADED, UPGRADING, PENDING]);
        assert_eq!(p.order[0].1.digest, "sha256:bb");
        assert_eq!(p.status.phase, "Progressing");
    }

    #[test]
    fn the_newest_upgrade_that_selects_a_node_has_it() {
        let old = upgrade();
        let mut new = upgrade();
        new.metadata.name = "fleet-2".into();
        new.metadata.uid = "u2".into();
        new.metadata.creation_timestamp = Some("2026-12-07T03:00:00Z".into());
        let nodes = vec![node("a", "amd64", "0.1.0")];
        let owners = owners(&[old.clone(), new], &nodes);
        assert_eq!(owners["a"], "fleet-2");
        let p = plan(&old, &nodes, &amd64(), &uids(), &owners);
        assert_eq!(states(&p), [SUPERSEDED]);
        assert_eq!(p.status.phase, "Superseded");
        assert!(p.order.is_empty());
    }

    #[test]
    fn a_node_no_binary_runs_on_pauses_the_rollout() {
        let u = upgrade();
        let nodes = vec![node("pi", "arm64", "0.1.0")];
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert!(p.order.is_empty());
        assert_eq!(p.status.phase, "Paused");
        assert!(p.status.reason.unwrap().contains("linux/arm64"));
    }

    #[test]
    fn max_unavailable_nodes_at_once_and_not_ready_ones_wait() {
        let mut u = upgrade();
        u.spec.max_unavailable = Some(2);
        let mut down = node("a", "amd64", "0.1.0");
        down.status.as_mut().unwrap().conditions.clear();
        let nodes = vec![
            down,
            node("b", "amd64", "0.1.0"),
            node("c", "amd64", "0.1.0"),
        ];
        let p = plan(&u, &nodes, &amd64(), &uids(), &BTreeMap::new());
        assert_eq!(states(&p), [PENDING, UPGRADING, UPGRADING]);
        assert_eq!(
            p.status.nodes[0].reason.as_deref(),
            Some("the node is not Ready")
        );
    }
}
