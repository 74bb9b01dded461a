//! `shoal wait --for=condition=NAME KIND/NAME [--timeout 60s]`: waits until an object's
//! condition is True (Complete or Failed for a Job, Available for a Deployment, Ready for a
//! pod or node); exits non-zero on timeout. It follows the object's watch, so it answers as
//! soon as the condition is set rather than at the next poll.

use crate::client::{connect, next_seen};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::Kind;
use shoal_transport::proto::EventType;
use shoal_transport::{Seen, Selection, Watcher};
use std::time::Duration;

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
    let client = connect(&args.client).await?;
    let mut watcher = Watcher::new(Selection {
        kind: kind.name().into(),
        namespace: kind.namespaced().then(|| args.namespace.clone()),
        selector: String::new(),
        fields: format!("metadata.name={name}"),
    });
    let waited = tokio::time::timeout(args.timeout, async {
        loop {
            let object = match next_seen(&mut watcher, &client).await? {
                Seen::Listed { items, .. } => match items.into_iter().next() {
                    Some(object) => object,
                    None => bail!(
                        "Error from server (NotFound): {} {name:?} not found",
                        kind.plural()
                    ),
                },
                Seen::Changed {
                    type_: EventType::Deleted,
                    ..
                } => {
                    bail!("{}/{name} was deleted while waiting", kind.plural())
                }
                Seen::Changed { object, .. } => object,
            };
            let obj: serde_json::Value = serde_json::from_slice(&object)?;
            if condition_is_true(&obj, &wanted) {
                return Ok(());
            }
        }
    });
    match waited.await {
        Ok(Ok(())) => {
            println!("{}/{name} condition met", kind.name().to_ascii_lowercase());
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_elapsed) => bail!(
            "timed out waiting for the condition {wanted} on {}/{name}",
            kind.plural()
        ),
    }
}

/// Whether `obj` has the condition `wanted` (any case) with status True.
fn condition_is_true(obj: &serde_json::Value, wanted: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(wanted))
                && c["status"] == "True"
        })
    })
}
