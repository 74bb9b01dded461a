//! NetworkPolicy, as Kubernetes validates it.

use super::Errors;
use crate::intstr::IntOrString;
use crate::objects::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use crate::policy::{Cidr, Protocol};
use crate::selector::{LabelSelector, Selector};

fn selector(e: &mut Errors, path: String, s: &LabelSelector) {
    if let Err(err) = Selector::from_label_selector(s) {
        e.add(path, err.to_string());
    }
}

fn peer(e: &mut Errors, path: String, p: &NetworkPolicyPeer) {
    let set = [
        p.pod_selector.is_some(),
        p.namespace_selector.is_some(),
        p.ip_block.is_some(),
    ];
    if !set.contains(&true) {
        e.add(
            &path,
            "must specify a podSelector, a namespaceSelector or an ipBlock",
        );
    }
    if p.ip_block.is_some() && (set[0] || set[1]) {
        e.add(
            &path,
            "an ipBlock may not be combined with a podSelector or namespaceSelector",
        );
    }
    if let Some(s) = &p.pod_selector {
        selector(e, format!("{path}.podSelector"), s);
    }
    if let Some(s) = &p.namespace_selector {
        selector(e, format!("{path}.namespaceSelector"), s);
    }
    let Some(block) = &p.ip_block else { return };
    let cidr = match block.cidr.parse::<Cidr>() {
        Ok(c) => c,
        Err(m) => return e.add(format!("{path}.ipBlock.cidr"), m),
    };
    for (i, ex) in block.except.iter().enumerate() {
        let at = format!("{path}.ipBlock.except[{i}]");
        match ex.parse::<Cidr>() {
            Err(m) => e.add(at, m),
            Ok(x) if !cidr.covers(&x) || x.prefix == cidr.prefix => {
                e.add(at, format!("must be a strict subset of {}", block.cidr))
            }
            Ok(_) => {}
        }
    }
}

fn port(e: &mut Errors, path: String, p: &NetworkPolicyPort) {
    if Protocol::parse(p.protocol.as_deref()).is_none() {
        e.one_of(
            &format!("{path}.protocol"),
            p.protocol.as_deref(),
            &["TCP", "UDP", "SCTP"],
        );
    }
    match (&p.port, p.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            if !(1..=65535).contains(n) {
                e.add(
                    format!("{path}.port"),
                    format!("must be between 1 and 65535, got {n}"),
                );
            }
            if let Some(end) = end {
                if end < *n || end > 65535 {
                    e.add(
                        format!("{path}.endPort"),
                        format!("must be between port {n} and 65535, got {end}"),
                    );
                }
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if name.len() > 15 {
                e.add(
                    format!("{path}.port"),
                    format!("a port name must be no more than 15 characters, got {name:?}"),
                );
            }
            e.check(format!("{path}.port"), super::check_dns1123_label(name));
            if end.is_some() {
                e.add(
                    format!("{path}.endPort"),
                    "may not be set when port is a named port",
                );
            }
        }
        (None, Some(_)) => e.add(format!("{path}.endPort"), "may not be set without port"),
        (None, None) => {}
    }
}

pub(super) fn policy(e: &mut Errors, p: &NetworkPolicy) {
    let s = &p.spec;
    selector(e, "spec.podSelector".into(), &s.pod_selector);
    for (i, t) in s.policy_types.iter().enumerate() {
        e.one_of(
            &format!("spec.policyTypes[{i}]"),
            Some(t),
            &["Ingress", "Egress"],
        );
    }
    if s.policy_types.len() > 2 {
        e.add(
            "spec.policyTypes",
            "may list Ingress and Egress at most once each",
        );
    }
    for (i, r) in s.ingress.iter().enumerate() {
        for (j, x) in r.from.iter().enumerate() {
            peer(e, format!("spec.ingress[{i}].from[{j}]"), x);
        }
        for (j, x) in r.ports.iter().enumerate() {
            port(e, format!("spec.ingress[{i}].ports[{j}]"), x);
        }
    }
    for (i, r) in s.egress.iter().enumerate() {
        for (j, x) in r.to.iter().enumerate() {
            peer(e, format!("spec.egress[{i}].to[{j}]"), x);
        }
        for (j, x) in r.ports.iter().enumerate() {
            port(e, format!("spec.egress[{i}].ports[{j}]"), x);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::object::Object;

    fn problems(spec: serde_json::Value) -> Vec<String> {
        let p = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "a"}, "spec": spec});
        let obj = Object::from_json(&serde_json::to_vec(&p).expect("json")).expect("decodes");
        super::super::validate(&obj)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_policy_is_checked_as_kubernetes_checks_it() {
        assert!(problems(serde_json::json!({"podSelector": {}})).is_empty());
        let bad = problems(serde_json::json!({
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
            "policyTypes": ["Ingress", "Sideways"],
            "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]},
                                       "podSelector": {}}],
                         "ports": [{"protocol": "ICMP", "port": 70000}, {"port": "http", "endPort": 90},
                                   {"endPort": 10}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.300/8"}}], "ports": [{"port": 80, "endPort": 79}]}],
        }));
        let said = bad.join("\n");
        for want in [
            "spec.podSelector",
            "spec.policyTypes[1]",
            "spec.ingress[0].from[0]: must specify a podSelector, a namespaceSelector or an ipBlock",
            "spec.ingress[0].from[1]: an ipBlock may not be combined",
            "spec.ingress[0].from[1].ipBlock.except[0]: must be a strict subset of 10.0.0.0/8",
            "spec.ingress[0].ports[0].protocol",
            "spec.ingress[0].ports[0].port: must be between 1 and 65535",
            "spec.ingress[0].ports[1].endPort: may not be set when port is a named port",
            "spec.ingress[0].ports[2].endPort: may not be set without port",
            "spec.egress[0].to[0].ipBlock.cidr",
            "spec.egress[0].ports[0].endPort: must be between port 80 and 65535, got 79",
        ] {
            assert!(said.contains(want), "{want:?} not in:\n{said}");
        }
    }
}
