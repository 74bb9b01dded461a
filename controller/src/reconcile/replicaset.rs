//! The ReplicaSet reconciler: from a ReplicaSet and the pods of its namespace to a plan of
//! writes. Level-triggered and idempotent: the same state always gives the same plan, so it
//! may run again at any time.
//!
//! It keeps `replicas` active pods matching the selector; adopts matching orphans and releases
//! owned pods that stop matching (ownerReferences with controller=true); deletes a surplus
//! preferring unscheduled, then not-ready, then the newest pods.

use chrono::{DateTime, TimeDelta, Utc};
use shoal_api::{OwnerReference, Pod, PodTemplateSpec, ReplicaSet, ReplicaSetStatus, Selector};

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// How many pods to create from the template.
    pub create: usize,
    /// Pods to delete (surplus), by name.
    pub delete: Vec<String>,
    /// Orphans to take ownership of, by name.
    pub adopt: Vec<String>,
    /// Owned pods that no longer match, to let go of, by name.
    pub release: Vec<String>,
    /// The status to record, if it changed.
    pub status: Option<ReplicaSetStatus>,
    /// The surplus is duplicates from a node that came back, resolved by this policy.
    pub duplicates: Option<OnReconnect>,
    /// Pods back from a lost node that stay: their mark of having been lost is cleared, so
    /// later scaling treats them as any other.
    pub settle: Vec<String>,
}

/// Which pod stays when a node that was lost comes back with pods the ReplicaSet replaced
/// meanwhile (Nomad's `disconnect.reconcile`): set with the annotation [`ON_RECONNECT`] on the
/// ReplicaSet, its Deployment, or the pod template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnReconnect {
    /// The pods that ran through the partition stay; their replacements go (the default:
    /// nothing that kept serving is restarted).
    #[default]
    KeepOriginal,
    /// The replacements stay; the pods of the node that came back go.
    KeepReplacement,
}

pub const ON_RECONNECT: &str = "shoal.dev/on-reconnect";

impl OnReconnect {
    pub fn of(rs: &ReplicaSet) -> OnReconnect {
        let v = rs
            .metadata
            .annotations
            .get(ON_RECONNECT)
            .or_else(|| rs.spec.template.metadata.annotations.get(ON_RECONNECT));
        match v.map(String::as_str) {
            Some("keep-replacement") => OnReconnect::KeepReplacement,
            _ => OnReconnect::KeepOriginal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnReconnect::KeepOriginal => "keep-original",
            OnReconnect::KeepReplacement => "keep-replacement",
        }
    }
}

pub fn owner_reference(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Counts toward the replicas: not being deleted, not finished, and not on a node that has
/// been lost long enough to replace it (it is counted again when its node comes back).
fn active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !crate::node_lifecycle::lost(p) && !p.is_terminal()
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.is_true())
    })
}

/// Ready for at least `min_ready_seconds` without a break, by the Ready condition's
/// lastTransitionTime: what Kubernetes counts as available. A ready pod with no transition
/// time on record counts as available.
pub fn pod_available(p: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    let Some(ready) = p.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.is_true())
    }) else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = ready
        .last_transition_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    since
        .is_none_or(|t| now - t.with_timezone(&Utc) >= TimeDelta::seconds(min_ready_seconds.into()))
}

/// A new pod for `rs`: its template, its labels, owned by it (the store names it).
pub fn new_pod(rs: &ReplicaSet, template: &PodTemplateSpec) -> Pod {
    let mut pod = Pod {
        metadata: template.metadata.clone(),
        spec: template.spec.clone(),
        ..Default::default()
    };
    pod.metadata.name = String::new();
    pod.metadata.generate_name = format!("{}-", rs.metadata.name);
    pod.metadata.namespace = rs.metadata.namespace.clone();
    pod.metadata.owner_references = vec![owner_reference(rs)];
    pod
}

pub fn reconcile(rs: &ReplicaSet, pods: &[Pod], now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();
    let Ok(selector) = Selector::from_label_selector(&rs.spec.selector) else {
        return plan; // validation refuses such selectors; never act on one
    };
    let uid = rs.metadata.uid.as_str();
    let ns = rs.metadata.namespace_or_default();
    let mut mine: Vec<&Pod> = Vec::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.namespace_or_default() == ns)
    {
        let matches = selector.matches(&p.metadata.labels);
        match p.metadata.controller_owner() {
            Some(o) if o.uid == uid => {
                if matches {
                    mine.push(p);
                } else {
                    plan.release.push(p.metadata.name.clone());
                }
            }
            Some(_) => {}
            None if matches && active(p) && rs.metadata.deletion_timestamp.is_none() => {
                plan.adopt.push(p.metadata.name.clone());
                mine.push(p);
            }
            None => {}
        }
    }
    let mut live: Vec<&Pod> = mine.iter().copied().filter(|p| active(p)).collect();
    let desired = rs.spec.replicas.unwrap_or(1).max(0) as usize;
    if live.len() < desired {
        plan.create = desired - live.len();
    } else if live.len() > desired {
        // Cheapest to lose first: not scheduled, then not ready; among pods that are ready,
        // duplicates from a node that came back go by the policy; then the newest.
        let policy = OnReconnect::of(rs);
        let returned = |p: &Pod| crate::node_lifecycle::was_lost(p);
        if live.iter().any(|p| returned(p)) {
            plan.duplicates = Some(policy);
        }
        live.sort_by(|a, b| {
            let rank = |p: &Pod| {
                let stays = match policy {
                    OnReconnect::KeepOriginal => returned(p),
                    OnReconnect::KeepReplacement => !returned(p),
                };
                (p.spec.node_name.is_some(), pod_ready(p), stays)
            };
            rank(a)
                .cmp(&rank(b))
                .then_with(|| {
                    b.metadata
                        .creation_timestamp
                        .cmp(&a.metadata.creation_timestamp)
                })
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        plan.delete = live
            .iter()
            .take(live.len() - desired)
            .map(|p| p.metadata.name.clone())
            .collect();
    }
    plan.settle = live
        .iter()
        .filter(|p| crate::node_lifecycle::was_lost(p) && !plan.delete.contains(&p.metadata.name))
        .map(|p| p.metadata.name.clone())
        .collect();
    let ready = live.iter().filter(|p| pod_ready(p)).count() as i32;
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let available = live
        .iter()
        .filter(|p| pod_available(p, min_ready, now))
        .count() as i32;
    let status = ReplicaSetStatus {
        replicas: live.len() as i32,
        ready_replicas: ready,
        available_replicas: available,
        fully_labeled_replicas: live.len() as i32,
        observed_generation: rs.metadata.generation,
    };
    if rs.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::*;

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("default".into()),
                uid: "rs-1".into(),
                generation: 1,
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod(
        name: &str,
        owner: Option<&str>,
        app: &str,
        node: bool,
        ready: bool,
        created: &str,
    ) -> Pod {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("default".into()),
                labels: [("app".to_string(), app.to_string())].into(),
                creation_timestamp: Some(created.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Some(uid) = owner {
            p.metadata.owner_references = vec![OwnerReference {
                kind: "ReplicaSet".into(),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }];
        }
        if node {
            p.spec.node_name = Some("n".into());
        }
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    const T1: &str = "2026-01-01T00:00:01Z";
    const T2: &str = "2026-01-01T00:00:02Z";
    const T3: &str = "2026-01-01T00:00:03Z";

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    #[test]
    fn lost_pods_are_replaced_and_on_return_the_policy_picks_who_stays() {
        let lost_at = |p: &mut Pod| *p = crate::node_lifecycle::mark_lost(p, "n", now());
        let mut a = pod("a", Some("rs-1"), "web", true, true, T1);
        let mut b = pod("b", Some("rs-1"), "web", true, true, T1);
        lost_at(&mut a);
        lost_at(&mut b);
        let c = pod("c", Some("rs-1"), "web", true, true, T1);
        // Two of three on a lost node: two replacements.
        let plan = reconcile(&rs(3), &[a.clone(), b.clone(), c.clone()], now());
        assert_eq!(plan.create, 2);
        assert_eq!(plan.status.as_ref().unwrap().replicas, 1);
        // The node comes back: a and b report again (a fresh, ready status), beside their
        // replacements r1 and r2.
        for p in [&mut a, &mut b] {
            p.status = pod("x", None, "web", true, true, T1).status;
            assert!(crate::node_lifecycle::was_lost(p));
        }
        let r1 = pod("r1", Some("rs-1"), "web", true, true, T3);
        let r2 = pod("r2", Some("rs-1"), "web", true, true, T2);
        let pods = [a, b, c, r1, r2];
        let plan = reconcile(&rs(3), &pods, now());
        assert_eq!(
            (plan.create, plan.delete.clone()),
            (0, vec!["r1".into(), "r2".into()])
        );
        assert_eq!(plan.duplicates, Some(OnReconnect::KeepOriginal));
        assert_eq!(
            plan.settle,
            ["a", "b"],
            "the originals stay, their mark cleared"
        );

        let mut keep_new = rs(3);
        keep_new
            .metadata
            .annotations
            .insert(ON_RECONNECT.into(), "keep-replacement".into());
        let plan = reconcile(&keep_new, &pods, now());
        assert_eq!(plan.delete, ["a", "b"]);
        assert_eq!(plan.duplicates, Some(OnReconnect::KeepReplacement));
        assert!(plan.settle.is_empty());
    }

    #[test]
    fn available_means_ready_for_min_ready_seconds() {
        let ready_at = |name: &str, t: Option<&str>| {
            let mut p = pod(name, Some("rs-1"), "web", true, true, T1);
            p.status.as_mut().unwrap().conditions[0].last_transition_time = t.map(Into::into);
            p
        };
        let pods = [
            ready_at("long", Some("2026-01-01T00:00:00Z")), // 60 s before now
            ready_at("recent", Some("2026-01-01T00:00:50Z")), // 10 s
            ready_at("unknown", None),
            pod("not-ready", Some("rs-1"), "web", true, false, T1),
        ];
        let cases = [(0, 3), (10, 3), (11, 2), (60, 2), (61, 1)];
        for (min_ready, want) in cases {
            let mut set = rs(4);
            set.spec.min_ready_seconds = Some(min_ready);
            let st = reconcile(&set, &pods, now()).status.unwrap();
            assert_eq!(st.ready_replicas, 3, "minReadySeconds {min_ready}");
            assert_eq!(st.available_replicas, want, "minReadySeconds {min_ready}");
        }
    }

    #[test]
    fn scales_up_by_creating() {
        let plan = reconcile(
            &rs(3),
            &[pod("a", Some("rs-1"), "web", true, true, T1)],
            now(),
        );
        assert_eq!(plan.create, 2);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn scales_down_losing_unscheduled_then_not_ready_then_newest() {
        let pods = [
            pod("ready-old", Some("rs-1"), "web", true, true, T1),
            pod("ready-new", Some("rs-1"), "web", true, true, T3),
            pod("not-ready", Some("rs-1"), "web", true, false, T1),
            pod("unscheduled", Some("rs-1"), "web", false, false, T2),
        ];
        assert_eq!(reconcile(&rs(3), &pods, now()).delete, ["unscheduled"]);
        assert_eq!(
            reconcile(&rs(2), &pods, now()).delete,
            ["unscheduled", "not-ready"]
        );
        assert_eq!(
            reconcile(&rs(1), &pods, now()).delete,
            ["unscheduled", "not-ready", "ready-new"]
        );
    }

    #[test]
    fn adopts_matching_orphans_and_releases_what_stops_matching() {
        let pods = [
            pod("orphan", None, "web", true, true, T1),
            pod("relabelled", Some("rs-1"), "other", true, true, T1),
            pod("someone-elses", Some("rs-2"), "web", true, true, T1),
        ];
        let plan = reconcile(&rs(1), &pods, now());
        assert_eq!(plan.adopt, ["orphan"]);
        assert_eq!(plan.release, ["relabelled"]);
        assert_eq!(plan.create, 0, "the adopted orphan counts");
    }

    #[test]
    fn finished_pods_are_replaced_and_status_counts_ready_ones() {
        let mut done = pod("done", Some("rs-1"), "web", true, false, T1);
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        let plan = reconcile(
            &rs(2),
            &[done, pod("up", Some("rs-1"), "web", true, true, T2)],
            now(),
        );
        assert_eq!(plan.create, 1);
        let st = plan.status.unwrap();
        assert_eq!(
            (st.replicas, st.ready_replicas, st.observed_generation),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_settled_replicaset_plans_nothing() {
        let mut settled = rs(1);
        let pods = [pod("a", Some("rs-1"), "web", true, true, T1)];
        settled.status = reconcile(&settled, &pods, now()).status;
        assert_eq!(reconcile(&settled, &pods, now()), Plan::default());
    }
}
