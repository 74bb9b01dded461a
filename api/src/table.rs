//! How `shoal get` shows objects: kubectl's columns per kind, and its aligned tables.
//! Pure functions of the objects and `now`, so they are tested without a cluster.

use crate::kind::Kind;
use crate::object::Object;
use crate::objects::*;
use crate::states::condition_true;
use chrono::{DateTime, Utc};

/// The header of a kind's table.
pub fn columns(kind: Kind, wide: bool, all_namespaces: bool) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::DaemonSet => vec![
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        Kind::Job => vec!["NAME", "STATUS", "COMPLETIONS", "AGE"],
        Kind::CronJob => vec![
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
        Kind::Service => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        Kind::Endpoints => vec!["NAME", "ENDPOINTS", "AGE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        Kind::PersistentVolumeClaim => vec![
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "AGE",
        ],
        Kind::PersistentVolume => vec![
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "REASON",
            "AGE",
        ],
        Kind::StorageClass => vec![
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "AGE",
        ],
        Kind::NetworkPolicy => vec!["NAME", "POD-SELECTOR", "AGE"],
        Kind::AgentUpgrade => vec!["NAME", "VERSION", "PHASE", "UPGRADED", "REASON", "AGE"],
    };
    if wide {
        match kind {
            Kind::Pod => c.extend(["IP", "NODE"]),
            Kind::Node => c.extend(["INTERNAL-IP", "OS-IMAGE", "ARCH", "RUNTIMES"]),
            Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet => {
                c.extend(["CONTAINERS", "IMAGES", "SELECTOR"])
            }
            Kind::Service => c.push("SELECTOR"),
            _ => {}
        }
    }
    if all_namespaces && kind.namespaced() {
        c.insert(0, "NAMESPACE");
    }
    c
}

/// kubectl's short ages: `45s`, `5m3s`, `42m`, `3h20m`, `30h`, `3d5h`, `12d`.
pub fn age(since: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(t) = since.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return "<unknown>".into();
    };
    let s = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60).replace("m0s", "m"),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60).replace("h0m", "h"),
        _ if d < 2 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24).replace("d0h", "d"),
        _ => format!("{d}d"),
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn join_map(m: &std::collections::BTreeMap<String, String>) -> String {
    or_none(
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// What `get pods` shows as STATUS: the waiting or terminated reason when there is one.
pub fn pod_status(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let Some(st) = &p.status else {
        return "Pending".into();
    };
    if let Some(reason) = init_status(p, st) {
        return reason;
    }
    for cs in &st.container_statuses {
        if let Some(state) = &cs.state {
            if let Some(reason) = state.waiting.as_ref().and_then(|w| w.reason.clone()) {
                return reason;
            }
            if let Some(t) = &state.terminated {
                if st.phase.as_deref() != Some("Succeeded") {
                    return t
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
                }
            }
        }
    }
    match st.phase.as_deref() {
        Some("Succeeded") => "Completed".into(),
        _ => st
            .reason
            .clone()
            .or_else(|| st.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
    }
}

/// While the init containers run, the first one not done says where it is (kubectl's
/// Init:N/M, Init:Error, Init:CrashLoopBackOff); a started sidecar counts as done. `None`
/// once the pod is initialized: its containers say how it is then.
fn init_status(p: &Pod, st: &PodStatus) -> Option<String> {
    if condition_true(&st.conditions, "Initialized") {
        return None;
    }
    let total = p.spec.init_containers.len();
    for (i, cs) in st.init_container_statuses.iter().enumerate() {
        let state = cs.state.as_ref();
        match (
            state.and_then(|s| s.terminated.as_ref()),
            state.and_then(|s| s.waiting.as_ref()),
        ) {
            (Some(t), _) if t.exit_code == 0 => continue,
            _ if started_sidecar(p, cs) => continue,
            (Some(t), _) => {
                let why = t.reason.clone();
                return Some(format!(
                    "Init:{}",
                    why.unwrap_or_else(|| format!("ExitCode:{}", t.exit_code))
                ));
            }
            (None, Some(w))
                if w.reason
                    .as_deref()
                    .is_some_and(|r| !r.is_empty() && r != "PodInitializing") =>
            {
                return Some(format!("Init:{}", w.reason.clone().unwrap_or_default()));
            }
            _ => return Some(format!("Init:{i}/{total}")),
        }
    }
    None
}

/// Whether `cs` is the status of a sidecar (a restartable init container) that has started.
fn started_sidecar(p: &Pod, cs: &ContainerStatus) -> bool {
    cs.started == Some(true) && sidecar(p, &cs.name)
}

fn sidecar(p: &Pod, name: &str) -> bool {
    p.spec
        .init_containers
        .iter()
        .any(|c| c.name == name && c.is_sidecar())
}

fn service_ports(s: &Service) -> String {
    or_none(
        s.spec
            .ports
            .iter()
            .map(|p| {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                match p.node_port {
                    Some(np) => format!("{}:{np}/{proto}", p.port),
                    None => format!("{}/{proto}", p.port),
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn template_wide(t: &PodTemplateSpec, selector: &crate::selector::LabelSelector) -> [String; 3] {
    let names = t
        .spec
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect::<Vec<_>>()
        .join(",");
    let images = t
        .spec
        .containers
        .iter()
        .map(|c| c.image.clone())
        .collect::<Vec<_>>()
        .join(",");
    let sel = crate::selector::Selector::from_label_selector(selector)
        .map(|s| s.to_string())
        .unwrap_or_default();
    [names, images, or_none(sel)]
}

fn cronjob_row(cj: &CronJob, name: String, age: String, now: DateTime<Utc>) -> Vec<String> {
    let st = cj.status.clone().unwrap_or_default();
    vec![
        name,
        cj.spec.schedule.clone(),
        cj.spec.time_zone.clone().unwrap_or_else(|| "<none>".into()),
        cj.suspended().to_string(),
        st.active.len().to_string(),
        st.last_schedule_time
            .as_deref()
            .map(|t| self::age(Some(t), now))
            .unwrap_or_else(|| "<none>".into()),
        age,
    ]
}

/// The rows of the storage kinds: claims, volumes and classes.
fn storage_row(obj: &Object, name: String, age: String) -> Vec<String> {
    match obj {
        Object::PersistentVolumeClaim(c) => {
            let st = c.status.clone().unwrap_or_default();
            vec![
                name,
                if c.metadata.deletion_timestamp.is_some() {
                    "Terminating".to_string()
                } else {
                    c.phase().to_string()
                },
                c.spec.volume_name.clone().unwrap_or_default(),
                st.capacity
                    .get("storage")
                    .map(|q| q.to_string())
                    .unwrap_or_default(),
                access_modes(&st.access_modes),
                c.spec.storage_class_name.clone().unwrap_or_default(),
                age,
            ]
        }
        Object::PersistentVolume(v) => vec![
            name,
            v.spec
                .capacity
                .get("storage")
                .map(|q| q.to_string())
                .unwrap_or_default(),
            access_modes(&v.spec.access_modes),
            v.reclaim_policy().to_string(),
            v.phase().to_string(),
            v.spec
                .claim_ref
                .as_ref()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    )
                })
                .unwrap_or_default(),
            v.spec.storage_class_name.clone().unwrap_or_default(),
            v.status
                .as_ref()
                .and_then(|s| s.reason.clone())
                .unwrap_or_default(),
            age,
        ],
        Object::StorageClass(c) => vec![
            if c.is_default() {
                format!("{name} (default)")
            } else {
                name
            },
            c.provisioner.clone(),
            c.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            c.volume_binding_mode
                .clone()
                .unwrap_or_else(|| "Immediate".into()),
            age,
        ],
        _ => Vec::new(),
    }
}

/// kubectl's short access modes: `RWO,ROX`.
fn access_modes(modes: &[String]) -> String {
    modes
        .iter()
        .map(|m| match m.as_str() {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One row of a kind's table, matching [`columns`].
pub fn row(obj: &Object, now: DateTime<Utc>, wide: bool, all_namespaces: bool) -> Vec<String> {
    let m = obj.metadata();
    let name = m.name.clone();
    let age = age(m.creation_timestamp.as_deref(), now);
    let mut r: Vec<String> = match obj {
        Object::Pod(p) => pod_row(p, name, age, wide),
        Object::Deployment(d) => {
            let st = d.status.clone().unwrap_or_default();
            let mut r = vec![
                name,
                format!("{}/{}", st.ready_replicas, d.spec.replicas.unwrap_or(1)),
                st.updated_replicas.to_string(),
                st.available_replicas.to_string(),
                age,
            ];
            if wide {
                r.extend(template_wide(&d.spec.template, &d.spec.selector));
            }
            r
        }
        Object::ReplicaSet(rs) => {
            let st = rs.status.clone().unwrap_or_default();
            let mut r = vec![
                name,
                rs.spec.replicas.unwrap_or(1).to_string(),
                st.replicas.to_string(),
                st.ready_replicas.to_string(),
                age,
            ];
            if wide {
                r.extend(template_wide(&rs.spec.template, &rs.spec.selector));
            }
            r
        }
        Object::DaemonSet(ds) => {
            let st = ds.status.clone().unwrap_or_default();
            let mut r = vec![
                name,
                st.desired_number_scheduled.to_string(),
                st.current_number_scheduled.to_string(),
                st.number_ready.to_string(),
                st.updated_number_scheduled.to_string(),
                st.number_available.to_string(),
                join_map(&ds.spec.template.spec.node_selector),
                age,
            ];
            if wide {
                r.extend(template_wide(&ds.spec.template, &ds.spec.selector));
            }
            r
        }
        Object::Job(j) => {
            let st = j.status.clone().unwrap_or_default();
            let status = if condition_true(&st.conditions, "Complete") {
                "Complete"
            } else if condition_true(&st.conditions, "Failed") {
                "Failed"
            } else {
                "Running"
            };
            vec![
                name,
                status.into(),
                format!("{}/{}", st.succeeded, j.spec.completions.unwrap_or(1)),
                age,
            ]
        }
        Object::CronJob(cj) => cronjob_row(cj, name, age, now),
        Object::Service(s) => service_row(s, name, age, wide),
        Object::Endpoints(e) => {
            let eps: Vec<String> = e
                .subsets
                .iter()
                .flat_map(|s| {
                    s.addresses.iter().flat_map(move |a| {
                        s.ports.iter().map(move |p| format!("{}:{}", a.ip, p.port))
                    })
                })
                .collect();
            vec![name, or_none(eps.join(",")), age]
        }
        Object::ConfigMap(c) => vec![name, (c.data.len() + c.binary_data.len()).to_string(), age],
        Object::Secret(s) => vec![
            name,
            s.type_.clone().unwrap_or_else(|| "Opaque".into()),
            s.data.len().to_string(),
            age,
        ],
        Object::Namespace(n) => {
            let phase = if n.metadata.deletion_timestamp.is_some() {
                "Terminating"
            } else {
                "Active"
            };
            vec![name, phase.into(), age]
        }
        Object::Node(n) => node_row(n, name, age, now, wide),
        Object::Event(e) => event_row(e, now),
        Object::NetworkPolicy(p) => {
            let sel = crate::selector::Selector::from_label_selector(&p.spec.pod_selector)
                .map(|s| s.to_string())
                .unwrap_or_default();
            vec![name, or_none(sel), age]
        }
        Object::AgentUpgrade(u) => upgrade_row(u, name, age),
        Object::PersistentVolumeClaim(_)
        | Object::PersistentVolume(_)
        | Object::StorageClass(_) => storage_row(obj, name, age),
    };
    if all_namespaces && obj.kind().namespaced() {
        r.insert(0, m.namespace_or_default().to_string());
    }
    r
}

fn upgrade_row(u: &crate::AgentUpgrade, name: String, age: String) -> Vec<String> {
    let status = u.status.clone().unwrap_or_default();
    let done = status
        .nodes
        .iter()
        .filter(|n| n.state == "Upgraded")
        .count();
    vec![
        name,
        u.spec.version.clone(),
        or_none(status.phase),
        format!("{done}/{}", status.nodes.len()),
        or_none(status.reason.unwrap_or_default()),
        age,
    ]
}

fn pod_row(p: &Pod, name: String, age: String, wide: bool) -> Vec<String> {
    // Sidecars count as containers (kubectl's READY and RESTARTS); while the pod initializes,
    // its init containers' restarts are the ones shown.
    let (statuses, init) = p
        .status
        .as_ref()
        .map(|s| {
            (
                s.container_statuses.as_slice(),
                s.init_container_statuses.as_slice(),
            )
        })
        .unwrap_or((&[], &[]));
    let sidecars = || init.iter().filter(|c| sidecar(p, &c.name));
    let ready = statuses.iter().filter(|c| c.ready).count()
        + sidecars()
            .filter(|c| c.ready && c.started == Some(true))
            .count();
    let total = p.spec.containers.len()
        + p.spec
            .init_containers
            .iter()
            .filter(|c| c.is_sidecar())
            .count();
    let initializing = p
        .status
        .as_ref()
        .is_some_and(|st| init_status(p, st).is_some());
    let restarts: i32 = if initializing {
        init.iter().map(|c| c.restart_count).sum()
    } else {
        statuses
            .iter()
            .chain(sidecars())
            .map(|c| c.restart_count)
            .sum()
    };
    let mut r = vec![
        name,
        format!("{ready}/{total}"),
        pod_status(p),
        restarts.to_string(),
        age,
    ];
    if wide {
        let st = p.status.as_ref();
        r.push(
            st.and_then(|s| s.pod_ip.clone())
                .unwrap_or_else(|| "<none>".into()),
        );
        r.push(p.spec.node_name.clone().unwrap_or_else(|| "<none>".into()));
    }
    r
}

fn service_row(s: &Service, name: String, age: String, wide: bool) -> Vec<String> {
    let external = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .map(|lb| {
            lb.ingress
                .iter()
                .filter_map(|i| i.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if s.spec.type_.as_deref() == Some("LoadBalancer") {
                "<pending>".into()
            } else {
                "<none>".into()
            }
        });
    let mut r = vec![
        name,
        s.spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        s.spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()),
        external,
        service_ports(s),
        age,
    ];
    if wide {
        r.push(join_map(&s.spec.selector));
    }
    r
}

fn node_row(n: &Node, name: String, age: String, now: DateTime<Utc>, wide: bool) -> Vec<String> {
    let st = n.status.clone().unwrap_or_default();
    let mut status = if condition_true(&st.conditions, "Ready") {
        "Ready".to_string()
    } else {
        // A node that stopped posting status says since when it has been out of touch.
        let silent = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "Unknown")
            .and_then(|c| c.last_heartbeat_time.as_deref());
        match silent {
            Some(beat) => format!("NotReady(disconnected {})", self::age(Some(beat), now)),
            None => "NotReady".to_string(),
        }
    };
    if n.spec.unschedulable {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = n
        .metadata
        .labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    let info = st.node_info.clone().unwrap_or_default();
    let mut r = vec![
        name,
        status,
        or_none(roles.join(",")),
        age,
        info.kubelet_version.clone(),
    ];
    if wide {
        let ip = st
            .addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone());
        r.push(ip.unwrap_or_else(|| "<none>".into()));
        r.push(or_none(info.os_image.clone()));
        r.push(or_none(info.architecture.clone()));
        r.push(or_none(
            st.runtime_handlers
                .iter()
                .map(|h| h.name.clone())
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    r
}

fn event_row(e: &Event, now: DateTime<Utc>) -> Vec<String> {
    let obj = format!(
        "{}/{}",
        e.involved_object
            .kind
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase(),
        e.involved_object.name.as_deref().unwrap_or("")
    );
    let seen = crate::table::age(
        e.last_timestamp
            .as_deref()
            .or(e.metadata.creation_timestamp.as_deref()),
        now,
    );
    vec![
        seen,
        e.type_.clone().unwrap_or_else(|| "Normal".into()),
        e.reason.clone().unwrap_or_default(),
        obj,
        e.message.clone().unwrap_or_default(),
    ]
}

/// `s` with control characters escaped, for a terminal: a string a node or a workload wrote
/// (an event's message, a label, a log line) must not move the cursor, retitle the window or
/// forge output (kubectl escapes them too, since CVE-2021-25743). Newlines and tabs pass when
/// `keep_lines` is set.
pub fn terminal_safe(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && !(keep_lines && (c == '\n' || c == '\t'));
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Aligns rows under a header with three spaces between columns, as kubectl does; control
/// characters in cells are escaped ([`terminal_safe`]).
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| terminal_safe(c, false).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests;
