//! `shoal label node NAME k=v k2-` and `shoal taint node NAME k=v:Effect k:Effect-`, shaped
//! like kubectl's. Labels set here are the admins' and outlive the node's heartbeats; a node
//! may never set them itself (see `shoal_api::node_restriction`).

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{anyhow, bail, Result};
use shoal_api::node_restriction::{admin_keys, ADMIN_LABELS};
use shoal_api::{Node, Object, Taint};
use shoal_transport::proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Only `node` is served.
    kind: String,
    name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true)]
    edits: Vec<String>,
    /// Replace a label or taint that is already there with another value.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// One change asked for on the command line.
#[derive(Debug, PartialEq)]
enum Edit {
    Set(String, String),
    Remove(String),
}

fn parse_label(s: &str) -> Result<Edit> {
    if let Some(key) = s.strip_suffix('-') {
        shoal_api::validate::check_label_key(key).map_err(|m| anyhow!("label {key:?}: {m}"))?;
        return Ok(Edit::Remove(key.to_string()));
    }
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("{s:?}: expected key=value or key-"))?;
    shoal_api::validate::check_label_key(k).map_err(|m| anyhow!("label {k:?}: {m}"))?;
    shoal_api::validate::check_label_value(v)
        .map_err(|m| anyhow!("label {k:?} value {v:?}: {m}"))?;
    Ok(Edit::Set(k.to_string(), v.to_string()))
}

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `key[=value]:Effect` to add, `key[:Effect]-` to remove.
fn parse_taint(s: &str) -> Result<(bool, Taint)> {
    let (spec, remove) = match s.strip_suffix('-') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (kv, effect) = match spec.rsplit_once(':') {
        Some((kv, e)) => (kv, e.to_string()),
        None if remove => (spec, String::new()),
        None => bail!("{s:?}: expected key=value:Effect (Effect one of {EFFECTS:?}) or key-"),
    };
    if !effect.is_empty() && !EFFECTS.contains(&effect.as_str()) {
        bail!("{s:?}: unknown effect {effect:?} (use one of {EFFECTS:?})");
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    shoal_api::validate::check_label_key(key).map_err(|m| anyhow!("taint key {key:?}: {m}"))?;
    Ok((
        remove,
        Taint {
            key: key.to_string(),
            value,
            effect,
            time_added: None,
        },
    ))
}

/// Applies label edits to `node`, recording which keys are the admins'.
fn label(node: &mut Node, edits: &[Edit], overwrite: bool) -> Result<()> {
    let mut keys = admin_keys(&node.metadata.annotations);
    for e in edits {
        match e {
            Edit::Set(k, v) => {
                if let Some(old) = node.metadata.labels.get(k) {
                    if old != v && !overwrite {
                        bail!(
                            "node {:?} already has label {k}={old}: add --overwrite to replace it",
                            node.metadata.name
                        );
                    }
                }
                node.metadata.labels.insert(k.clone(), v.clone());
                keys.insert(k.clone());
            }
            Edit::Remove(k) => {
                node.metadata.labels.remove(k);
                keys.remove(k);
            }
        }
    }
    let list: Vec<String> = keys.into_iter().collect();
    if list.is_empty() {
        node.metadata.annotations.remove(ADMIN_LABELS);
    } else {
        node.metadata
            .annotations
            .insert(ADMIN_LABELS.into(), list.join(","));
    }
    Ok(())
}

fn taint(node: &mut Node, edits: &[(bool, Taint)], overwrite: bool) -> Result<()> {
    for (remove, t) in edits {
        let same = |x: &Taint| x.key == t.key && (t.effect.is_empty() || x.effect == t.effect);
        if *remove {
            let before = node.spec.taints.len();
            node.spec.taints.retain(|x| !same(x));
            if node.spec.taints.len() == before {
                bail!("node {:?} has no taint {:?}", node.metadata.name, t.key);
            }
            continue;
        }
        if let Some(old) = node.spec.taints.iter_mut().find(|x| same(x)) {
            if old.value != t.value && !overwrite {
                bail!(
                    "node {:?} already has taint {:?} with another value: add --overwrite",
                    node.metadata.name,
                    t.key
                );
            }
            *old = t.clone();
        } else {
            node.spec.taints.push(t.clone());
        }
    }
    Ok(())
}

async fn edit(args: Args, what: &str, change: impl FnOnce(&mut Node) -> Result<()>) -> Result<()> {
    if !matches!(args.kind.as_str(), "node" | "nodes" | "no") {
        bail!(
            "{what}: only nodes are served (shoal {what} node NAME ...), got {:?}",
            args.kind
        );
    }
    let client = connect(&args.client).await?;
    let get = Request::Get {
        kind: "Node".into(),
        namespace: None,
        name: args.name.clone(),
    };
    let mut node: Node = match call(&client, &get).await? {
        Response::Object(b) => Object::from_json(&b)?.into_typed()?,
        other => bail!(other.unexpected()),
    };
    change(&mut node)?;
    crate::client::replace(&client, Object::Node(node)).await?;
    println!("node/{} {what}ed", args.name);
    client.close().await;
    Ok(())
}

pub async fn run_label(args: Args) -> Result<()> {
    let edits = args
        .edits
        .iter()
        .map(|e| parse_label(e))
        .collect::<Result<Vec<_>>>()?;
    let overwrite = args.overwrite;
    edit(args, "label", |n| label(n, &edits, overwrite)).await
}

pub async fn run_taint(args: Args) -> Result<()> {
    let edits = args
        .edits
        .iter()
        .map(|e| parse_taint(e))
        .collect::<Result<Vec<_>>>()?;
    let overwrite = args.overwrite;
    edit(args, "taint", |n| taint(n, &edits, overwrite)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_taint_edits_parse_as_kubectl_reads_them() {
        assert_eq!(
            parse_label("zone=a").unwrap(),
            Edit::Set("zone".into(), "a".into())
        );
        assert_eq!(parse_label("zone-").unwrap(), Edit::Remove("zone".into()));
        assert!(parse_label("zone").is_err());
        let (rm, t) = parse_taint("dedicated=db:NoSchedule").unwrap();
        assert!(!rm);
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("db"), "NoSchedule")
        );
        let (rm, t) = parse_taint("dedicated-").unwrap();
        assert!(rm && t.key == "dedicated" && t.effect.is_empty());
        assert!(parse_taint("dedicated=db:Sometimes").is_err());
        assert!(parse_taint("dedicated=db").is_err());
    }

    #[test]
    fn admin_labels_are_recorded_and_overwrites_asked_for() {
        let mut node = Node::default();
        label(&mut node, &[Edit::Set("zone".into(), "a".into())], false).unwrap();
        assert_eq!(node.metadata.annotations[ADMIN_LABELS], "zone");
        assert!(label(&mut node, &[Edit::Set("zone".into(), "b".into())], false).is_err());
        label(&mut node, &[Edit::Set("zone".into(), "b".into())], true).unwrap();
        label(&mut node, &[Edit::Remove("zone".into())], false).unwrap();
        assert!(node.metadata.labels.is_empty());
        assert!(!node.metadata.annotations.contains_key(ADMIN_LABELS));
    }
}
