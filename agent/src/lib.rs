//! Shoal's agent: joins the cluster with a token, registers its Node and keeps it alive, runs
//! the pods bound to it through the runtimes, reports their status, and serves their logs.

pub mod artifacts;
pub mod backoff;
pub mod config;
pub mod cron;
pub mod devices;
pub mod distribution;
pub mod dns;
pub mod env;
pub mod error;
mod events;
pub mod host_path;
pub mod images;
pub mod join;
pub mod local;
pub mod node;
pub mod pod;
pub mod policy;
pub mod ports;
pub mod preload;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod reset;
pub mod secret_volume;
mod session;
pub mod static_pods;
pub mod subpath;
pub mod sync;
pub mod tunnel;
pub mod upgrade;
pub mod volume;

pub use config::{AgentConfig, Link, CONTAINER_LOG_MAX_SIZE, HEARTBEAT, POD_BRIDGE};
pub use error::{Error, Result};

use pod::Supervisor;
use shoal_runtime::oci::image::ImageStore;
use shoal_runtime::oci::RuncRuntime;
use shoal_runtime::wasm::WasmRuntime;
use shoal_transport::Client;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tasks beside the pods' and the proxy's: the static pods, the pinned CronJobs, certificate
/// renewal; each session adds the peers' streams.
fn beside(
    config: &AgentConfig,
    creds: &join::NodeCredentials,
    supervisor: &Supervisor,
    cron: &cron::Cron,
    link: &Link,
    shutdown: &CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    match &config.manifests {
        Some(dir) => tasks.spawn(static_pods::run(
            dir.clone(),
            config.name.clone(),
            supervisor.clone(),
            link.clone(),
            shutdown.clone(),
        )),
        None => tasks.spawn(static_pods::clear_mirrors(
            config.name.clone(),
            supervisor.clone(),
            link.clone(),
            shutdown.clone(),
        )),
    };
    tasks.spawn(cron.clone().run(link.clone(), shutdown.clone()));
    tasks.spawn(join::keep_renewed(
        creds.clone(),
        link.clone(),
        config.heartbeat,
        shutdown.clone(),
    ));
    tasks
}

/// How the agent stopped.
#[derive(Debug, PartialEq)]
pub enum Stopped {
    /// As asked (a signal): the caller exits.
    Shutdown,
    /// For an upgrade: the new binary is in place at this path, and the caller execs it.
    Upgrade(std::path::PathBuf),
}

/// The OCI executor, where runc is installed.
fn runc(config: &AgentConfig) -> Result<Option<Arc<RuncRuntime>>> {
    match shoal_runtime::oci::find_runc() {
        Ok(binary) => {
            let images = Arc::new(ImageStore::new(&config.data_dir.join("images"))?);
            let rt = RuncRuntime::new(binary, &config.data_dir, images)?;
            tracing::info!(runc = %rt.version(), "OCI containers run here");
            Ok(Some(Arc::new(rt)))
        }
        Err(why) => {
            tracing::warn!("this node runs wasm pods only: {why}");
            Ok(None)
        }
    }
}

/// Runs the agent until `shutdown`, or until it stops to upgrade itself; reconnects with
/// jittered back-off when the link drops.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<Stopped> {
    shoal_transport::pki::make_private_dir(&config.data_dir)?;
    // The data dir's lock first (redb locks local.redb): a second agent started with the same
    // data dir (by an upgrade's guard, or by hand) stops here, before it writes anything.
    let local = Arc::new(local::Local::open(&config.data_dir)?);
    write_pid(&config.data_dir);
    // Stops the agent as a signal does, or for an upgrade.
    let shutdown = shutdown.child_token();
    let upgrader = upgrade::Upgrader::load(&config, shutdown.clone());
    // A node that has not joined yet starts what it runs by itself (its static pods) first,
    // and joins in the loop below: it may boot long before it first reaches a controller.
    let creds = join::NodeCredentials::load(&config)?;
    let wasm = Arc::new(WasmRuntime::new(&config.data_dir.join("wasm-cache"))?);
    let runc = runc(&config)?;
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
    proxy.restore().await;
    let cron = cron::Cron::load(&config.data_dir, &config.name, supervisor.clone());
    if let Some(dir) = &config.images {
        supervisor.preload_images(dir).await;
    }
    supervisor.start_local().await;
    let tasks = beside(&config, &creds, &supervisor, &cron, &link, &shutdown);
    let mut attempt = 0u32;
    let mut carried = session::Carried::default();
    let mut refused = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // The wait before the next try, when the join says how long (it logs it).
        let mut wait = None;
        let joined = match creds.get() {
            Some(c) => Ok(c),
            None => creds.join(&config).await,
        };
        let connected = match joined {
            Ok(c) => Client::connect(&c).await.map_err(Error::from),
            Err(e) => Err(e),
        };
        match connected {
            Ok(client) => {
                attempt = 0;
                let client = Arc::new(client);
                link_tx.send_replace(Some(client.clone()));
                tracing::info!(server = %config.server, node = %config.name, "connected to the controller");
                let parts = session::Parts {
                    config: &config,
                    client: &client,
                    supervisor: &supervisor,
                    cron: &cron,
                    proxy: &proxy,
                    wasm: &wasm,
                    upgrader: &upgrader,
                    shutdown: &shutdown,
                    tasks: &tasks,
                };
                let session = session::session(parts, &mut carried).await;
                link_tx.send_replace(None);
                // A session that failed before it reconciled leaves the absence as it was.
                carried
                    .away_since
                    .get_or_insert_with(std::time::Instant::now);
                match session {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %shoal_transport::report(&e), "lost the controller")
                    }
                }
            }
            Err(e) if creds.get().is_none() => {
                match creds.retry_after(e, attempt.saturating_add(1)) {
                    Ok(d) => wait = Some(d),
                    Err(no) => {
                        refused = Some(no);
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %shoal_transport::report(&e), "cannot reach the controller");
                carried
                    .away_since
                    .get_or_insert_with(std::time::Instant::now);
            }
        }
        attempt = attempt.saturating_add(1);
        let delay = wait.unwrap_or_else(|| backoff::Backoff::RECONNECT.delay(attempt));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tasks.close();
    proxy.shutdown();
    let staged = upgrader.staged();
    supervisor
        .shutdown(staged.is_none() && (config.drain_on_stop || config.cleanup))
        .await;
    if config.cleanup {
        reset::clean_up_network(&config.data_dir, &config.pod_bridge);
    }
    // Streams still open end with the process; renewal ends with `shutdown`.
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    if let Some(no) = refused {
        return Err(no);
    }
    Ok(staged.map_or(Stopped::Shutdown, Stopped::Upgrade))
}

/// `DATA_DIR/agent.pid`: which process is this node's agent (after an upgrade's guard started
/// it again, no parent knows).
fn write_pid(data_dir: &std::path::Path) {
    let path = data_dir.join("agent.pid");
    if let Err(e) = std::fs::write(&path, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the agent's pid file");
    }
}
