//! Validation: every problem with an object, each named by its field path, before anything is
//! stored (`spec.replicas: Invalid value: -1: must be greater than or equal to 0`).

use crate::error::FieldError;
use crate::intstr::IntOrString;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::object::Object;
use crate::objects::*;
use crate::selector::Selector;
use base64::Engine as _;
use std::collections::BTreeSet;
use std::net::IpAddr;

mod affinity;
mod network;
mod pod;
mod storage;
mod upgrade;

pub use pod::check_relative_path;
use pod::validate_pod_spec;

/// Collects the problems found while walking an object.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub(crate) fn check(&mut self, path: impl Into<String>, result: Result<(), String>) {
        if let Err(m) = result {
            self.add(path, m);
        }
    }

    pub(crate) fn min(&mut self, path: &str, value: Option<i64>, min: i64) {
        if let Some(v) = value {
            if v < min {
                self.add(
                    path,
                    format!("Invalid value: {v}: must be greater than or equal to {min}"),
                );
            }
        }
    }

    pub(crate) fn one_of(&mut self, path: &str, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value {
            if !allowed.contains(&v) {
                self.add(
                    path,
                    format!("must be one of {}, got {v:?}", allowed.join(", ")),
                );
            }
        }
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 of `a-z 0-9 -`, starting and ending alphanumeric.
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "must be no more than 63 characters, got {}",
            s.len()
        ));
    }
    let ok = s.chars().all(|c| is_alnum(c) || c == '-')
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum);
    if !ok {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 label: lower case alphanumerics and '-', starting and ending with an alphanumeric (e.g. \"my-name\")"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "must be no more than 253 characters, got {}",
            s.len()
        ));
    }
    if s.split('.').any(|l| check_dns1123_label(l).is_err()) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 subdomain: lower case alphanumerics, '-' and '.', starting and ending with an alphanumeric (e.g. \"example.com\")"
        ));
    }
    Ok(())
}

fn check_qualified_name_part(s: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if s.is_empty() || s.len() > 63 {
        return Err("name part must be 1 to 63 characters".into());
    }
    if !(s.chars().all(|c| alnum(c) || "-_.".contains(c))
        && s.starts_with(alnum)
        && s.ends_with(alnum))
    {
        return Err(format!(
            "{s:?}: alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS subdomain.
/// An extended resource name: `domain/name`, outside Kubernetes' own `kubernetes.io`
/// (`requests.` is a quota prefix, not a resource).
pub fn is_extended_resource(name: &str) -> bool {
    let Some((domain, _)) = name.split_once('/') else {
        return false;
    };
    let kubernetes = domain == "kubernetes.io" || domain.ends_with(".kubernetes.io");
    !kubernetes && !name.starts_with("requests.") && check_label_key(name).is_ok()
}

pub fn check_label_key(k: &str) -> Result<(), String> {
    match k.split_once('/') {
        Some((prefix, name)) => {
            check_dns1123_subdomain(prefix).map_err(|e| format!("prefix: {e}"))?;
            check_qualified_name_part(name)
        }
        None => check_qualified_name_part(k),
    }
}

/// A label value: empty, or up to 63 alphanumerics, '-', '_' or '.'.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    check_qualified_name_part(v).map_err(|e| e.replace("name part", "value"))
}

fn check_config_key(k: &str) -> Result<(), String> {
    if k.is_empty()
        || k.len() > 253
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(format!(
            "{k:?} must consist of alphanumerics, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Every problem with `obj`; empty when it may be stored.
pub fn validate(obj: &Object) -> Vec<FieldError> {
    let mut e = Errors::default();
    let kind = obj.kind();
    validate_meta(&mut e, kind, obj.metadata());
    match obj {
        Object::Namespace(_) => {}
        Object::Node(n) => validate_node(&mut e, n),
        Object::Pod(p) => validate_pod_spec(&mut e, "spec", &p.spec),
        Object::ReplicaSet(rs) => {
            e.min("spec.replicas", rs.spec.replicas.map(i64::from), 0);
            e.min(
                "spec.minReadySeconds",
                rs.spec.min_ready_seconds.map(i64::from),
                0,
            );
            validate_controller_template(&mut e, &rs.spec.selector, &rs.spec.template, true);
        }
        Object::Deployment(d) => validate_deployment(&mut e, d),
        Object::DaemonSet(ds) => {
            validate_controller_template(&mut e, &ds.spec.selector, &ds.spec.template, true);
            if let Some(s) = &ds.spec.update_strategy {
                e.one_of(
                    "spec.updateStrategy.type",
                    s.type_.as_deref(),
                    &["RollingUpdate", "OnDelete"],
                );
                if let Some(ru) = &s.rolling_update {
                    validate_budget(
                        &mut e,
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        ru.max_unavailable.as_ref(),
                    );
                }
            }
        }
        Object::Job(j) => validate_job(&mut e, "spec", &j.spec),
        Object::CronJob(cj) => validate_cronjob(&mut e, cj),
        Object::Service(s) => validate_service(&mut e, s),
        Object::Endpoints(_) => {}
        Object::ConfigMap(cm) => {
            for k in cm.data.keys() {
                e.check(format!("data[{k}]"), check_config_key(k));
            }
            for (k, v) in &cm.binary_data {
                e.check(format!("binaryData[{k}]"), check_config_key(k));
                e.check(format!("binaryData[{k}]"), check_base64(v));
                if cm.data.contains_key(k) {
                    e.add(format!("binaryData[{k}]"), "duplicate of a key in data");
                }
            }
        }
        Object::Secret(s) => {
            for (k, v) in &s.data {
                e.check(format!("data[{k}]"), check_config_key(k));
                e.check(format!("data[{k}]"), check_base64(v));
            }
            for k in s.string_data.keys() {
                e.check(format!("stringData[{k}]"), check_config_key(k));
            }
        }
        Object::Event(ev) => {
            if ev.involved_object.name.as_deref().unwrap_or("").is_empty() {
                e.add("involvedObject.name", "required");
            }
        }
        Object::PersistentVolumeClaim(c) => storage::claim(&mut e, c),
        Object::PersistentVolume(v) => storage::volume(&mut e, v),
        Object::StorageClass(c) => storage::class(&mut e, c),
        Object::NetworkPolicy(p) => network::policy(&mut e, p),
        Object::AgentUpgrade(u) => upgrade::agent_upgrade(&mut e, u),
    }
    e.0
}

fn check_base64(v: &str) -> Result<(), String> {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map(|_| ())
        .map_err(|err| format!("must be base64 ({err})"))
}

fn validate_meta(e: &mut Errors, kind: Kind, m: &ObjectMeta) {
    if m.name.is_empty() {
        if m.generate_name.is_empty() {
            e.add("metadata.name", "required");
        }
    } else {
        // Namespaces and Services become DNS labels; the rest may be subdomains.
        let check = if matches!(kind, Kind::Namespace | Kind::Service) {
            check_dns1123_label(&m.name)
        } else {
            check_dns1123_subdomain(&m.name)
        };
        e.check("metadata.name", check);
    }
    if let Some(ns) = &m.namespace {
        if kind.namespaced() {
            e.check("metadata.namespace", check_dns1123_label(ns));
        }
    }
    for (k, v) in &m.labels {
        e.check(format!("metadata.labels[{k}]"), check_label_key(k));
        e.check(format!("metadata.labels[{k}]"), check_label_value(v));
    }
    for k in m.annotations.keys() {
        e.check(format!("metadata.annotations[{k}]"), check_label_key(k));
    }
}

fn validate_node(e: &mut Errors, n: &Node) {
    for (i, t) in n.spec.taints.iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        e.check(format!("{p}.key"), check_label_key(&t.key));
        e.one_of(
            &format!("{p}.effect"),
            Some(&t.effect),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
    }
}

fn validate_budget(e: &mut Errors, path: &str, v: Option<&IntOrString>) {
    match v {
        Some(IntOrString::Int(i)) if *i < 0 => e.add(path, format!("must be >= 0, got {i}")),
        Some(s @ IntOrString::String(_)) => match s.scaled_value(100, false) {
            Err(m) => e.add(path, m),
            Ok(p) if !(0..=100).contains(&p) => {
                e.add(path, format!("must be between 0% and 100%, got {s}"))
            }
            Ok(_) => {}
        },
        _ => {}
    }
}

fn validate_deployment(e: &mut Errors, d: &Deployment) {
    let s = &d.spec;
    e.min("spec.replicas", s.replicas.map(i64::from), 0);
    e.min(
        "spec.minReadySeconds",
        s.min_ready_seconds.map(i64::from),
        0,
    );
    e.min(
        "spec.revisionHistoryLimit",
        s.revision_history_limit.map(i64::from),
        0,
    );
    e.min(
        "spec.progressDeadlineSeconds",
        s.progress_deadline_seconds.map(i64::from),
        1,
    );
    if let (Some(p), Some(m)) = (s.progress_deadline_seconds, s.min_ready_seconds) {
        if p <= m {
            e.add(
                "spec.progressDeadlineSeconds",
                format!("must be greater than minReadySeconds ({m}), got {p}"),
            );
        }
    }
    validate_controller_template(e, &s.selector, &s.template, true);
    if let Some(st) = &s.strategy {
        e.one_of(
            "spec.strategy.type",
            st.type_.as_deref(),
            &["RollingUpdate", "Recreate"],
        );
        if let Some(ru) = &st.rolling_update {
            if st.type_.as_deref() == Some("Recreate") {
                e.add(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy type is 'Recreate'",
                );
            }
            validate_budget(
                e,
                "spec.strategy.rollingUpdate.maxSurge",
                ru.max_surge.as_ref(),
            );
            validate_budget(
                e,
                "spec.strategy.rollingUpdate.maxUnavailable",
                ru.max_unavailable.as_ref(),
            );
            let zero = |v: &Option<IntOrString>| {
                v.as_ref()
                    .is_some_and(|v| v.scaled_value(100, true) == Ok(0))
            };
            if zero(&ru.max_surge) && zero(&ru.max_unavailable) {
                e.add(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "may not be 0 when maxSurge is 0",
                );
            }
        }
    }
}

fn validate_job(e: &mut Errors, at: &str, s: &JobSpec) {
    e.min(
        &format!("{at}.completions"),
        s.completions.map(i64::from),
        0,
    );
    e.min(
        &format!("{at}.parallelism"),
        s.parallelism.map(i64::from),
        0,
    );
    e.min(
        &format!("{at}.backoffLimit"),
        s.backoff_limit.map(i64::from),
        0,
    );
    e.min(
        &format!("{at}.activeDeadlineSeconds"),
        s.active_deadline_seconds,
        1,
    );
    e.min(
        &format!("{at}.ttlSecondsAfterFinished"),
        s.ttl_seconds_after_finished.map(i64::from),
        0,
    );
    if let Some(sel) = &s.selector {
        validate_controller_template(e, sel, &s.template, false);
    } else {
        validate_pod_spec(e, &format!("{at}.template.spec"), &s.template.spec);
    }
    match s.template.spec.restart_policy.as_deref() {
        Some("OnFailure") | Some("Never") => {}
        other => e.add(
            format!("{at}.template.spec.restartPolicy"),
            format!(
                "must be OnFailure or Never for a Job, got {:?}",
                other.unwrap_or("")
            ),
        ),
    }
}

/// The cron macros Kubernetes takes besides five fields.
const CRON_MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// A CronJob's shape; its schedule and time zone are parsed by the controller as it admits it.
fn validate_cronjob(e: &mut Errors, cj: &CronJob) {
    // Its Jobs are named NAME-<minutes>, 11 characters more, within a label's 63.
    if cj.metadata.name.len() > 52 {
        e.add("metadata.name", "must be no more than 52 characters");
    }
    let s = &cj.spec;
    let schedule = s.schedule.trim();
    if schedule.is_empty() {
        e.add("spec.schedule", "required");
    } else if schedule.starts_with("TZ") || schedule.starts_with("CRON_TZ") {
        e.add(
            "spec.schedule",
            "CRON_TZ or TZ is not supported in the schedule: set spec.timeZone",
        );
    } else if schedule.starts_with('@') {
        if !CRON_MACROS.contains(&schedule.to_ascii_lowercase().as_str()) {
            e.add(
                "spec.schedule",
                format!(
                    "unknown macro {schedule:?} (one of {})",
                    CRON_MACROS.join(", ")
                ),
            );
        }
    } else if schedule.split_whitespace().count() != 5 {
        e.add(
            "spec.schedule",
            format!("{schedule:?}: expected 5 fields (minute hour day-of-month month day-of-week)"),
        );
    }
    e.one_of(
        "spec.concurrencyPolicy",
        s.concurrency_policy.as_deref(),
        &["Allow", "Forbid", "Replace"],
    );
    e.min(
        "spec.startingDeadlineSeconds",
        s.starting_deadline_seconds,
        0,
    );
    e.min(
        "spec.successfulJobsHistoryLimit",
        s.successful_jobs_history_limit.map(i64::from),
        0,
    );
    e.min(
        "spec.failedJobsHistoryLimit",
        s.failed_jobs_history_limit.map(i64::from),
        0,
    );
    validate_job(e, "spec.jobTemplate.spec", &s.job_template.spec);
}

fn validate_controller_template(
    e: &mut Errors,
    selector: &crate::selector::LabelSelector,
    template: &PodTemplateSpec,
    restart_always: bool,
) {
    if selector.is_empty() {
        e.add("spec.selector", "required: a non-empty selector");
    } else {
        match Selector::from_label_selector(selector) {
            Err(err) => e.add("spec.selector", err.to_string()),
            Ok(sel) => {
                if !sel.matches(&template.metadata.labels) {
                    e.add(
                        "spec.template.metadata.labels",
                        format!("`selector` does not match template `labels` (selector {sel})"),
                    );
                }
            }
        }
    }
    for (k, v) in &template.metadata.labels {
        e.check(
            format!("spec.template.metadata.labels[{k}]"),
            check_label_key(k),
        );
        e.check(
            format!("spec.template.metadata.labels[{k}]"),
            check_label_value(v),
        );
    }
    validate_pod_spec(e, "spec.template.spec", &template.spec);
    if restart_always {
        if let Some(p) = template.spec.restart_policy.as_deref() {
            if p != "Always" {
                e.add(
                    "spec.template.spec.restartPolicy",
                    format!("only \"Always\" is supported here, got {p:?}"),
                );
            }
        }
    }
}

pub(crate) fn check_port(p: i32) -> Result<(), String> {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        Err(format!("must be between 1 and 65535, got {p}"))
    }
}

fn validate_service(e: &mut Errors, s: &Service) {
    let spec = &s.spec;
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    e.one_of(
        "spec.type",
        Some(ty),
        &["ClusterIP", "NodePort", "LoadBalancer"],
    );
    e.one_of(
        "spec.sessionAffinity",
        spec.session_affinity.as_deref(),
        &["None", "ClientIP"],
    );
    if let Some(config) = &spec.session_affinity_config {
        if spec.session_affinity.as_deref() != Some("ClientIP") {
            e.add(
                "spec.sessionAffinityConfig",
                "must not be set when sessionAffinity is None",
            );
        }
        let timeout = config.client_ip.as_ref().and_then(|c| c.timeout_seconds);
        if let Some(t) = timeout.filter(|t| !(1..=86400).contains(t)) {
            e.add(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("must be greater than 0 and less than or equal to 86400, got {t}"),
            );
        }
    }
    if let Some(ip) = &spec.cluster_ip {
        if ip != "None" && !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            e.add(
                "spec.clusterIP",
                format!("must be an IP address or \"None\", got {ip:?}"),
            );
        }
        if ip == "None" && ty != "ClusterIP" {
            e.add(
                "spec.clusterIP",
                format!("may not be \"None\" for type {ty}"),
            );
        }
    }
    for (k, v) in &spec.selector {
        e.check(format!("spec.selector[{k}]"), check_label_key(k));
        e.check(format!("spec.selector[{k}]"), check_label_value(v));
    }
    if spec.ports.is_empty() && spec.cluster_ip.as_deref() != Some("None") {
        e.add("spec.ports", "required: at least one port");
    }
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        e.check(format!("{pp}.port"), check_port(p.port));
        e.one_of(
            &format!("{pp}.protocol"),
            p.protocol.as_deref(),
            &["TCP", "UDP"],
        );
        match &p.name {
            Some(n) => {
                e.check(format!("{pp}.name"), check_dns1123_label(n));
                if !names.insert(n.clone()) {
                    e.add(format!("{pp}.name"), format!("duplicate port name {n:?}"));
                }
            }
            None if spec.ports.len() > 1 => e.add(
                format!("{pp}.name"),
                "required when a Service has more than one port",
            ),
            None => {}
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => e.check(format!("{pp}.targetPort"), check_port(*n)),
            Some(IntOrString::String(n)) => {
                e.check(format!("{pp}.targetPort"), check_dns1123_label(n))
            }
            None => {}
        }
        if let Some(np) = p.node_port {
            if ty == "ClusterIP" {
                e.add(
                    format!("{pp}.nodePort"),
                    "may not be used when type is 'ClusterIP'",
                );
            } else if !(30000..=32767).contains(&np) {
                e.add(
                    format!("{pp}.nodePort"),
                    format!("must be between 30000 and 32767, got {np}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifests;

    fn errors_of(yaml: &str) -> Vec<String> {
        let parsed = parse_manifests("test.yaml", yaml).expect("parses");
        validate(&parsed[0].object)
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: LABEL}}
    spec:
      containers:
      - name: web
        image: web:1
        resources: {requests: {cpu: 250m, memory: 64Mi}, limits: {memory: 128Mi}}
"#;

    #[test]
    fn a_good_deployment_has_no_errors() {
        assert!(errors_of(&DEPLOY.replace("REPLICAS", "3").replace("LABEL", "web")).is_empty());
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let errs = errors_of(&DEPLOY.replace("REPLICAS", "-1").replace("LABEL", "other"));
        assert!(
            errs.contains(
                &"spec.replicas: Invalid value: -1: must be greater than or equal to 0".to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.template.metadata.labels: `selector` does not match")),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn table_of_invalid_objects() {
        let cases: &[(&str, &str)] = &[
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: x}]}", "metadata.name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}", "spec.containers"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: ''}]}", "spec.containers[0].image"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {restartPolicy: Sometimes, containers: [{name: a, image: x}]}", "spec.restartPolicy"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, env: [{name: X, valueFrom: {fieldRef: {fieldPath: status.phase}}}]}]}", "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, configMap: {name: c, items: [{key: k, path: ../../etc/passwd}]}}]}", "spec.volumes[0].configMap.items[0].path"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, secret: {secretName: c, defaultMode: 4095}}]}", "spec.volumes[0].secret.defaultMode"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, volumeMounts: [{name: v, mountPath: /v, subPath: ../f}]}], volumes: [{name: v, emptyDir: {}}]}", "spec.containers[0].volumeMounts[0].subPath"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, volumeMounts: [{name: v, mountPath: /v, subPathExpr: /$(X)}]}], volumes: [{name: v, emptyDir: {}}]}", "spec.containers[0].volumeMounts[0].subPathExpr"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: cores, operator: Gt, values: [many]}]}]}}}}", "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 0, podAffinityTerm: {topologyKey: zone}}]}}}", "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: db}}, topologyKey: \"\"}]}}}", "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], topologySpreadConstraints: [{maxSkew: 0, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]}", "spec.topologySpreadConstraints[0].maxSkew"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: Sometimes}]}", "spec.topologySpreadConstraints[0].whenUnsatisfiable"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, projected: {sources: [{configMap: {name: a, items: [{key: k, path: f}]}}, {secret: {name: b, items: [{key: k, path: f}]}}]}}]}", "spec.volumes[0].projected.sources[1].secret.items[0].path"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, projected: {sources: [{configMap: {name: a}, secret: {name: b}}]}}]}", "spec.volumes[0].projected.sources[0]"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, resources: {limits: {gpu: 1}}}]}", "spec.containers[0].resources.limits.gpu"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, resources: {requests: {example.com/dongle: 1}, limits: {example.com/dongle: 2}}}]}", "spec.containers[0].resources.requests.example.com/dongle"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, resources: {limits: {example.com/dongle: 500m}}}]}", "spec.containers[0].resources.limits.example.com/dongle"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: a}, ports: [{port: 80}], sessionAffinity: Sticky}", "spec.sessionAffinity"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: a}, ports: [{port: 80}], sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}}", "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: a}, ports: [{port: 80}], sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}}", "spec.sessionAffinityConfig"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, ports: [{containerPort: 70000}]}]}", "spec.containers[0].ports[0].containerPort"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}]}", "spec.containers[0].resources.requests.memory"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, volumeMounts: [{name: v, mountPath: /d}]}]}", "spec.containers[0].volumeMounts[0].name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}, {name: a, image: y}]}", "spec.containers[1].name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {runtimeClassName: kata, containers: [{name: a, image: x}]}", "spec.runtimeClassName"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {initContainers: [{name: a, image: x}], containers: [{name: a, image: y}]}", "spec.containers[0].name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {initContainers: [{name: i, image: x, readinessProbe: {tcpSocket: {port: 80}}}], containers: [{name: a, image: y}]}", "spec.initContainers[0].readinessProbe"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {initContainers: [{name: i, image: ''}], containers: [{name: a, image: y}]}", "spec.initContainers[0].image"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {initContainers: [{name: i, image: x, restartPolicy: OnFailure}], containers: [{name: a, image: y}]}", "spec.initContainers[0].restartPolicy"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: y, restartPolicy: Always}]}", "spec.containers[0].restartPolicy"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, env: [{name: X, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}]}]}", "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, env: [{name: X, valueFrom: {resourceFieldRef: {resource: limits.cpu, containerName: b}}}]}]}", "spec.containers[0].env[0].valueFrom.resourceFieldRef.containerName"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, downwardAPI: {items: [{path: ip, fieldRef: {fieldPath: status.podIP}}]}}]}", "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, downwardAPI: {items: [{path: cpu, resourceFieldRef: {resource: limits.cpu}}]}}]}", "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], volumes: [{name: v, downwardAPI: {items: [{path: ../x, fieldRef: {fieldPath: metadata.name}}]}}]}", "spec.volumes[0].downwardAPI.items[0].path"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {securityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}, containers: [{name: a, image: x}]}", "spec.securityContext.sysctls[0].name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: true, securityContext: {sysctls: [{name: net.ipv4.tcp_syncookies, value: '1'}]}, containers: [{name: a, image: x}]}", "spec.securityContext.sysctls[0]"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {securityContext: {fsGroup: -5}, containers: [{name: a, image: x}]}", "spec.securityContext.fsGroup"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {securityContext: {seccompProfile: {type: Localhost}}, containers: [{name: a, image: x}]}", "spec.securityContext.seccompProfile.localhostProfile"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../../etc/x.json}}, containers: [{name: a, image: x}]}", "spec.securityContext.seccompProfile.localhostProfile"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, securityContext: {seccompProfile: {type: Unconfined, localhostProfile: x.json}}}]}", "spec.containers[0].securityContext.seccompProfile.localhostProfile"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {runtimeClassName: wasm, securityContext: {seccompProfile: {type: Localhost, localhostProfile: x.json}}, containers: [{name: a, image: x}]}", "spec.securityContext.seccompProfile.type"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {runtimeClassName: wasm, securityContext: {runAsUser: 1000}, containers: [{name: a, image: x}]}", "spec.securityContext.runAsUser"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {runtimeClassName: wasm, containers: [{name: a, image: x, securityContext: {privileged: true}}]}", "spec.containers[0].securityContext.privileged"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {runtimeClassName: wasm, initContainers: [{name: i, image: x, securityContext: {capabilities: {add: [NET_ADMIN]}}}], containers: [{name: a, image: x}]}", "spec.initContainers[0].securityContext.capabilities.add"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 80}]}", "spec.ports[0].nodePort"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 81}]}", "spec.ports[0].name"),
            ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '***'}", "data[k]"),
            ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {containers: [{name: a, image: x}]}}}", "spec.template.spec.restartPolicy"),
            ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {metadata: {labels: {a: b}}, spec: {containers: [{name: a, image: x}]}}}", "spec.selector"),
            ("apiVersion: v1\nkind: Namespace\nmetadata: {name: my.ns}", "metadata.name"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {'bad key': v}}", "metadata.labels[bad key]"),
        ];
        for (yaml, path) in cases {
            let errs = errors_of(yaml);
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{path}:"))),
                "{yaml}\nexpected an error at {path}, got {errs:?}"
            );
        }
    }

    #[test]
    fn downward_api_and_resource_refs_that_kubernetes_takes_are_valid() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: x, env: [{name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}]}]\n  volumes: [{name: v, downwardAPI: {defaultMode: 0444, items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: mem, resourceFieldRef: {containerName: a, resource: requests.memory, divisor: 1Mi}}]}}]\n";
        assert_eq!(errors_of(pod), Vec::<String>::new());
    }

    #[test]
    fn a_sidecar_may_be_probed_as_a_container_is() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: proxy, image: x, restartPolicy: Always, startupProbe: {tcpSocket: {port: 80}}, readinessProbe: {tcpSocket: {port: 80}}, livenessProbe: {tcpSocket: {port: 80}}}]\n  containers: [{name: a, image: x}]\n";
        assert_eq!(errors_of(pod), Vec::<String>::new());
    }

    #[test]
    fn security_contexts_that_kubernetes_takes_are_valid() {
        let runc = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true, fsGroup: 2000, supplementalGroups: [44], sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '0'}], seccompProfile: {type: RuntimeDefault}}\n  containers: [{name: a, image: x, securityContext: {runAsUser: 1001, seccompProfile: {type: Unconfined}}}, {name: b, image: x, securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}}}]\n";
        assert_eq!(errors_of(runc), Vec::<String>::new());
        let wasm = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  runtimeClassName: wasm\n  securityContext: {runAsNonRoot: true}\n  containers: [{name: a, image: x, securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}}]\n";
        assert_eq!(errors_of(wasm), Vec::<String>::new());
    }

    #[test]
    fn names_follow_dns1123() {
        assert!(check_dns1123_label("web-1").is_ok());
        assert!(check_dns1123_label("-web").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
        assert!(check_dns1123_subdomain("a.b-c.d").is_ok());
        assert!(check_dns1123_subdomain("a..b").is_err());
        assert!(check_label_key("kubernetes.io/arch").is_ok());
        assert!(check_label_key("Kubernetes.IO/arch").is_err());
        assert!(check_label_value("v1.2_x").is_ok());
        assert!(check_label_value("-x").is_err());
    }
}
