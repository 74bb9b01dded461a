//! `pods/log` (`kubectl logs`): the service finds the pod's node and authorizes the request;
//! the node's answer is relayed over its session, chunk by chunk, as the QUIC door relays it.

use super::objects::ApiRequest;
use super::status::Doing;
use super::{error_response, Body, Response};
use crate::server::NodeLinks;
use crate::service::{Reply, Service};
use bytes::Bytes;
use shoal_transport::proto::{ErrorCode, Request, Response as Answer, Since, WireError};
use shoal_transport::Identity;

/// Chunks a slow reader may lag behind before the relay waits for it.
const BUFFER: usize = 64;

pub async fn handle(
    service: &Service,
    links: &NodeLinks,
    who: &Identity,
    req: &ApiRequest,
) -> Response {
    let doing = Doing {
        verb: "get",
        who,
        target: Some(&req.target),
    };
    let refuse = |code, message: String| error_response(&WireError::new(code, message), &doing);
    if req.method != hyper::Method::GET {
        return refuse(ErrorCode::BadRequest, "pods/log is only read (GET)".into());
    }
    let since = match since(&req.query) {
        Ok(since) => since,
        Err(message) => return refuse(ErrorCode::BadRequest, message),
    };
    let t = &req.target;
    let request = Request::Logs {
        namespace: t.namespace.clone().unwrap_or_else(|| "default".into()),
        pod: t.name.clone().unwrap_or_default(),
        container: req.query.container.clone(),
        follow: req.query.follow,
        previous: req.query.previous,
        tail: req.query.tail_lines,
        timestamps: req.query.timestamps,
        since,
    };
    let (node, request) = match service.handle(who, request).await {
        Reply::ToNode { node, request } => (node, request),
        Reply::One(Answer::Error(e)) => return error_response(&e, &doing),
        _ => return refuse(ErrorCode::Internal, "logs not relayed to a node".into()),
    };
    let (to_node, mut from_node) = match links.ask(&node, &request).await {
        Ok(s) => s,
        Err(e) => return error_response(&e.into(), &doing),
    };
    // The first answer decides the status: an error (no such container) or the first chunk.
    let first = shoal_transport::frame::read::<Answer, _>(
        &mut from_node,
        shoal_transport::frame::MAX_FRAME,
    )
    .await;
    let first = match first {
        Ok(Some(Answer::Error(e))) => return error_response(&e, &doing),
        Ok(Some(Answer::Chunk(bytes))) => Some(Bytes::from(bytes)),
        Ok(None) => None,
        Ok(Some(other)) => return refuse(ErrorCode::Internal, other.unexpected()),
        Err(e) => return error_response(&crate::Error::unreachable(&node, &e).into(), &doing),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(BUFFER);
    // `limitBytes`: what is sent stops there (the node stops when its stream is dropped).
    let mut left = req.query.limit_bytes.unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let _to_node = to_node;
        let mut chunk = first;
        while let Some(mut bytes) = chunk.take() {
            if bytes.len() as u64 >= left {
                bytes.truncate(left as usize);
                let _ = tx.send(bytes).await;
                break;
            }
            left -= bytes.len() as u64;
            if tx.send(bytes).await.is_err() {
                break;
            }
            let next = tokio::select! {
                _ = tx.closed() => break,
                r = shoal_transport::frame::read::<Answer, _>(&mut from_node, shoal_transport::frame::MAX_FRAME) => r,
            };
            if let Ok(Some(Answer::Chunk(b))) = next {
                chunk = Some(Bytes::from(b));
            }
        }
    });
    let mut r = hyper::Response::new(Body::Stream(rx));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// `sinceSeconds` or `sinceTime`, checked. Seconds ago are counted on the node, whose clock
/// times the lines.
fn since(query: &super::query::Query) -> Result<Option<Since>, String> {
    match (&query.since_seconds, &query.since_time) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => {
            Err("at most one of sinceTime or sinceSeconds may be specified".into())
        }
        (Some(secs), None) => match secs.parse::<u64>() {
            Ok(s) if s > 0 => Ok(Some(Since::SecondsAgo(s))),
            _ => Err(format!(
                "sinceSeconds {secs:?} is not a positive number of seconds"
            )),
        },
        (None, Some(t)) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(_) => Ok(Some(Since::Time(t.clone()))),
            Err(e) => Err(format!("sinceTime {t:?} is not an RFC 3339 time: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_given_as_seconds_or_as_a_time_never_both() {
        let q = |raw: &str| since(&super::super::query::Query::parse(raw));
        assert_eq!(q(""), Ok(None));
        assert_eq!(q("sinceSeconds=90"), Ok(Some(Since::SecondsAgo(90))));
        assert_eq!(
            q("sinceTime=2026-12-06T11%3A00%3A00%2B02%3A00"),
            Ok(Some(Since::Time("2026-12-06T11:00:00+02:00".into())))
        );
        for bad in [
            "sinceSeconds=0",
            "sinceSeconds=x",
            "sinceTime=yesterday",
            "sinceSeconds=1&sinceTime=2026-12-06T10:00:00Z",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }
}
