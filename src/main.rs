//! `shoal`: the controller, the agent and the command-line client in one binary. This file only
//! parses flags; each verb lives in `cmd/` and calls into the crates.

mod client;
mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The version this build reports (its nodes' `kubeletVersion`, what an `AgentUpgrade` names):
/// the crate's, or `SHOAL_VERSION` at build time for a build of its own.
pub const RELEASE: &str = match option_env!("SHOAL_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// `shoal --version`'s text after the release: from which commit, for which machine.
const BUILD: &str = concat!(
    " (commit ",
    env!("SHOAL_COMMIT"),
    ", ",
    env!("SHOAL_HOST_TARGET"),
    ", wasmtime 48.0.8",
    env!("SHOAL_FLAVOUR"),
    ")"
);

/// `shoal --version`: what was built, from which commit, for which machine.
fn version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| format!("{RELEASE}{BUILD}"))
}

#[derive(Parser)]
#[command(
    name = "shoal",
    version = version(),
    about = "A lightweight orchestrator for fleets of edge devices"
)]
struct Cli {
    /// Log filter for the controller and agent (e.g. `info`, `shoal_controller=debug`).
    #[arg(long, global = true, env = "SHOAL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// Credential file (a kubeconfig). Default: DATA_DIR/admin.conf of the default data dir.
    #[arg(long, global = true, env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: the store, the API and the scheduler.
    #[cfg(feature = "controller")]
    Controller(cmd::controller::Args),
    /// Run an agent: join the controller and run the pods bound to this node.
    Agent(Box<cmd::agent::Args>),
    /// Watch an upgraded agent through its trial (started by the agent; see AgentUpgrade).
    #[command(hide = true)]
    AgentGuard(cmd::agent::GuardArgs),
    /// Run a whole cluster in one process (controller and local agent), the way to start.
    #[cfg(feature = "controller")]
    Up(cmd::up::Args),
    /// Create or update objects from manifests (YAML or JSON; files, directories or -).
    Apply(cmd::apply::Args),
    /// List objects, or show some by name.
    Get(cmd::get::Args),
    /// Show an object in detail, with its events.
    Describe(cmd::describe::Args),
    /// Delete objects by name, by selector or from manifests.
    Delete(cmd::delete::Args),
    /// Print a container's log.
    Logs(cmd::logs::Args),
    /// Run a command in a container of an OCI pod.
    Exec(cmd::exec::Args),
    /// Forward local ports to a pod's ports (through the controller and the pod's node).
    PortForward(cmd::port_forward::Args),
    /// Store an artifact in the controller under NAME:TAG: a .wasm file, or a container image
    /// (OCI layout directory, OCI archive or docker save tarball).
    Push(cmd::push::Args),
    /// List the container images each node holds.
    Images(cmd::images::Args),
    /// Set the replicas of a Deployment or ReplicaSet.
    Scale(cmd::scale::Args),
    /// Follow a Deployment's rollout.
    Rollout(cmd::rollout::Args),
    /// Mark a node unschedulable: no new pods go there.
    Cordon(cmd::cordon::Args),
    /// Mark a node schedulable again.
    Uncordon(cmd::cordon::Args),
    /// Cordon a node and move its pods elsewhere (DaemonSet pods stay).
    Drain(cmd::drain::Args),
    /// Wait until an object has a condition (a Job Complete, a Deployment Available, ...).
    Wait(cmd::wait::Args),
    /// Manage join tokens for agents.
    Token(cmd::token::Args),
    /// Manage admin credentials: each has a lifetime and can be revoked on its own.
    Credentials(cmd::credentials::Args),
    /// Rotate the admin credential in use.
    Cert(cmd::credentials::CertArgs),
    /// Print a kubeconfig for kubectl: for a new admin credential NAME, or the one in use.
    Kubeconfig(cmd::credentials::KubeconfigArgs),
    /// Set or remove labels on a node (they outlive its heartbeats).
    Label(cmd::label::Args),
    /// Set or remove taints on a node.
    Taint(cmd::label::Args),
    /// Undo what an agent did to this host: stop its pods (a stopped agent leaves them
    /// running), remove their networks, mounts and the pod bridge, and delete its data.
    Reset(cmd::reset::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The guard runs beside an agent's exec, with no runtime or log of its own.
    if let Command::AgentGuard(a) = &cli.command {
        return std::process::ExitCode::from(cmd::agent::guard(a));
    }
    // `Targets` (a level, or `target=level` pairs) rather than `EnvFilter`: the same syntax
    // for everything Shoal documents, without the regex engine EnvFilter links in (about
    // 0.5 MB of an agent).
    let filter = cli.log.parse::<Targets>().unwrap_or_else(|e| {
        eprintln!(
            "warning: log filter {:?} (--log, SHOAL_LOG): {e}; logging at info",
            cli.log
        );
        Targets::new().with_default(tracing::Level::INFO)
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not for journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(filter)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            #[cfg(feature = "controller")]
            Command::Controller(a) => cmd::controller::run(a).await,
            #[cfg(feature = "controller")]
            Command::Up(a) => cmd::up::run(a).await,
            Command::Agent(a) => cmd::agent::run(*a).await,
            Command::AgentGuard(_) => Ok(()),
            Command::Logs(a) => cmd::logs::run(a).await,
            Command::Exec(a) => cmd::exec::run(a).await,
            Command::PortForward(a) => cmd::port_forward::run(a).await,
            Command::Push(a) => cmd::push::run(a).await,
            Command::Images(a) => cmd::images::run(a).await,
            Command::Scale(a) => cmd::scale::run(a).await,
            Command::Cordon(a) => cmd::cordon::run(a, true).await,
            Command::Uncordon(a) => cmd::cordon::run(a, false).await,
            Command::Drain(a) => cmd::drain::run(a).await,
            Command::Wait(a) => cmd::wait::run(a).await,
            Command::Rollout(a) => cmd::rollout::run(a).await,
            Command::Apply(a) => cmd::apply::run(a).await,
            Command::Get(a) => cmd::get::run(a).await,
            Command::Describe(a) => cmd::describe::run(a).await,
            Command::Delete(a) => cmd::delete::run(a).await,
            Command::Token(a) => cmd::token::run(a).await,
            Command::Credentials(a) => cmd::credentials::run(a).await,
            Command::Cert(a) => cmd::credentials::run_cert(a).await,
            Command::Kubeconfig(a) => cmd::credentials::run_kubeconfig(a).await,
            Command::Label(a) => cmd::label::run_label(a).await,
            Command::Taint(a) => cmd::label::run_taint(a).await,
            Command::Reset(a) => cmd::reset::run(a),
        }
    });
    // Blocking work still under way (a file read for a stream whose reader left) is not
    // waited for: a stopping agent is gone at once.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn log_filters_take_a_level_or_target_level_pairs() {
        use super::Targets;
        for good in [
            "info",
            "shoal_controller=debug",
            "warn,shoal_agent=trace,quinn=off",
        ] {
            assert!(good.parse::<Targets>().is_ok(), "{good}");
        }
        for bad in ["shoal_agent=loud", "info,quinn=much"] {
            assert!(bad.parse::<Targets>().is_err(), "{bad}");
        }
    }
}
