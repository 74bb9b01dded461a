//! `shoal up`: the whole cluster in one process, the command a new user runs first.

use super::controller::start;
use super::signals::shutdown_on_signals;
use crate::client::read_manifests;
use anyhow::{Context, Result};
use shoal_transport::{Client, Credentials};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub controller: super::controller::Args,
    /// Manifests to apply once the cluster is up (files, directories or -).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Extended resources the local node offers pods: example.com/dongle=2.
    #[arg(long, env = "SHOAL_NODE_CAPACITY", default_value = "")]
    pub capacity: String,
    /// Host devices the local node gives pods that ask for them (as `shoal agent --device`).
    #[arg(long = "device", env = "SHOAL_NODE_DEVICES")]
    pub devices: Vec<String>,
    /// On Ctrl-C, stop the local node's pods before exiting (as `shoal agent --drain-on-stop`);
    /// without it, OCI containers run on and are taken back by the next `shoal up`.
    #[arg(long)]
    pub drain_on_stop: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let manifests = if args.files.is_empty() {
        Vec::new()
    } else {
        read_manifests(&args.files)?
    };
    let controller = start(&args.controller).await?;
    let creds = Credentials::load(controller.admin_config())?;
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone())?;
    let addr = controller.local_addr()?;
    let server = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    // The role label is the admins' to give (a node may not claim it), as K3s's server
    // labels its own node.
    let name = super::agent::hostname();
    controller
        .service()
        .label_node(
            &name,
            &[(
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            )]
            .into(),
        )
        .await
        .context("labelling the local node")?;
    let agent = shoal_agent::AgentConfig {
        server,
        token: Some(controller.token().to_string()),
        token_file: None,
        name: name.clone(),
        version: crate::RELEASE.to_string(),
        // The agent shares the process with the controller: it is upgraded as a whole.
        relaunch: None,
        data_dir: args.controller.config()?.data_dir.join("agent"),
        labels: Default::default(),
        max_pods: 110,
        capacity: super::agent::parse_capacity(&args.capacity)?,
        devices: super::agent::parse_devices(&args.devices, &args.capacity)?,
        pod_bridge: shoal_agent::POD_BRIDGE.into(),
        insecure_registries: vec![],
        image_gc_high_threshold: 85,
        image_gc_low_threshold: 80,
        heartbeat: shoal_agent::HEARTBEAT,
        // One node: no peers to serve.
        peer_listen: None,
        container_log_max_size: shoal_agent::CONTAINER_LOG_MAX_SIZE,
        drain_on_stop: args.drain_on_stop,
        cleanup: false,
        manifests: None,
        images: None,
    };
    let serving = tokio::spawn(controller.run(shutdown.clone()));
    let agent_name = agent.name.clone();
    let agent_task = tokio::spawn(shoal_agent::run(agent, shutdown.clone()));
    eprintln!("  local agent:      node {agent_name}");
    if !manifests.is_empty() {
        let client = Client::connect(&creds)
            .await
            .context("connecting to the local controller")?;
        super::apply::apply_parsed(&client, manifests, false).await?;
        client.close().await;
    }
    eprintln!("cluster is up; try: shoal get pods -o wide, shoal logs POD   (Ctrl-C stops it)");
    agent_task.await.context("the agent task failed")??;
    serving.await.context("the controller task failed")??;
    Ok(())
}
