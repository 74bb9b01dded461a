//! `shoal scale (deploy|rs)/NAME --replicas N`

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::{Kind, Object};
use shoal_transport::proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// deploy/NAME or rs/NAME.
    target: String,
    #[arg(long)]
    replicas: i32,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let (kind, name) = args
        .target
        .split_once('/')
        .context("name the target as deploy/NAME or rs/NAME")?;
    let kind: Kind = kind.parse()?;
    if args.replicas < 0 {
        bail!("--replicas must be >= 0, got {}", args.replicas);
    }
    let client = connect(&args.client).await?;
    let get = Request::Get {
        kind: kind.name().into(),
        namespace: Some(args.namespace.clone()),
        name: name.into(),
    };
    let mut obj = match call(&client, &get).await? {
        Response::Object(b) => Object::from_json(&b)?,
        other => bail!(other.unexpected()),
    };
    match &mut obj {
        Object::Deployment(d) => d.spec.replicas = Some(args.replicas),
        Object::ReplicaSet(rs) => rs.spec.replicas = Some(args.replicas),
        other => bail!(
            "{} cannot be scaled (deployments and replicasets can)",
            other.kind()
        ),
    }
    let reference = obj.reference();
    crate::client::replace(&client, obj).await?;
    println!("{reference} scaled");
    client.close().await;
    Ok(())
}
