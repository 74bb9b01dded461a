//! Where a request goes, from its path alone: the Kubernetes API's URL layout
//! (`/apis/apps/v1/namespaces/shop/deployments/web/scale`), discovery, OpenAPI and health.

use shoal_api::Kind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/apps`
    Group(String),
    /// `/api/v1`, `/apis/apps/v1`
    Resources {
        group: String,
        version: String,
    },
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/apis/apps/v1`
    OpenApi {
        group: String,
        version: String,
    },
    Objects(Target),
}

/// Objects of one kind: one by name, or a collection (of a namespace, or of all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    /// `None`: a cluster-scoped kind, or a namespaced kind across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status`, `scale`, `log`, ...
    pub subresource: Option<String>,
}

/// The group and version a kind is served at.
pub fn group_version(kind: Kind) -> (&'static str, &'static str) {
    match kind.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", kind.api_version()),
    }
}

/// The route of `path`, or `None`: nothing is served there (404).
pub fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "livez" | "readyz"] => Some(Route::Health),
        ["api"] => Some(Route::CoreVersions),
        ["apis"] => Some(Route::Groups),
        ["apis", group] => served_group(group).then(|| Route::Group(group.to_string())),
        ["openapi", "v3"] => Some(Route::OpenApiRoot),
        ["openapi", "v3", "api", version] => open_api("", version),
        ["openapi", "v3", "apis", group, version] => open_api(group, version),
        ["api", version, rest @ ..] => in_group("", version, rest),
        ["apis", group, version, rest @ ..] => in_group(group, version, rest),
        _ => None,
    }
}

fn served_group(group: &str) -> bool {
    Kind::ALL.iter().any(|k| k.group() == group)
}

fn served(group: &str, version: &str) -> bool {
    Kind::ALL
        .iter()
        .any(|k| group_version(*k) == (group, version))
}

fn open_api(group: &str, version: &str) -> Option<Route> {
    served(group, version).then(|| Route::OpenApi {
        group: group.to_string(),
        version: version.to_string(),
    })
}

fn in_group(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    if !served(group, version) {
        return None;
    }
    let kind_of = |plural: &str| Kind::from_resource(group, plural);
    let owned = |s: &&str| s.to_string();
    let (kind, namespace, name, subresource) = match rest {
        [] => {
            return Some(Route::Resources {
                group: group.to_string(),
                version: version.to_string(),
            })
        }
        // `/api/v1/namespaces/shop/pods/...`: objects in a namespace.
        ["namespaces", ns, plural, tail @ ..]
            if kind_of(plural).is_some_and(Kind::namespaced) && tail.len() <= 2 =>
        {
            (kind_of(plural)?, Some(ns), tail.first(), tail.get(1))
        }
        // `/api/v1/namespaces/shop[/status]`: the Namespace object itself.
        ["namespaces", name, tail @ ..] if group.is_empty() && tail.len() <= 1 => {
            (Kind::Namespace, None, Some(name), tail.first())
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let kind = kind_of(plural)?;
            // A namespaced kind without a namespace is only ever listed or watched.
            if kind.namespaced() && !tail.is_empty() {
                return None;
            }
            (kind, None, tail.first(), tail.get(1))
        }
        _ => return None,
    };
    if name.is_some_and(|n| n.is_empty()) || namespace.is_some_and(|n| n.is_empty()) {
        return None;
    }
    Some(Route::Objects(Target {
        kind,
        namespace: namespace.map(owned),
        name: name.map(owned),
        subresource: subresource.map(owned),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path) {
            Some(Route::Objects(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn object_paths() {
        let t = target("/apis/apps/v1/namespaces/shop/deployments/web/scale");
        assert_eq!(t.kind, Kind::Deployment);
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("scale"));

        let all = target("/api/v1/pods");
        assert_eq!((all.kind, all.namespace, all.name), (Kind::Pod, None, None));

        let node = target("/api/v1/nodes/pi-1");
        assert_eq!(node.name.as_deref(), Some("pi-1"));

        let ns = target("/api/v1/namespaces/shop");
        assert_eq!(
            (ns.kind, ns.name.as_deref()),
            (Kind::Namespace, Some("shop"))
        );
        let list = target("/api/v1/namespaces");
        assert_eq!((list.kind, list.name), (Kind::Namespace, None));
        let logs = target("/api/v1/namespaces/default/pods/p/log");
        assert_eq!(logs.subresource.as_deref(), Some("log"));
    }

    #[test]
    fn what_is_not_served_is_not_found() {
        for path in [
            "/apis/apps/v2/deployments",
            "/apis/apps/v1/pods",
            "/api/v1/widgets",
            "/api/v1/pods/p",
            "/apis/batch/v1/namespaces/x/jobs/j/status/more",
            "/apis/unknown",
            "/api/v1/namespaces//pods",
            "/nothing",
        ] {
            assert!(
                !matches!(route(path), Some(Route::Objects(_))),
                "{path}: {:?}",
                route(path)
            );
        }
        assert_eq!(route("/apis/apps"), Some(Route::Group("apps".into())));
        assert_eq!(
            route("/apis/batch/v1"),
            Some(Route::Resources {
                group: "batch".into(),
                version: "v1".into()
            })
        );
        assert_eq!(route("/openapi/v3/apis/apps/v2"), None);
    }
}
