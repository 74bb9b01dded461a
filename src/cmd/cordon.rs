//! `shoal cordon NODE` and `shoal uncordon NODE`: mark a node (un)schedulable.

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_api::{Node, Object};
use shoal_transport::proto::{Request, Response};
use shoal_transport::Client;

#[derive(clap::Args)]
pub struct Args {
    node: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Sets `spec.unschedulable`; returns whether it changed.
pub async fn set_unschedulable(client: &Client, name: &str, unschedulable: bool) -> Result<bool> {
    let req = Request::Get {
        kind: "Node".into(),
        namespace: None,
        name: name.into(),
    };
    let mut node: Node = match call(client, &req).await? {
        Response::Object(b) => Object::from_json(&b)?.into_typed()?,
        other => bail!(other.unexpected()),
    };
    if node.spec.unschedulable == unschedulable {
        return Ok(false);
    }
    node.spec.unschedulable = unschedulable;
    crate::client::replace(client, Object::Node(node)).await?;
    Ok(true)
}

pub async fn run(args: Args, unschedulable: bool) -> Result<()> {
    let client = connect(&args.client).await?;
    let changed = set_unschedulable(&client, &args.node, unschedulable).await?;
    let verb = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if changed {
        println!("node/{} {verb}", args.node);
    } else {
        println!("node/{} already {verb}", args.node);
    }
    client.close().await;
    Ok(())
}
