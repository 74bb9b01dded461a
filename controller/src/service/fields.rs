//! Field selectors, as far as Shoal answers them: `metadata.name`, `metadata.namespace`, and a
//! pod's `spec.nodeName`, each with `=` or `==`, joined by commas (`kubectl get pod web -w`
//! and `kubectl wait` select by `metadata.name`; a node follows its pods by `spec.nodeName`).
//! Any other field, or `!=`, is refused by name rather than ignored.

use super::bad_request;
use shoal_api::Object;
use shoal_transport::proto::WireError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Fields {
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// Only pods bound to this node (no object of another kind matches).
    pub node: Option<String>,
}

impl Fields {
    pub fn parse(text: &str) -> Result<Fields, WireError> {
        let mut fields = Fields::default();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if term.contains("!=") {
                return Err(bad_request(format!(
                    "field selector {term:?}: only = and == are supported"
                )));
            }
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| bad_request(format!("field selector {term:?}: not FIELD=VALUE")))?;
            let slot = match field.trim() {
                "metadata.name" => &mut fields.name,
                "metadata.namespace" => &mut fields.namespace,
                "spec.nodeName" => &mut fields.node,
                other => {
                    return Err(bad_request(format!(
                        "field selector {term:?}: {other} is not a supported field (metadata.name, \
                         metadata.namespace, spec.nodeName)"
                    )))
                }
            };
            if slot.is_some() {
                return Err(bad_request(format!(
                    "field selector {text:?}: {field} is given twice"
                )));
            }
            *slot = Some(value.trim().to_string());
        }
        Ok(fields)
    }

    pub fn matches(&self, obj: &Object) -> bool {
        let name = self.name.as_deref().is_none_or(|n| obj.name() == n);
        let namespace = self
            .namespace
            .as_deref()
            .is_none_or(|ns| obj.namespace() == Some(ns));
        let node = match (self.node.as_deref(), obj) {
            (None, _) => true,
            (Some(n), Object::Pod(p)) => p.spec.node_name.as_deref() == Some(n),
            (Some(_), _) => false,
        };
        name && namespace && node
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
            let fields = Fields::parse(text).unwrap();
            assert_eq!(fields.matches(&web), matches, "{text:?}");
        }
        let unbound = pod("web", "shop", None);
        assert!(!Fields::parse("spec.nodeName=pi-1")
            .unwrap()
            .matches(&unbound));
    }

    #[test]
    fn unsupported_selectors_are_refused_by_name() {
        for (text, named) in [
            (
                "status.phase=Running",
                "status.phase is not a supported field",
            ),
            ("metadata.name!=web", "only = and =="),
            ("metadata.name", "not FIELD=VALUE"),
            ("metadata.name=a,metadata.name=b", "given twice"),
        ] {
            let err = Fields::parse(text).unwrap_err();
            assert!(err.message.contains(named), "{text:?}: {}", err.message);
        }
    }
}
