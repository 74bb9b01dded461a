//! Validation of a pod spec (a Pod's, or a workload's template): scheduling fields, volumes,
//! and each container's ports, resources, env, mounts and probes.

use super::{check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value};
use super::{check_port, Errors};
use crate::intstr::IntOrString;
use crate::objects::*;
use crate::quantity::Quantity;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn validate_pod_spec(e: &mut Errors, path: &str, s: &PodSpec) {
    scheduling(e, path, s);
    security(e, path, s);
    // A pod's DNS names: each part a label.
    for (field, v) in [("hostname", &s.hostname), ("subdomain", &s.subdomain)] {
        if let Some(v) = v {
            e.check(format!("{path}.{field}"), super::check_dns1123_label(v));
        }
    }
    let volume_names = volumes(e, path, s);
    if s.containers.is_empty() {
        e.add(
            format!("{path}.containers"),
            "required: at least one container",
        );
    }
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    let known = Known {
        volumes: &volume_names,
        containers: container_names(s),
    };
    for (i, c) in s.init_containers.iter().enumerate() {
        let p = format!("{path}.initContainers[{i}]");
        container(e, path, &p, c, &known, &mut names, &mut host_ports);
        e.one_of(
            &format!("{p}.restartPolicy"),
            c.restart_policy.as_deref(),
            &["Always"],
        );
        if c.is_sidecar() {
            continue;
        }
        // They run to completion: nothing to probe (Kubernetes refuses these too). A sidecar
        // runs beside the containers, and is probed as they are.
        for (field, probe) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ] {
            if probe.is_some() {
                e.add(
                    format!("{p}.{field}"),
                    "must not be set for init containers (unless restartPolicy: Always)",
                );
            }
        }
    }
    for (i, c) in s.containers.iter().enumerate() {
        let p = format!("{path}.containers[{i}]");
        container(e, path, &p, c, &known, &mut names, &mut host_ports);
        if c.restart_policy.is_some() {
            e.add(
                format!("{p}.restartPolicy"),
                "may only be set on init containers (restartPolicy: Always makes a sidecar); the pod's restartPolicy governs its containers",
            );
        }
    }
}

/// The fields that place and run the pod: DNS and restart policies, runtime class, grace
/// and deadline, node selector and tolerations.
fn scheduling(e: &mut Errors, path: &str, s: &PodSpec) {
    e.one_of(
        &format!("{path}.dnsPolicy"),
        s.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default"],
    );
    e.one_of(
        &format!("{path}.restartPolicy"),
        s.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    if let Some(rc) = &s.runtime_class_name {
        e.one_of(
            &format!("{path}.runtimeClassName"),
            Some(rc),
            &crate::RuntimeClass::ALL.map(crate::RuntimeClass::as_str),
        );
    }
    e.min(
        &format!("{path}.terminationGracePeriodSeconds"),
        s.termination_grace_period_seconds,
        0,
    );
    e.min(
        &format!("{path}.activeDeadlineSeconds"),
        s.active_deadline_seconds,
        1,
    );
    if let Some(a) = &s.affinity {
        super::affinity::affinity(e, &format!("{path}.affinity"), a);
    }
    super::affinity::spread(e, path, &s.topology_spread_constraints);
    for (k, v) in &s.node_selector {
        e.check(format!("{path}.nodeSelector[{k}]"), check_label_key(k));
        e.check(format!("{path}.nodeSelector[{k}]"), check_label_value(v));
    }
    for (i, t) in s.tolerations.iter().enumerate() {
        let p = format!("{path}.tolerations[{i}]");
        e.one_of(
            &format!("{p}.operator"),
            t.operator.as_deref(),
            &["Exists", "Equal"],
        );
        e.one_of(
            &format!("{p}.effect"),
            t.effect.as_deref(),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
        if t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            e.add(
                format!("{p}.value"),
                "must be empty when operator is Exists",
            );
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            e.add(
                format!("{p}.tolerationSeconds"),
                "only applies to effect NoExecute",
            );
        }
    }
}

/// The pod's volumes; returns their names.
fn volumes<'a>(e: &mut Errors, path: &str, s: &'a PodSpec) -> BTreeSet<&'a str> {
    let mut volume_names = BTreeSet::new();
    for (i, v) in s.volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        e.check(format!("{p}.name"), check_dns1123_label(&v.name));
        if !volume_names.insert(v.name.as_str()) {
            e.add(
                format!("{p}.name"),
                format!("duplicate volume name {:?}", v.name),
            );
        }
        match v.source_count() {
            1 => {}
            0 => e.add(
                &p,
                "must specify one volume source (emptyDir, hostPath, configMap, secret, downwardAPI)",
            ),
            _ => e.add(&p, "may specify only one volume source"),
        }
        if let Some(h) = &v.host_path {
            super::storage::host_path(e, &format!("{p}.hostPath"), h);
        }
        if let Some(c) = &v.config_map {
            e.check(
                format!("{p}.configMap.name"),
                check_dns1123_subdomain(&c.name),
            );
        }
        let projections = [
            v.config_map
                .as_ref()
                .map(|c| ("configMap", &c.items, c.default_mode)),
            v.secret
                .as_ref()
                .map(|c| ("secret", &c.items, c.default_mode)),
        ];
        for (source, items, default_mode) in projections.into_iter().flatten() {
            check_mode(e, &format!("{p}.{source}.defaultMode"), default_mode);
            for (j, item) in items.iter().enumerate() {
                let ip = format!("{p}.{source}.items[{j}]");
                check_mode(e, &format!("{ip}.mode"), item.mode);
                if let Err(m) = check_relative_path(&item.path) {
                    e.add(format!("{ip}.path"), m);
                }
            }
        }
        if let Some(c) = &v.secret {
            e.check(
                format!("{p}.secret.secretName"),
                check_dns1123_subdomain(&c.secret_name),
            );
        }
        if let Some(d) = &v.downward_api {
            downward_api(e, &format!("{p}.downwardAPI"), d, &container_names(s));
        }
        if let Some(pr) = &v.projected {
            projected(e, &format!("{p}.projected"), pr, &container_names(s));
        }
    }
    volume_names
}

/// Exactly one source per projection, valid items, and no path written twice.
fn projected(e: &mut Errors, p: &str, pr: &ProjectedVolumeSource, containers: &[&str]) {
    check_mode(e, &format!("{p}.defaultMode"), pr.default_mode);
    let mut paths = BTreeSet::new();
    for (i, src) in pr.sources.iter().enumerate() {
        let sp = format!("{p}.sources[{i}]");
        let set = [
            src.config_map.is_some(),
            src.secret.is_some(),
            src.downward_api.is_some(),
        ];
        if set.iter().all(|s| !s) {
            e.add(
                sp.clone(),
                "has no source Shoal serves: configMap, secret or downwardAPI \
                 (serviceAccountToken and clusterTrustBundle are not served)",
            );
        } else if !exactly_one(&set) {
            e.add(
                sp.clone(),
                "must have exactly one of configMap, secret, downwardAPI",
            );
        }
        let objects = [("configMap", &src.config_map), ("secret", &src.secret)];
        for (what, o) in objects {
            let Some(o) = o else { continue };
            e.check(
                format!("{sp}.{what}.name"),
                check_dns1123_subdomain(&o.name),
            );
            for (j, item) in o.items.iter().enumerate() {
                let ip = format!("{sp}.{what}.items[{j}]");
                check_mode(e, &format!("{ip}.mode"), item.mode);
                e.check(format!("{ip}.path"), check_relative_path(&item.path));
                if !paths.insert(item.path.clone()) {
                    e.add(format!("{ip}.path"), "conflicting duplicate path");
                }
            }
        }
        if let Some(d) = &src.downward_api {
            let dp = format!("{sp}.downwardAPI");
            let items = DownwardApiVolumeSource {
                items: d.items.clone(),
                default_mode: None,
            };
            downward_api(e, &dp, &items, containers);
            for (j, item) in d.items.iter().enumerate() {
                if !paths.insert(item.path.clone()) {
                    e.add(
                        format!("{dp}.items[{j}].path"),
                        "conflicting duplicate path",
                    );
                }
            }
        }
    }
}

/// The sysctls Kubernetes deems safe (namespaced, and harmless to the node and other pods):
/// the only ones a pod may set without the kubelet's --allowed-unsafe-sysctls, which Shoal
/// has no counterpart of.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The pod's and its containers' securityContext: ids, sysctls, seccomp profiles, and for a
/// wasm pod what has no meaning for one (a Linux user, kernel settings), refused rather than
/// ignored.
fn security(e: &mut Errors, path: &str, s: &PodSpec) {
    let wasm =
        crate::RuntimeClass::of(s.runtime_class_name.as_deref()) == crate::RuntimeClass::Wasm;
    let no_user = "a wasm pod has no Linux user or groups: remove it, or run the pod with runc";
    let id = |e: &mut Errors, p: String, v: Option<i64>| {
        if let Some(n) = v.filter(|n| u32::try_from(*n).is_err()) {
            e.add(p, format!("must be between 0 and 4294967295, got {n}"));
        }
    };
    let seccomp =
        |e: &mut Errors, p: String, profile: Option<&SeccompProfile>| seccomp(e, &p, profile, wasm);
    if let Some(sc) = &s.security_context {
        let p = format!("{path}.securityContext");
        for (field, v) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
            ("fsGroup", sc.fs_group),
        ] {
            id(e, format!("{p}.{field}"), v);
            if wasm && v.is_some() {
                e.add(format!("{p}.{field}"), no_user);
            }
        }
        for (i, g) in sc.supplemental_groups.iter().enumerate() {
            id(e, format!("{p}.supplementalGroups[{i}]"), Some(*g));
        }
        if wasm && !sc.supplemental_groups.is_empty() {
            e.add(format!("{p}.supplementalGroups"), no_user);
        }
        for (i, sysctl) in sc.sysctls.iter().enumerate() {
            let sp = format!("{p}.sysctls[{i}]");
            if wasm {
                e.add(&sp, "a wasm pod has no kernel parameters to set");
            } else if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                e.add(
                    format!("{sp}.name"),
                    format!(
                        "{:?} is not a safe sysctl: supported values: {}",
                        sysctl.name,
                        SAFE_SYSCTLS.join(", ")
                    ),
                );
            } else if s.host_network && sysctl.name.starts_with("net.") {
                e.add(
                    &sp,
                    "may not set net.* sysctls with hostNetwork (they would be the node's)",
                );
            }
        }
        seccomp(
            e,
            format!("{p}.seccompProfile"),
            sc.seccomp_profile.as_ref(),
        );
    }
    let all = s
        .init_containers
        .iter()
        .map(|c| ("initContainers", c))
        .chain(s.containers.iter().map(|c| ("containers", c)));
    let mut index = BTreeMap::new();
    for (list, c) in all {
        let i = index.entry(list).or_insert(0usize);
        let p = format!("{path}.{list}[{i}].securityContext");
        *i += 1;
        let Some(sc) = &c.security_context else {
            continue;
        };
        for (field, v) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
        ] {
            id(e, format!("{p}.{field}"), v);
            if wasm && v.is_some() {
                e.add(format!("{p}.{field}"), no_user);
            }
        }
        if wasm && sc.privileged == Some(true) {
            e.add(
                format!("{p}.privileged"),
                "a wasm pod cannot be privileged: it runs in wasmtime's sandbox",
            );
        }
        if wasm && sc.capabilities.as_ref().is_some_and(|c| !c.add.is_empty()) {
            e.add(
                format!("{p}.capabilities.add"),
                "a wasm pod has no Linux capabilities to add",
            );
        }
        seccomp(
            e,
            format!("{p}.seccompProfile"),
            sc.seccomp_profile.as_ref(),
        );
    }
}

/// A seccompProfile: RuntimeDefault, Unconfined, or Localhost with a path under the node's
/// seccomp directory; none has meaning for a wasm pod but the default.
fn seccomp(e: &mut Errors, p: &str, profile: Option<&SeccompProfile>, wasm: bool) {
    let Some(profile) = profile else { return };
    let local = profile.localhost_profile.as_deref();
    match profile.type_.as_str() {
        "RuntimeDefault" => {}
        "Unconfined" | "Localhost" if wasm => {
            e.add(format!("{p}.type"), "a wasm pod has no seccomp filter")
        }
        "Unconfined" => {}
        // A file under the agent's data dir, `seccomp/`, as the kubelet's is under its root.
        "Localhost" => e.check(
            format!("{p}.localhostProfile"),
            check_relative_path(local.unwrap_or_default()),
        ),
        other => e.add(
            format!("{p}.type"),
            format!(
                "Unsupported value: {other:?}: supported values: RuntimeDefault, Unconfined, Localhost"
            ),
        ),
    }
    if local.is_some() && profile.type_ != "Localhost" {
        e.add(
            format!("{p}.localhostProfile"),
            "can only be set when type is Localhost",
        );
    }
}

/// Every container's name, init containers too.
fn container_names(s: &PodSpec) -> Vec<&str> {
    s.init_containers
        .iter()
        .chain(&s.containers)
        .map(|c| c.name.as_str())
        .collect()
}

/// The pod's own fields a downwardAPI volume may hold (addresses and the node are env-only).
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "metadata.labels['KEY']",
    "metadata.annotations['KEY']",
];

fn downward_api(e: &mut Errors, p: &str, d: &DownwardApiVolumeSource, containers: &[&str]) {
    check_mode(e, &format!("{p}.defaultMode"), d.default_mode);
    for (j, item) in d.items.iter().enumerate() {
        let ip = format!("{p}.items[{j}]");
        check_mode(e, &format!("{ip}.mode"), item.mode);
        if let Err(m) = check_relative_path(&item.path) {
            e.add(format!("{ip}.path"), m);
        }
        match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => {
                let whole = matches!(
                    f.field_path.as_str(),
                    "metadata.labels" | "metadata.annotations"
                );
                let env_only = !f.field_path.starts_with("metadata.");
                if env_only || !(whole || field_path_supported(&f.field_path)) {
                    e.add(
                        format!("{ip}.fieldRef.fieldPath"),
                        format!(
                            "Unsupported value: {:?}: supported values: {}",
                            f.field_path,
                            VOLUME_FIELD_PATHS.join(", ")
                        ),
                    );
                }
            }
            (None, Some(r)) => {
                if r.container_name.is_none() {
                    e.add(format!("{ip}.resourceFieldRef.containerName"), "required");
                }
                resource_ref(e, &format!("{ip}.resourceFieldRef"), r, containers);
            }
            _ => e.add(
                &ip,
                "must specify exactly one of fieldRef, resourceFieldRef",
            ),
        }
    }
}

/// The requests and limits `resourceFieldRef` reads.
const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];

fn resource_ref(e: &mut Errors, p: &str, r: &ResourceFieldSelector, containers: &[&str]) {
    if !RESOURCE_FIELDS.contains(&r.resource.as_str()) {
        e.add(
            format!("{p}.resource"),
            format!(
                "Unsupported value: {:?}: supported values: {}",
                r.resource,
                RESOURCE_FIELDS.join(", ")
            ),
        );
    }
    if let Some(d) = &r.divisor {
        if d.milli_value() <= 0 {
            e.add(
                format!("{p}.divisor"),
                format!("must be more than 0, got {d}"),
            );
        }
    }
    if let Some(name) = &r.container_name {
        if !containers.contains(&name.as_str()) {
            e.add(
                format!("{p}.containerName"),
                format!("no container {name:?} in the pod"),
            );
        }
    }
}

/// One container, at `p`; `names` and `host_ports` are those of the containers before it.
/// What a container's fields may refer to: the pod's volumes and containers.
struct Known<'a> {
    volumes: &'a BTreeSet<&'a str>,
    containers: Vec<&'a str>,
}

fn container<'a>(
    e: &mut Errors,
    path: &str,
    p: &str,
    c: &'a Container,
    known: &Known<'_>,
    names: &mut BTreeSet<&'a str>,
    host_ports: &mut BTreeSet<(i32, String)>,
) {
    e.check(format!("{p}.name"), check_dns1123_label(&c.name));
    if !names.insert(c.name.as_str()) {
        e.add(
            format!("{p}.name"),
            format!("duplicate container name {:?}", c.name),
        );
    }
    if c.image.trim().is_empty() {
        e.add(format!("{p}.image"), "required");
    }
    e.one_of(
        &format!("{p}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    ports(e, p, c, host_ports);
    check_quantity_map(e, &format!("{p}.resources.requests"), &c.resources.requests);
    check_quantity_map(e, &format!("{p}.resources.limits"), &c.resources.limits);
    extended_resources(e, p, c);
    for (res, req) in &c.resources.requests {
        if let Some(lim) = c.resources.limits.get(res) {
            if req > lim {
                e.add(
                    format!("{p}.resources.requests.{res}"),
                    format!("must be less than or equal to the {res} limit ({lim}), got {req}"),
                );
            }
        }
    }
    for (j, env) in c.env.iter().enumerate() {
        env_var(e, &format!("{p}.env[{j}]"), env, &known.containers);
    }
    mounts(e, path, p, c, known.volumes);
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(pr) = probe {
            validate_probe(e, &format!("{p}.{field}"), pr);
        }
    }
}

fn ports(e: &mut Errors, p: &str, c: &Container, host_ports: &mut BTreeSet<(i32, String)>) {
    for (j, port) in c.ports.iter().enumerate() {
        let pp = format!("{p}.ports[{j}]");
        e.check(
            format!("{pp}.containerPort"),
            check_port(port.container_port),
        );
        e.one_of(
            &format!("{pp}.protocol"),
            port.protocol.as_deref(),
            &["TCP", "UDP", "SCTP"],
        );
        if let Some(hp) = port.host_port {
            e.check(format!("{pp}.hostPort"), check_port(hp));
            let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            if !host_ports.insert((hp, proto)) {
                e.add(
                    format!("{pp}.hostPort"),
                    format!("duplicate host port {hp}"),
                );
            }
        }
        if let Some(n) = &port.name {
            if n.len() > 15 {
                e.add(
                    format!("{pp}.name"),
                    format!("must be no more than 15 characters, got {}", n.len()),
                );
            }
            e.check(format!("{pp}.name"), check_dns1123_label(n));
        }
    }
}

/// Whether exactly one of a field's alternatives is set.
fn exactly_one(set: &[bool]) -> bool {
    set.iter().filter(|b| **b).count() == 1
}

fn env_var(e: &mut Errors, ep: &str, env: &EnvVar, containers: &[&str]) {
    if env.name.is_empty() {
        e.add(format!("{ep}.name"), "required");
    }
    if let Some(from) = &env.value_from {
        let sources = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
        ];
        if !exactly_one(&sources) {
            e.add(
                format!("{ep}.valueFrom"),
                "must specify exactly one of configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef",
            );
        }
        if let Some(r) = &from.resource_field_ref {
            resource_ref(
                e,
                &format!("{ep}.valueFrom.resourceFieldRef"),
                r,
                containers,
            );
        }
        if env.value.is_some() {
            e.add(
                format!("{ep}.valueFrom"),
                "may not be specified when `value` is not empty",
            );
        }
        if let Some(f) = &from.field_ref {
            if !field_path_supported(&f.field_path) {
                e.add(
                    format!("{ep}.valueFrom.fieldRef.fieldPath"),
                    format!(
                        "Unsupported value: {:?}: supported values: {}",
                        f.field_path,
                        FIELD_PATHS.join(", ")
                    ),
                );
            }
        }
    }
}

fn mounts(e: &mut Errors, path: &str, p: &str, c: &Container, volume_names: &BTreeSet<&str>) {
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{p}.volumeMounts[{j}]");
        if !volume_names.contains(m.name.as_str()) {
            e.add(
                format!("{mp}.name"),
                format!("volume {:?} is not declared in {path}.volumes", m.name),
            );
        }
        if !m.mount_path.starts_with('/') {
            e.add(
                format!("{mp}.mountPath"),
                format!("must be an absolute path, got {:?}", m.mount_path),
            );
        }
        let sub_path = m.sub_path.as_deref().filter(|s| !s.is_empty());
        let sub_path_expr = m.sub_path_expr.as_deref().filter(|s| !s.is_empty());
        if let Some(sp) = sub_path {
            e.check(format!("{mp}.subPath"), check_relative_path(sp));
        }
        if let Some(expr) = sub_path_expr {
            e.check(format!("{mp}.subPathExpr"), check_relative_path(expr));
            if sub_path.is_some() {
                e.add(
                    format!("{mp}.subPathExpr"),
                    "subPath and subPathExpr are mutually exclusive",
                );
            }
        }
    }
}

/// Resource names are standard or extended (domain-prefixed); extended ones come in whole
/// units and are never overcommitted, so a request that is set equals the limit.
fn extended_resources(e: &mut Errors, p: &str, c: &Container) {
    let r = &c.resources;
    for (which, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map {
            let fp = format!("{p}.resources.{which}.{name}");
            let standard = matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage")
                || name.starts_with("hugepages-");
            if standard {
                continue;
            }
            if !super::is_extended_resource(name) {
                e.add(fp, "must be a standard resource (cpu, memory, ephemeral-storage, hugepages-<size>) or an extended resource with a domain prefix (example.com/name)");
                continue;
            }
            if q.milli_value() % 1000 != 0 {
                e.add(fp.clone(), format!("must be a whole number, got {q}"));
            }
            if which == "requests" && r.limits.get(name).is_some_and(|l| l != q) {
                e.add(
                    fp,
                    format!(
                        "must equal the {name} limit: extended resources are not overcommitted"
                    ),
                );
            }
        }
    }
}

fn check_quantity_map(e: &mut Errors, path: &str, m: &BTreeMap<String, Quantity>) {
    for (k, q) in m {
        if q.is_negative() {
            e.add(format!("{path}.{k}"), format!("must be >= 0, got {q}"));
        }
    }
}

fn validate_probe(e: &mut Errors, path: &str, p: &Probe) {
    let handlers = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
    ];
    if !exactly_one(&handlers) {
        e.add(path, "must specify exactly one of httpGet, tcpSocket, exec");
    }
    for (field, v, min) in [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("periodSeconds", p.period_seconds, 1),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("successThreshold", p.success_threshold, 1),
        ("failureThreshold", p.failure_threshold, 1),
    ] {
        e.min(&format!("{path}.{field}"), v.map(i64::from), min);
    }
    let port = p
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or(p.tcp_socket.as_ref().map(|t| &t.port));
    match port {
        Some(IntOrString::Int(n)) => e.check(format!("{path}.port"), check_port(*n)),
        Some(IntOrString::String(s)) => e.check(format!("{path}.port"), check_dns1123_label(s)),
        None => {}
    }
    if let Some(x) = &p.exec {
        if x.command.is_empty() {
            e.add(format!("{path}.exec.command"), "required");
        }
    }
}

/// A file mode of a projected volume: permission bits only.
fn check_mode(e: &mut Errors, path: &str, mode: Option<i32>) {
    if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
        e.add(
            path,
            format!("must be a number between 0 and 0777 (octal), both inclusive, got {m}"),
        );
    }
}

/// A path inside a volume: relative, with no `..` element.
pub fn check_relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.starts_with('/') {
        return Err(format!("must be a relative path, got {p:?}"));
    }
    if p.split('/').any(|seg| seg == "..") {
        return Err(format!("must not contain '..', got {p:?}"));
    }
    Ok(())
}

/// The `fieldRef` paths a container's env may read (the agent fills them in).
const FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels['KEY']",
    "metadata.annotations['KEY']",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
];

fn field_path_supported(path: &str) -> bool {
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .is_some_and(|k| !k.is_empty())
    };
    FIELD_PATHS.contains(&path) || keyed("metadata.labels['") || keyed("metadata.annotations['")
}
