//! A container's environment and command line, built as the kubelet builds them: the Service
//! variables of the pod's namespace first, then `envFrom` sources in order (with their
//! `prefix`; keys that are not variable names are skipped and reported), then `env`, each
//! later one replacing an earlier one of the same name. `$(VAR)` in `env` values refers to the
//! variables defined before it, and in `command` and `args` to all of them; `$$` is a literal
//! `$`, and a reference to an undefined variable is kept as written. A missing ConfigMap,
//! Secret or key is an error unless the reference is `optional`.
//!
//! Everything here is decided from values fetched beforehand ([`Sources`]), so it is tested
//! with tables, without a controller.

use shoal_api::{Container, Pod, ResourceFieldSelector};
use std::collections::{BTreeMap, HashMap};

/// The ConfigMaps and Secrets a container refers to, as fetched: `None` where the controller
/// (or the node's local state) has no such object. Secret values are decoded.
#[derive(Debug, Default)]
pub struct Sources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

/// What the pod knows of where it runs, for `fieldRef` and `resourceFieldRef`.
#[derive(Debug, Default)]
pub struct Placement {
    pub node: String,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    /// The node's allocatable CPU (millicores) and memory (bytes): an unset limit's value.
    pub allocatable: (i128, i128),
}

/// The ConfigMaps and Secrets `c` refers to (env, envFrom), by name, for fetching.
pub fn references(c: &Container) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    for f in &c.env_from {
        if let Some(r) = &f.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &f.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for e in c.env.iter().filter_map(|e| e.value_from.as_ref()) {
        if let Some(r) = &e.config_map_key_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &e.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// A container's environment, and the `envFrom` keys skipped for not being variable names.
#[derive(Debug, Default, PartialEq)]
pub struct Env {
    pub vars: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

/// Kubernetes' rule for an environment variable's name (C identifiers, dots and dashes).
fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn set(vars: &mut Vec<(String, String)>, name: String, value: String) {
    match vars.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    }
}

/// `$(VAR)` replaced by the value `lookup` gives, `$$` by `$`; anything else as written.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A container's request or limit (`resourceFieldRef`) in units of its divisor, rounded up, as
/// the kubelet gives it: an unset limit is the node's allocatable amount, an unset request
/// the limit if one is set, else 0. `own` is the container asking (env), when the reference
/// names none.
pub fn resource_field(
    pod: &Pod,
    own: Option<&Container>,
    r: &ResourceFieldSelector,
    at: &Placement,
) -> Result<String, String> {
    let c = match &r.container_name {
        Some(name) => pod
            .spec
            .init_containers
            .iter()
            .chain(&pod.spec.containers)
            .find(|c| &c.name == name)
            .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?,
        None => own.ok_or("resourceFieldRef: containerName is required here")?,
    };
    let milli =
        |m: &BTreeMap<String, shoal_api::Quantity>, k: &str| m.get(k).map(|q| q.milli_value());
    let (res, lim) = (&c.resources.requests, &c.resources.limits);
    let value = match r.resource.as_str() {
        "limits.cpu" => milli(lim, "cpu").unwrap_or(at.allocatable.0),
        "limits.memory" => milli(lim, "memory").unwrap_or(at.allocatable.1 * 1000),
        "requests.cpu" => milli(res, "cpu").or(milli(lim, "cpu")).unwrap_or(0),
        "requests.memory" => milli(res, "memory").or(milli(lim, "memory")).unwrap_or(0),
        other => return Err(format!("resourceFieldRef: {other:?} is not supported")),
    };
    let divisor = r.divisor.as_ref().map_or(1000, |d| d.milli_value());
    if divisor <= 0 {
        return Err("resourceFieldRef: the divisor must be more than 0".into());
    }
    let units = value / divisor + i128::from(value % divisor != 0);
    Ok(units.to_string())
}

/// A field of the pod for a downwardAPI volume file: its name, namespace, uid, one label or
/// annotation, or all of them as `key="value"` lines (sorted by key, no newline after the
/// last), as the kubelet writes them. The pod's addresses and node are env-only, as in Kubernetes.
pub fn volume_field(pod: &Pod, path: &str) -> Result<String, String> {
    let lines = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match path {
        "metadata.labels" => Ok(lines(&pod.metadata.labels)),
        "metadata.annotations" => Ok(lines(&pod.metadata.annotations)),
        p if p.starts_with("metadata.") => field(pod, &Placement::default(), p),
        p => Err(format!(
            "fieldRef {p:?} is not supported in a downwardAPI volume"
        )),
    }
}

fn field(pod: &Pod, at: &Placement, path: &str) -> Result<String, String> {
    let meta_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    let m = &pod.metadata;
    Ok(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace_or_default().to_string(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => at.node.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => at.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.clone().unwrap_or_default(),
        _ => {
            if let Some(k) = meta_key("metadata.labels['") {
                m.labels.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = meta_key("metadata.annotations['") {
                m.annotations.get(&k).cloned().unwrap_or_default()
            } else {
                return Err(format!("fieldRef {path:?} is not supported"));
            }
        }
    })
}

/// The environment of container `c` of `pod`, from `services` (the namespace's Service
/// variables) and the fetched `sources`; an error names the variable and what is missing.
pub fn container_env(
    c: &Container,
    pod: &Pod,
    at: &Placement,
    services: Vec<(String, String)>,
    sources: &Sources,
) -> Result<Env, String> {
    let mut env = Env {
        vars: services,
        skipped: Vec::new(),
    };
    for f in &c.env_from {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (what, name, optional, found) = match (&f.config_map_ref, &f.secret_ref) {
            (Some(r), _) => (
                "configmap",
                &r.name,
                r.optional,
                sources.config_maps.get(&r.name).cloned().flatten(),
            ),
            (None, Some(r)) => (
                "secret",
                &r.name,
                r.optional,
                sources.secrets.get(&r.name).cloned().flatten(),
            ),
            (None, None) => continue,
        };
        let Some(data) = found else {
            if optional == Some(true) {
                continue;
            }
            return Err(format!("envFrom: {what} {name:?} not found"));
        };
        for (k, v) in data {
            let var = format!("{prefix}{k}");
            if is_env_name(&var) {
                set(&mut env.vars, var, v);
            } else {
                env.skipped.push(var);
            }
        }
    }
    for e in &c.env {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => {
                let defined = env.vars.clone();
                expand(v, &|n| {
                    defined.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
                })
            }
            (None, Some(from)) => {
                let keyed = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), _) => Some(("configmap", r, sources.config_maps.get(&r.name))),
                    (None, Some(r)) => Some(("secret", r, sources.secrets.get(&r.name))),
                    (None, None) => None,
                };
                match (keyed, &from.field_ref, &from.resource_field_ref) {
                    (Some((what, r, found)), _, _) => {
                        let value = found
                            .cloned()
                            .flatten()
                            .ok_or_else(|| format!("{what} {:?} not found", r.name))
                            .and_then(|d| {
                                d.get(&r.key).cloned().ok_or_else(|| {
                                    format!("key {:?} not found in {what} {:?}", r.key, r.name)
                                })
                            });
                        match value {
                            Ok(v) => v,
                            Err(_) if r.optional == Some(true) => continue,
                            Err(why) => return Err(format!("env {}: {why}", e.name)),
                        }
                    }
                    (None, Some(f), _) => field(pod, at, &f.field_path)
                        .map_err(|why| format!("env {}: {why}", e.name))?,
                    (None, None, Some(r)) => resource_field(pod, Some(c), r, at)
                        .map_err(|why| format!("env {}: {why}", e.name))?,
                    (None, None, None) => String::new(),
                }
            }
            (None, None) => String::new(),
        };
        set(&mut env.vars, e.name.clone(), value);
    }
    Ok(env)
}

/// `command` and `args` with `$(VAR)` expanded from the container's environment.
pub fn command_line(c: &Container, env: &Env) -> (Vec<String>, Vec<String>) {
    let lookup = |n: &str| {
        env.vars
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let all = |v: &[String]| v.iter().map(|s| expand(s, &lookup)).collect();
    (all(&c.command), all(&c.args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        let full = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns, uid: u-1, labels: {{app: web}}, annotations: {{team: edge}}}}\nspec:\n  containers:\n  - name: c\n    image: x\n{yaml}"
        );
        serde_yaml_ng::from_str(&full).expect("pod")
    }

    fn sources() -> Sources {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Sources {
            config_maps: [
                (
                    "cfg".to_string(),
                    map(&[("A", "1"), ("B", "2"), ("bad key", "x")]),
                ),
                ("gone".to_string(), None),
            ]
            .into(),
            secrets: [("sec".to_string(), map(&[("PASSWORD", "hunter2")]))].into(),
        }
    }

    fn env_of(yaml: &str) -> Result<Env, String> {
        let p = pod(yaml);
        let at = Placement {
            node: "n1".into(),
            pod_ip: Some("10.42.0.7".into()),
            host_ip: Some("192.168.1.2".into()),
            allocatable: (4000, 8 << 30),
        };
        let svc = vec![("WEB_SERVICE_HOST".to_string(), "10.43.0.9".to_string())];
        container_env(&p.spec.containers[0], &p, &at, svc, &sources())
    }

    fn vars(e: &Env) -> Vec<(&str, &str)> {
        e.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn env_from_sources_with_prefixes_and_env_on_top() {
        let e = env_of(
            "    envFrom:\n    - configMapRef: {name: cfg}\n    - prefix: S_\n      secretRef: {name: sec}\n    env:\n    - {name: B, value: env-wins}\n",
        )
        .unwrap();
        assert_eq!(
            vars(&e),
            [
                ("WEB_SERVICE_HOST", "10.43.0.9"),
                ("A", "1"),
                ("B", "env-wins"),
                ("S_PASSWORD", "hunter2"),
            ]
        );
        assert_eq!(e.skipped, ["bad key"]);
    }

    #[test]
    fn missing_sources_fail_unless_optional() {
        let cases = [
            ("    envFrom: [{configMapRef: {name: gone}}]\n", Some("configmap \"gone\" not found")),
            ("    envFrom: [{configMapRef: {name: gone, optional: true}}]\n", None),
            (
                "    env: [{name: X, valueFrom: {secretKeyRef: {name: sec, key: NOPE}}}]\n",
                Some("env X: key \"NOPE\" not found in secret \"sec\""),
            ),
            (
                "    env: [{name: X, valueFrom: {secretKeyRef: {name: sec, key: NOPE, optional: true}}}]\n",
                None,
            ),
            (
                "    env: [{name: X, valueFrom: {configMapKeyRef: {name: nowhere, key: A, optional: true}}}]\n",
                None,
            ),
        ];
        for (yaml, want) in cases {
            match (env_of(yaml), want) {
                (Ok(e), None) => assert!(!e.vars.iter().any(|(k, _)| k == "X"), "{yaml}"),
                (Err(got), Some(w)) => assert!(got.contains(w), "{yaml}: {got}"),
                (got, want) => panic!("{yaml}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn field_refs_name_where_the_pod_runs() {
        let e = env_of(
            "    env:\n    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n    - {name: HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n    - {name: APP, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}\n    - {name: TEAM, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['team']\"}}}\n    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}\n",
        )
        .unwrap();
        let got = vars(&e);
        for want in [
            ("IP", "10.42.0.7"),
            ("HOST", "192.168.1.2"),
            ("NODE", "n1"),
            ("APP", "web"),
            ("TEAM", "edge"),
            ("NS", "ns"),
        ] {
            assert!(got.contains(&want), "{want:?} in {got:?}");
        }
        let err = env_of("    env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.nope}}}]\n");
        assert!(err
            .unwrap_err()
            .contains("fieldRef \"spec.nope\" is not supported"));
    }

    #[test]
    fn resource_field_refs_give_requests_and_limits_in_divisor_units_rounded_up() {
        let p = pod("    resources: {requests: {cpu: 250m}, limits: {memory: 100Mi}}\n");
        let at = Placement {
            allocatable: (4000, 8 << 30),
            ..Default::default()
        };
        let of = |resource: &str, divisor: Option<&str>| {
            let r = ResourceFieldSelector {
                container_name: None,
                resource: resource.into(),
                divisor: divisor.map(|d| d.parse().unwrap()),
            };
            resource_field(&p, Some(&p.spec.containers[0]), &r, &at)
        };
        let cases = [
            ("requests.cpu", None, "1"),
            ("requests.cpu", Some("1m"), "250"),
            ("limits.cpu", None, "4"),
            ("limits.cpu", Some("1m"), "4000"),
            ("limits.memory", Some("1Mi"), "100"),
            ("requests.memory", Some("1Mi"), "100"),
            ("limits.memory", Some("1Gi"), "1"),
        ];
        for (resource, divisor, want) in cases {
            assert_eq!(
                of(resource, divisor).as_deref(),
                Ok(want),
                "{resource} {divisor:?}"
            );
        }
        assert!(of("limits.gpu", None)
            .unwrap_err()
            .contains("not supported"));
        let r = ResourceFieldSelector {
            container_name: Some("other".into()),
            resource: "limits.cpu".into(),
            divisor: None,
        };
        assert!(resource_field(&p, None, &r, &at)
            .unwrap_err()
            .contains("no container"));
    }

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let cases = [
            ("$(A)", "1"),
            ("x-$(A)-$(B)", "x-1-2"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$1"),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("$(A", "$(A"),
            ("cost: $5", "cost: $5"),
            ("", ""),
        ];
        let lookup = |n: &str| match n {
            "A" => Some("1".to_string()),
            "B" => Some("2".to_string()),
            _ => None,
        };
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "{input}");
        }
        // In env, only what was defined before; in the command line, everything.
        let e = env_of(
            "    command: [sh, -c, \"echo $(LATE) $(EARLY)\"]\n    args: [\"$(A)$$\"]\n    envFrom: [{configMapRef: {name: cfg}}]\n    env:\n    - {name: EARLY, value: \"$(LATE)-$(A)\"}\n    - {name: LATE, value: late}\n",
        )
        .unwrap();
        assert!(vars(&e).contains(&("EARLY", "$(LATE)-1")));
        let p = pod("    command: [sh, -c, \"echo $(LATE) $(EARLY)\"]\n    args: [\"$(A)$$\"]\n");
        let (command, args) = command_line(&p.spec.containers[0], &e);
        assert_eq!(command, ["sh", "-c", "echo late $(LATE)-1"]);
        assert_eq!(args, ["1$"]);
    }
}
