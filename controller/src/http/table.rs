//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io` answered with the
//! columns `shoal get` shows (the `-o wide` ones at priority 1, which kubectl shows only with
//! `-o wide`), so `kubectl get` looks as it does against Kubernetes.

use serde_json::{json, Value};
use shoal_api::{Kind, Object};

/// Whether the client asked for a Table (kubectl's `get` always does).
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn row_object(obj: &Object, include: Option<&str>) -> Value {
    match include {
        Some("None") => Value::Null,
        Some("Object") => obj
            .to_json()
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.metadata(),
        }),
    }
}

/// The Table of `objects` of `kind`, at store revision `revision`.
pub fn table(kind: Kind, objects: &[Object], revision: u64, include: Option<&str>) -> Value {
    let now = chrono::Utc::now();
    let narrow = shoal_api::table::columns(kind, false, false).len();
    let columns: Vec<Value> = shoal_api::table::columns(kind, true, false)
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({
                "name": name,
                "type": "string",
                "format": if *name == "NAME" { "name" } else { "" },
                "description": "",
                "priority": if i < narrow { 0 } else { 1 },
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({
                "cells": shoal_api::table::row(o, now, true, false),
                "object": row_object(o, include),
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_columns_have_priority_one() {
        let pod: Object = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap();
        let t = table(Kind::Pod, &[pod], 7, None);
        let cols = t["columnDefinitions"].as_array().unwrap();
        let node = cols.iter().find(|c| c["name"] == "NODE").unwrap();
        assert_eq!(node["priority"], 1);
        assert_eq!(cols[0]["priority"], 0);
        let row = &t["rows"][0];
        assert_eq!(row["cells"][0], "p");
        assert_eq!(row["cells"].as_array().unwrap().len(), cols.len());
        assert_eq!(row["object"]["metadata"]["namespace"], "default");
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }
}
