//! `shoal controller`

use crate::client::default_data_dir;
use anyhow::{Context, Result};
use shoal_controller::{Controller, ControllerConfig, StoreConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Clone)]
#[group(skip)]
pub struct Args {
    /// Where the store, the PKI, admin.conf and the join token live.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// UDP address the QUIC API listens on.
    #[arg(long, default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    /// Extra names or addresses for the server certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// The server address written into admin.conf (default: the listen address).
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// How long without a heartbeat before a node is NotReady (40, 40s).
    #[arg(long, default_value = "40s", value_parser = super::duration::parse)]
    pub node_grace_period: std::time::Duration,
    /// Seconds pods without their own toleration stay on an unreachable node before they are
    /// evicted and run elsewhere, or `never`.
    #[arg(long, default_value = "300")]
    pub default_unreachable_toleration_seconds: String,
    /// The pods' address range (a /16); each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: shoal_controller::ipam::ClusterCidr,
    /// MiB per second that each node's pods' packets may take through the controller's relay
    /// (for nodes that cannot reach each other directly); beyond it they are dropped.
    #[arg(long, default_value = "64")]
    pub relay_rate: u32,
    /// The range Services get their virtual address (cluster IP) from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: shoal_controller::service_ips::ServiceCidr,
    /// How long a node's certificate lives (30s, 12h, 365d); agents renew theirs after two
    /// thirds of it.
    #[arg(long, default_value = "365d", value_parser = super::duration::parse)]
    pub node_cert_ttl: std::time::Duration,
}

impl Args {
    pub fn config(&self) -> anyhow::Result<ControllerConfig> {
        let toleration = match self.default_unreachable_toleration_seconds.as_str() {
            "never" => None,
            s => Some(std::time::Duration::from_secs(s.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--default-unreachable-toleration-seconds: expected seconds or never, got {s:?}"
                )
            })?)),
        };
        Ok(ControllerConfig {
            data_dir: crate::client::absolute(
                self.data_dir.clone().unwrap_or_else(default_data_dir),
            )?,
            listen: self.listen,
            tls_san: self.tls_san.clone(),
            advertise: self.advertise_address.clone(),
            store: StoreConfig::default(),
            node_grace: self.node_grace_period,
            default_unreachable_toleration: toleration,
            cluster_cidr: self.cluster_cidr,
            service_cidr: self.service_cidr,
            node_cert_ttl: self.node_cert_ttl,
            relay_rate: u64::from(self.relay_rate.max(1)) << 20,
        })
    }
}

pub async fn start(args: &Args) -> Result<Controller> {
    let config = args.config()?;
    let dir = config.data_dir.display().to_string();
    let controller = Controller::start(config)
        .await
        .with_context(|| format!("starting the controller in {dir}"))?;
    eprintln!(
        "shoal controller listening on {} (QUIC/UDP)",
        controller.local_addr()?
    );
    eprintln!(
        "  admin credential: {}",
        controller.admin_config().display()
    );
    eprintln!(
        "  join token:       {}",
        controller.admin_config().with_file_name("token").display()
    );
    Ok(controller)
}

pub async fn run(args: Args) -> Result<()> {
    let controller = start(&args).await?;
    let shutdown = CancellationToken::new();
    super::signals::shutdown_on_signals(shutdown.clone())?;
    controller.run(shutdown).await?;
    Ok(())
}
