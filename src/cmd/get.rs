//! `shoal get KIND [NAME...] [-n NS | -A] [-l SELECTOR] [-o wide|yaml|json|name] [--watch]`

use crate::client::{call, connect, next_seen};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::table::{columns, render, row};
use shoal_api::{Kind, Object};
use shoal_transport::proto::{Request, Response};
use shoal_transport::{Client, Seen, Selection, Watcher};

#[derive(clap::Args)]
pub struct Args {
    /// A kind (pods, po, deploy, svc, ...), `KIND/NAME`, or `all`.
    kind: String,
    names: Vec<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector (`app=web,tier in (front,back)`).
    #[arg(short = 'l', long, default_value = "")]
    selector: String,
    /// wide, yaml, json or name.
    #[arg(short = 'o', long, value_parser = ["wide", "yaml", "json", "name"])]
    output: Option<String>,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Leave out the header row of tables.
    #[arg(long)]
    no_headers: bool,
    /// Print the objects' managed fields (who set which field) with -o json|yaml.
    #[arg(long)]
    show_managed_fields: bool,
    #[command(flatten)]
    client: ClientArgs,
}

const ALL: [Kind; 7] = [
    Kind::Pod,
    Kind::Service,
    Kind::DaemonSet,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::Job,
    Kind::CronJob,
];

/// An object from the server, without its managed fields (as kubectl prints it) unless
/// `--show-managed-fields`.
fn decode(bytes: &[u8], args: &Args) -> Result<Object> {
    let mut obj = Object::from_json(bytes).context("decoding an object from the server")?;
    if !args.show_managed_fields {
        obj.metadata_mut().managed_fields.clear();
    }
    Ok(obj)
}

pub async fn run(args: Args) -> Result<()> {
    let (kind_arg, mut names) = match args.kind.split_once('/') {
        Some((k, n)) => (k.to_string(), vec![n.to_string()]),
        None => (args.kind.clone(), args.names.clone()),
    };
    names.extend(
        args.names
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let kinds: Vec<Kind> = if kind_arg == "all" {
        ALL.to_vec()
    } else {
        vec![kind_arg.parse()?]
    };
    if args.watch && kinds.len() > 1 {
        bail!("--watch takes one kind");
    }
    let namespace = (!args.all_namespaces).then(|| args.namespace.clone());
    let client = connect(&args.client).await?;
    if args.watch {
        return watch(&client, kinds[0], namespace, &names, &args).await;
    }
    // -o json|yaml prints what kubectl prints: the object itself for one name asked for,
    // otherwise one List of everything found (empty if nothing was), never a message.
    let document = matches!(args.output.as_deref(), Some("json" | "yaml"));
    let single = kinds.len() == 1 && names.len() == 1;
    let mut found: Vec<Object> = Vec::new();
    let mut printed_any = false;
    for &kind in &kinds {
        let objects = if names.is_empty() {
            let req = Request::List {
                kind: kind.name().into(),
                namespace: namespace.clone(),
                selector: args.selector.clone(),
                fields: String::new(),
            };
            match call(&client, &req).await? {
                Response::List { items, .. } => items
                    .iter()
                    .map(|b| decode(b, &args))
                    .collect::<Result<Vec<_>>>()?,
                other => bail!(other.unexpected()),
            }
        } else {
            let mut objects = Vec::new();
            for name in &names {
                let req = Request::Get {
                    kind: kind.name().into(),
                    namespace: namespace.clone().or(Some(args.namespace.clone())),
                    name: name.clone(),
                };
                match call(&client, &req).await? {
                    Response::Object(b) => objects.push(decode(&b, &args)?),
                    other => bail!(other.unexpected()),
                }
            }
            objects
        };
        if document {
            found.extend(objects);
            continue;
        }
        if objects.is_empty() {
            continue;
        }
        if printed_any && args.output.is_none() {
            println!();
        }
        printed_any = true;
        print_objects(
            kind,
            &objects,
            args.output.as_deref(),
            args.all_namespaces,
            kinds.len() > 1,
            !args.no_headers,
        )?;
    }
    if document {
        let v = match found.as_slice() {
            [one] if single => serde_json::to_value(one)?,
            _ => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": found}),
        };
        if args.output.as_deref() == Some("json") {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", serde_yaml_ng::to_string(&v)?);
        }
    } else if !printed_any {
        match &namespace {
            Some(ns) if kinds.iter().any(|k| k.namespaced()) => {
                eprintln!("No resources found in {ns} namespace.")
            }
            _ => eprintln!("No resources found"),
        }
    }
    client.close().await;
    Ok(())
}

/// `get -w`: the list, then each change as a row, as long as the controller is there; a
/// watch that falls too far behind lists again rather than missing a change.
async fn watch(
    client: &Client,
    kind: Kind,
    namespace: Option<String>,
    names: &[String],
    args: &Args,
) -> Result<()> {
    let (namespace, fields) = match names {
        [] => (namespace, String::new()),
        [name] => (
            namespace.or(Some(args.namespace.clone())),
            format!("metadata.name={name}"),
        ),
        _ => bail!("--watch takes at most one name"),
    };
    let mut watcher = Watcher::new(Selection {
        kind: kind.name().into(),
        namespace: namespace.clone(),
        selector: args.selector.clone(),
        fields,
    });
    let mut header = !args.no_headers;
    loop {
        let objects = match next_seen(&mut watcher, client).await? {
            Seen::Listed { items, .. } => {
                if items.is_empty() && header {
                    match &namespace {
                        Some(ns) if kind.namespaced() => {
                            eprintln!("No resources found in {ns} namespace.")
                        }
                        _ => eprintln!("No resources found"),
                    }
                }
                items
                    .iter()
                    .map(|b| decode(b, args))
                    .collect::<Result<Vec<_>>>()?
            }
            Seen::Changed { object, .. } => vec![decode(&object, args)?],
        };
        if objects.is_empty() {
            continue;
        }
        print_objects(
            kind,
            &objects,
            args.output.as_deref(),
            args.all_namespaces,
            false,
            header,
        )?;
        header = false;
    }
}

fn print_objects(
    kind: Kind,
    objects: &[Object],
    output: Option<&str>,
    all_ns: bool,
    qualify: bool,
    header: bool,
) -> Result<()> {
    match output {
        Some("yaml") => {
            let text = if objects.len() == 1 && !header {
                format!("---\n{}", serde_yaml_ng::to_string(&objects[0])?)
            } else if objects.len() == 1 {
                serde_yaml_ng::to_string(&objects[0])?
            } else {
                serde_yaml_ng::to_string(
                    &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}),
                )?
            };
            print!("{text}");
        }
        Some("json") => {
            let v = if objects.len() == 1 {
                serde_json::to_value(&objects[0])?
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Some("name") => {
            for o in objects {
                println!("{}", o.reference());
            }
        }
        _ => {
            let wide = output == Some("wide");
            let now = chrono::Utc::now();
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| {
                    let mut r = row(o, now, wide, all_ns);
                    if qualify {
                        // `get all` names rows kind/name, as kubectl does.
                        let i = usize::from(all_ns && kind.namespaced());
                        r[i] = o.reference();
                    }
                    r
                })
                .collect();
            let cols = columns(kind, wide, all_ns);
            let table = render(&cols, &rows);
            if header {
                print!("{table}");
            } else {
                // Follow-up rows of a watch: no header.
                print!(
                    "{}",
                    table.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
