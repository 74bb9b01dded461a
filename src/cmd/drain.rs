//! `shoal drain NODE [--force] [--timeout 5m]`: cordons the node, evicts its pods (DaemonSet
//! pods stay), and waits, as kubectl does, until each evicted pod is gone; one that stays is
//! named with why when the time is up.

use crate::client::{call, connect, next_seen};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_api::{Object, Pod};
use shoal_transport::proto::{EventType, Request, Response};
use shoal_transport::{Client, Seen, Selection, Watcher};
use std::collections::HashMap;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    node: String,
    /// Also delete pods that no controller will recreate.
    #[arg(long)]
    force: bool,
    /// How long to wait for the evicted pods to be gone (300, 90s, 5m).
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
    // A finished pod needs no controller to be deleted: nothing would run it again anyway.
    let bare: Vec<String> = evict
        .iter()
        .filter(|p| p.metadata.controller_owner().is_none() && !p.is_terminal())
        .map(|p| p.metadata.name.clone())
        .collect();
    if !bare.is_empty() && !args.force {
        bail!(
            "cannot drain node/{}: these pods have no controller to recreate them: {} (use --force to delete them anyway)",
            args.node,
            bare.join(", ")
        );
    }
    // Each evicted pod by namespace and name, with its uid: a new pod of the same name (a
    // StatefulSet's) is not the one evicted.
    let mut evicted: HashMap<(String, String), String> = HashMap::new();
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
        evicted.insert((ns, p.metadata.name.clone()), p.metadata.uid.clone());
    }
    // Wait until every evicted pod is gone, re-judged on each change the pods' watch brings.
    let mut left: HashMap<(String, String), Pod> = HashMap::new();
    let settle = async {
        let mut watcher = Watcher::new(Selection::all("Pod"));
        loop {
            let mut all: Vec<((String, String), Pod)> = Vec::new();
            match next_seen(&mut watcher, &client).await? {
                Seen::Listed { items, .. } => {
                    left.clear();
                    all = items.iter().filter_map(|b| typed(b)).collect();
                }
                Seen::Changed { type_, object, .. } => {
                    if let Some((key, pod)) = typed(&object) {
                        match type_ {
                            EventType::Deleted => {
                                left.remove(&key);
                            }
                            _ => all.push((key, pod)),
                        }
                    }
                }
            }
            for (key, pod) in all {
                if evicted.get(&key) == Some(&pod.metadata.uid) {
                    left.insert(key, pod);
                } else {
                    left.remove(&key);
                }
            }
            for (ns, name) in evicted.keys() {
                let key = (ns.clone(), name.clone());
                if !left.contains_key(&key) {
                    println!("pod/{name} evicted");
                }
            }
            evicted.retain(|k, _| left.contains_key(k));
            if evicted.is_empty() {
                return Ok::<_, anyhow::Error>(());
            }
        }
    };
    match tokio::time::timeout(args.timeout, settle).await {
        Ok(settled) => settled?,
        Err(_) => {
            let mut why: Vec<String> = left
                .iter()
                .map(|((ns, name), pod)| {
                    let reason = pod
                        .why_not_ready()
                        .unwrap_or_else(|| "not deleted yet".into());
                    format!("  {ns}/{name}: {reason}")
                })
                .collect();
            why.sort();
            bail!(
                "timed out after {:?} waiting for the evicted pods of node/{} to be gone; still there:\n{}",
                args.timeout,
                args.node,
                why.join("\n")
            )
        }
    }
    println!("node/{} drained", args.node);
    client.close().await;
    Ok(())
}
