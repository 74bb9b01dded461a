//! Errors as Kubernetes `Status` objects, with the HTTP code and reason kubectl reads them by,
//! and the messages worded as kube-apiserver words them (`deployments.apps "web" not found`).

use super::path::Target;
use hyper::StatusCode;
use serde_json::{json, Value};
use shoal_transport::proto::{ErrorCode, WireError};
use shoal_transport::Identity;

/// `deployments.apps`, `pods`: how Kubernetes names a resource in messages.
pub fn resource_name(kind: shoal_api::Kind) -> String {
    match kind.group() {
        "" => kind.plural().to_string(),
        g => format!("{}.{g}", kind.plural()),
    }
}

/// The user name Kubernetes would give an identity (`system:node:pi-1` for a node).
pub fn user_name(who: &Identity) -> String {
    match who {
        Identity::Admin(n) => n.clone(),
        Identity::Node(n) => format!("system:node:{n}"),
        Identity::Anonymous => "system:anonymous".into(),
    }
}

pub fn http_code(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Compacted => StatusCode::GONE,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    }
}

/// What a request was doing, for messages: the verb, who asked, and on what.
pub struct Doing<'a> {
    pub verb: &'a str,
    pub who: &'a Identity,
    pub target: Option<&'a Target>,
}

/// The `Status` of a failed request, and its HTTP code.
pub fn status(e: &WireError, doing: &Doing<'_>) -> (StatusCode, Value) {
    let (http, reason) = (http_code(e.code), e.code.reason());
    let target = doing.target;
    let resource = target.map(|t| resource_name(t.kind)).unwrap_or_default();
    let name = target.and_then(|t| t.name.clone()).unwrap_or_default();
    let message = match (e.code, target) {
        (ErrorCode::NotFound, Some(t)) if t.name.is_some() && t.subresource.is_none() => {
            format!("{resource} {name:?} not found")
        }
        (ErrorCode::AlreadyExists, Some(_)) if !name.is_empty() => {
            format!("{resource} {name:?} already exists")
        }
        (ErrorCode::Forbidden, _) => {
            let scope = match target.and_then(|t| t.namespace.as_deref()) {
                Some(ns) => format!(" in the namespace {ns:?}"),
                None => String::new(),
            };
            let group = target.map(|t| t.kind.group()).unwrap_or("");
            let what = if resource.is_empty() {
                "this path".to_string()
            } else {
                format!("{resource} is forbidden")
            };
            format!(
                "{what}: User {:?} cannot {} resource {:?} in API group {group:?}{scope}: {}",
                user_name(doing.who),
                doing.verb,
                target.map(|t| t.kind.plural()).unwrap_or(""),
                e.message.trim_start_matches("forbidden: ")
            )
        }
        _ => e.message.clone(),
    };
    let mut details = serde_json::Map::new();
    if let Some(t) = target {
        if !name.is_empty() {
            details.insert("name".into(), name.clone().into());
        }
        details.insert("group".into(), t.kind.group().into());
        details.insert(
            "kind".into(),
            if e.code == ErrorCode::Invalid {
                t.kind.name().into()
            } else {
                t.kind.plural().into()
            },
        );
    }
    if !e.causes.is_empty() {
        let causes: Vec<Value> = e
            .causes
            .iter()
            .map(|c| json!({"reason": "FieldValueInvalid", "message": c.message, "field": c.field}))
            .collect();
        details.insert("causes".into(), causes.into());
    }
    (http, failure(http, reason, &message, details))
}

/// The `Status` of a failure: its HTTP code, reason and message, and what it is about.
pub fn failure(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: serde_json::Map<String, Value>,
) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    })
}

/// A `Status` of success, as a delete of a collection answers.
pub fn success(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
