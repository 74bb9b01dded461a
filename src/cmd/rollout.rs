//! `shoal rollout status|history|undo|pause|resume deploy/NAME`: follow a rollout until it is
//! done (failing when the time runs out), list revisions, go back to one, and hold or release
//! rollouts while edits pile up.

use crate::client::{call, connect, next_seen};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::{Deployment, Object};
use shoal_transport::proto::{EventType, Request, Response};
use shoal_transport::{Seen, Selection, Watcher};
use std::time::Duration;

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
        /// Give up after this long (e.g. 90s, 5m); 0 waits as long as it takes, as in kubectl.
        #[arg(long, default_value = "5m", value_parser = super::duration::parse)]
        timeout: Duration,
        /// `--watch=false` prints where the rollout stands once and exits, as kubectl does.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the revisions of a Deployment.
    History {
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Go back to the previous revision, or to --to-revision.
    Undo {
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        to_revision: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hold rollouts: template edits pile up until resume.
    Pause {
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Roll out what piled up while paused, as one rollout.
    Resume {
        target: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn deployment_name(target: &str) -> Result<String> {
    Ok(target
        .strip_prefix("deploy/")
        .or_else(|| target.strip_prefix("deployment/"))
        .or_else(|| target.strip_prefix("deployments/"))
        .context("name the deployment as deploy/NAME")?
        .to_string())
}

async fn get_deployment(
    conn: &shoal_transport::Client,
    namespace: &str,
    name: &str,
) -> Result<Deployment> {
    let req = Request::Get {
        kind: "Deployment".into(),
        namespace: Some(namespace.into()),
        name: name.into(),
    };
    match call(conn, &req).await? {
        Response::Object(b) => Ok(Object::from_json(&b)?.into_typed()?),
        other => bail!(other.unexpected()),
    }
}

async fn put_deployment(conn: &shoal_transport::Client, d: Deployment) -> Result<()> {
    crate::client::replace(conn, Object::Deployment(d)).await
}

const REVISION: &str = "deployment.kubernetes.io/revision";

/// The ReplicaSets a Deployment controls, oldest revision first.
async fn revisions(
    conn: &shoal_transport::Client,
    d: &Deployment,
) -> Result<Vec<(u64, shoal_api::ReplicaSet)>> {
    let ns = d.metadata.namespace_or_default().to_string();
    let req = Request::List {
        kind: "ReplicaSet".into(),
        namespace: Some(ns),
        selector: String::new(),
        fields: String::new(),
    };
    let items = match call(conn, &req).await? {
        Response::List { items, .. } => items,
        other => bail!(other.unexpected()),
    };
    let mut out: Vec<(u64, shoal_api::ReplicaSet)> = items
        .iter()
        .filter_map(|b| {
            Object::from_json(b)
                .ok()?
                .into_typed::<shoal_api::ReplicaSet>()
                .ok()
        })
        .filter(|rs| {
            rs.metadata
                .controller_owner()
                .is_some_and(|o| o.uid == d.metadata.uid)
        })
        .map(|rs| {
            (
                rs.metadata
                    .annotations
                    .get(REVISION)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0),
                rs,
            )
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

/// The Deployment's pods that hold its rollout, one line each with why (the first five, then
/// how many more): what a stalled `rollout status` says besides the Deployment's condition.
async fn holding(conn: &shoal_transport::Client, d: &Deployment) -> String {
    let Ok(sets) = revisions(conn, d).await else {
        return String::new();
    };
    let sets: Vec<&str> = sets
        .iter()
        .map(|(_, rs)| rs.metadata.uid.as_str())
        .collect();
    let req = Request::List {
        kind: "Pod".into(),
        namespace: Some(d.metadata.namespace_or_default().to_string()),
        selector: String::new(),
        fields: String::new(),
    };
    let Ok(Response::List { items, .. }) = call(conn, &req).await else {
        return String::new();
    };
    let mut held: Vec<String> = items
        .iter()
        .filter_map(|b| {
            Object::from_json(b)
                .ok()?
                .into_typed::<shoal_api::Pod>()
                .ok()
        })
        .filter(|p| {
            p.metadata
                .controller_owner()
                .is_some_and(|o| sets.contains(&o.uid.as_str()))
        })
        .filter_map(|p| {
            Some(format!(
                "\n  pod/{}: {}",
                p.metadata.name,
                p.why_not_ready()?
            ))
        })
        .collect();
    held.sort();
    let more = held.len().saturating_sub(5);
    held.truncate(5);
    if more > 0 {
        held.push(format!("\n  and {more} more"));
    }
    held.concat()
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
    match args.command {
        RolloutCommand::Status {
            target,
            namespace,
            timeout: _,
            watch: false,
            client,
        } => status_once(&target, &namespace, &client).await,
        RolloutCommand::Status {
            target,
            namespace,
            timeout,
            watch: true,
            client,
        } => status(&target, &namespace, timeout, &client).await,
        RolloutCommand::History {
            target,
            namespace,
            client,
        } => {
            let conn = connect(&client).await?;
            let d = get_deployment(&conn, &namespace, &deployment_name(&target)?).await?;
            let rows: Vec<Vec<String>> = revisions(&conn, &d)
                .await?
                .into_iter()
                .map(|(r, rs)| {
                    let cause = rs
                        .metadata
                        .annotations
                        .get("kubernetes.io/change-cause")
                        .cloned()
                        .unwrap_or_else(|| "<none>".into());
                    vec![r.to_string(), cause]
                })
                .collect();
            println!("deployment.apps/{}", d.metadata.name);
            print!(
                "{}",
                shoal_api::table::render(&["REVISION", "CHANGE-CAUSE"], &rows)
            );
            Ok(())
        }
        RolloutCommand::Undo {
            target,
            namespace,
            to_revision,
            client,
        } => {
            let conn = connect(&client).await?;
            let mut d = get_deployment(&conn, &namespace, &deployment_name(&target)?).await?;
            if d.spec.paused {
                bail!(
                    "deployment {:?} is paused: resume it before undoing a rollout",
                    d.metadata.name
                );
            }
            let revs = revisions(&conn, &d).await?;
            let pick = match to_revision {
                Some(n) => revs.iter().find(|(r, _)| *r == n).with_context(|| {
                    format!("deployment {:?} has no revision {n}", d.metadata.name)
                })?,
                None => revs.iter().rev().nth(1).with_context(|| {
                    format!("deployment {:?} has no previous revision", d.metadata.name)
                })?,
            };
            let mut template = pick.1.spec.template.clone();
            template.metadata.labels.remove("pod-template-hash");
            d.spec.template = template;
            put_deployment(&conn, d.clone()).await?;
            println!(
                "deployment.apps/{} rolled back to revision {}",
                d.metadata.name, pick.0
            );
            Ok(())
        }
        RolloutCommand::Pause {
            target,
            namespace,
            client,
        } => set_paused(&target, &namespace, &client, true).await,
        RolloutCommand::Resume {
            target,
            namespace,
            client,
        } => set_paused(&target, &namespace, &client, false).await,
    }
}

async fn set_paused(
    target: &str,
    namespace: &str,
    client: &ClientArgs,
    paused: bool,
) -> Result<()> {
    let conn = connect(client).await?;
    let mut d = get_deployment(&conn, namespace, &deployment_name(target)?).await?;
    let name = d.metadata.name.clone();
    if d.spec.paused == paused {
        bail!(
            "deployment {name:?} is {} already",
            if paused { "paused" } else { "not paused" }
        );
    }
    d.spec.paused = paused;
    put_deployment(&conn, d).await?;
    println!(
        "deployment.apps/{name} {}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}

/// A rollout that passed its progress deadline: no point waiting for it.
fn stuck(d: &Deployment) -> bool {
    d.status.as_ref().is_some_and(|st| {
        st.observed_generation >= d.metadata.generation
            && st.conditions.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
    })
}

/// `rollout status --watch=false`: where the rollout stands now. Like kubectl, an unfinished
/// rollout is not an error; one past its deadline is.
async fn status_once(target: &str, namespace: &str, client: &ClientArgs) -> Result<()> {
    let name = deployment_name(target)?;
    let conn = connect(client).await?;
    let d = get_deployment(&conn, namespace, &name).await?;
    if stuck(&d) {
        let held = holding(&conn, &d).await;
        bail!("deployment {name:?} exceeded its progress deadline{held}");
    }
    match progress(&d) {
        None => println!("deployment {name:?} successfully rolled out"),
        Some(message) => println!("{message}"),
    }
    Ok(())
}

/// Follows the Deployment's watch until its rollout is done, stuck, or the time is up.
async fn status(
    target: &str,
    namespace: &str,
    timeout: Duration,
    client: &ClientArgs,
) -> Result<()> {
    let name = deployment_name(target)?;
    let conn = connect(client).await?;
    let mut watcher = Watcher::new(Selection {
        kind: "Deployment".into(),
        namespace: Some(namespace.into()),
        selector: String::new(),
        fields: format!("metadata.name={name}"),
    });
    let mut last = String::new();
    let followed = async {
        loop {
            let object = match next_seen(&mut watcher, &conn).await? {
                Seen::Listed { items, .. } => match items.into_iter().next() {
                    Some(object) => object,
                    None => bail!("Error from server (NotFound): deployments {name:?} not found"),
                },
                Seen::Changed {
                    type_: EventType::Deleted,
                    ..
                } => bail!("deployment {name:?} was deleted during its rollout"),
                Seen::Changed { object, .. } => object,
            };
            let d: Deployment = Object::from_json(&object)?.into_typed()?;
            if stuck(&d) {
                let held = holding(&conn, &d).await;
                bail!("deployment {name:?} exceeded its progress deadline{held}");
            }
            match progress(&d) {
                None => {
                    println!("deployment {name:?} successfully rolled out");
                    return Ok(());
                }
                Some(message) if message != last => {
                    println!("{message}");
                    last = message;
                }
                Some(_) => {}
            }
        }
    };
    if timeout.is_zero() {
        return followed.await;
    }
    match tokio::time::timeout(timeout, followed).await {
        Ok(done) => done,
        Err(_) => {
            let held = match get_deployment(&conn, namespace, &name).await {
                Ok(d) => holding(&conn, &d).await,
                Err(_) => String::new(),
            };
            bail!("timed out waiting for the rollout of deployment {name:?} ({timeout:?}){held}")
        }
    }
}
