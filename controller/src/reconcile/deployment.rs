//! The Deployment reconciler: from a Deployment and the ReplicaSets it owns to a plan. The
//! current pod template lives in a ReplicaSet named by a hash of the template; a change of
//! template rolls out by scaling that set up and the older ones down, within maxSurge and
//! maxUnavailable (RollingUpdate), or all old pods first (Recreate).

use sha2::{Digest, Sha256};
use shoal_api::{
    Condition, Deployment, DeploymentStatus, IntOrString, LabelSelector, OwnerReference,
    ReplicaSet, ReplicaSetSpec,
};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Option<ReplicaSet>,
    /// (ReplicaSet name, new spec.replicas)
    pub scale: Vec<(String, i32)>,
    /// Old, empty ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    /// The current set's new revision, when an older template became current again (undo).
    pub revise: Option<(String, u64)>,
    /// Sets whose minReadySeconds is not the Deployment's (it changed): given the new value.
    pub min_ready: Vec<String>,
    pub status: Option<DeploymentStatus>,
}

/// A short, stable hash of the pod template: names the ReplicaSet and labels its pods.
pub fn template_hash(d: &Deployment) -> String {
    let bytes = serde_json::to_vec(&d.spec.template).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..5])
}

fn revision(rs: &ReplicaSet) -> u64 {
    rs.metadata
        .annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

/// Pods of a set that count as available: its ready pods, but never more than it should have
/// (its status may still count pods it is about to delete).
fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .map(|s| s.available_replicas)
        .unwrap_or(0)
        .min(spec_replicas(rs))
}

/// (maxSurge, maxUnavailable) resolved for `desired` replicas, as Kubernetes rounds them.
pub fn budgets(d: &Deployment, desired: i32) -> (i32, i32) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = ru
        .and_then(|r| r.max_surge.clone())
        .unwrap_or_else(|| quarter.clone());
    let unavailable = ru
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(quarter);
    let surge = surge.scaled_value(desired, true).unwrap_or(1).max(0);
    let unavailable = unavailable.scaled_value(desired, false).unwrap_or(0).max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn new_replicaset(d: &Deployment, hash: &str, revision: u64, replicas: i32) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template
        .metadata
        .labels
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = d.spec.selector.clone();
    selector.match_labels.insert(HASH_LABEL.into(), hash.into());
    let mut rs = ReplicaSet {
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template: template.clone(),
        },
        ..Default::default()
    };
    rs.metadata.name = format!("{}-{hash}", d.metadata.name);
    rs.metadata.namespace = d.metadata.namespace.clone();
    rs.metadata.labels = template.metadata.labels.clone();
    rs.metadata
        .annotations
        .insert(REVISION.into(), revision.to_string());
    rs.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    rs
}

fn condition(ty: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        reason: Some(reason.into()),
        message: Some(message),
        ..Condition::new(ty, ok)
    }
}

/// What a reconcile works from: the Deployment, its ReplicaSets, and the figures of the
/// rollout they make.
struct Rollout<'a> {
    d: &'a Deployment,
    owned: &'a [ReplicaSet],
    desired: i32,
    hash: String,
    surge: i32,
    max_unavailable: i32,
    recreate: bool,
    /// The set of the current template, if it exists.
    current: Option<&'a ReplicaSet>,
    /// The others, oldest revision first.
    old: Vec<&'a ReplicaSet>,
    /// Pods the sets are to have, all of them and the old ones'.
    total: i32,
    old_total: i32,
    /// Pods the old sets still have.
    old_running: i32,
}

/// `owned`: the ReplicaSets whose controller is this Deployment.
pub fn reconcile(d: &Deployment, owned: &[ReplicaSet], now: chrono::DateTime<chrono::Utc>) -> Plan {
    let mut plan = Plan {
        min_ready: owned
            .iter()
            .filter(|rs| rs.spec.min_ready_seconds != d.spec.min_ready_seconds)
            .map(|rs| rs.metadata.name.clone())
            .collect(),
        ..Plan::default()
    };
    let desired = d.spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(d);
    let (surge, max_unavailable) = budgets(d, desired);
    let current = owned
        .iter()
        .find(|rs| rs.metadata.labels.get(HASH_LABEL) == Some(&hash));
    let mut old: Vec<&ReplicaSet> = owned.iter().filter(|rs| Some(*rs) != current).collect();
    old.sort_by_key(|rs| revision(rs));
    let r = Rollout {
        d,
        owned,
        desired,
        surge,
        max_unavailable,
        recreate: d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate"),
        current,
        total: owned.iter().map(spec_replicas).sum(),
        old_total: old.iter().map(|rs| spec_replicas(rs)).sum(),
        old_running: old
            .iter()
            .map(|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0))
            .sum(),
        old,
        hash,
    };
    r.scale_new(&mut plan);
    if !d.spec.paused {
        r.scale_old(&mut plan);
    }
    plan.delete = r.beyond_history();
    let status = r.status(now);
    if d.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan
}

impl Rollout<'_> {
    /// The new set: created when the template changed (not while paused), then grown.
    fn scale_new(&self, plan: &mut Plan) {
        let (d, owned, desired) = (self.d, self.owned, self.desired);
        let (old_total, old_running) = (self.old_total, self.old_running);
        if d.spec.paused {
            // Paused: never roll; only follow scaling, on the newest set that has pods.
            let active: Vec<&ReplicaSet> =
                owned.iter().filter(|rs| spec_replicas(rs) > 0).collect();
            if let [only] = active.as_slice() {
                if spec_replicas(only) != desired {
                    plan.scale.push((only.metadata.name.clone(), desired));
                }
            }
        }
        let Some(rs) = self.current else {
            if d.spec.paused {
                return;
            }
            let next_revision = owned.iter().map(revision).max().unwrap_or(0) + 1;
            let start = if self.recreate {
                if old_running == 0 && old_total == 0 {
                    desired
                } else {
                    0
                }
            } else {
                (desired + self.surge - self.total).clamp(0, desired)
            };
            plan.create = Some(new_replicaset(d, &self.hash, next_revision, start));
            return;
        };
        let new_spec = spec_replicas(rs);
        let newest = owned.iter().map(revision).max().unwrap_or(0);
        if revision(rs) < newest {
            plan.revise = Some((rs.metadata.name.clone(), newest + 1));
        }
        let target = if d.spec.paused {
            // Paused: only follow scaling, never roll.
            if old_total == 0 {
                desired
            } else {
                new_spec
            }
        } else if self.recreate {
            if old_total == 0 && old_running == 0 {
                desired
            } else {
                0
            }
        } else if old_total == 0 {
            desired
        } else {
            // Grow into the surge budget, never past the desired count.
            (new_spec + (desired + self.surge - self.total).max(0)).min(desired)
        };
        if target != new_spec {
            plan.scale.push((rs.metadata.name.clone(), target));
        }
    }

    /// The old sets: shrink within the availability budget, unhealthy pods first.
    fn scale_old(&self, plan: &mut Plan) {
        let min_available = self.desired - self.max_unavailable;
        let total_available: i32 = self.owned.iter().map(available).sum();
        let mut budget = (total_available - min_available).max(0);
        for rs in &self.old {
            let spec = spec_replicas(rs);
            if spec == 0 {
                continue;
            }
            let scaled_to_zero = self
                .current
                .is_some_and(|c| spec_replicas(c) == 0 && self.desired == 0);
            let target = if self.recreate || scaled_to_zero {
                0
            } else {
                let unhealthy = spec - available(rs);
                let removable = unhealthy + budget.min(available(rs));
                budget -= (removable - unhealthy).max(0);
                (spec - removable).max(0)
            };
            if target != spec {
                plan.scale.push((rs.metadata.name.clone(), target));
            }
        }
    }

    /// History: empty old sets beyond revisionHistoryLimit go, oldest first.
    fn beyond_history(&self) -> Vec<String> {
        let limit = self.d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&&ReplicaSet> = self
            .old
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0 && rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0
            })
            .collect();
        if empty.len() <= limit {
            return Vec::new();
        }
        empty[..empty.len() - limit]
            .iter()
            .map(|rs| rs.metadata.name.clone())
            .collect()
    }

    /// The Deployment's status, with the times of conditions that did not change kept.
    fn status(&self, now: chrono::DateTime<chrono::Utc>) -> DeploymentStatus {
        let (d, desired) = (self.d, self.desired);
        let sum = |f: fn(&shoal_api::ReplicaSetStatus) -> i32| -> i32 {
            self.owned
                .iter()
                .filter_map(|rs| rs.status.as_ref())
                .map(f)
                .sum()
        };
        let updated = self
            .current
            .and_then(|rs| rs.status.as_ref())
            .map(|s| s.replicas)
            .unwrap_or(0);
        let avail = sum(|s| s.available_replicas);
        let complete =
            updated == desired && self.old_running == 0 && self.old_total == 0 && avail >= desired;
        // Progress: the rollout moved since the last status (more updated or available pods,
        // or a new template). Without any for progressDeadlineSeconds, it has timed out.
        let previous = d.status.clone().unwrap_or_default();
        let last_progress = previous
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .and_then(|c| c.last_update_time.clone());
        let moved = previous.observed_generation != d.metadata.generation
            || previous.updated_replicas != updated
            || previous.available_replicas != avail
            || last_progress.is_none();
        let deadline =
            chrono::Duration::seconds(i64::from(d.spec.progress_deadline_seconds.unwrap_or(600)));
        let deadline_passed = !moved
            && last_progress
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| now - t.with_timezone(&chrono::Utc) > deadline);
        let minimum = avail >= desired - self.max_unavailable;
        let mut status = DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: sum(|s| s.replicas),
            updated_replicas: updated,
            ready_replicas: sum(|s| s.ready_replicas),
            available_replicas: avail,
            unavailable_replicas: (desired - avail).max(0),
            conditions: vec![
                condition(
                    "Available",
                    minimum,
                    if minimum {
                        "MinimumReplicasAvailable"
                    } else {
                        "MinimumReplicasUnavailable"
                    },
                    format!("{avail} of {desired} replicas available"),
                ),
                self.progressing(complete, deadline_passed),
            ],
        };
        // Keep the times of conditions that did not change, so a status that is the same
        // writes nothing; Progressing's update time is the last time the rollout moved.
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for c in &mut status.conditions {
            let prev = previous
                .conditions
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason);
            c.last_transition_time = Some(
                prev.and_then(|p| p.last_transition_time.clone())
                    .unwrap_or_else(|| stamp.clone()),
            );
            c.last_update_time = if c.type_ == "Progressing" {
                Some(if moved {
                    stamp.clone()
                } else {
                    last_progress.clone().unwrap_or_else(|| stamp.clone())
                })
            } else {
                prev.and_then(|p| p.last_update_time.clone())
            };
        }
        status
    }

    /// The Progressing condition.
    fn progressing(&self, complete: bool, deadline_passed: bool) -> Condition {
        let set = format!("ReplicaSet \"{}-{}\"", self.d.metadata.name, self.hash);
        if self.d.spec.paused {
            condition(
                "Progressing",
                false,
                "DeploymentPaused",
                "the deployment is paused".into(),
            )
        } else if !complete && deadline_passed {
            condition(
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("{set} has timed out progressing"),
            )
        } else if complete {
            condition(
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!("{set} has successfully progressed"),
            )
        } else {
            condition(
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("{set} is progressing"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::*;

    fn deploy(replicas: i32, image: &str, surge: &str, unavailable: &str) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.namespace = Some("default".into());
        d.metadata.uid = "d-1".into();
        d.spec.replicas = Some(replicas);
        d.spec
            .selector
            .match_labels
            .insert("app".into(), "web".into());
        d.spec
            .template
            .metadata
            .labels
            .insert("app".into(), "web".into());
        d.spec.template.spec.containers = vec![Container {
            name: "c".into(),
            image: image.into(),
            ..Default::default()
        }];
        let parse = |s: &str| {
            s.parse::<i32>()
                .map(IntOrString::Int)
                .unwrap_or(IntOrString::String(s.into()))
        };
        d.spec.strategy = Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdate {
                max_surge: Some(parse(surge)),
                max_unavailable: Some(parse(unavailable)),
            }),
        });
        d
    }

    /// The set the deployment would create, with `spec` replicas of which `ready` are available.
    fn set(d: &Deployment, rev: u64, spec: i32, ready: i32) -> ReplicaSet {
        let mut rs = new_replicaset(d, &template_hash(d), rev, spec);
        rs.status = Some(ReplicaSetStatus {
            replicas: spec.max(ready),
            ready_replicas: ready,
            available_replicas: ready,
            ..Default::default()
        });
        rs
    }

    fn t0() -> chrono::DateTime<chrono::Utc> {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_rollout_that_stops_moving_times_out_after_its_progress_deadline() {
        let v1 = deploy(2, "v1", "1", "0");
        let mut v2 = deploy(2, "v2", "1", "0");
        v2.spec.progress_deadline_seconds = Some(60);
        v2.metadata.generation = 2;
        // The new set's pods never become ready.
        let sets = [set(&v1, 1, 2, 2), set(&v2, 2, 1, 0)];
        let first = reconcile(&v2, &sets, t0()).status.unwrap();
        let reason = |st: &DeploymentStatus| {
            st.conditions
                .iter()
                .find(|c| c.type_ == "Progressing")
                .and_then(|c| c.reason.clone())
                .unwrap()
        };
        assert_eq!(reason(&first), "ReplicaSetUpdated");
        v2.status = Some(first);
        let later = |secs| t0() + chrono::Duration::seconds(secs);
        let within = reconcile(&v2, &sets, later(30));
        assert!(
            within.status.is_none(),
            "nothing moved, nothing to write: {:?}",
            within.status
        );
        let past = reconcile(&v2, &sets, later(61))
            .status
            .expect("the deadline passed");
        assert_eq!(reason(&past), "ProgressDeadlineExceeded");
        // Progress (a pod became available) starts the clock again.
        let moving = [set(&v1, 1, 2, 2), set(&v2, 2, 1, 1)];
        let st = reconcile(&v2, &moving, later(61)).status.unwrap();
        assert_eq!(reason(&st), "ReplicaSetUpdated");
    }

    #[test]
    fn a_new_min_ready_seconds_reaches_every_set() {
        let v1 = deploy(2, "v1", "1", "0");
        let v2 = deploy(2, "v2", "1", "0");
        let sets = [set(&v1, 1, 0, 0), set(&v2, 2, 2, 2)];
        assert!(reconcile(&v2, &sets, t0()).min_ready.is_empty());
        let mut slower = v2.clone();
        slower.spec.min_ready_seconds = Some(30);
        let mut names = reconcile(&slower, &sets, t0()).min_ready;
        names.sort();
        let mut want: Vec<String> = sets.iter().map(|s| s.metadata.name.clone()).collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn going_back_to_an_older_template_gives_its_set_the_next_revision() {
        let v1 = deploy(2, "v1", "1", "0");
        let v2 = deploy(2, "v2", "1", "0");
        let plan = reconcile(&v1, &[set(&v1, 1, 0, 0), set(&v2, 2, 2, 2)], t0());
        assert!(plan.create.is_none(), "the old set is reused");
        assert_eq!(
            plan.revise,
            Some((format!("web-{}", template_hash(&v1)), 3))
        );
    }

    #[test]
    fn budgets_round_like_kubernetes() {
        assert_eq!(budgets(&deploy(10, "a", "25%", "25%"), 10), (3, 2));
        assert_eq!(budgets(&deploy(4, "a", "1", "0"), 4), (1, 0));
        assert_eq!(
            budgets(&deploy(4, "a", "0", "0"), 4),
            (0, 1),
            "both zero would never progress"
        );
    }

    #[test]
    fn a_new_deployment_creates_its_first_set_at_full_size() {
        let d = deploy(3, "v1", "1", "0");
        let plan = reconcile(&d, &[], t0());
        let rs = plan.create.expect("a new set");
        assert_eq!(rs.spec.replicas, Some(3));
        assert_eq!(rs.metadata.annotations[REVISION], "1");
        assert_eq!(
            rs.spec.template.metadata.labels[HASH_LABEL],
            template_hash(&d)
        );
        assert_eq!(rs.metadata.name, format!("web-{}", template_hash(&d)));
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_unavailability() {
        // Simulate to completion: after each plan, pods become ready at once.
        for (desired, surge, unavailable) in [
            (4, "1", "0"),
            (4, "0", "1"),
            (6, "2", "2"),
            (5, "25%", "25%"),
        ] {
            let v1 = deploy(desired, "v1", surge, unavailable);
            let v2 = deploy(desired, "v2", surge, unavailable);
            let (max_surge, max_unavailable) = budgets(&v2, desired);
            let mut sets = vec![set(&v1, 1, desired, desired)];
            for step in 0..50 {
                let plan = reconcile(&v2, &sets, t0());
                if let Some(mut rs) = plan.create {
                    let n = rs.spec.replicas.unwrap_or(0);
                    rs.status = Some(ReplicaSetStatus {
                        replicas: n,
                        ..Default::default()
                    });
                    sets.push(rs);
                }
                for (name, n) in plan.scale {
                    let rs = sets.iter_mut().find(|r| r.metadata.name == name).unwrap();
                    rs.spec.replicas = Some(n);
                }
                let total: i32 = sets.iter().map(|r| r.spec.replicas.unwrap()).sum();
                assert!(
                    total <= desired + max_surge,
                    "{desired}/{surge}/{unavailable} step {step}: {total} pods"
                );
                // The pods come and go; then those that exist are ready.
                for rs in &mut sets {
                    let n = rs.spec.replicas.unwrap();
                    rs.status = Some(ReplicaSetStatus {
                        replicas: n,
                        ready_replicas: n,
                        available_replicas: n,
                        ..Default::default()
                    });
                }
                let avail: i32 = sets.iter().map(available).sum();
                assert!(
                    avail >= desired - max_unavailable,
                    "{desired}/{surge}/{unavailable} step {step}: {avail} available"
                );
                let new = sets
                    .iter()
                    .find(|r| r.metadata.labels[HASH_LABEL] == template_hash(&v2));
                if new.is_some_and(|r| r.spec.replicas == Some(desired))
                    && sets.iter().filter(|r| r.spec.replicas != Some(0)).count() == 1
                {
                    break;
                }
                assert!(
                    step < 49,
                    "{desired}/{surge}/{unavailable}: the rollout never finished"
                );
            }
        }
    }

    #[test]
    fn recreate_empties_the_old_set_before_the_new_one_grows() {
        let mut v1 = deploy(3, "v1", "1", "0");
        let mut v2 = deploy(3, "v2", "1", "0");
        for d in [&mut v1, &mut v2] {
            d.spec.strategy = Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
        }
        let old = set(&v1, 1, 3, 3);
        let plan = reconcile(&v2, std::slice::from_ref(&old), t0());
        assert_eq!(plan.create.as_ref().and_then(|r| r.spec.replicas), Some(0));
        assert_eq!(plan.scale, vec![(old.metadata.name.clone(), 0)]);
        let mut gone = old.clone();
        gone.spec.replicas = Some(0);
        gone.status = Some(ReplicaSetStatus::default());
        let plan = reconcile(&v2, &[gone, set(&v2, 2, 0, 0)], t0());
        assert_eq!(plan.scale, vec![(format!("web-{}", template_hash(&v2)), 3)]);
    }

    #[test]
    fn a_paused_deployment_does_not_roll_and_history_is_bounded() {
        let v1 = deploy(2, "v1", "1", "0");
        let mut v2 = deploy(2, "v2", "1", "0");
        v2.spec.paused = true;
        let plan = reconcile(&v2, &[set(&v1, 1, 2, 2)], t0());
        assert!(plan.create.is_none() && plan.scale.is_empty(), "{plan:?}");
        let mut budget = v2.clone();
        budget
            .spec
            .strategy
            .as_mut()
            .unwrap()
            .rolling_update
            .as_mut()
            .unwrap()
            .max_unavailable = Some(IntOrString::Int(1));
        assert!(
            reconcile(&budget, &[set(&v1, 1, 2, 2)], t0())
                .scale
                .is_empty(),
            "no scale-down while paused"
        );
        let mut scaled = v2.clone();
        scaled.spec.replicas = Some(5);
        assert_eq!(
            reconcile(&scaled, &[set(&v1, 1, 2, 2)], t0()).scale,
            vec![(format!("web-{}", template_hash(&v1)), 5)],
            "scaling still applies"
        );
        let mut v3 = deploy(2, "v3", "1", "0");
        v3.spec.revision_history_limit = Some(1);
        let empty = |img: &str, rev: u64| set(&deploy(2, img, "1", "0"), rev, 0, 0);
        let plan = reconcile(
            &v3,
            &[empty("v1", 1), empty("v2", 2), set(&v3, 3, 2, 2)],
            t0(),
        );
        assert_eq!(
            plan.delete,
            vec![format!("web-{}", template_hash(&deploy(2, "v1", "1", "0")))]
        );
    }
}
