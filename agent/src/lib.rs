//! Shoal's agent: joins the cluster with a token, registers its Node and keeps it alive, runs
//! the pods bound to it through the runtimes, reports their status, and serves their logs.

pub mod artifacts;
pub mod dns;
pub mod env;
pub mod error;
pub mod images;
pub mod join;
pub mod local;
pub mod node;
pub mod peer;
pub mod pod_state;
pub mod ports;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod secret_volume;
pub mod serve;
pub mod supervisor;
pub mod volume;

pub use error::{Error, Result};

use rand::Rng;
use shoal_api::Pod;
use shoal_runtime::oci::image::ImageStore;
use shoal_runtime::oci::RuncRuntime;
use shoal_runtime::wasm::WasmRuntime;
use shoal_transport::proto::{ErrorCode, Request, Response};
use shoal_transport::Client;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use supervisor::Supervisor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `HOST:PORT` of the controller.
    pub server: String,
    /// Needed only until the node has its certificate.
    pub token: Option<String>,
    /// The file the token came from, removed once the node has joined.
    pub token_file: Option<PathBuf>,
    pub name: String,
    pub data_dir: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// Most pods this node takes (kubelet's --max-pods).
    pub max_pods: u32,
    /// How often the node posts its status (kubelet's --node-status-update-frequency).
    pub heartbeat: Duration,
    /// The Linux bridge the node's OCI pods are attached to.
    pub pod_bridge: String,
    /// Registries (`HOST:PORT`) pulled from over plain HTTP; loopback ones always are.
    pub insecure_registries: Vec<String>,
    /// Disk use (percent) at which unused images are removed (the kubelet's
    /// --image-gc-high-threshold), and down to which (--image-gc-low-threshold).
    pub image_gc_high_threshold: u8,
    pub image_gc_low_threshold: u8,
    /// Where the node serves its peers' service proxies directly (QUIC, mutual TLS with the
    /// nodes' certificates); `None`: peers relay through the controller.
    pub peer_listen: Option<std::net::SocketAddr>,
    /// The most a container's log file holds on disk (the kubelet's containerLogMaxSize):
    /// past it, the oldest half goes.
    pub container_log_max_size: u64,
}

/// A container's log on disk at most, by default (the kubelet's 10Mi).
pub const CONTAINER_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// The pod bridge's name by default.
pub const POD_BRIDGE: &str = "shoal0";

/// The current connection to the controller, if any; replaced on every reconnect.
pub type Link = watch::Receiver<Option<Arc<Client>>>;

/// How long a resumed watch is given to be refused (its revision compacted) before it is taken
/// as resumed.
const WATCH_REFUSAL: Duration = Duration::from_secs(2);

/// How often the node tells the controller it is alive, by default.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Runs the agent until `shutdown`; reconnects with jittered back-off when the link drops.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    shoal_transport::pki::make_private_dir(&config.data_dir)?;
    let creds = join::NodeCredentials::load_or_join(&config).await?;
    let wasm = Arc::new(WasmRuntime::new(&config.data_dir.join("wasm-cache"))?);
    let runc = match shoal_runtime::oci::find_runc() {
        Ok(binary) => {
            let images = Arc::new(ImageStore::new(&config.data_dir.join("images"))?);
            let rt = RuncRuntime::new(binary, &config.data_dir, images)?;
            tracing::info!(runc = %rt.version(), "OCI containers run here");
            Some(Arc::new(rt))
        }
        Err(why) => {
            tracing::warn!("this node runs wasm pods only: {why}");
            None
        }
    };
    let local = Arc::new(local::Local::open(&config.data_dir)?);
    let (link_tx, link) = watch::channel(None::<Arc<Client>>);
    let proxy = proxy::Proxy::new(&config.name, link.clone(), creds.clone(), local.clone());
    let supervisor = Supervisor::new(
        &config,
        wasm.clone(),
        runc.clone(),
        link.clone(),
        proxy.clone(),
        local,
    )?;
    // What the node ran before runs again now, whether or not the controller answers: the
    // first connection reconciles it with what the controller says.
    proxy.restore();
    supervisor.start_local().await;
    let renewing = tokio::spawn(join::keep_renewed(
        creds.clone(),
        link.clone(),
        config.heartbeat,
        shutdown.clone(),
    ));
    let mut attempt = 0u32;
    let mut carried = Carried::default();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        match Client::connect(&creds.get()).await {
            Ok(client) => {
                attempt = 0;
                let client = Arc::new(client);
                link_tx.send_replace(Some(client.clone()));
                tracing::info!(server = %config.server, node = %config.name, "connected to the controller");
                let session = session(
                    &config,
                    &client,
                    &supervisor,
                    &proxy,
                    &wasm,
                    &shutdown,
                    &mut carried,
                )
                .await;
                link_tx.send_replace(None);
                // A session that failed before it reconciled leaves the absence as it was.
                carried
                    .away_since
                    .get_or_insert_with(std::time::Instant::now);
                match session {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(error = %e, "lost the controller"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the controller");
                carried
                    .away_since
                    .get_or_insert_with(std::time::Instant::now);
            }
        }
        attempt = attempt.saturating_add(1);
        let ceiling = Duration::from_millis(500)
            .saturating_mul(1 << attempt.min(6))
            .min(Duration::from_secs(30));
        let delay = ceiling.mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    renewing.abort();
    proxy.shutdown();
    supervisor.shutdown().await;
    Ok(())
}

/// What one connection's session leaves for the next.
#[derive(Default)]
struct Carried {
    /// Where the pod watch got to: a reconnect resumes from here instead of relisting.
    last_revision: Option<u64>,
    /// The port peers reach this node on, once it serves them.
    peer_port: Option<u16>,
    /// Since when the node has been out of touch with the controller, if it has.
    away_since: Option<std::time::Instant>,
}

/// One connection's life: register, heartbeat, serve the controller's requests, and follow the
/// pods bound to this node from the revision last seen.
async fn session(
    config: &AgentConfig,
    client: &Arc<Client>,
    supervisor: &Supervisor,
    proxy: &proxy::Proxy,
    wasm: &Arc<WasmRuntime>,
    shutdown: &CancellationToken,
    carried: &mut Carried,
) -> Result<()> {
    if let (Some(listen), None) = (config.peer_listen, carried.peer_port) {
        match peer::serve(
            client,
            &config.name,
            listen,
            supervisor.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(port) => {
                tracing::info!(port, "serving peers' service proxies directly");
                carried.peer_port = Some(port);
            }
            Err(e) => {
                tracing::warn!(%listen, error = %e, "cannot serve peers directly; they relay through the controller")
            }
        }
    }
    let peer_port = carried.peer_port;
    let last = &mut carried.last_revision;
    let put_node = || async {
        let node = node::describe(
            config,
            node::source_ip(client.connection().remote_address()),
            wasm.compiler(),
            wasm.target(),
            supervisor.runc_version(),
            peer_port,
        );
        let object = {
            let mut obj = shoal_api::Object::Node(node);
            obj.normalize();
            serde_json::to_vec(&obj)
        }
        .map_err(|e| Error::Internal(e.to_string()))?;
        match client.call(&Request::PutNode { object }).await? {
            Response::Object(stored) => {
                let pod_cidr = shoal_api::Object::from_json(&stored)
                    .ok()
                    .and_then(|o| o.into_typed::<shoal_api::Node>().ok())
                    .and_then(|n| n.spec.pod_cidr);
                if let Some(cidr) = pod_cidr {
                    supervisor.set_pod_cidr(&cidr);
                }
                Ok(())
            }
            other => expect_ok(other),
        }
    };
    put_node().await?;
    let serving = tokio::spawn(serve::serve(
        client.connection().clone(),
        supervisor.clone(),
    ));
    // The service proxy follows Services and Endpoints beside the pods; if its watch fails
    // it tries again while the connection lasts, and keeps what it knew meanwhile.
    let following = {
        let (proxy, client) = (proxy.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = proxy.follow(&client).await {
                    tracing::debug!(error = %e, "service watch ended");
                }
                if client.connection().close_reason().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let fields = format!("spec.nodeName={}", config.name);
    let watch_from = |revision: u64| Request::Watch {
        kind: "Pod".into(),
        namespace: None,
        selector: String::new(),
        fields: fields.clone(),
        revision,
    };
    // Resume from the last revision seen; relist only if the controller no longer has it.
    let mut pending = None;
    let mut resumed = None;
    if let Some(r) = *last {
        let mut stream = client.stream(&watch_from(r)).await?;
        // A watch that cannot resume is refused at once; one that can says nothing until a
        // pod of this node changes (after a controller restart, that may be never).
        match tokio::time::timeout(WATCH_REFUSAL, stream.next()).await {
            Ok(Ok(Some(Response::Error(e)))) if e.code == ErrorCode::Compacted => {
                tracing::info!(revision = r, "watch revision compacted; listing again");
            }
            Ok(Ok(Some(Response::Error(e)))) => return Err(Error::Server(e.message)),
            Ok(Ok(first)) => {
                pending = first;
                resumed = Some(stream);
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_quiet) => resumed = Some(stream),
        }
    }
    let (mut watch, mut revision) = match resumed {
        Some(stream) => {
            supervisor.report_all().await;
            (stream, last.unwrap_or(0))
        }
        None => {
            let listed = client
                .call(&Request::List {
                    kind: "Pod".into(),
                    namespace: None,
                    selector: String::new(),
                    fields: fields.clone(),
                })
                .await?;
            let (items, revision) = match listed {
                Response::List { items, revision } => (items, revision),
                Response::Error(e) => return Err(Error::Server(e.message)),
                other => return Err(Error::Internal(format!("unexpected answer {other:?}"))),
            };
            let pods: Vec<Pod> = items.iter().filter_map(|b| decode_pod(b)).collect();
            supervisor.sync(pods).await;
            (client.stream(&watch_from(revision)).await?, revision)
        }
    };
    *last = Some(revision);
    let held = supervisor.send_held_events(client).await;
    if let Some(since) = carried.away_since.take() {
        let message = format!(
            "Node {} reconnected after {}s away and reconciled: {} pods ran on through it, \
             their status reported, {held} events from meanwhile sent, and the controller's \
             changes applied",
            config.name,
            since.elapsed().as_secs(),
            supervisor.count()
        );
        tracing::info!(%message, "reconciled with the controller");
        node_event(client, &config.name, "Reconciled", message).await;
    }
    let mut beat = tokio::time::interval(config.heartbeat);
    beat.tick().await;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = beat.tick() => {
                if let Err(e) = put_node().await {
                    break Err(e);
                }
            }
            next = async {
                match pending.take() {
                    Some(r) => Ok(Some(r)),
                    None => watch.next().await,
                }
            } => match next {
                Ok(Some(Response::Event { type_, revision: r, object })) => {
                    revision = r;
                    *last = Some(r);
                    if let Some(pod) = decode_pod(&object) {
                        supervisor.observe(type_, pod).await;
                    }
                }
                Ok(Some(Response::Error(e))) => {
                    if e.code == ErrorCode::Compacted {
                        // Too far behind to resume: the next session lists again.
                        *last = None;
                    }
                    break Err(Error::Server(format!("watch from revision {revision}: {}", e.message)));
                }
                Ok(Some(_)) => {}
                Ok(None) => break Err(Error::Server("the controller ended the watch".into())),
                Err(e) => break Err(e.into()),
            },
        }
    };
    serving.abort();
    following.abort();
    result
}

/// Records an Event about this node (best effort).
async fn node_event(client: &Client, node: &str, reason: &str, message: String) {
    let about = shoal_api::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..Default::default()
    };
    record_event(client, &about, "Normal", reason, message).await;
}

/// Records an Event about `about` (best effort: a lost link loses the event, nothing else).
pub(crate) async fn record_event(
    client: &Client,
    about: &shoal_api::ObjectReference,
    type_: &str,
    reason: &str,
    message: String,
) {
    let Ok(about) = serde_json::to_vec(about) else {
        return;
    };
    let req = Request::RecordEvent {
        about,
        type_: type_.into(),
        reason: reason.into(),
        message,
    };
    if let Err(e) = client
        .call(&req)
        .await
        .map_err(Error::from)
        .and_then(expect_ok)
    {
        tracing::debug!(error = %e, reason, "event not recorded");
    }
}

fn decode_pod(bytes: &[u8]) -> Option<Pod> {
    shoal_api::Object::from_json(bytes).ok()?.into_typed().ok()
}

pub(crate) fn expect_ok(r: Response) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        Response::Error(e) => Err(Error::Server(e.message)),
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}
