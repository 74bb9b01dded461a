//! AgentUpgrade: what a rollout needs before it can start.

use super::Errors;
use crate::objects::AgentUpgrade;
use crate::selector::Selector;

pub(super) fn agent_upgrade(e: &mut Errors, u: &AgentUpgrade) {
    let spec = &u.spec;
    if spec.version.trim().is_empty() {
        e.add(
            "spec.version",
            "required: the version the nodes report once upgraded",
        );
    } else if spec.version.chars().any(|c| c.is_whitespace() || c == '/') {
        e.add("spec.version", "a version has no spaces or slashes");
    }
    if spec.binaries.is_empty() {
        e.add(
            "spec.binaries",
            "required: at least one pushed shoal binary (`shoal push ./shoal shoal:VERSION`)",
        );
    }
    for (i, b) in spec.binaries.iter().enumerate() {
        if b.trim().is_empty() {
            e.add(format!("spec.binaries[{i}]"), "empty reference");
        }
    }
    if let Err(err) = Selector::from_label_selector(&spec.node_selector) {
        e.add("spec.nodeSelector", err.to_string());
    }
    e.min(
        "spec.maxUnavailable",
        spec.max_unavailable.map(i64::from),
        1,
    );
    match spec.ready_timeout_seconds {
        Some(s) if !(10..=3600).contains(&s) => e.add(
            "spec.readyTimeoutSeconds",
            format!("{s}: between 10 and 3600 seconds"),
        ),
        _ => {}
    }
}
