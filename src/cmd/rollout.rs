//! `shoal rollout status deploy/NAME [--timeout 5m]`: follows a rollout until it is done, and
//! fails when the time runs out.

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::{Deployment, Object};
use shoal_transport::proto::{Request, Response};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(clap::Subcommand)]
enum RolloutCommand {
    /// Wait for a Deployment's rollout to finish, printing its progress.
    Status {
        /// deploy/NAME
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Give up after this long (e.g. 90s, 5m).
        #[arg(long, default_value = "5m")]
        timeout: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_duration(s: &str) -> Result<Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("--timeout {s:?}: expected a number and s, m or h"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => bail!("--timeout {s:?}: unknown unit {other:?} (use s, m or h)"),
    }))
}

/// Where a rollout stands, in kubectl's words; `None` when it is done.
pub fn progress(d: &Deployment) -> Option<String> {
    let name = &d.metadata.name;
    let desired = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    if st.observed_generation < d.metadata.generation {
        return Some("Waiting for deployment spec update to be observed...".into());
    }
    if st.updated_replicas < desired {
        return Some(format!("Waiting for deployment {name:?} rollout to finish: {} out of {desired} new replicas have been updated...", st.updated_replicas));
    }
    if st.replicas > st.updated_replicas {
        return Some(format!("Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...", st.replicas - st.updated_replicas));
    }
    if st.available_replicas < st.updated_replicas {
        return Some(format!("Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...", st.available_replicas, st.updated_replicas));
    }
    None
}

pub async fn run(args: Args) -> Result<()> {
    let RolloutCommand::Status {
        target,
        namespace,
        timeout,
        client,
    } = args.command;
    let name = target
        .strip_prefix("deploy/")
        .or_else(|| target.strip_prefix("deployment/"))
        .or_else(|| target.strip_prefix("deployments/"))
        .context("name the deployment as deploy/NAME")?
        .to_string();
    let deadline = Instant::now() + parse_duration(&timeout)?;
    let conn = connect(&client).await?;
    let mut last = String::new();
    loop {
        let req = Request::Get {
            kind: "Deployment".into(),
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let d: Deployment = match call(&conn, &req).await? {
            Response::Object(b) => Object::from_json(&b)?.into_typed()?,
            other => bail!("unexpected answer: {other:?}"),
        };
        match progress(&d) {
            None => {
                println!("deployment {name:?} successfully rolled out");
                return Ok(());
            }
            Some(message) => {
                if message != last {
                    println!("{message}");
                    last = message;
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for the rollout of deployment {name:?} ({timeout})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
