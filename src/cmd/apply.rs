//! `shoal apply -f FILE|DIR|-`

use crate::client::{call, connect, read_manifests};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_api::validate::validate;
use shoal_api::Parsed;
use shoal_transport::proto::{ApplyResult, Request, Response};
use shoal_transport::Client;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Manifests: files, directories or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace for objects that do not name one.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// How to treat fields Shoal does not support: warn (default) or strict (refuse).
    #[arg(long, default_value = "warn", value_parser = ["warn", "strict"])]
    validate: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let mut parsed = read_manifests(&args.files)?;
    if let Some(ns) = &args.namespace {
        for p in &mut parsed {
            if !p.object.kind().namespaced() {
                continue;
            }
            let m = p.object.metadata_mut();
            match &m.namespace {
                Some(own) if own != ns => bail!(
                    "the namespace from the provided object {own:?} does not match the namespace {ns:?}: pass --namespace={own} or remove it from the manifest"
                ),
                _ => m.namespace = Some(ns.clone()),
            }
        }
    }
    let client = connect(&args.client).await?;
    apply_parsed(&client, parsed, args.validate == "strict").await?;
    client.close().await;
    Ok(())
}

/// `image: file://PATH` names a local artifact: it is pushed to the controller and the image
/// pinned to its digest (`NAME@sha256:...`), so a cluster with no registry runs it.
async fn push_local_images(client: &Client, mut parsed: Vec<Parsed>) -> Result<Vec<Parsed>> {
    let mut pushed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for p in &mut parsed {
        let Some(spec) = p.object.pod_spec_mut() else {
            continue;
        };
        for c in spec.init_containers.iter_mut().chain(&mut spec.containers) {
            let Some(path) = c.image.strip_prefix("file://").map(str::to_string) else {
                continue;
            };
            if !pushed.contains_key(&path) {
                let file = std::path::Path::new(&path);
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("artifact")
                    .to_ascii_lowercase();
                let digest = super::push::push(client, file, &format!("{name}:latest")).await?;
                pushed.insert(path.clone(), format!("{name}@{digest}"));
            }
            c.image = pushed[&path].clone();
        }
    }
    Ok(parsed)
}

/// Checks every object here first (all problems at once), then applies them in one request.
pub async fn apply_parsed(client: &Client, parsed: Vec<Parsed>, strict: bool) -> Result<()> {
    let mut problems = Vec::new();
    for p in &parsed {
        let what = format!(
            "{} {:?} (document {})",
            p.object.kind(),
            p.object.name(),
            p.document
        );
        for field in &p.unknown_fields {
            if strict {
                problems.push(format!("{what}: unknown field {field:?}"));
            } else {
                eprintln!("Warning: {what}: unknown field {field:?} is not supported by Shoal and was ignored");
            }
        }
        let mut obj = p.object.clone();
        obj.normalize();
        for e in validate(&obj) {
            problems.push(format!("{what}: {e}"));
        }
    }
    if !problems.is_empty() {
        bail!("nothing was applied:\n  {}", problems.join("\n  "));
    }
    let parsed = push_local_images(client, parsed).await?;
    let objects = parsed
        .iter()
        .map(|p| p.object.to_json())
        .collect::<Result<Vec<_>, _>>()?;
    match call(client, &Request::Apply { objects }).await? {
        Response::Applied(outcomes) => {
            for o in outcomes {
                let verb = match o.result {
                    ApplyResult::Created => "created",
                    ApplyResult::Configured => "configured",
                    ApplyResult::Unchanged => "unchanged",
                };
                println!("{} {verb}", o.reference);
            }
            Ok(())
        }
        other => bail!(other.unexpected()),
    }
}
