//! Reading manifests: multi-document YAML or JSON (and `kind: List`), each document decoded into
//! its kind. Syntax errors carry line and column; schema errors carry the field path; fields
//! Shoal does not know are reported back as warnings rather than silently dropped.

use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::Object;
use serde::Deserialize;

/// One decoded document.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub object: Object,
    /// 1-based index of the document in its source.
    pub document: usize,
    /// Paths of fields present in the manifest that Shoal does not support.
    pub unknown_fields: Vec<String>,
}

/// Parses every document of `text`; `source_name` (a file name or `-`) prefixes errors.
pub fn parse_manifests(source_name: &str, text: &str) -> Result<Vec<Parsed>> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| Error::Syntax {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        decode_document(source_name, document, value, &mut out)?;
    }
    Ok(out)
}

fn decode_document(
    source_name: &str,
    document: usize,
    value: serde_yaml_ng::Value,
    out: &mut Vec<Parsed>,
) -> Result<()> {
    let schema = |what: String, message: String| Error::Schema {
        source_name: source_name.to_string(),
        document,
        what,
        message,
    };
    if !value.is_mapping() {
        return Err(schema(
            String::new(),
            "expected a mapping with apiVersion, kind and metadata".into(),
        ));
    }
    let kind_name = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let what = if name.is_empty() {
        format!(" ({kind_name})")
    } else {
        format!(" ({kind_name} {name})")
    };
    if kind_name.is_empty() {
        return Err(schema(what, "kind: required field is missing".into()));
    }
    if kind_name == "List" {
        let items = match value.get("items") {
            Some(serde_yaml_ng::Value::Sequence(items)) => items.clone(),
            _ => {
                return Err(schema(
                    what,
                    "items: a List needs a sequence of items".into(),
                ))
            }
        };
        for item in items {
            decode_document(source_name, document, item, out)?;
        }
        return Ok(());
    }
    let kind = Kind::from_manifest(kind_name).ok_or_else(|| {
        schema(
            what.clone(),
            format!(
                "kind: unknown kind {kind_name:?} (Shoal serves {})",
                Kind::ALL.map(|k| k.name()).join(", ")
            ),
        )
    })?;
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !kind.accepts_api_version(api_version) {
        return Err(schema(
            what,
            format!(
                "apiVersion: {kind} is served as {:?}, got {api_version:?}",
                kind.api_version()
            ),
        ));
    }
    let mut unknown_fields: Vec<String> = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    // serde_ignored writes `?` for each Option on the way; a user's path has no such step.
    let mut record = |path: serde_ignored::Path<'_>| {
        let path = path.to_string();
        let steps: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
        unknown_fields.push(steps.join("."))
    };
    let ignoring = serde_ignored::Deserializer::new(value, &mut record);
    let decoded = Object::deserialize_as(
        kind,
        serde_path_to_error::Deserializer::new(ignoring, &mut track),
    );
    let mut object = decoded.map_err(|e| schema(what, format!("{}: {e}", track.path())))?;
    unknown_fields.extend(unaccounted_resources(&mut object));
    out.push(Parsed {
        object,
        document,
        unknown_fields,
    });
    Ok(())
}

/// Resources a pod may name that Shoal neither schedules by nor enforces (`ephemeral-storage`,
/// `hugepages-<size>`), by path: reported as the fields it does not support are.
fn unaccounted_resources(object: &mut Object) -> Vec<String> {
    let prefix = match object.kind() {
        Kind::Pod => "spec",
        Kind::CronJob => "spec.jobTemplate.spec.template.spec",
        _ => "spec.template.spec",
    };
    let Some(spec) = object.pod_spec_mut() else {
        return Vec::new();
    };
    let lists = [
        ("initContainers", &spec.init_containers),
        ("containers", &spec.containers),
    ];
    let mut found = Vec::new();
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let r = &c.resources;
            for (which, map) in [("requests", &r.requests), ("limits", &r.limits)] {
                for name in map.keys() {
                    if name == "ephemeral-storage" || name.starts_with("hugepages-") {
                        found.push(format!("{prefix}.{list}.{i}.resources.{which}.{name}"));
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_json() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"cfg\", \"namespace\": \"shop\"}, \"data\": {\"a\": \"1\"}}\n";
        let parsed = parse_manifests("m.yaml", text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].object.kind(), Kind::Namespace);
        assert_eq!(parsed[1].object.kind(), Kind::ConfigMap);
        assert_eq!(parsed[1].object.namespace(), Some("shop"));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   bad: indentation\n";
        let err = parse_manifests("bad.yaml", text).unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml:"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn schema_errors_carry_the_field_path() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: three\n";
        let err = parse_manifests("d.yaml", text).unwrap_err().to_string();
        assert!(
            err.contains("document 1 (Deployment web): spec.replicas: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_and_wrong_api_version_are_named() {
        let err = parse_manifests("x", "apiVersion: v1\nkind: Widget\nmetadata: {name: a}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown kind \"Widget\""), "{err}");
        let err = parse_manifests(
            "x",
            "apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("apiVersion: Deployment is served as \"apps/v1\""),
            "{err}"
        );
    }

    #[test]
    fn unsupported_fields_are_reported_not_dropped_silently() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: zone, namespaceSelector: {}}]}}\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor}]\n  containers:\n  - name: c\n    image: x\n    stdin: true\n";
        let parsed = parse_manifests("p.yaml", text).unwrap();
        assert_eq!(
            parsed[0].unknown_fields,
            vec![
                "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.namespaceSelector".to_string(),
                "spec.topologySpreadConstraints.0.nodeTaintsPolicy".to_string(),
                "spec.containers.0.stdin".to_string(),
            ]
        );
    }

    /// Resources Shoal neither schedules by nor enforces are reported by path, as unsupported
    /// fields are; cpu, memory and extended resources are not.
    #[test]
    fn unaccounted_resources_are_reported() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n      - name: c\n        image: x\n        resources: {requests: {cpu: 10m, ephemeral-storage: 1Gi, example.com/dongle: 1}, limits: {hugepages-2Mi: 100Mi}}\n";
        let parsed = parse_manifests("d.yaml", text).unwrap();
        assert_eq!(
            parsed[0].unknown_fields,
            [
                "spec.template.spec.containers.0.resources.requests.ephemeral-storage",
                "spec.template.spec.containers.0.resources.limits.hugepages-2Mi",
            ]
        );
    }

    #[test]
    fn a_list_expands_into_its_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";
        let parsed = parse_manifests("l.yaml", text).unwrap();
        assert_eq!(
            parsed.iter().map(|p| p.object.name()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
