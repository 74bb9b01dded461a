//! The query parameters of the Kubernetes API that Shoal serves.

use shoal_transport::proto::FieldValidation;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub label_selector: String,
    pub field_selector: String,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub limit: Option<usize>,
    pub continue_: Option<String>,
    pub dry_run: bool,
    pub field_validation: Option<String>,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    /// A watch that begins with the state as `ADDED` events and a bookmark marking its end
    /// (client-go's watch-list); `Some(false)`: begins at the present, without them.
    pub send_initial_events: Option<bool>,
    pub include_object: Option<String>,
    /// `pods/log`: the container, whether to follow, the previous run, the last lines.
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    /// `pods/log`: the most bytes to send.
    pub limit_bytes: Option<u64>,
    /// `pods/log`: each line after its time; only the lines from a time on, given as seconds
    /// ago or as a time (as sent: checked where they are used).
    pub timestamps: bool,
    pub since_seconds: Option<String>,
    pub since_time: Option<String>,
    /// Who writes (managed fields), and whether a server-side apply takes fields over from
    /// others (`force`).
    pub field_manager: Option<String>,
    pub force: bool,
    /// Names the query had that are not served, for a warning.
    pub unknown: Vec<String>,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True")
}

impl Query {
    pub fn parse(raw: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "labelSelector" => q.label_selector = v,
                "fieldSelector" => q.field_selector = v,
                "watch" => q.watch = truthy(&v),
                "resourceVersion" => q.resource_version = Some(v),
                "limit" => q.limit = v.parse().ok().filter(|n| *n > 0),
                "continue" => q.continue_ = Some(v).filter(|s| !s.is_empty()),
                "dryRun" => q.dry_run = v == "All",
                "fieldValidation" => q.field_validation = Some(v),
                "propagationPolicy" => q.propagation_policy = Some(v),
                "gracePeriodSeconds" => q.grace_period_seconds = v.parse().ok(),
                "timeoutSeconds" => q.timeout_seconds = v.parse().ok(),
                "allowWatchBookmarks" => q.allow_watch_bookmarks = truthy(&v),
                "sendInitialEvents" => q.send_initial_events = Some(truthy(&v)),
                "includeObject" => q.include_object = Some(v),
                "container" => q.container = Some(v).filter(|c| !c.is_empty()),
                "follow" => q.follow = truthy(&v),
                "previous" => q.previous = truthy(&v),
                "tailLines" => q.tail_lines = v.parse().ok(),
                "limitBytes" => q.limit_bytes = v.parse().ok(),
                "timestamps" => q.timestamps = truthy(&v),
                "sinceSeconds" => q.since_seconds = Some(v),
                "sinceTime" => q.since_time = Some(v),
                "fieldManager" => q.field_manager = Some(v).filter(|m| !m.is_empty()),
                "force" => q.force = truthy(&v),
                // Harmless to leave: `pretty` formats, `resourceVersionMatch` only narrows
                // what `resourceVersion` says (every read here is of the present, never older
                // than it).
                "pretty" | "resourceVersionMatch" => {}
                other => q.unknown.push(other.to_string()),
            }
        }
        q
    }

    /// `fieldValidation`: kube-apiserver's default is Warn when the client names none.
    pub fn validation(&self) -> Result<FieldValidation, String> {
        match self.field_validation.as_deref() {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(format!(
                "fieldValidation: {other:?} is not one of Ignore, Warn, Strict"
            )),
        }
    }

    pub fn propagation(&self) -> Result<shoal_api::PropagationPolicy, String> {
        use shoal_api::PropagationPolicy as P;
        match self.propagation_policy.as_deref() {
            None | Some("") | Some("Background") => Ok(P::Background),
            Some("Foreground") => Ok(P::Foreground),
            Some("Orphan") => Ok(P::Orphan),
            Some(other) => Err(format!(
                "propagationPolicy: {other:?} is not one of Background, Foreground, Orphan"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubectl_sends() {
        let q = Query::parse(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&fieldSelector=spec.nodeName%3Dpi-1&watch=1&resourceVersion=42&limit=500&fieldValidation=Strict&dryRun=All&bogus=1",
        );
        assert_eq!(q.label_selector, "app=web,tier in (a,b)");
        assert_eq!(q.field_selector, "spec.nodeName=pi-1");
        assert!(q.watch && q.dry_run);
        assert_eq!(q.resource_version.as_deref(), Some("42"));
        assert_eq!(q.limit, Some(500));
        assert_eq!(q.validation(), Ok(FieldValidation::Strict));
        assert_eq!(q.unknown, ["bogus"]);
        assert!(Query::parse("fieldValidation=Loose").validation().is_err());
        assert!(Query::parse("propagationPolicy=Sideways")
            .propagation()
            .is_err());
    }
}
