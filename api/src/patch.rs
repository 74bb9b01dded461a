//! The three patches of the Kubernetes API, applied to an object's JSON: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902), and strategic merge patch, which merges lists of
//! containers, ports, volumes and the like element by element by their merge key (the
//! `patchMergeKey` of Kubernetes' types) and understands its `$patch`, `$retainKeys`,
//! `$setElementOrder` and `$deleteFromPrimitiveList` directives.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply, which the service does with the
    /// object's managed fields ([`crate::fieldset`]).
    Apply,
}

impl PatchType {
    /// The patch type a `Content-Type` names.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().map(str::trim) {
            Some("application/merge-patch+json") => Some(PatchType::Merge),
            Some("application/json-patch+json") => Some(PatchType::Json),
            Some("application/strategic-merge-patch+json") => Some(PatchType::Strategic),
            Some("application/apply-patch+yaml") => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies `patch` of `type_` to `target`.
pub fn apply(type_: PatchType, target: &Value, patch: &Value) -> Result<Value, String> {
    match type_ {
        PatchType::Merge => {
            let mut out = target.clone();
            merge(&mut out, patch);
            Ok(out)
        }
        PatchType::Json => json_patch(target, patch),
        PatchType::Strategic => strategic(target, patch, ""),
        PatchType::Apply => Err("a server-side apply needs the object's managed fields".into()),
    }
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent of a JSON pointer's last token, and that token.
fn split_pointer(path: &str) -> Result<(Vec<String>, String), String> {
    if path.is_empty() {
        return Err("a patch may not replace the whole object".into());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path {path:?} does not start with /"))?;
    let mut tokens: Vec<String> = rest.split('/').map(unescape).collect();
    let last = tokens.pop().unwrap_or_default();
    Ok((tokens, last))
}

fn walk<'a>(mut v: &'a mut Value, tokens: &[String], path: &str) -> Result<&'a mut Value, String> {
    for t in tokens {
        v = match v {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?}: {t:?} does not exist"))?;
    }
    Ok(v)
}

fn get(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let p = walk(doc, &parent, path)?;
    match p {
        Value::Object(m) => m.get(&last).cloned(),
        Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i).cloned()),
        _ => None,
    }
    .ok_or_else(|| format!("path {path:?} does not exist"))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    match walk(doc, &parent, path)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("path {path:?}: index {last:?} is out of range"))?
            };
            a.insert(i, value);
        }
        _ => {
            return Err(format!(
                "path {path:?}: the parent is not an object or array"
            ))
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match walk(doc, &parent, path)? {
        Value::Object(m) => m.remove(&last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    }
    .ok_or_else(|| format!("path {path:?} does not exist"))
}

/// RFC 6902: a list of operations, all applied or none.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i}: {name:?} is missing"))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {i}: \"value\" is missing"))
        };
        let path = field("path")?;
        let at = |e: String| format!("operation {i} ({}): {e}", field("op").unwrap_or("?"));
        match field("op")? {
            "add" => add(&mut doc, path, value()?).map_err(at)?,
            "remove" => remove(&mut doc, path).map(drop).map_err(at)?,
            "replace" => {
                remove(&mut doc, path).map_err(at)?;
                add(&mut doc, path, value()?).map_err(at)?;
            }
            "move" => {
                let v = remove(&mut doc, field("from")?).map_err(at)?;
                add(&mut doc, path, v).map_err(at)?;
            }
            "copy" => {
                let v = get(&mut doc, field("from")?).map_err(at)?;
                add(&mut doc, path, v).map_err(at)?;
            }
            "test" => {
                if get(&mut doc, path).map_err(at)? != value()? {
                    return Err(format!(
                        "operation {i} (test): {path:?} does not hold the value tested"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "operation {i}: {other:?} is not a JSON patch operation"
                ))
            }
        }
    }
    Ok(doc)
}

/// The merge key of a list at `path` (dotted, list steps as `[]`), as Kubernetes' types
/// declare it; `None`: the list is replaced whole.
pub(crate) fn merge_key(path: &str) -> Option<&'static str> {
    let field = path.rsplit('.').next().unwrap_or(path);
    let in_container = path.contains("ontainers[]");
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets" => "name",
        "env" if in_container => "name",
        "ports" if in_container => "containerPort",
        "ports" => "port",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "topologySpreadConstraints" => "topologyKey",
        "addresses" if path.starts_with("status") => "type",
        _ => return None,
    })
}

/// Lists of plain values that merge as sets (`patchStrategy: merge`).
pub(crate) fn merges_as_set(path: &str) -> bool {
    matches!(path, "metadata.finalizers")
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Strategic merge patch of `patch` into `target` at `path`.
pub fn strategic(target: &Value, patch: &Value, path: &str) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut whole = p.clone();
            whole.remove("$patch");
            return Ok(Value::Object(whole));
        }
        Some("delete") => return Ok(Value::Null),
        Some("merge") | None => {}
        Some(other) => {
            return Err(format!(
                "{path}: $patch: {other:?} is not replace, delete or merge"
            ))
        }
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    let mut orders = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        let here = join(path, k);
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Object(_)), Value::Object(_)) | (None, Value::Object(_)) => {
                strategic(out.get(k).unwrap_or(&Value::Null), v, &here)?
            }
            (Some(Value::Array(old)), Value::Array(new)) => merge_list(old, new, &here)?,
            (None, Value::Array(new)) => merge_list(&[], new, &here)?,
            _ => v.clone(),
        };
        if merged.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (field, order) in orders {
        let key = merge_key(&join(path, &field));
        if let (Some(Value::Array(list)), Some(order)) = (out.get_mut(&field), order.as_array()) {
            reorder(list, order, key);
        }
    }
    Ok(Value::Object(out))
}

fn merge_list(old: &[Value], new: &[Value], path: &str) -> Result<Value, String> {
    if new
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept: Vec<Value> = new
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(kept));
    }
    if merges_as_set(path) {
        let mut out = old.to_vec();
        out.extend(new.iter().filter(|v| !old.contains(v)).cloned());
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(path) else {
        return Ok(Value::Array(new.to_vec()));
    };
    let item_path = format!("{path}[]");
    let mut out = old.to_vec();
    for item in new {
        let id = item.get(key);
        let found = out.iter().position(|o| o.get(key) == id && id.is_some());
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (found, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic(&out[i], item, &item_path)?,
            (None, false) => out.push(strategic(&Value::Null, item, &item_path)?),
        }
    }
    Ok(Value::Array(out))
}

/// Orders `list` as `order` says (by merge key, or by value for plain lists); elements it
/// does not name keep their place after those it does.
fn reorder(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let rank = |v: &Value| {
        let id = match key {
            Some(k) => v.get(k).cloned(),
            None => Some(v.clone()),
        };
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k).cloned() == id,
                None => Some(o.clone()) == id,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

/// `kubectl apply`'s three-way merge: `modified` (the manifest now) over `current` (what is
/// stored), where `original` (the manifest applied last) says which fields the manifest owned.
/// A field the manifest set is taken from it, one it owned and no longer names is removed,
/// and one it never named (replicas set by `scale`, a node bound by the scheduler, status)
/// stays as stored. Lists with a merge key merge element by element the same way.
pub fn three_way(original: &Value, modified: &Value, current: &Value, path: &str) -> Value {
    let (Value::Object(m), Value::Object(c)) = (modified, current) else {
        return match (modified, current) {
            (Value::Array(m), Value::Array(c)) => three_way_list(original, m, c, path),
            _ => modified.clone(),
        };
    };
    let empty = Map::new();
    let o = original.as_object().unwrap_or(&empty);
    let mut out = c.clone();
    for (k, v) in m {
        let here = join(path, k);
        let merged = match c.get(k) {
            Some(cur) => three_way(o.get(k).unwrap_or(&Value::Null), v, cur, &here),
            None => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    for k in o.keys().filter(|k| !m.contains_key(*k)) {
        out.remove(k);
    }
    Value::Object(out)
}

fn three_way_list(original: &Value, modified: &[Value], current: &[Value], path: &str) -> Value {
    let Some(key) = merge_key(path) else {
        return Value::Array(modified.to_vec());
    };
    let id = |v: &Value| v.get(key).cloned();
    let originals: Vec<Value> = original.as_array().cloned().unwrap_or_default();
    let item_path = format!("{path}[]");
    let mut out: Vec<Value> = modified
        .iter()
        .map(|m| {
            let find = |list: &[Value]| {
                list.iter()
                    .find(|x| id(x) == id(m) && id(m).is_some())
                    .cloned()
            };
            match find(current) {
                Some(cur) => three_way(
                    &find(&originals).unwrap_or(Value::Null),
                    m,
                    &cur,
                    &item_path,
                ),
                None => m.clone(),
            }
        })
        .collect();
    // Elements the manifest never named (added by someone else) stay, after its own.
    for cur in current {
        let named = modified.iter().any(|m| id(m) == id(cur));
        let owned = originals.iter().any(|o| id(o) == id(cur));
        if !named && !owned {
            out.push(cur.clone());
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
              "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "log", "image": "log:1"}]}}}})
    }

    #[test]
    fn strategic_merges_containers_by_name_and_env_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}}});
        let out = apply(PatchType::Strategic, &deployment(), &patch).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2, "the other container stays");
        assert_eq!(c[0]["image"], "web:2");
        assert_eq!(c[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(out["spec"]["replicas"], 3);
    }

    #[test]
    fn strategic_directives() {
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"app": null}},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
              "template": {"spec": {
                "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}],
                "containers": [{"name": "web", "$patch": "delete"}, {"name": "side", "image": "s"}]}}}});
        let out = apply(PatchType::Strategic, &deployment(), &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        assert_eq!(out["metadata"]["labels"], json!({}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["log", "side"]);
        let replaced = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}}}});
        let out = apply(PatchType::Strategic, &deployment(), &replaced).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "o"}])
        );
    }

    #[test]
    fn three_way_keeps_what_the_manifest_never_named() {
        let original = json!({"metadata": {"labels": {"app": "web", "old": "x"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:1", "args": ["a"]}]}}}});
        let modified = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
        let mut current = deployment();
        current["metadata"]["labels"]["old"] = json!("x");
        current["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a"]);
        let out = three_way(&original, &modified, &current, "");
        assert_eq!(
            out["spec"]["replicas"], 3,
            "scaled, never in the manifest: kept"
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web"}),
            "dropped from the manifest: removed"
        );
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "web:2");
        assert!(c[0].get("args").is_none(), "{c}");
        assert_eq!(
            c[0]["env"].as_array().map(Vec::len),
            Some(2),
            "never named: kept"
        );
        assert_eq!(
            c[1]["name"], "log",
            "a container added by someone else stays"
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a"]));
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_with_null() {
        let patch = json!({"spec": {"replicas": 5, "strategy": null,
            "template": {"spec": {"containers": [{"name": "x", "image": "x"}]}}}});
        let out = apply(PatchType::Merge, &deployment(), &patch).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert!(out["spec"].get("strategy").is_none());
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn json_patch_operations_and_failures() {
        let ops = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 1},
            {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "z"}},
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels/name"},
            {"op": "test", "path": "/spec/replicas", "value": 1},
        ]);
        let out = apply(PatchType::Json, &deployment(), &ops).unwrap();
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["metadata"]["labels"]["tier"], "front");
        assert_eq!(out["metadata"]["labels"]["name"], "web");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][2]["name"],
            "z"
        );
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let failing = json!([{"op": "test", "path": "/spec/replicas", "value": 9}]);
        assert!(apply(PatchType::Json, &deployment(), &failing)
            .unwrap_err()
            .contains("test"));
        let missing = json!([{"op": "remove", "path": "/spec/nothing"}]);
        assert!(apply(PatchType::Json, &deployment(), &missing)
            .unwrap_err()
            .contains("/spec/nothing"));
        assert!(apply(PatchType::Json, &deployment(), &json!({})).is_err());
    }
}
