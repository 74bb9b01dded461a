//! `shoal reset`: undo what an agent did to this host (`kubeadm reset`).

use crate::client::default_data_dir;
use anyhow::{bail, Result};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The agent's data dir (as given to `shoal agent`).
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The agent's pod bridge (as given to `shoal agent`).
    #[arg(long, env = "SHOAL_POD_BRIDGE", default_value = shoal_agent::POD_BRIDGE)]
    pub pod_bridge: String,
    /// Keep the data dir (the node's identity, images, pod data); only stop and unmount.
    #[arg(long)]
    pub keep_data: bool,
    /// Do not ask (needed where there is no terminal to ask at).
    #[arg(long, short)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let dir = crate::client::absolute(
        args.data_dir
            .unwrap_or_else(|| default_data_dir().join("agent")),
    )?;
    let what = if args.keep_data {
        "stops this node's pods and removes their networks and mounts"
    } else {
        "stops this node's pods, removes their networks and mounts, and deletes the node's data (its identity: it must join again)"
    };
    if !args.force {
        if !std::io::stdin().is_terminal() {
            bail!("reset of {} {what}: run it with --force", dir.display());
        }
        eprint!("reset of {} {what}. Go on? [y/N] ", dir.display());
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("reset cancelled");
        }
    }
    let undone = shoal_agent::reset::reset(&dir, &args.pod_bridge, args.keep_data)?;
    println!(
        "stopped {} container(s), removed {} pod network namespace(s), unmounted {} file system(s)",
        undone.containers.len(),
        undone.namespaces.len(),
        undone.unmounted.len()
    );
    if undone.bridge {
        println!("removed the pod bridge {}", args.pod_bridge);
    }
    if undone.tun {
        println!(
            "removed the TUN device {} and its routes",
            shoal_runtime::oci::tun::name_for(&args.pod_bridge)
        );
    }
    if undone.nat {
        println!(
            "removed the nftables table ip {}",
            shoal_runtime::oci::nat::table(&args.pod_bridge)
        );
    }
    if undone.data_removed {
        println!("removed {}", dir.display());
    }
    Ok(())
}
