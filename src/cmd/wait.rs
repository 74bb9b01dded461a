//! `shoal wait --for=condition=NAME KIND/NAME [--timeout 60s]`: waits until an object's
//! condition is True (Complete or Failed for a Job, Available for a Deployment, Ready for a
//! pod or node); exits non-zero on timeout.

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::Kind;
use shoal_transport::proto::{Request, Response};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// KIND/NAME, e.g. job/backup.
    target: String,
    /// condition=NAME
    #[arg(long = "for")]
    for_: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// How long to wait: 30s, 5m, 1h.
    #[arg(long, default_value = "30s", value_parser = super::duration::parse)]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let wanted = args
        .for_
        .strip_prefix("condition=")
        .context("--for takes condition=NAME, e.g. --for=condition=complete")?
        .to_ascii_lowercase();
    let (kind, name) = args
        .target
        .split_once('/')
        .context("name the object as KIND/NAME")?;
    let kind: Kind = kind.parse()?;
    let timeout = args.timeout;
    let deadline = Instant::now() + timeout;
    let client = connect(&args.client).await?;
    let req = Request::Get {
        kind: kind.name().into(),
        namespace: Some(args.namespace.clone()),
        name: name.into(),
    };
    loop {
        let obj: serde_json::Value = match call(&client, &req).await? {
            Response::Object(b) => serde_json::from_slice(&b)?,
            other => bail!(other.unexpected()),
        };
        let met = obj["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&wanted))
                    && c["status"] == "True"
            })
        });
        if met {
            println!("{}/{name} condition met", kind.name().to_ascii_lowercase());
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out waiting for the condition {wanted} on {}/{name}",
                kind.plural()
            );
        }
        tokio::time::sleep(Duration::from_millis(250).min(timeout)).await;
    }
}
