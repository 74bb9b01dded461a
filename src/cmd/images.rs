//! `shoal images [NODE...]`: the container images each node holds, and whether a pod there
//! uses them (what image garbage collection keeps).

use crate::client::{call, check, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_transport::proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// The nodes to ask (default: every node).
    nodes: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Image {
    reference: String,
    digest: String,
    platform: String,
    size: u64,
    last_used: u64,
    in_use: bool,
}

fn size(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1.0 {
        format!("{mib:.1}MiB")
    } else {
        format!("{:.0}KiB", bytes as f64 / 1024.0)
    }
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    let nodes = if args.nodes.is_empty() {
        let listed = call(
            &client,
            &Request::List {
                kind: "Node".into(),
                namespace: None,
                selector: String::new(),
                fields: String::new(),
            },
        )
        .await?;
        let Response::List { items, .. } = listed else {
            bail!("unexpected answer to a node list");
        };
        let mut names: Vec<String> = items
            .iter()
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .filter_map(|v| v["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    } else {
        args.nodes
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rows = vec![[
        "NODE".to_string(),
        "IMAGE".into(),
        "DIGEST".into(),
        "PLATFORM".into(),
        "SIZE".into(),
        "IN USE".into(),
        "LAST USED".into(),
    ]];
    for node in nodes {
        let answer = check(call(&client, &Request::Images { node: node.clone() }).await?)?;
        let Response::Json(json) = answer else {
            bail!("node {node}: unexpected answer");
        };
        let images: Vec<Image> =
            serde_json::from_slice(&json).with_context(|| format!("node {node}: image list"))?;
        for i in images {
            rows.push([
                node.clone(),
                i.reference,
                i.digest.chars().skip(7).take(12).collect(),
                i.platform,
                size(i.size),
                if i.in_use { "yes" } else { "no" }.into(),
                format!("{}s ago", now.saturating_sub(i.last_used)),
            ]);
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    client.close().await;
    Ok(())
}
