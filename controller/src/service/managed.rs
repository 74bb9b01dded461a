//! Managed fields and server-side apply (`kubectl apply --server-side`): each write that names
//! its field manager comes to own the fields it set ([`shoal_api::fieldset`]); an apply sets
//! what its configuration names, removes what the same manager applied before and no longer
//! names, and conflicts with other managers over fields they own and it would change, unless
//! forced (`--force-conflicts`), which takes those fields over.

use super::writes::admit_one;
use super::*;
use serde_json::Value;
use shoal_api::fieldset;
use shoal_api::ManagedFieldsEntry;
use shoal_transport::proto::WriteOptions;

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

fn entry(manager: &str, operation: &str, api_version: &str, fields: Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: manager.to_string(),
        operation: operation.to_string(),
        api_version: api_version.to_string(),
        time: Some(crate::store::now()),
        fields_type: "FieldsV1".into(),
        fields_v1: fields,
        subresource: String::new(),
    }
}

fn is_empty(set: &Value) -> bool {
    set.as_object().is_none_or(|m| m.is_empty())
}

/// `entries` after `manager` (by `operation`) set `fields` of `obj`: those fields are its
/// (taken from every other entry), fields `obj` no longer has are no one's, and an entry left
/// with nothing goes.
fn own(
    entries: &[ManagedFieldsEntry],
    manager: &str,
    operation: &str,
    fields: &Value,
    obj: &Value,
) -> Vec<ManagedFieldsEntry> {
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let is_mine = |e: &ManagedFieldsEntry| e.manager == manager && e.operation == operation;
    let mut out: Vec<ManagedFieldsEntry> = Vec::with_capacity(entries.len() + 1);
    let mut placed = false;
    for e in entries {
        let mut e = e.clone();
        if is_mine(&e) {
            // An apply names all it owns; an update adds to what it owned. Unchanged, the
            // entry stays as it was (its time too), so a repeated write changes nothing.
            let before = if operation == APPLY {
                &Value::Null
            } else {
                &e.fields_v1
            };
            let now = fieldset::prune(&fieldset::union(before, fields), obj);
            placed = true;
            if now != e.fields_v1 {
                e = entry(manager, operation, api_version, now);
            }
        } else {
            e.fields_v1 = fieldset::prune(&fieldset::subtract(&e.fields_v1, fields), obj);
        }
        if !is_empty(&e.fields_v1) {
            out.push(e);
        }
    }
    let mine = fieldset::prune(fields, obj);
    if !placed && !is_empty(&mine) {
        out.push(entry(manager, operation, api_version, mine));
    }
    out
}

/// A write other than an apply, from `stored` to `next`: with a field manager, what it changed
/// becomes that manager's. Managed fields the write sent are ignored, as they are the
/// server's to keep.
pub(super) fn record_update(
    stored: Option<&Object>,
    next: &mut Object,
    options: &WriteOptions,
) -> Result<()> {
    // Without a manager (Shoal's own writes, a server-side apply's), the managed fields
    // are as the write carries them.
    let Some(manager) = options.field_manager.as_deref().filter(|_| !options.status) else {
        return Ok(());
    };
    let kept = stored
        .map(|s| s.metadata().managed_fields.clone())
        .unwrap_or_default();
    let after = serde_json::to_value(&*next).map_err(internal)?;
    let changed = match stored {
        Some(s) => fieldset::changed(&serde_json::to_value(s).map_err(internal)?, &after),
        None => fieldset::of(&after),
    };
    next.metadata_mut().managed_fields = if is_empty(&changed) {
        kept
    } else {
        own(&kept, manager, UPDATE, &changed, &after)
    };
    Ok(())
}

/// Why an apply of `applied` over `live` conflicts: each field another manager owns whose
/// value the apply would change.
fn conflicts(
    entries: &[ManagedFieldsEntry],
    manager: &str,
    applied: &Value,
    live: &Value,
) -> Vec<String> {
    let mine = fieldset::of(applied);
    let wanted: std::collections::HashSet<Vec<String>> =
        fieldset::leaves(&mine).into_iter().collect();
    let mut out = Vec::new();
    for e in entries {
        if e.manager == manager && e.operation == APPLY {
            continue;
        }
        for leaf in fieldset::leaves(&e.fields_v1) {
            if wanted.contains(&leaf) && fieldset::get(live, &leaf) != fieldset::get(applied, &leaf)
            {
                out.push(format!(
                    "conflict with {:?} using {}: {}",
                    e.manager,
                    e.api_version,
                    fieldset::display(&leaf)
                ));
            }
        }
    }
    out
}

impl Service {
    /// `kubectl apply --server-side` of `body` (YAML or JSON) to `key`: creates the object
    /// if there is none.
    pub(super) async fn server_apply(
        &self,
        key: &ObjectKey,
        body: &[u8],
        options: WriteOptions,
    ) -> Result<Response> {
        let Some(manager) = options.field_manager.clone() else {
            return Err(Error::BadRequest(
                "a server-side apply (application/apply-patch+yaml) needs a fieldManager".into(),
            ));
        };
        // YAML or JSON; its namespace, when it names none, is the path's (as kube-apiserver).
        let mut sent: Value = serde_yaml_ng::from_slice(body).map_err(|e| {
            Error::BadRequest(format!(
                "the applied configuration is not YAML or JSON: {e}"
            ))
        })?;
        if let (Some(ns), Some(meta)) = (&key.namespace, sent["metadata"].as_object_mut()) {
            if meta.get("namespace").is_none_or(Value::is_null) {
                meta.insert("namespace".into(), ns.clone().into());
            }
        }
        let body = serde_json::to_vec(&sent).map_err(internal)?;
        let (desired, warnings) = admit_one(&body, options.validation)?;
        if ObjectKey::of(&desired) != *key {
            return Err(Error::BadRequest(format!(
                "the applied object is {}, the path is for {key}",
                ObjectKey::of(&desired)
            )));
        }
        let mut applied = serde_json::to_value(&desired).map_err(internal)?;
        if let Some(m) = applied.as_object_mut() {
            m.remove("status");
        }
        if let Some(m) = applied["metadata"].as_object_mut() {
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        // Writes below take no field manager: the managed fields are set here.
        let inner = WriteOptions {
            field_manager: None,
            ..options.clone()
        };
        for _ in 0..5 {
            let Some(stored) = self.store.get(key).await? else {
                let mut obj = applied.clone();
                let fields = fieldset::of(&applied);
                obj["metadata"]["managedFields"] = serde_json::to_value(vec![entry(
                    &manager,
                    APPLY,
                    applied["apiVersion"].as_str().unwrap_or(""),
                    fields,
                )])
                .map_err(internal)?;
                let bytes = serde_json::to_vec(&obj).map_err(internal)?;
                return match self.create_object(&bytes, inner.clone()).await {
                    Err(Error::AlreadyExists(_)) => continue,
                    Ok(r) => Ok(with_warnings(r, &warnings)),
                    Err(e) => Err(e),
                };
            };
            let live = serde_json::to_value(&stored).map_err(internal)?;
            let entries = &stored.metadata().managed_fields;
            let found = conflicts(entries, &manager, &applied, &live);
            if !found.is_empty() && !options.force {
                return Err(Error::Conflict(format!(
                    "Apply failed with {} conflict{}: {}",
                    found.len(),
                    if found.len() == 1 { "" } else { "s" },
                    found.join("; ")
                )));
            }
            let before = entries
                .iter()
                .find(|e| e.manager == manager && e.operation == APPLY)
                .map(|e| e.fields_v1.clone())
                .unwrap_or(Value::Null);
            let others = entries
                .iter()
                .filter(|e| !(e.manager == manager && e.operation == APPLY))
                .fold(Value::Null, |all, e| fieldset::union(&all, &e.fields_v1));
            let mut merged = fieldset::merge(&before, &applied, &live, &others);
            let owned = own(entries, &manager, APPLY, &fieldset::of(&applied), &merged);
            merged["metadata"]["managedFields"] = serde_json::to_value(owned).map_err(internal)?;
            let bytes = serde_json::to_vec(&merged).map_err(internal)?;
            match self.update_object(&bytes, inner.clone()).await {
                Err(Error::Conflict(_)) => continue,
                Ok(r) => return Ok(with_warnings(r, &warnings)),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "Operation cannot be fulfilled on {key}: it kept changing while being applied"
        )))
    }
}

/// The apply's own warnings (fields Shoal does not support) before the write's.
fn with_warnings(r: Response, first: &[String]) -> Response {
    match r {
        Response::Written {
            object,
            created,
            warnings,
        } => Response::Written {
            object,
            created,
            warnings: first.iter().cloned().chain(warnings).collect(),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_owns_what_it_changed_and_takes_it_from_others() {
        let before = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 1, "paused": false}});
        let mut after = before.clone();
        after["spec"]["replicas"] = json!(5);
        let applied = entry("kubectl", APPLY, "apps/v1", fieldset::of(&before));
        let owned = own(
            &[applied],
            "kubectl-scale",
            UPDATE,
            &fieldset::changed(&before, &after),
            &after,
        );
        let paths = |e: &ManagedFieldsEntry| -> Vec<String> {
            fieldset::leaves(&e.fields_v1)
                .iter()
                .map(|l| fieldset::display(l))
                .collect()
        };
        assert_eq!(owned.len(), 2);
        assert_eq!(paths(&owned[0]), [".spec.paused"]);
        assert_eq!(owned[1].manager, "kubectl-scale");
        assert_eq!(paths(&owned[1]), [".spec.replicas"]);
        // An apply that would set replicas back conflicts with the scale; one that leaves
        // them as they are does not.
        let again = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let found = conflicts(&owned, "kubectl", &again, &after);
        assert_eq!(
            found,
            ["conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"]
        );
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        assert!(conflicts(&owned, "kubectl", &same, &after).is_empty());
    }
}
