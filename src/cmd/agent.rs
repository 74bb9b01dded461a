//! `shoal agent`

use crate::client::default_data_dir;
use anyhow::{bail, Context, Result};
use shoal_agent::AgentConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The controller, HOST:PORT.
    #[arg(long, env = "SHOAL_SERVER")]
    pub server: String,
    /// Join token (needed the first time only): SHOAL1::<ca-hash>::<secret>. Prefer
    /// --token-file or the SHOAL_TOKEN variable: a command line is visible to every local user.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the join token from this file; it is removed once the node has joined.
    #[arg(long, env = "SHOAL_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long, env = "SHOAL_NODE_NAME")]
    pub name: Option<String>,
    /// Where the node keeps its credential, artifacts, compile cache and pod data.
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Extra node labels: key=value,key2=value2.
    #[arg(long, env = "SHOAL_NODE_LABELS", default_value = "")]
    pub labels: String,
    /// Most pods this node runs.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Extended resources this node offers pods: example.com/dongle=2,vendor.io/gpu=1.
    #[arg(long, env = "SHOAL_NODE_CAPACITY", default_value = "")]
    pub capacity: String,
    /// A host device pods may ask for, as an extended resource:
    /// RESOURCE=HOST_PATH[:CONTAINER_PATH] (devices.shoal.dev/serial=/dev/ttyUSB0); repeatable.
    /// The node's capacity counts those present.
    #[arg(long = "device", env = "SHOAL_NODE_DEVICES")]
    pub devices: Vec<String>,
    /// How often the node posts its status (10, 10s; keep well under the controller's
    /// --node-grace-period).
    #[arg(long, default_value = "10s", value_parser = super::duration::parse)]
    pub node_status_update_frequency: std::time::Duration,
    /// The Linux bridge OCI pods are attached to (made if missing).
    #[arg(long, env = "SHOAL_POD_BRIDGE", default_value = shoal_agent::POD_BRIDGE)]
    pub pod_bridge: String,
    /// A registry (`HOST:PORT`) to pull from over plain HTTP, as Docker's insecure-registries;
    /// repeatable. Registries on loopback always are.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Disk use (percent) at which images no pod uses are removed, least recently used first.
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Disk use (percent) image garbage collection brings it down to.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// Where other nodes' service proxies reach this node directly (UDP, QUIC with mutual
    /// TLS), or `off` to have them relay through the controller.
    #[arg(long, default_value = "0.0.0.0:7444")]
    pub peer_listen: String,
    /// The most a container's log keeps on disk (a quantity: 10Mi, 512Ki); past it, the
    /// oldest half goes, so a chatty pod on a node out of touch cannot fill the disk.
    #[arg(long, default_value = "10Mi")]
    pub container_log_max_size: shoal_api::Quantity,
    /// On SIGTERM or Ctrl-C, stop every pod (within its grace period) before exiting. Without
    /// it, a stop leaves OCI containers running for the next agent to take back (an upgrade
    /// or a restart is no downtime); wasm pods, in the agent's process, start again with it.
    #[arg(long)]
    pub drain_on_stop: bool,
    /// On SIGTERM or Ctrl-C, stop every pod (as --drain-on-stop) and then remove what the node
    /// made in the host's network: the pod bridge, the pods' network namespaces and Shoal's
    /// nftables table, with IPv4 forwarding put back as it was.
    #[arg(long)]
    pub cleanup: bool,
    /// A directory of pod manifests (YAML or JSON) this node runs itself, with or without a
    /// controller: static pods, as the kubelet's staticPodPath. Read again every 5 s; a
    /// changed file restarts its pods, a removed one stops them.
    #[arg(long, env = "SHOAL_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// A directory of images the node holds from the start (K3s' agent/images, for nodes that
    /// start before they reach a controller or a registry), loaded at start. The file name is
    /// the image: `sensor:1.wasm` a wasm module or component, `gateway:2.tar` an OCI image
    /// archive (an OCI layout as a tar, or `docker save` output).
    #[arg(long, env = "SHOAL_IMAGES", value_name = "DIR")]
    pub images: Option<PathBuf>,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "shoal-node".into())
}

pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--labels: expected key=value, got {pair:?}");
        };
        shoal_api::validate::check_label_key(k)
            .map_err(|m| anyhow::anyhow!("--labels: key {k:?}: {m}"))?;
        shoal_api::validate::check_label_value(v)
            .map_err(|m| anyhow::anyhow!("--labels: value {v:?}: {m}"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `--capacity`: extended resources (domain-prefixed names) in whole units.
pub fn parse_capacity(s: &str) -> Result<BTreeMap<String, shoal_api::Quantity>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, n)) = pair.split_once('=') else {
            bail!("--capacity: expected name=count, got {pair:?}");
        };
        if !shoal_api::validate::is_extended_resource(name) {
            bail!("--capacity: {name:?} is not an extended resource name (example.com/name)");
        }
        let q: shoal_api::Quantity = n
            .parse()
            .map_err(|e| anyhow::anyhow!("--capacity: {name}: {e}"))?;
        if q.is_negative() || q.milli_value() % 1000 != 0 {
            bail!("--capacity: {name}: expected a whole number, got {n:?}");
        }
        out.insert(name.to_string(), q);
    }
    Ok(out)
}

/// `--device`: host devices, each counted under its resource; a resource is either devices
/// or a plain count (`--capacity`), not both.
pub fn parse_devices(
    specs: &[String],
    capacity: &str,
) -> Result<Vec<shoal_agent::devices::DeviceConfig>> {
    let devices =
        shoal_agent::devices::parse(specs).map_err(|m| anyhow::anyhow!("--device: {m}"))?;
    let counted = parse_capacity(capacity)?;
    if let Some(d) = devices.iter().find(|d| counted.contains_key(&d.resource)) {
        bail!(
            "--device and --capacity both give {}: a device resource counts the devices named",
            d.resource
        );
    }
    for d in &devices {
        // A device not plugged in yet counts once it is; a path that is no device is a
        // mistake.
        match shoal_agent::devices::device_node(&d.host, &d.container) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(device = %d.host.display(), resource = %d.resource, "no such device (yet): it counts once it is there");
            }
            other => {
                other.with_context(|| format!("--device {}={}", d.resource, d.host.display()))?;
            }
        }
    }
    Ok(devices)
}

impl Args {
    pub fn config(&self) -> Result<AgentConfig> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            // Gone once the node joined (the agent deletes it): the node needs it no more.
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(t) => Some(t.trim().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
            },
            (None, None) => None,
        };
        let name = self.name.clone().unwrap_or_else(hostname);
        shoal_api::validate::check_dns1123_subdomain(&name)
            .map_err(|m| anyhow::anyhow!("--name: {m}"))?;
        let labels = parse_labels(&self.labels)?;
        shoal_api::node_restriction::check_node_labels(&name, &labels)
            .map_err(|m| anyhow::anyhow!("--labels: {m}"))?;
        Ok(AgentConfig {
            server: self.server.clone(),
            token,
            token_file: self.token_file.clone(),
            name,
            version: crate::RELEASE.to_string(),
            // Lossy: a command line that is not UTF-8 is not worth a panic here.
            relaunch: Some(
                std::env::args_os()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
            ),
            data_dir: crate::client::absolute(
                self.data_dir
                    .clone()
                    .unwrap_or_else(|| default_data_dir().join("agent")),
            )?,
            labels,
            max_pods: self.max_pods,
            capacity: parse_capacity(&self.capacity)?,
            devices: parse_devices(&self.devices, &self.capacity)?,
            pod_bridge: self.pod_bridge.clone(),
            insecure_registries: self.insecure_registries.clone(),
            image_gc_high_threshold: self.image_gc_high_threshold,
            image_gc_low_threshold: self.image_gc_low_threshold,
            heartbeat: self
                .node_status_update_frequency
                .max(std::time::Duration::from_secs(1)),
            container_log_max_size: match self.container_log_max_size.value() {
                v if v >= 4096 => v as u64,
                _ => anyhow::bail!(
                    "--container-log-max-size {}: at least 4Ki",
                    self.container_log_max_size.as_str()
                ),
            },
            drain_on_stop: self.drain_on_stop || self.cleanup,
            cleanup: self.cleanup,
            manifests: self
                .manifests
                .clone()
                .map(crate::client::absolute)
                .transpose()?,
            images: self.images.clone(),
            peer_listen: match self.peer_listen.as_str() {
                "off" => None,
                a => Some(a.parse().map_err(|e| {
                    anyhow::anyhow!("--peer-listen: expected ADDR:PORT or off, got {a:?}: {e}")
                })?),
            },
        })
    }
}

pub async fn run(args: Args) -> Result<()> {
    let config = args.config()?;
    eprintln!(
        "shoal agent {} ({}) joining {}",
        config.name, config.version, config.server
    );
    let shutdown = CancellationToken::new();
    super::signals::shutdown_on_signals(shutdown.clone())?;
    match shoal_agent::run(config, shutdown).await? {
        shoal_agent::Stopped::Shutdown => Ok(()),
        shoal_agent::Stopped::Upgrade(exe) => {
            use std::os::unix::process::CommandExt;
            let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
            let (arg0, rest) = argv.split_first().context("no command line")?;
            eprintln!("shoal agent: restarting as {}", exe.display());
            // Only returns if the exec failed: the upgrade's guard then puts the old binary
            // back and starts it again.
            let e = std::process::Command::new(&exe)
                .arg0(arg0)
                .args(rest)
                .exec();
            Err(e).with_context(|| format!("starting the upgraded agent {}", exe.display()))
        }
    }
}

/// `shoal agent-guard STATE [--watch | --recover]`.
#[derive(clap::Args)]
pub struct GuardArgs {
    state: PathBuf,
    #[arg(long, conflicts_with = "recover")]
    watch: bool,
    /// Before the agent starts: roll back a trial its agent did not live through.
    #[arg(long)]
    recover: bool,
}

pub fn guard(args: &GuardArgs) -> u8 {
    use shoal_agent::upgrade::guard::{main, Mode};
    let mode = match (args.watch, args.recover) {
        (true, _) => Mode::Watch,
        (_, true) => Mode::Recover,
        _ => Mode::Start,
    };
    u8::try_from(main(&args.state, mode)).unwrap_or(1)
}
