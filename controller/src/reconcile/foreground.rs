//! Foreground cascade: what to do for an owner marked for deletion (deletionTimestamp and the
//! `foregroundDeletion` finalizer), given every object that might depend on it. A pure
//! function; the loop in `mod.rs` writes the plan.

use shoal_api::{Kind, Object};

#[derive(Debug, Default, PartialEq)]
pub struct Plan<'a> {
    /// Nothing depends on the owner any more: it goes now.
    pub delete_owner: bool,
    /// Dependents that own things themselves (ReplicaSets): deleted in the foreground too, so
    /// the owner outlives their pods.
    pub mark: Vec<&'a Object>,
    /// Dependents deleted outright.
    pub delete: Vec<&'a Object>,
}

/// The plan for `owner`. Dependents are the objects in its namespace whose ownerReferences
/// name its uid; one already marked is left to its own pass.
pub fn plan<'a>(owner: &Object, candidates: &'a [Object]) -> Plan<'a> {
    let m = owner.metadata();
    let ns = m.namespace_or_default();
    let mut plan = Plan::default();
    let mut any = false;
    for d in candidates.iter().filter(|d| {
        d.metadata().namespace_or_default() == ns
            && d.metadata().owner_references.iter().any(|o| o.uid == m.uid)
    }) {
        any = true;
        if d.kind() == Kind::ReplicaSet {
            if d.metadata().deletion_timestamp.is_none() {
                plan.mark.push(d);
            }
        } else {
            plan.delete.push(d);
        }
    }
    plan.delete_owner = !any;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Deployment, ObjectMeta, OwnerReference, Pod, ReplicaSet};

    fn meta(name: &str, ns: &str, owner: Option<&str>, deleting: bool) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            namespace: Some(ns.into()),
            uid: format!("uid-{name}"),
            owner_references: owner
                .map(|o| {
                    vec![OwnerReference {
                        uid: format!("uid-{o}"),
                        controller: Some(true),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            deletion_timestamp: deleting.then(|| "2026-01-01T00:00:00Z".into()),
            ..Default::default()
        }
    }

    fn rs(name: &str, owner: &str, deleting: bool) -> Object {
        Object::ReplicaSet(ReplicaSet {
            metadata: meta(name, "default", Some(owner), deleting),
            ..Default::default()
        })
    }

    fn pod(name: &str, ns: &str, owner: &str) -> Object {
        Object::Pod(Pod {
            metadata: meta(name, ns, Some(owner), false),
            ..Default::default()
        })
    }

    fn names(objects: &[&Object]) -> Vec<String> {
        objects.iter().map(|o| o.name().to_string()).collect()
    }

    #[test]
    fn table_of_foreground_plans() {
        let web = Object::Deployment(Deployment {
            metadata: meta("web", "default", None, true),
            ..Default::default()
        });
        type Case = (
            &'static str,
            Vec<Object>,
            bool,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("nothing left: the owner goes", vec![], true, vec![], vec![]),
            (
                "a ReplicaSet is marked, not deleted",
                vec![rs("web-1", "web", false)],
                false,
                vec!["web-1"],
                vec![],
            ),
            (
                "a marked ReplicaSet still holds the owner, and is left alone",
                vec![rs("web-1", "web", true)],
                false,
                vec![],
                vec![],
            ),
            (
                "pods are deleted",
                vec![pod("p", "default", "web")],
                false,
                vec![],
                vec!["p"],
            ),
            (
                "what others own, or lives in another namespace, is not a dependent",
                vec![pod("q", "default", "other"), pod("r", "shop", "web")],
                true,
                vec![],
                vec![],
            ),
        ];
        for (what, candidates, delete_owner, mark, delete) in cases {
            let p = plan(&web, &candidates);
            assert_eq!(p.delete_owner, delete_owner, "{what}");
            assert_eq!(names(&p.mark), mark, "{what}");
            assert_eq!(names(&p.delete), delete, "{what}");
        }
    }
}
