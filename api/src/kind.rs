//! The kinds Shoal serves: their names, short names, API groups and scope.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    ReplicaSet,
    Deployment,
    DaemonSet,
    Job,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    Event,
    PersistentVolumeClaim,
    PersistentVolume,
    StorageClass,
    CronJob,
    NetworkPolicy,
    AgentUpgrade,
}

struct KindInfo {
    kind: Kind,
    name: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    api_version: &'static str,
    namespaced: bool,
}

const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: Kind::Namespace,
        name: "Namespace",
        plural: "namespaces",
        short: &["ns"],
        api_version: "v1",
        namespaced: false,
    },
    KindInfo {
        kind: Kind::Node,
        name: "Node",
        plural: "nodes",
        short: &["no"],
        api_version: "v1",
        namespaced: false,
    },
    KindInfo {
        kind: Kind::Pod,
        name: "Pod",
        plural: "pods",
        short: &["po"],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::ReplicaSet,
        name: "ReplicaSet",
        plural: "replicasets",
        short: &["rs"],
        api_version: "apps/v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::Deployment,
        name: "Deployment",
        plural: "deployments",
        short: &["deploy"],
        api_version: "apps/v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::DaemonSet,
        name: "DaemonSet",
        plural: "daemonsets",
        short: &["ds"],
        api_version: "apps/v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::Job,
        name: "Job",
        plural: "jobs",
        short: &[],
        api_version: "batch/v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::Service,
        name: "Service",
        plural: "services",
        short: &["svc"],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::Endpoints,
        name: "Endpoints",
        plural: "endpoints",
        short: &["ep"],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::ConfigMap,
        name: "ConfigMap",
        plural: "configmaps",
        short: &["cm"],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::Secret,
        name: "Secret",
        plural: "secrets",
        short: &[],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::Event,
        name: "Event",
        plural: "events",
        short: &["ev"],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::PersistentVolumeClaim,
        name: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        short: &["pvc"],
        api_version: "v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::PersistentVolume,
        name: "PersistentVolume",
        plural: "persistentvolumes",
        short: &["pv"],
        api_version: "v1",
        namespaced: false,
    },
    KindInfo {
        kind: Kind::StorageClass,
        name: "StorageClass",
        plural: "storageclasses",
        short: &["sc"],
        api_version: "storage.k8s.io/v1",
        namespaced: false,
    },
    KindInfo {
        kind: Kind::CronJob,
        name: "CronJob",
        plural: "cronjobs",
        short: &["cj"],
        api_version: "batch/v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::NetworkPolicy,
        name: "NetworkPolicy",
        plural: "networkpolicies",
        short: &["netpol"],
        api_version: "networking.k8s.io/v1",
        namespaced: true,
    },
    KindInfo {
        kind: Kind::AgentUpgrade,
        name: "AgentUpgrade",
        plural: "agentupgrades",
        short: &["au"],
        api_version: "shoal.dev/v1alpha1",
        namespaced: false,
    },
];

impl Kind {
    pub const ALL: [Kind; 18] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::DaemonSet,
        Kind::Job,
        Kind::Service,
        Kind::Endpoints,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Event,
        Kind::PersistentVolumeClaim,
        Kind::PersistentVolume,
        Kind::StorageClass,
        Kind::CronJob,
        Kind::NetworkPolicy,
        Kind::AgentUpgrade,
    ];

    fn info(self) -> &'static KindInfo {
        // KINDS lists every variant; the lookup cannot miss.
        KINDS
            .iter()
            .find(|i| i.kind == self)
            .expect("every kind is listed")
    }

    /// `Deployment`
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// `deployments`, used in store keys and `kind/name` references.
    pub fn plural(self) -> &'static str {
        self.info().plural
    }

    /// `apps/v1`
    pub fn api_version(self) -> &'static str {
        self.info().api_version
    }

    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    /// `deploy`: what kubectl accepts for the kind besides its names.
    pub fn short_names(self) -> &'static [&'static str] {
        self.info().short
    }

    /// The API group: `apps`, or empty for the core group.
    pub fn group(self) -> &'static str {
        self.api_version()
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// The kind its plural names in an API path (`deployments` in group `apps`).
    pub fn from_resource(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }

    /// Looks a kind up by its manifest name (`Deployment`).
    pub fn from_manifest(kind: &str) -> Option<Kind> {
        KINDS.iter().find(|i| i.name == kind).map(|i| i.kind)
    }

    /// The API versions a manifest may name for this kind.
    pub fn accepts_api_version(self, v: &str) -> bool {
        v == self.api_version()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses what a user types on the command line: `pods`, `pod`, `po`, `Pod`, `deploy`, ...
impl FromStr for Kind {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        KINDS
            .iter()
            .find(|i| {
                i.name.eq_ignore_ascii_case(&lower)
                    || i.plural == lower
                    || i.short.contains(&lower.as_str())
                    // group-qualified forms such as deployments.apps
                    || lower
                        .split_once('.')
                        .is_some_and(|(k, _)| i.plural == k || i.name.eq_ignore_ascii_case(k))
            })
            .map(|i| i.kind)
            .ok_or_else(|| {
                crate::Error::UnknownKind(format!(
                    "the server doesn't have a resource type {s:?} (known: {})",
                    KINDS
                        .iter()
                        .map(|i| i.plural)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve() {
        for (s, k) in [
            ("po", Kind::Pod),
            ("pods", Kind::Pod),
            ("Pod", Kind::Pod),
            ("deploy", Kind::Deployment),
            ("deployments.apps", Kind::Deployment),
            ("rs", Kind::ReplicaSet),
            ("ds", Kind::DaemonSet),
            ("svc", Kind::Service),
            ("ns", Kind::Namespace),
            ("cm", Kind::ConfigMap),
            ("no", Kind::Node),
            ("job", Kind::Job),
            ("secret", Kind::Secret),
        ] {
            assert_eq!(s.parse::<Kind>().unwrap(), k, "{s}");
        }
        assert!("widgets".parse::<Kind>().is_err());
    }
}
