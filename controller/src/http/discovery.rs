//! Discovery, as kubectl reads it before anything else: the server's version, the API groups
//! and their resources (verbs, short names, categories), and OpenAPI v3 documents that say
//! which operations take `fieldValidation` (so kubectl validates on the server).

use super::path::group_version;
use serde_json::{json, Value};
use shoal_api::Kind;

/// The Kubernetes release whose API Shoal models; kubectl warns when it is more than one
/// minor version away from its own.
pub const KUBERNETES_MINOR: u32 = 32;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// What `kubectl get all` lists, as in Kubernetes.
fn categories(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Pod
        | Kind::Service
        | Kind::Deployment
        | Kind::ReplicaSet
        | Kind::DaemonSet
        | Kind::Job
        | Kind::CronJob => vec!["all"],
        _ => vec![],
    }
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR.to_string(),
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+shoal-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

/// `/api`
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = Kind::ALL
        .iter()
        .map(|k| k.group())
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn group_json(group: &str) -> Value {
    let version = Kind::ALL
        .iter()
        .find(|k| k.group() == group)
        .map(|k| group_version(*k).1)
        .unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`
pub fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_json).collect::<Vec<_>>(),
    })
}

/// `/apis/apps`
pub fn group(group: &str) -> Value {
    let mut g = group_json(group);
    if let Some(m) = g.as_object_mut() {
        m.insert("kind".into(), "APIGroup".into());
        m.insert("apiVersion".into(), "v1".into());
    }
    g
}

fn kinds_in<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = Kind> + 'a {
    Kind::ALL
        .into_iter()
        .filter(move |k| group_version(*k) == (group, version))
}

fn group_version_name(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `/api/v1`, `/apis/apps/v1`: each kind with its verbs.
pub fn resources(group: &str, version: &str) -> Value {
    let mut resources: Vec<Value> = kinds_in(group, version)
        .map(|k| {
            json!({
                "name": k.plural(),
                "singularName": k.name().to_ascii_lowercase(),
                "namespaced": k.namespaced(),
                "kind": k.name(),
                "verbs": VERBS,
                "shortNames": k.short_names(),
                "categories": categories(k),
            })
        })
        .collect();
    for kind in
        kinds_in(group, version).filter(|k| matches!(k, Kind::Deployment | Kind::ReplicaSet))
    {
        resources.push(json!({
            "name": format!("{}/scale", kind.plural()),
            "singularName": "",
            "namespaced": true,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        }));
    }
    for kind in kinds_in(group, version).filter(|k| super::objects::has_status(*k)) {
        resources.push(json!({
            "name": format!("{}/status", kind.plural()),
            "singularName": "",
            "namespaced": kind.namespaced(),
            "kind": kind.name(),
            "verbs": ["get", "patch", "update"],
        }));
    }
    if group.is_empty() {
        for (name, kind, verbs) in [
            ("pods/log", "Pod", &["get"][..]),
            ("pods/attach", "PodAttachOptions", &["create", "get"]),
            ("pods/exec", "PodExecOptions", &["create", "get"]),
            (
                "pods/portforward",
                "PodPortForwardOptions",
                &["create", "get"],
            ),
        ] {
            resources.push(json!({
                "name": name,
                "singularName": "",
                "namespaced": true,
                "kind": kind,
                "verbs": verbs,
            }));
        }
        resources.push(json!({
            "name": "pods/eviction",
            "singularName": "",
            "namespaced": true,
            "group": "policy",
            "version": "v1",
            "kind": "Eviction",
            "verbs": ["create"],
        }));
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version_name(group, version),
        "resources": resources,
    })
}

/// `/openapi/v3`: where each group version's document is.
pub fn open_api_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = Kind::ALL.iter().map(|k| group_version(*k)).collect();
    gvs.sort_unstable();
    gvs.dedup();
    for (group, version) in gvs {
        let at = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let url = format!(
            "/openapi/v3/{at}?hash={}",
            env!("CARGO_PKG_VERSION").replace('.', "")
        );
        paths.insert(at, json!({"serverRelativeURL": url}));
    }
    json!({ "paths": paths })
}

fn query(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

/// One group version's operations: for each kind, its collection and item paths with the
/// query parameters the server takes. kubectl looks for `fieldValidation` on the PATCH of a
/// kind to know the server validates (its `--validate=strict`, the default).
pub fn open_api(group: &str, version: &str) -> Value {
    let params = [
        query(
            "dryRun",
            "When present, nothing is persisted. Valid value: All.",
        ),
        query(
            "fieldValidation",
            "How fields the server does not support are treated: Ignore, Warn or Strict.",
        ),
        query("fieldManager", "The name of the actor making the change."),
    ];
    let mut paths = serde_json::Map::new();
    for kind in kinds_in(group, version) {
        let gvk = json!({"group": group, "version": version, "kind": kind.name()});
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let scope = if kind.namespaced() {
            format!("{base}/namespaces/{{namespace}}/{}", kind.plural())
        } else {
            format!("{base}/{}", kind.plural())
        };
        let op = |id: &str| {
            json!({
                "operationId": format!("{id}{}", kind.name()),
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(scope.clone(), json!({"post": op("create")}));
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({"put": op("replace"), "patch": op("patch")}),
        );
    }
    let mut schemas = serde_json::Map::new();
    for kind in kinds_in(group, version) {
        let Some(schema) = honoured_schemas().get(kind.name()) else {
            continue;
        };
        let mut schema = schema.clone();
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": group, "version": version, "kind": kind.name()}]);
        let package = if group.is_empty() { "core" } else { group };
        schemas.insert(
            format!("io.k8s.api.{package}.{version}.{}", kind.name()),
            schema,
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Shoal", "version": format!("v1.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The schema of each kind as far as Shoal honours it, with Kubernetes' descriptions
/// (`tests/data/k8s_schemas.py` writes the file), for `kubectl explain`. Read once.
fn honoured_schemas() -> &'static serde_json::Map<String, Value> {
    static SCHEMAS: std::sync::OnceLock<serde_json::Map<String, Value>> =
        std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let compressed: &[u8] = include_bytes!("schemas.json.gz");
        let mut text = Vec::new();
        let read =
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(compressed), &mut text);
        match read.ok().and_then(|_| serde_json::from_slice(&text).ok()) {
            Some(Value::Object(m)) => m,
            _ => {
                tracing::error!("the OpenAPI schemas built into this binary do not decode");
                serde_json::Map::new()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_discoverable() {
        let core = resources("", "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods") && names.contains(&"nodes"),
            "{names:?}"
        );
        let apps = resources("apps", "v1");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let deploy = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "Deployment")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        let list = group_list();
        let groups: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            groups,
            [
                "apps",
                "batch",
                "networking.k8s.io",
                "shoal.dev",
                "storage.k8s.io"
            ]
        );
    }

    #[test]
    fn openapi_describes_the_honoured_fields_of_each_kind() {
        let doc = open_api("apps", "v1");
        let d = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let replicas = &d["properties"]["spec"]["properties"]["replicas"];
        assert_eq!(replicas["type"], "integer");
        assert!(replicas["description"]
            .as_str()
            .is_some_and(|t| t.contains("desired pods")));
        let container = &d["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
            ["properties"]["containers"]["items"];
        assert_eq!(container["properties"]["image"]["type"], "string");
        let core = open_api("", "v1");
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.Pod"].is_object());
    }

    #[test]
    fn openapi_names_field_validation_on_each_patch() {
        let doc = open_api("apps", "v1");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        let root = open_api_root();
        assert!(root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
    }
}
