//! One connection's life: register the Node, heartbeat, serve the controller's requests, and
//! follow the pods bound to this node from the revision last seen.

use crate::config::AgentConfig;
use crate::error::{expect_ok, Error, Result};
use crate::pod::Supervisor;
use crate::{node, proxy, tunnel};
use shoal_api::Pod;
use shoal_runtime::wasm::WasmRuntime;
use shoal_transport::proto::{Request, Response};
use shoal_transport::{Client, Seen, Selection, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a resumed watch is given to be refused (its revision compacted) before it is taken
/// as resumed.
const WATCH_REFUSAL: Duration = Duration::from_secs(2);

/// What one connection's session leaves for the next.
#[derive(Default)]
pub(crate) struct Carried {
    /// Where the pod watch got to: a reconnect resumes from here instead of relisting.
    last_revision: Option<u64>,
    /// The port peers reach this node on, once it serves them.
    peer_port: Option<u16>,
    /// Since when the node has been out of touch with the controller, if it has.
    pub away_since: Option<std::time::Instant>,
}

/// What a session works with.
pub(crate) struct Parts<'a> {
    pub config: &'a AgentConfig,
    pub client: &'a Arc<Client>,
    pub supervisor: &'a Supervisor,
    pub cron: &'a crate::cron::Cron,
    pub proxy: &'a proxy::Proxy,
    pub wasm: &'a Arc<WasmRuntime>,
    pub upgrader: &'a crate::upgrade::Upgrader,
    pub shutdown: &'a CancellationToken,
    /// The agent's tasks that outlive no session's connection but are not the pods'.
    pub tasks: &'a TaskTracker,
}

/// One connection's life: register, heartbeat, serve the controller's requests, and follow the
/// pods bound to this node from the revision last seen. Returns `Ok` on shutdown.
pub(crate) async fn session(parts: Parts<'_>, carried: &mut Carried) -> Result<()> {
    let Parts {
        config,
        client,
        supervisor,
        ..
    } = parts;
    if let (Some(listen), None) = (config.peer_listen, carried.peer_port) {
        carried.peer_port = serve_peers(&parts, listen).await;
    }
    // The runs started while cut off are the controller's before it hears the node is back
    // (and would start what the node ran) and before the pods are listed (and would stop them).
    parts.cron.report(client).await?;
    let on_trial = parts.upgrader.on_trial();
    put_node(&parts, carried.peer_port, false).await?;
    if on_trial {
        // Registered Ready on the new version: the upgrade is done, and the Node says so now
        // rather than a heartbeat later.
        put_node(&parts, carried.peer_port, false).await?;
    }
    let serving = tokio::spawn(tunnel::serve::serve(
        client.connection().clone(),
        supervisor.clone(),
        parts.tasks.clone(),
    ));
    let following = tokio::spawn(follow_services(parts.proxy.clone(), client.clone()));
    let policing = tokio::spawn(follow_policies(
        parts.proxy.policies().clone(),
        client.clone(),
        config.name.clone(),
    ));
    let result = async {
        let mut watcher = Watcher::resuming(pods_of(&config.name), carried.last_revision);
        let caught_up = catch_up(&parts, &mut watcher).await;
        carried.last_revision = watcher.revision();
        caught_up?;
        reconciled(&parts, carried).await;
        follow_pods(&parts, carried, watcher).await
    }
    .await;
    serving.abort();
    following.abort();
    policing.abort();
    result
}

/// Serves other nodes' service proxies directly; returns the port, or `None` (they relay
/// through the controller).
async fn serve_peers(parts: &Parts<'_>, listen: std::net::SocketAddr) -> Option<u16> {
    let served = tunnel::peer::serve(
        parts.client,
        &parts.config.name,
        listen,
        parts.supervisor.clone(),
        parts.shutdown.clone(),
        parts.tasks.clone(),
    )
    .await;
    match served {
        Ok(port) => {
            tracing::info!(port, "serving peers' service proxies directly");
            Some(port)
        }
        Err(e) => {
            tracing::warn!(%listen, error = %shoal_transport::report(&e), "cannot serve peers directly; they relay through the controller");
            None
        }
    }
}

/// How long a stopping agent waits to tell the controller it is restarting.
const RESTARTING_NOTICE: Duration = Duration::from_secs(1);

/// Tells the controller that this agent stops and its pods run on: the node's Ready condition
/// says so ([`shoal_api::AGENT_RESTARTING`]), and the controller waits longer for the next
/// heartbeat before taking the node as lost.
async fn restarting(parts: &Parts<'_>, peer_port: Option<u16>) {
    match tokio::time::timeout(RESTARTING_NOTICE, put_node(parts, peer_port, true)).await {
        Ok(Ok(())) => tracing::info!("told the controller this agent is restarting"),
        Ok(Err(e)) => {
            tracing::warn!(error = %shoal_transport::report(&e), "cannot tell the controller this agent is restarting")
        }
        Err(_) => {
            tracing::warn!("the controller did not answer in time that this agent is restarting")
        }
    }
}

/// Registers (or refreshes) the Node: the heartbeat. The controller's answer carries the
/// node's pod range. `restarting`: the last one before the agent stops, leaving its pods.
async fn put_node(parts: &Parts<'_>, peer_port: Option<u16>, restarting: bool) -> Result<()> {
    let client = parts.client;
    let mut node = node::describe(
        parts.config,
        node::source_ip(client.connection().remote_address()),
        parts.wasm.compiler(),
        parts.wasm.target(),
        parts.supervisor.runc_version(),
        peer_port,
    );
    upgrade_status(parts.upgrader, &mut node);
    if restarting {
        let ready = node
            .status
            .as_mut()
            .and_then(|s| s.conditions.iter_mut().find(|c| c.type_ == "Ready"));
        if let Some(ready) = ready {
            ready.reason = Some(shoal_api::AGENT_RESTARTING.into());
            ready.message = Some("the agent is restarting; its pods keep running".into());
        }
    }
    let object = {
        let mut obj = shoal_api::Object::Node(node);
        obj.normalize();
        serde_json::to_vec(&obj)
    }
    .map_err(|e| Error::Internal(e.to_string()))?;
    match client.call(&Request::PutNode { object }).await? {
        Response::Object(stored) => {
            let stored = shoal_api::Object::from_json(&stored)
                .ok()
                .and_then(|o| o.into_typed::<shoal_api::Node>().ok());
            if let Some(cidr) = stored.as_ref().and_then(|n| n.spec.pod_cidr.clone()) {
                parts.supervisor.set_pod_cidr(&cidr);
            }
            let order = stored.as_ref().and_then(upgrade_order);
            if !restarting {
                if let Some(order) = parts.upgrader.after_heartbeat(order) {
                    let (upgrader, client) = (parts.upgrader.clone(), client.clone());
                    let supervisor = parts.supervisor.clone();
                    parts.tasks.spawn(async move {
                        upgrader
                            .carry_out(order, supervisor.artifacts(), &client)
                            .await
                    });
                }
            }
            Ok(())
        }
        other => expect_ok(other),
    }
}

/// The controller's upgrade order on the stored Node, if any.
fn upgrade_order(node: &shoal_api::Node) -> Option<shoal_api::UpgradeOrder> {
    let text = node.metadata.annotations.get(shoal_api::UPGRADE_ORDER)?;
    match serde_json::from_str(text) {
        Ok(order) => Some(order),
        Err(e) => {
            tracing::warn!(error = %e, "the controller's upgrade order does not parse");
            None
        }
    }
}

/// What the Node says of this agent's last upgrade: the annotation the controller reads and
/// the `AgentUpgrade` condition people read.
fn upgrade_status(upgrader: &crate::upgrade::Upgrader, node: &mut shoal_api::Node) {
    if let Some(report) = upgrader.report() {
        if let Ok(text) = serde_json::to_string(&report) {
            node.metadata
                .annotations
                .insert(shoal_api::UPGRADE_STATE.into(), text);
        }
    }
    let (Some((status, reason, message)), Some(s)) = (upgrader.condition(), node.status.as_mut())
    else {
        return;
    };
    let now = crate::node::now();
    s.conditions.push(shoal_api::Condition {
        type_: "AgentUpgrade".into(),
        status: status.into(),
        reason: Some(reason),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
        last_update_time: None,
    });
}

/// The service proxy follows Services and Endpoints beside the pods; if its watch fails it
/// tries again while the connection lasts, and keeps what it knew meanwhile.
async fn follow_services(proxy: proxy::Proxy, client: Arc<Client>) {
    loop {
        if let Err(e) = proxy.follow(&client).await {
            tracing::debug!(error = %shoal_transport::report(&e), "service watch ended");
        }
        if client.connection().close_reason().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The node's NetworkPolicies follow its ConfigMap, as the service proxy follows Services.
async fn follow_policies(policies: crate::policy::Policies, client: Arc<Client>, node: String) {
    use shoal_api::policy::{policy_config_map, POLICY_NAMESPACE};
    let selection = Selection {
        namespace: Some(POLICY_NAMESPACE.into()),
        fields: format!("metadata.name={}", policy_config_map(&node)),
        ..Selection::all("ConfigMap")
    };
    let decode = |bytes: &[u8]| -> Option<shoal_api::ConfigMap> {
        shoal_api::Object::from_json(bytes).ok()?.into_typed().ok()
    };
    loop {
        let mut watcher = Watcher::new(selection.clone());
        loop {
            let cm = match watcher.next(&client).await {
                Ok(Seen::Listed { items, .. }) => items.first().and_then(|b| decode(b)),
                Ok(Seen::Changed { type_, object, .. }) => {
                    if type_ == shoal_transport::proto::EventType::Deleted {
                        None
                    } else {
                        decode(&object)
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %shoal_transport::report(&e), "network policy watch ended");
                    break;
                }
            };
            policies.take(cm).await;
        }
        if client.connection().close_reason().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The pods bound to `node`.
fn pods_of(node: &str) -> Selection {
    Selection {
        fields: format!("spec.nodeName={node}"),
        ..Selection::all("Pod")
    }
}

/// Brings the supervisor up to date at the start of a session: a watch resumed from the last
/// revision seen reports every pod's status and carries on; one that cannot resume (the
/// controller no longer holds that revision), or a first session, lists and syncs.
async fn catch_up(parts: &Parts<'_>, watcher: &mut Watcher) -> Result<()> {
    let client = parts.client.as_ref();
    let first = if watcher.revision().is_some() {
        // A watch that cannot resume is refused at once; one that can says nothing until a
        // pod of this node changes (after a controller restart, that may be never). The
        // watcher is cancel-safe: a quiet watch loses nothing to the timeout.
        match tokio::time::timeout(WATCH_REFUSAL, watcher.next(client)).await {
            Ok(seen) => Some(seen?),
            Err(_quiet) => None,
        }
    } else {
        Some(watcher.next(client).await?)
    };
    match first {
        Some(Seen::Listed { items, .. }) => sync(parts, &items).await,
        Some(changed) => {
            parts.supervisor.report_all().await;
            observe(parts, changed).await;
        }
        None => parts.supervisor.report_all().await,
    }
    Ok(())
}

/// Hands what the pod watch saw to the supervisor.
async fn observe(parts: &Parts<'_>, seen: Seen) {
    match seen {
        Seen::Listed { items, .. } => sync(parts, &items).await,
        Seen::Changed { type_, object, .. } => {
            if let Some(pod) = decode_pod(&object) {
                parts.supervisor.observe(type_, pod).await;
            }
        }
    }
}

async fn sync(parts: &Parts<'_>, items: &[Vec<u8>]) {
    let pods: Vec<Pod> = items.iter().filter_map(|b| decode_pod(b)).collect();
    parts.supervisor.sync(pods).await;
}

/// After a time away: sends the events held meanwhile, and records on the Node how the
/// reconnect went.
async fn reconciled(parts: &Parts<'_>, carried: &mut Carried) {
    let held = parts.supervisor.send_held_events(parts.client).await;
    let Some(since) = carried.away_since.take() else {
        return;
    };
    let name = &parts.config.name;
    let message = format!(
        "Node {name} reconnected after {}s away and reconciled: {} pods ran on through it, \
         their status reported, {held} events from meanwhile sent, and the controller's \
         changes applied",
        since.elapsed().as_secs(),
        parts.supervisor.count()
    );
    tracing::info!(%message, "reconciled with the controller");
    crate::events::about_node(parts.client, name, "Reconciled", message).await;
}

/// Heartbeats and hands the watch's pod events to the supervisor until shutdown (`Ok`) or
/// the connection or watch fails.
async fn follow_pods(parts: &Parts<'_>, carried: &mut Carried, mut watcher: Watcher) -> Result<()> {
    let mut beat = tokio::time::interval(parts.config.heartbeat);
    beat.tick().await;
    loop {
        let seen = tokio::select! {
            _ = parts.shutdown.cancelled() => {
                // An upgrade leaves the pods running whatever the agent was told for a stop.
                if !parts.config.drain_on_stop || parts.upgrader.staged().is_some() {
                    restarting(parts, carried.peer_port).await;
                }
                return Ok(());
            }
            _ = beat.tick() => {
                put_node(parts, carried.peer_port, false).await?;
                continue;
            }
            seen = watcher.next(parts.client) => seen,
        };
        // Where the next session resumes (none after a refused resume that has not listed).
        carried.last_revision = watcher.revision();
        observe(parts, seen?).await;
    }
}

fn decode_pod(bytes: &[u8]) -> Option<Pod> {
    shoal_api::Object::from_json(bytes).ok()?.into_typed().ok()
}
