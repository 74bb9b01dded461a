//! The `scale` subresource of Deployments and ReplicaSets (`kubectl scale`): an
//! `autoscaling/v1` Scale read from the object, and a change of it written as a patch of the
//! object's `spec.replicas` through the service.

use super::objects::{call, ApiRequest};
use super::{json_response, Response};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use shoal_api::patch::PatchType;
use shoal_api::Kind;
use shoal_transport::proto::{ErrorCode, Request, Response as Answer, WireError, WriteOptions};
use shoal_transport::Identity;

fn scale_of(obj: &Value) -> Value {
    let selector = shoal_api::Selector::from_label_selector(
        &serde_json::from_value(obj["spec"]["selector"].clone()).unwrap_or_default(),
    )
    .map(|s| s.to_string())
    .unwrap_or_default();
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

fn internal(e: impl ToString) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}

pub async fn handle(
    service: &crate::Service,
    who: &Identity,
    req: &ApiRequest,
) -> Result<Response, WireError> {
    let t = &req.target;
    if !matches!(t.kind, Kind::Deployment | Kind::ReplicaSet) {
        return Err(WireError::new(
            ErrorCode::NotFound,
            format!("{} have no scale subresource", t.kind.plural()),
        ));
    }
    let name = t.name.clone().unwrap_or_default();
    let get = Request::Get {
        kind: t.kind.name().into(),
        namespace: t.namespace.clone(),
        name: name.clone(),
    };
    let current = match call(service, who, get).await? {
        Answer::Object(b) => serde_json::from_slice::<Value>(&b).map_err(internal)?,
        other => return Err(internal(other.unexpected())),
    };
    let scale = scale_of(&current);
    let wanted = match req.method {
        Method::GET => return Ok(json_response(StatusCode::OK, &scale)),
        Method::PUT => serde_json::from_slice::<Value>(&req.body).map_err(|e| {
            WireError::new(ErrorCode::BadRequest, format!("the Scale is not JSON: {e}"))
        })?,
        Method::PATCH => {
            let media = req.content_type.split(';').next().unwrap_or("").trim();
            let patch_type = PatchType::from_content_type(media).ok_or_else(|| {
                WireError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("a patch of type {media:?} is not served"),
                )
            })?;
            let patch: Value = serde_json::from_slice(&req.body).map_err(|e| {
                WireError::new(ErrorCode::BadRequest, format!("the patch is not JSON: {e}"))
            })?;
            shoal_api::patch::apply(patch_type, &scale, &patch).map_err(|e| {
                WireError::new(
                    ErrorCode::BadRequest,
                    format!("the patch does not apply: {e}"),
                )
            })?
        }
        _ => {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                format!(
                    "method {} is not served on the scale subresource",
                    req.method
                ),
            ))
        }
    };
    let replicas = wanted["spec"]["replicas"].as_i64().ok_or_else(|| {
        WireError::new(
            ErrorCode::BadRequest,
            "spec.replicas: the Scale names no number",
        )
    })?;
    let mut patch = json!({"spec": {"replicas": replicas}});
    // A Scale that names a resourceVersion is a precondition on the object, as in Kubernetes.
    if let Some(rv) = wanted["metadata"]["resourceVersion"]
        .as_str()
        .filter(|rv| !rv.is_empty())
    {
        if req.method == Method::PUT {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
    }
    let request = Request::Patch {
        kind: t.kind.name().into(),
        namespace: t.namespace.clone(),
        name,
        patch_type: PatchType::Merge,
        patch: serde_json::to_vec(&patch).map_err(internal)?,
        options: WriteOptions {
            dry_run: req.query.dry_run,
            // The replicas become the scaler's, as in Kubernetes.
            field_manager: super::objects::write_options(req)?.field_manager,
            ..Default::default()
        },
    };
    match call(service, who, request).await? {
        Answer::Written { object, .. } => {
            let obj: Value = serde_json::from_slice(&object).map_err(internal)?;
            Ok(json_response(StatusCode::OK, &scale_of(&obj)))
        }
        other => Err(internal(other.unexpected())),
    }
}
