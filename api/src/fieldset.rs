//! Server-side apply's field sets, in Kubernetes' `FieldsV1` form: which fields of an object a
//! field manager set, as a tree of `f:<name>` (a field), `k:<merge key as JSON>` (an element
//! of a list merged by key), `v:<value as JSON>` (an element of a list merged as a set) and
//! `.` (the element itself). A leaf is an entry with nothing under it. Lists without a merge
//! key are atomic: owned whole, as one leaf.

use crate::patch::{join, merge_key, merges_as_set, three_way};
use serde_json::{Map, Value};

/// What the cluster keeps itself, never owned by a manager.
const CLUSTER_OWNED: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

/// The fields `obj` sets (its status, identity and what the cluster keeps left out).
pub fn of(obj: &Value) -> Value {
    let Value::Object(top) = obj else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (k, v) in top {
        if matches!(k.as_str(), "apiVersion" | "kind" | "status") || v.is_null() {
            continue;
        }
        let mut set = field(v, k);
        if k == "metadata" {
            if let Value::Object(m) = &mut set {
                for owned in CLUSTER_OWNED {
                    m.remove(&format!("f:{owned}"));
                }
                if m.is_empty() {
                    continue;
                }
            }
        }
        out.insert(format!("f:{k}"), set);
    }
    Value::Object(out)
}

fn field(v: &Value, path: &str) -> Value {
    let mut out = Map::new();
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter().filter(|(_, c)| !c.is_null()) {
                out.insert(format!("f:{k}"), field(child, &join(path, k)));
            }
        }
        Value::Array(items) => {
            if let Some(key) = merge_key(path) {
                let item_path = format!("{path}[]");
                for item in items {
                    let Some(id) = item.get(key) else { continue };
                    let mut element = match field(item, &item_path) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    element.insert(".".into(), Value::Object(Map::new()));
                    let k = serde_json::json!({ key: id }).to_string();
                    out.insert(format!("k:{k}"), Value::Object(element));
                }
            } else if merges_as_set(path) {
                for item in items {
                    out.insert(format!("v:{item}"), Value::Object(Map::new()));
                }
            }
        }
        _ => {}
    }
    Value::Object(out)
}

/// Every leaf of `set`, as the steps to it (`.` entries left out).
pub fn leaves(set: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    collect(set, &mut Vec::new(), &mut out);
    out
}

fn collect(set: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Value::Object(m) = set else { return };
    if m.is_empty() && !at.is_empty() {
        out.push(at.clone());
        return;
    }
    for (k, child) in m.iter().filter(|(k, _)| *k != ".") {
        at.push(k.clone());
        collect(child, at, out);
        at.pop();
    }
}

/// The value at `steps` in `obj`, if it has one.
pub fn get<'a>(obj: &'a Value, steps: &[String]) -> Option<&'a Value> {
    let mut at = obj;
    for step in steps {
        at = if let Some(name) = step.strip_prefix("f:") {
            at.get(name)?
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            at.as_array()?
                .iter()
                .find(|e| key.iter().all(|(k, v)| e.get(k) == Some(v)))?
        } else if let Some(value) = step.strip_prefix("v:") {
            let value: Value = serde_json::from_str(value).ok()?;
            at.as_array()?.iter().find(|e| **e == value)?
        } else {
            return None;
        };
    }
    Some(at)
}

/// A field path as Kubernetes prints it in a conflict: `.spec.containers[name="web"].image`.
pub fn display(steps: &[String]) -> String {
    let mut out = String::new();
    for step in steps {
        if let Some(name) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = step.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// `set` without the leaves `minus` holds; what is left empty goes too.
pub fn subtract(set: &Value, minus: &Value) -> Value {
    let (Value::Object(s), Value::Object(m)) = (set, minus) else {
        return set.clone();
    };
    let mut out = Map::new();
    for (k, child) in s {
        match m.get(k) {
            // A leaf of `minus`: all of it goes.
            Some(Value::Object(mc)) if mc.is_empty() || k == "." => {}
            Some(mc) => {
                let left = subtract(child, mc);
                let had_children = child.as_object().is_some_and(|c| !c.is_empty());
                let empty = left.as_object().is_some_and(|l| l.is_empty());
                if !(had_children && empty) {
                    out.insert(k.clone(), left);
                }
            }
            None => {
                out.insert(k.clone(), child.clone());
            }
        }
    }
    Value::Object(out)
}

/// Both sets' fields.
pub fn union(a: &Value, b: &Value) -> Value {
    let (Value::Object(x), Value::Object(y)) = (a, b) else {
        return b.clone();
    };
    let mut out = x.clone();
    for (k, child) in y {
        let merged = match out.get(k) {
            Some(mine) => union(mine, child),
            None => child.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

/// `set` without the leaves `obj` no longer has (in one walk of both).
pub fn prune(set: &Value, obj: &Value) -> Value {
    let Value::Object(s) = set else {
        return set.clone();
    };
    let mut out = Map::new();
    for (k, child) in s {
        if k == "." {
            out.insert(k.clone(), child.clone());
            continue;
        }
        let Some(v) = get(obj, std::slice::from_ref(k)) else {
            continue;
        };
        if child.as_object().is_some_and(|c| c.is_empty()) {
            out.insert(k.clone(), child.clone());
            continue;
        }
        let kept = prune(child, v);
        if kept.as_object().is_some_and(|m| !m.is_empty()) {
            out.insert(k.clone(), kept);
        }
    }
    Value::Object(out)
}

/// Adds the leaf at `steps` to `set`.
fn insert(set: &mut Map<String, Value>, steps: &[String]) {
    let Some((first, rest)) = steps.split_first() else {
        return;
    };
    let child = set
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = child {
        insert(m, rest);
    }
}

/// The leaves of `after`'s fields whose values differ from `before`'s (or are new there): what a
/// write changed, which its manager comes to own.
pub fn changed(before: &Value, after: &Value) -> Value {
    let mut set = Map::new();
    for leaf in leaves(&of(after)) {
        if get(before, &leaf) != get(after, &leaf) {
            insert(&mut set, &leaf);
        }
    }
    Value::Object(set)
}

/// Server-side apply of `applied` by a manager that applied `before` (its field set) last,
/// over `live`, where `others` are the fields every other manager owns: what it sets is
/// taken, what it set before and no longer names is removed unless another owns it too, and
/// what it never named stays as it is.
pub fn merge(before: &Value, applied: &Value, live: &Value, others: &Value) -> Value {
    let mut merged = three_way(&Value::Null, applied, live, "");
    let dropped = subtract(&subtract(before, &of(applied)), others);
    remove(&mut merged, &dropped, others);
    merged
}

/// Removes from `obj` the fields `set` names; a list element whose `.` it names goes whole,
/// unless `others` own something in it.
fn remove(obj: &mut Value, set: &Value, others: &Value) {
    let Value::Object(s) = set else { return };
    let none = Value::Null;
    for (k, child) in s {
        let theirs = others.get(k).unwrap_or(&none);
        if let Some(name) = k.strip_prefix("f:") {
            let empty = child.as_object().is_some_and(|c| c.is_empty());
            match obj.as_object_mut() {
                Some(m) if empty => {
                    m.remove(name);
                }
                Some(m) => {
                    if let Some(v) = m.get_mut(name) {
                        remove(v, child, theirs);
                    }
                }
                None => {}
            }
            continue;
        }
        let Some(list) = obj.as_array_mut() else {
            continue;
        };
        let Some(i) = get(&Value::Array(list.clone()), std::slice::from_ref(k))
            .and_then(|e| list.iter().position(|x| x == e))
        else {
            continue;
        };
        let whole = child.get(".").is_some() && theirs.is_null();
        if whole || k.starts_with("v:") {
            list.remove(i);
        } else {
            remove(&mut list[i], child, theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, extra_label: bool) -> Value {
        let mut labels = json!({"app": "web"});
        if extra_label {
            labels["tier"] = json!("front");
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels, "uid": "u"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": image, "args": ["a", "b"]}]}}},
            "status": {"replicas": 1}})
    }

    #[test]
    fn a_set_names_fields_list_elements_by_key_and_atomic_lists_whole() {
        let set = of(&deployment("nginx:1", false));
        let mut paths: Vec<String> = leaves(&set).iter().map(|l| display(l)).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                ".metadata.labels.app",
                ".spec.template.spec.containers[name=\"web\"].args",
                ".spec.template.spec.containers[name=\"web\"].image",
                ".spec.template.spec.containers[name=\"web\"].name",
            ]
        );
        let image: Vec<String> = vec![
            "f:spec".into(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(
            get(&deployment("nginx:1", false), &image),
            Some(&json!("nginx:1"))
        );
    }

    #[test]
    fn what_a_write_changed_and_what_is_left_to_others() {
        let before = deployment("nginx:1", true);
        let mut after = deployment("nginx:2", true);
        after["spec"]["replicas"] = json!(3);
        let changed = changed(&before, &after);
        let mut paths: Vec<String> = leaves(&changed).iter().map(|l| display(l)).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"web\"].image"
            ]
        );
        let rest = subtract(&of(&after), &changed);
        assert_eq!(leaves(&rest).len(), 4, "{rest}");
        assert_eq!(leaves(&union(&rest, &changed)).len(), 6);
        // A field gone from the object is no one's.
        let pruned = prune(&of(&after), &deployment("nginx:2", false));
        assert!(!leaves(&pruned)
            .iter()
            .any(|l| display(l) == ".metadata.labels.tier"));
    }

    #[test]
    fn an_apply_removes_what_its_manager_no_longer_names_and_keeps_the_rest() {
        let applied_before = deployment("nginx:1", true);
        let mut live = applied_before.clone();
        live["spec"]["replicas"] = json!(5);
        live["metadata"]["labels"]["owner"] = json!("someone-else");
        let now = deployment("nginx:2", false);
        let others =
            json!({"f:metadata": {"f:labels": {"f:owner": {}}}, "f:spec": {"f:replicas": {}}});
        let merged = merge(&of(&applied_before), &now, &live, &others);
        assert_eq!(merged["spec"]["replicas"], 5, "never applied: kept");
        assert_eq!(
            merged["metadata"]["labels"],
            json!({"app": "web", "owner": "someone-else"})
        );
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        // A label two managers set stays when one drops it; a container it alone named goes.
        let shared = json!({"f:metadata": {"f:labels": {"f:tier": {}}}});
        let mut other_container = deployment("nginx:2", false);
        other_container["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "side", "image": "busybox"}]);
        let merged = merge(&of(&applied_before), &other_container, &live, &shared);
        assert_eq!(merged["metadata"]["labels"]["tier"], "front");
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "side", "image": "busybox"}])
        );
    }
}
