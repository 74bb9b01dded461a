//! Watches: newline-separated `{"type", "object"}` events, as kube-apiserver streams them,
//! Tables when the client asks for them.

use super::objects::{bad_request, json_of, list_objects, ApiRequest};
use super::status::Doing;
use super::{error_response, table, Body, Response};
use crate::service::{Reply, Service};
use bytes::Bytes;
use serde_json::{json, Value};
use shoal_api::Object;
use shoal_transport::proto::{ErrorCode, Request, Response as Answer, WireError};
use shoal_transport::Identity;

/// Watch events a slow client may lag behind before its watch ends.
const WATCH_BUFFER: usize = 256;
/// The longest a watch stays open without `timeoutSeconds` (client-go asks for 5 to 10 min).
const WATCH_MAX: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// How often a watch that allows bookmarks gets one (kube-apiserver: about a minute).
const BOOKMARK_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
/// The annotation of the bookmark that ends a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// A `BOOKMARK`: the watch has sent every change up to `revision`.
fn bookmark(kind: shoal_api::Kind, revision: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    let object =
        json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata});
    event_line("BOOKMARK", object)
}

fn event_line(type_: &str, object: Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    line.into()
}

/// A watch: newline-separated `{"type", "object"}` events, Tables when asked for. Without a
/// `resourceVersion` (or with `0`, or with `sendInitialEvents=true`) it begins with every
/// object that exists, as `ADDED`; with `allowWatchBookmarks` it sends a `BOOKMARK` every
/// minute, and one marking the end of those initial events when they were asked for.
pub async fn watch(service: &Service, who: &Identity, req: &ApiRequest) -> Response {
    let doing = Doing {
        verb: "watch",
        who,
        target: Some(&req.target),
    };
    let t = &req.target;
    let as_table = table::wanted(&req.accept);
    let include = req.query.include_object.clone();
    let kind = t.kind;
    let render = move |obj: Value| -> Value {
        if !as_table {
            return obj;
        }
        match serde_json::from_value::<Object>(obj.clone()) {
            Ok(o) => table::table(kind, &[o], 0, include.as_deref()),
            Err(_) => obj,
        }
    };
    let q = &req.query;
    if q.send_initial_events == Some(true) && !q.allow_watch_bookmarks {
        let e = bad_request("sendInitialEvents requires allowWatchBookmarks=true".to_string());
        return error_response(&e, &doing);
    }
    let (revision, initial) = match start(service, who, req).await {
        Ok(started) => started,
        Err(e) => return error_response(&e, &doing),
    };
    let bookmarks = q.allow_watch_bookmarks;
    let initial_end = q.send_initial_events == Some(true);
    let request = Request::Watch {
        kind: kind.name().into(),
        namespace: t.namespace.clone(),
        selector: req.query.label_selector.clone(),
        fields: req.query.field_selector.clone(),
        revision,
    };
    let mut stream = match service.handle(who, request).await {
        Reply::Watch(s) => s,
        Reply::One(Answer::Error(e)) => return error_response(&e, &doing),
        _ => {
            return error_response(
                &WireError::new(ErrorCode::Internal, "a watch that does not stream"),
                &doing,
            )
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    let timeout = (q.timeout_seconds).map_or(WATCH_MAX, std::time::Duration::from_secs);
    let timeout = timeout.min(WATCH_MAX);
    let who = who.clone();
    let target = req.target.clone();
    tokio::spawn(async move {
        // The state first, however long: a client reads it at its own pace.
        for obj in initial {
            let v = serde_json::to_value(&obj).unwrap_or(Value::Null);
            if tx.send(event_line("ADDED", render(v))).await.is_err() {
                return;
            }
        }
        if initial_end && tx.send(bookmark(kind, revision, true)).await.is_err() {
            return;
        }
        let mut seen = revision;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut marks = tokio::time::interval(BOOKMARK_PERIOD);
        marks.tick().await;
        loop {
            let answer = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                _ = marks.tick(), if bookmarks => {
                    if tx.send(bookmark(kind, seen, false)).await.is_err() {
                        break;
                    }
                    continue;
                }
                a = stream.next() => a,
            };
            let line = match answer {
                Answer::Event {
                    type_,
                    object,
                    revision,
                } => {
                    seen = seen.max(revision);
                    let name = match type_ {
                        shoal_transport::proto::EventType::Added => "ADDED",
                        shoal_transport::proto::EventType::Modified => "MODIFIED",
                        shoal_transport::proto::EventType::Deleted => "DELETED",
                    };
                    event_line(name, render(json_of(&object)))
                }
                Answer::Error(e) => {
                    let doing = Doing {
                        verb: "watch",
                        who: &who,
                        target: Some(&target),
                    };
                    let (_, status) = super::status::status(&e, &doing);
                    let _ = tx.send(event_line("ERROR", status)).await;
                    break;
                }
                _ => break,
            };
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut r = hyper::Response::new(Body::Stream(rx));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Where a watch begins: the revision, and the objects it first sends as `ADDED`. Without a
/// resourceVersion (or with 0) a watch begins with the state, as kube-apiserver's does;
/// sendInitialEvents says so outright, either way, and the state is always the present.
async fn start(
    service: &Service,
    who: &Identity,
    req: &ApiRequest,
) -> Result<(u64, Vec<Object>), WireError> {
    let q = &req.query;
    let from_state = match q.send_initial_events {
        Some(initial) => Some(initial),
        None => {
            matches!(q.resource_version.as_deref(), None | Some("") | Some("0")).then_some(true)
        }
    };
    match from_state {
        Some(with_events) => {
            let (items, revision) = list_objects(service, who, &req.target, q).await?;
            Ok((revision, if with_events { items } else { Vec::new() }))
        }
        None => {
            let rv = q.resource_version.as_deref().unwrap_or_default();
            let revision = rv.parse::<u64>().map_err(|_| {
                bad_request(format!(
                    "resourceVersion {rv:?} is not one this server gave"
                ))
            })?;
            Ok((revision, Vec::new()))
        }
    }
}
