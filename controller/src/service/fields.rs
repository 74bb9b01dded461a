//! Field selectors, over the fields Kubernetes serves them for: `metadata.name` and
//! `metadata.namespace` of every kind, a pod's `spec.nodeName`, `status.phase` and
//! `status.podIP`, an event's `involvedObject.*`, `reason`, `type` and `source`, a Secret's
//! `type`, a node's `spec.unschedulable`, a namespace's `status.phase`; each with `=`, `==` or
//! `!=`, joined by commas. Any other field is refused by name rather than ignored.

use super::bad_request;
use shoal_api::{Kind, Object};
use shoal_transport::proto::WireError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Fields {
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    field: String,
    value: String,
    equal: bool,
}

const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];

/// The fields a kind may be selected by besides its name and namespace.
fn fields_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => &[
            "spec.nodeName",
            "status.phase",
            "status.podIP",
            "spec.restartPolicy",
        ],
        Kind::Event => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "reason",
            "type",
            "source",
        ],
        Kind::Secret => &["type"],
        Kind::Node => &["spec.unschedulable"],
        Kind::Namespace => &["status.phase"],
        _ => &[],
    }
}

/// The value of a selectable field of `obj` ("" when unset, as Kubernetes compares it).
fn value_of(obj: &Object, field: &str) -> String {
    let s = |v: Option<&String>| v.cloned().unwrap_or_default();
    match (obj, field) {
        (_, "metadata.name") => obj.name().to_string(),
        (_, "metadata.namespace") => obj.namespace().unwrap_or("").to_string(),
        (Object::Pod(p), "spec.nodeName") => s(p.spec.node_name.as_ref()),
        (Object::Pod(p), "status.phase") => s(p.status.as_ref().and_then(|st| st.phase.as_ref())),
        (Object::Pod(p), "status.podIP") => s(p.status.as_ref().and_then(|st| st.pod_ip.as_ref())),
        (Object::Pod(p), "spec.restartPolicy") => s(p.spec.restart_policy.as_ref()),
        (Object::Event(e), f) => {
            let o = &e.involved_object;
            match f {
                "involvedObject.kind" => s(o.kind.as_ref()),
                "involvedObject.namespace" => s(o.namespace.as_ref()),
                "involvedObject.name" => s(o.name.as_ref()),
                "involvedObject.uid" => s(o.uid.as_ref()),
                "involvedObject.apiVersion" => s(o.api_version.as_ref()),
                "reason" => s(e.reason.as_ref()),
                "type" => s(e.type_.as_ref()),
                "source" => s(e.source.as_ref().and_then(|src| src.component.as_ref())),
                _ => String::new(),
            }
        }
        (Object::Secret(sec), "type") => s(sec.type_.as_ref()),
        (Object::Node(n), "spec.unschedulable") => n.spec.unschedulable.to_string(),
        (Object::Namespace(n), "status.phase") => {
            s(n.status.as_ref().and_then(|st| st.phase.as_ref()))
        }
        _ => String::new(),
    }
}

impl Fields {
    /// Parses `text` for objects of `kind`; a field the kind is not selectable by is refused.
    pub fn parse(text: &str, kind: Kind) -> Result<Fields, WireError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, true)
            } else {
                return Err(bad_request(format!(
                    "field selector {term:?}: not FIELD=VALUE"
                )));
            };
            let field = field.trim();
            if !COMMON.contains(&field) && !fields_of(kind).contains(&field) {
                let known: Vec<&str> = COMMON.iter().chain(fields_of(kind)).copied().collect();
                return Err(bad_request(format!(
                    "field selector {term:?}: {field} is not a supported field selector for {} ({})",
                    kind.plural(),
                    known.join(", ")
                )));
            }
            terms.push(Term {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(Fields { terms })
    }

    /// The node a selector pins pods to (`spec.nodeName=N`), as a node's own watch says.
    pub fn node(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "spec.nodeName" && t.equal)
            .map(|t| t.value.as_str())
    }

    /// The name an equality term pins the selection to, if one does.
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "metadata.name" && t.equal)
            .map(|t| t.value.as_str())
    }

    pub fn matches(&self, obj: &Object) -> bool {
        self.terms
            .iter()
            .all(|t| (value_of(obj, &t.field) == t.value) == t.equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, namespace: &str, node: Option<&str>) -> Object {
        let mut p = shoal_api::Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some(namespace.into());
        p.spec.node_name = node.map(Into::into);
        Object::Pod(p)
    }

    #[test]
    fn selectors_parse_and_match_as_kubernetes_does() {
        let web = pod("web", "shop", Some("pi-1"));
        let cases: [(&str, bool); 9] = [
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name==web", true),
            ("metadata.name=api", false),
            ("metadata.namespace=shop", true),
            ("metadata.namespace=default", false),
            ("spec.nodeName=pi-1", true),
            ("spec.nodeName=pi-2", false),
            (" metadata.name=web , spec.nodeName==pi-1 ", true),
        ];
        for (text, matches) in cases {
            let fields = Fields::parse(text, Kind::Pod).unwrap();
            assert_eq!(fields.matches(&web), matches, "{text:?}");
        }
        let unbound = pod("web", "shop", None);
        assert!(!Fields::parse("spec.nodeName=pi-1", Kind::Pod)
            .unwrap()
            .matches(&unbound));
        assert!(Fields::parse("spec.nodeName!=pi-1", Kind::Pod)
            .unwrap()
            .matches(&unbound));
        assert!(Fields::parse("status.phase!=Running", Kind::Pod)
            .unwrap()
            .matches(&unbound));
    }

    #[test]
    fn unsupported_selectors_are_refused_by_name() {
        for (text, named) in [
            (
                "spec.replicas=3",
                "spec.replicas is not a supported field selector for pods",
            ),
            ("metadata.name", "not FIELD=VALUE"),
        ] {
            let err = Fields::parse(text, Kind::Pod).unwrap_err();
            assert!(err.message.contains(named), "{text:?}: {}", err.message);
        }
    }
}
