//! `shoal delete (-f FILE | KIND NAME... | KIND -l SELECTOR)`

use crate::client::{call, connect, next_seen, read_manifests};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_api::{Kind, PropagationPolicy};
use shoal_transport::proto::{EventType, Request, Response};
use shoal_transport::{Seen, Selection, Watcher};
use std::path::PathBuf;
use std::time::Duration;

fn parse_cascade(s: &str) -> std::result::Result<PropagationPolicy, String> {
    s.parse()
}

#[derive(clap::Args)]
pub struct Args {
    /// A kind and names, or `KIND/NAME`.
    args: Vec<String>,
    /// Delete what these manifests describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Do not fail when an object does not exist.
    #[arg(long)]
    ignore_not_found: bool,
    /// What becomes of what the object owns: `background` (deleted after it), `foreground`
    /// (deleted before it; waits until everything is gone) or `orphan` (left running).
    #[arg(long, default_value = "background", value_parser = parse_cascade)]
    cascade: PropagationPolicy,
    /// A pod's grace period for this deletion, in seconds, instead of its
    /// `terminationGracePeriodSeconds`: its node stops it within that (0 kills it at once).
    #[arg(long)]
    grace_period: Option<u32>,
    /// Stop pods at once: `--grace-period=1`, as kubectl's `--now`.
    #[arg(long, conflicts_with = "grace_period")]
    now: bool,
    /// With `--cascade=foreground`, how long to wait for everything to be gone.
    #[arg(long, default_value = "60s", value_parser = super::duration::parse)]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let mut targets: Vec<(Kind, Option<String>, String)> = Vec::new();
    let mut selected: Option<(Kind, String)> = None;
    if !args.files.is_empty() {
        for p in read_manifests(&args.files)? {
            let ns = p
                .object
                .namespace()
                .map(str::to_string)
                .or_else(|| Some(args.namespace.clone()));
            targets.push((p.object.kind(), ns, p.object.name().to_string()));
        }
    } else {
        let Some(first) = args.args.first() else {
            bail!("name a kind and objects (`shoal delete deploy web`), a selector (-l) or manifests (-f)");
        };
        if let Some((k, n)) = first.split_once('/') {
            targets.push((k.parse()?, Some(args.namespace.clone()), n.to_string()));
            for a in &args.args[1..] {
                let (k, n) = a
                    .split_once('/')
                    .ok_or_else(|| anyhow::anyhow!("expected KIND/NAME, got {a:?}"))?;
                targets.push((k.parse()?, Some(args.namespace.clone()), n.to_string()));
            }
        } else {
            let kind: Kind = first.parse()?;
            match &args.selector {
                Some(sel) => selected = Some((kind, sel.clone())),
                None if args.args.len() == 1 => {
                    bail!("name the {} to delete, or pass -l SELECTOR", kind.plural())
                }
                None => targets.extend(
                    args.args[1..]
                        .iter()
                        .map(|n| (kind, Some(args.namespace.clone()), n.clone())),
                ),
            }
        }
    }
    // Namespaces last: deleting one takes its contents along at once.
    targets.sort_by_key(|t| t.0 == Kind::Namespace);
    let grace_period = if args.now {
        Some(1)
    } else {
        args.grace_period.map(i64::from)
    };
    let client = connect(&args.client).await?;
    // What was deleted, as (kind, namespace, reference): foreground waits for these to go.
    let mut gone: Vec<(Kind, Option<String>, String)> = Vec::new();
    if let Some((kind, selector)) = selected {
        let req = Request::DeleteSelected {
            kind: kind.name().into(),
            namespace: Some(args.namespace.clone()),
            selector,
            propagation: args.cascade,
            grace_period,
        };
        if let Response::Deleted(refs) = call(&client, &req).await? {
            if refs.is_empty() {
                eprintln!("No resources found");
            }
            for r in refs {
                println!("{} deleted", quoted(&r));
                gone.push((kind, Some(args.namespace.clone()), r));
            }
        }
    }
    let mut failed = false;
    for (kind, namespace, name) in targets {
        let req = Request::Delete {
            kind: kind.name().into(),
            namespace: namespace.clone(),
            name: name.clone(),
            propagation: args.cascade,
            grace_period,
        };
        match call(&client, &req).await {
            Ok(Response::Deleted(refs)) => {
                for r in refs {
                    println!("{} deleted", quoted(&r));
                    gone.push((kind, namespace.clone(), r));
                }
            }
            Ok(other) => bail!(other.unexpected()),
            Err(e) if args.ignore_not_found && e.to_string().contains("(NotFound)") => {}
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if args.cascade == PropagationPolicy::Foreground {
        // Foreground: the object stays (with a deletionTimestamp) until what it owns is gone,
        // so its watch saying it is deleted is the end of the whole cascade.
        let deadline = tokio::time::Instant::now() + args.timeout;
        for (kind, namespace, reference) in &gone {
            let name = reference.rsplit('/').next().unwrap_or(reference);
            let selection = Selection {
                kind: kind.name().into(),
                namespace: namespace.clone(),
                selector: String::new(),
                fields: format!("metadata.name={name}"),
            };
            match tokio::time::timeout_at(deadline, until_deleted(&client, selection)).await {
                Ok(done) => done?,
                Err(_) => bail!(
                    "timed out after {:?} waiting for {reference} and what it owns to be deleted",
                    args.timeout
                ),
            }
        }
    }
    client.close().await;
    if failed {
        bail!("some objects were not deleted");
    }
    Ok(())
}

/// Follows one object's watch until it is gone.
async fn until_deleted(client: &shoal_transport::Client, selection: Selection) -> Result<()> {
    let mut watcher = Watcher::new(selection);
    loop {
        match next_seen(&mut watcher, client).await? {
            Seen::Listed { items, .. } if items.is_empty() => return Ok(()),
            Seen::Changed {
                type_: EventType::Deleted,
                ..
            } => return Ok(()),
            _ => {}
        }
    }
}

/// `deployment.apps/web` -> `deployment.apps "web"`, as kubectl prints deletions.
fn quoted(reference: &str) -> String {
    match reference.split_once('/') {
        Some((k, n)) => format!("{k} \"{n}\""),
        None => reference.to_string(),
    }
}
