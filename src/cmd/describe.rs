//! `shoal describe KIND NAME`: the object's identity, its spec and status as indented YAML,
//! and the events about it, newest last.

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_api::table::age;
use shoal_api::{Kind, Object};
use shoal_transport::proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// A kind, or `KIND/NAME`.
    kind: String,
    name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let (kind, name) = match (args.kind.split_once('/'), &args.name) {
        (Some((k, n)), _) => (k.parse::<Kind>()?, n.to_string()),
        (None, Some(n)) => (args.kind.parse::<Kind>()?, n.clone()),
        (None, None) => bail!(
            "name the object to describe: shoal describe {} NAME",
            args.kind
        ),
    };
    let client = connect(&args.client).await?;
    let req = Request::Get {
        kind: kind.name().into(),
        namespace: Some(args.namespace.clone()),
        name: name.clone(),
    };
    let obj = match call(&client, &req).await? {
        Response::Object(b) => Object::from_json(&b).context("decoding the object")?,
        other => bail!(other.unexpected()),
    };
    let events = match call(
        &client,
        &Request::List {
            kind: "Event".into(),
            namespace: obj.namespace().map(str::to_string),
            selector: String::new(),
            fields: String::new(),
        },
    )
    .await?
    {
        Response::List { items, .. } => items
            .iter()
            .filter_map(|b| Object::from_json(b).ok())
            .filter_map(|o| o.into_typed::<shoal_api::Event>().ok())
            // By uid where the event has one, so a pod made again under the same name does not
            // show its predecessor's events.
            .filter(|e| {
                let o = &e.involved_object;
                o.name.as_deref() == Some(obj.name())
                    && o.kind.as_deref() == Some(kind.name())
                    && o.uid
                        .as_deref()
                        .filter(|u| !u.is_empty())
                        .is_none_or(|u| u == obj.metadata().uid)
            })
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    client.close().await;
    // What nodes and workloads wrote (event messages, labels) is escaped for the terminal.
    print!(
        "{}",
        shoal_api::table::terminal_safe(&render(&obj, &events), true)
    );
    Ok(())
}

fn render(obj: &Object, events: &[shoal_api::Event]) -> String {
    let m = obj.metadata();
    let map = |m: &std::collections::BTreeMap<String, String>| {
        if m.is_empty() {
            "<none>".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n              ")
        }
    };
    let mut out = format!("Name:         {}\n", m.name);
    if let Some(ns) = obj.namespace() {
        out += &format!("Namespace:    {ns}\n");
    }
    out += &format!("Kind:         {}\n", obj.kind());
    out += &format!("Labels:       {}\n", map(&m.labels));
    out += &format!("Annotations:  {}\n", map(&m.annotations));
    out += &format!(
        "Created:      {}\n",
        m.creation_timestamp.as_deref().unwrap_or("<unknown>")
    );
    out += &format!("UID:          {}\n", m.uid);
    if let Some(owner) = m.controller_owner() {
        out += &format!("Controlled By: {}/{}\n", owner.kind, owner.name);
    }
    let value = serde_json::to_value(obj).unwrap_or_default();
    for section in ["spec", "data", "subsets", "status"] {
        if let Some(v) = value.get(section) {
            let text = if obj.kind() == Kind::Secret && section == "data" {
                // As kubectl: sizes, not values.
                v.as_object()
                    .map(|d| {
                        d.iter()
                            .map(|(k, v)| {
                                format!(
                                    "{k}: {} bytes\n",
                                    v.as_str().map(|s| s.len() * 3 / 4).unwrap_or(0)
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                serde_yaml_ng::to_string(v).unwrap_or_default()
            };
            out += &format!("{}:\n", capitalize(section));
            for line in text.lines() {
                out += &format!("  {line}\n");
            }
        }
    }
    if events.is_empty() {
        out += "Events:       <none>\n";
    } else {
        let now = chrono::Utc::now();
        let mut evs: Vec<&shoal_api::Event> = events.iter().collect();
        // Newest last; within a second, in the order the store recorded them.
        evs.sort_by_key(|e| (e.last_timestamp.clone(), e.metadata.revision()));
        let rows: Vec<Vec<String>> = evs
            .iter()
            .map(|e| {
                vec![
                    e.type_.clone().unwrap_or_else(|| "Normal".into()),
                    e.reason.clone().unwrap_or_default(),
                    age(e.last_timestamp.as_deref(), now),
                    e.source
                        .as_ref()
                        .and_then(|s| s.component.clone())
                        .unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out += "Events:\n";
        for line in
            shoal_api::table::render(&["Type", "Reason", "Age", "From", "Message"], &rows).lines()
        {
            out += &format!("  {line}\n");
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
