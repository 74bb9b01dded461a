//! `shoal drain NODE [--force] [--timeout 5m]`: cordons the node, evicts its pods (DaemonSet
//! pods stay), and waits until their controllers run them elsewhere.

use crate::client::{call, connect, next_seen};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_api::{Object, Pod};
use shoal_transport::proto::{EventType, Request, Response};
use shoal_transport::{Client, Seen, Selection, Watcher};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    node: String,
    /// Also delete pods that no controller will recreate.
    #[arg(long)]
    force: bool,
    /// How long to wait for the evicted pods to run elsewhere (300, 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = super::duration::parse)]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

async fn pods(client: &Client, fields: &str) -> Result<Vec<Pod>> {
    let req = Request::List {
        kind: "Pod".into(),
        namespace: None,
        selector: String::new(),
        fields: fields.into(),
    };
    match call(client, &req).await? {
        Response::List { items, .. } => Ok(items
            .iter()
            .filter_map(|b| Object::from_json(b).ok()?.into_typed().ok())
            .collect()),
        other => bail!(other.unexpected()),
    }
}

/// A watched pod by namespace and name (one that does not decode is not judged).
fn typed(bytes: &[u8]) -> Option<((String, String), Pod)> {
    let pod: Pod = Object::from_json(bytes).ok()?.into_typed().ok()?;
    let key = (
        pod.metadata.namespace_or_default().to_string(),
        pod.metadata.name.clone(),
    );
    Some((key, pod))
}

fn daemon(p: &Pod) -> bool {
    p.metadata
        .controller_owner()
        .is_some_and(|o| o.kind == "DaemonSet")
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    if super::cordon::set_unschedulable(&client, &args.node, true).await? {
        println!("node/{} cordoned", args.node);
    }
    let on_node = pods(&client, &format!("spec.nodeName={}", args.node)).await?;
    let evict: Vec<&Pod> = on_node.iter().filter(|p| !daemon(p)).collect();
    let bare: Vec<String> = evict
        .iter()
        .filter(|p| p.metadata.controller_owner().is_none())
        .map(|p| p.metadata.name.clone())
        .collect();
    if !bare.is_empty() && !args.force {
        bail!(
            "cannot drain node/{}: these pods have no controller to recreate them: {} (use --force to delete them anyway)",
            args.node,
            bare.join(", ")
        );
    }
    let owners: HashSet<String> = evict
        .iter()
        .filter_map(|p| p.metadata.controller_owner().map(|o| o.uid.clone()))
        .collect();
    for p in &evict {
        let ns = p.metadata.namespace_or_default().to_string();
        call(
            &client,
            &Request::Delete {
                kind: "Pod".into(),
                namespace: Some(ns.clone()),
                name: p.metadata.name.clone(),
                propagation: Default::default(),
                grace_period: None,
            },
        )
        .await?;
        println!("evicting pod {ns}/{}", p.metadata.name);
    }
    // Wait until every evicted pod's controller runs all its pods again, none on this node,
    // re-judged on each change the pods' watch brings.
    let settle = async {
        let mut watcher = Watcher::new(Selection::all("Pod"));
        let mut all: HashMap<(String, String), Pod> = HashMap::new();
        loop {
            match next_seen(&mut watcher, &client).await? {
                Seen::Listed { items, .. } => {
                    all = items.iter().filter_map(|b| typed(b)).collect();
                }
                Seen::Changed { type_, object, .. } => {
                    if let Some((key, pod)) = typed(&object) {
                        match type_ {
                            EventType::Deleted => all.remove(&key),
                            _ => all.insert(key, pod),
                        };
                    }
                }
            }
            let theirs: Vec<&Pod> = all
                .values()
                .filter(|p| {
                    p.metadata
                        .controller_owner()
                        .is_some_and(|o| owners.contains(&o.uid))
                })
                .collect();
            let settled = theirs.iter().all(|p| {
                p.spec.node_name.as_deref() != Some(args.node.as_str())
                    && p.phase() == Some(shoal_api::PodPhase::Running)
            });
            if settled && (owners.is_empty() || !theirs.is_empty()) {
                return Ok::<_, anyhow::Error>(());
            }
        }
    };
    match tokio::time::timeout(args.timeout, settle).await {
        Ok(settled) => settled?,
        Err(_) => bail!(
            "timed out waiting for the pods of node/{} to run elsewhere",
            args.node
        ),
    }
    println!("node/{} drained", args.node);
    client.close().await;
    Ok(())
}
