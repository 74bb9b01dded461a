//! Every field of the served kinds, as Kubernetes' own schema has them, is either honoured or
//! reported: never accepted and silently ignored.
//!
//! `data/k8s-fields.txt` lists the fields a manifest may set (generated from the official
//! client's models by `data/k8s_fields.py`; the pod template of a workload is the Pod's spec
//! and is walked once, under Pod). For each kind, one manifest sets every field at once, so
//! required siblings are always there; parsing it reports the fields Shoal does not model
//! (a warning on apply, a refusal with `--validate strict`). Every other field must be in
//! `data/honoured-fields.txt`: the fields Shoal acts on as Kubernetes documents. A field
//! newly modelled without being added there, or listed there but gone from the schema, fails
//! this test.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

const SCHEMA: &str = include_str!("data/k8s-fields.txt");
const HONOURED: &str = include_str!("data/honoured-fields.txt");

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "StorageClass" => "storage.k8s.io/v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        _ => "v1",
    }
}

/// A value of the schema's type for a field with no fields of its own.
fn leaf(kind: &str, path: &str, typ: &str) -> Value {
    // Fields Shoal reads as enums or parses take a value of their own.
    if path == "spec/template" || path == "spec/jobTemplate/spec/template" {
        // Its fields are the Pod's, walked under Pod.
        return json!({"metadata": {"labels": {"k": "v"}},
                      "spec": {"containers": [{"name": "c", "image": "x"}]}});
    }
    let known: &[(&str, &str, Value)] = &[
        ("Secret", "type", json!("Opaque")),
        ("Service", "spec/type", json!("ClusterIP")),
        ("Service", "spec/clusterIP", json!("None")),
        ("Service", "spec/clusterIPs[]", json!("None")),
    ];
    if let Some((_, _, v)) = known.iter().find(|(k, p, _)| *k == kind && *p == path) {
        return v.clone();
    }
    match typ {
        "int" => json!(1),
        "bool" => json!(true),
        "float" => json!(1.0),
        "datetime" => json!("2024-01-01T00:00:00Z"),
        // Labels, and quantities by resource name.
        "map" => json!({"k": "1"}),
        // A string that is also a quantity and an int-or-string (the client's schema types
        // quantities as strings).
        _ => json!("1"),
    }
}

/// Sets `path` (`a/b[]/c`) in `doc`, making objects and one-element lists on the way.
fn set(doc: &mut Value, path: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (name, list) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (*part, false),
        };
        let Value::Object(map) = at else { return };
        let slot = map.entry(name.to_string()).or_insert_with(|| {
            if list {
                json!([])
            } else {
                Value::Object(Map::new())
            }
        });
        at = if list {
            let Value::Array(items) = slot else { return };
            if items.is_empty() {
                items.push(if last {
                    value.clone()
                } else {
                    Value::Object(Map::new())
                });
            }
            &mut items[0]
        } else {
            slot
        };
        if last && !list {
            *at = value.clone();
        }
    }
}

/// A serde_ignored path (`spec.containers.0.stdin`) in the schema's form.
fn schema_path(reported: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for part in reported.split('.') {
        if part.parse::<usize>().is_ok() {
            if let Some(prev) = out.last_mut() {
                prev.push_str("[]");
            }
        } else {
            out.push(part.to_string());
        }
    }
    out.join("/")
}

#[test]
fn every_schema_field_is_honoured_or_reported() {
    let mut fields: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for line in SCHEMA.lines().filter(|l| !l.starts_with('#')) {
        let mut cols = line.split('\t');
        let (Some(kind), Some(path), Some(typ)) = (cols.next(), cols.next(), cols.next()) else {
            panic!("bad schema line {line:?}");
        };
        if kind != "Pod"
            && (path.starts_with("spec/template/")
                || path.starts_with("spec/jobTemplate/spec/template/"))
        {
            continue;
        }
        fields.entry(kind).or_default().push((path, typ));
    }
    let honoured: BTreeSet<&str> = HONOURED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut modelled = BTreeSet::new();
    let mut schema = BTreeSet::new();
    for (kind, paths) in &fields {
        let mut doc = json!({"apiVersion": api_version(kind), "kind": kind});
        let parents: BTreeSet<String> = paths
            .iter()
            .filter_map(|(p, _)| p.rsplit_once('/').map(|(parent, _)| parent.to_string()))
            .collect();
        for (path, typ) in paths {
            if parents.contains(*path) {
                continue; // an object: its fields are set one by one
            }
            set(&mut doc, path, leaf(kind, path, typ));
        }
        set(&mut doc, "metadata/name", json!("x"));
        let text = serde_json::to_string(&doc).expect("json");
        let parsed = shoal_api::manifest::parse_manifests("walk.json", &text)
            .unwrap_or_else(|e| panic!("{kind}: the manifest of every field does not parse: {e}"));
        let reported: Vec<String> = parsed[0]
            .unknown_fields
            .iter()
            .map(|p| schema_path(p))
            .collect();
        for (path, _) in paths {
            schema.insert(format!("{kind} {path}"));
            let warned = reported.iter().any(|r| {
                path == r
                    || path.starts_with(&format!("{r}/"))
                    || path.starts_with(&format!("{r}[]"))
            });
            if !warned && !parents.contains(*path) {
                modelled.insert(format!("{kind} {path}"));
            }
        }
    }
    let unlisted: Vec<&String> = modelled
        .iter()
        .filter(|f| !honoured.contains(f.as_str()))
        .collect();
    let stale: Vec<&&str> = honoured.iter().filter(|f| !schema.contains(**f)).collect();
    let missing: Vec<&&str> = honoured
        .iter()
        .filter(|f| schema.contains(**f) && !modelled.contains(**f))
        .collect();
    if std::env::var_os("SHOAL_PRINT_FIELDS").is_some() {
        for f in &modelled {
            println!("{f}");
        }
    }
    assert!(
        unlisted.is_empty(),
        "accepted without a warning, but not listed as honoured ({}): {unlisted:#?}",
        unlisted.len()
    );
    assert!(
        stale.is_empty(),
        "listed as honoured, not in Kubernetes' schema: {stale:#?}"
    );
    assert!(
        missing.is_empty(),
        "listed as honoured, but warned about: {missing:#?}"
    );
    println!(
        "{} schema fields: {} honoured, {} reported",
        schema.len(),
        modelled.len(),
        schema.len() - modelled.len()
    );
}
