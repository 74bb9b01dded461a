//! The object verbs of the Kubernetes API (get, list, watch, create, update, delete), each
//! turned into the service's request and its answer into what kube-apiserver would send.

use super::pages::Pages;
use super::path::Target;
use super::query::Query;
use super::status::{resource_name, Doing};
use super::{error_response, json_response, table, Response};
use crate::service::{Reply, Service};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use shoal_api::{Kind, Object};
use shoal_transport::proto::{ErrorCode, Request, Response as Answer, WireError, WriteOptions};
use shoal_transport::Identity;

/// What kubectl's typed clients send (`create configmap`, `drain`'s evictions).
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

pub struct ApiRequest {
    pub method: Method,
    pub target: Target,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    /// The client's `User-Agent`: who writes, when the request names no `fieldManager`.
    pub user_agent: String,
    pub body: Bytes,
}

pub(super) fn bad_request(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, message)
}

fn verb(req: &ApiRequest) -> &'static str {
    let named = req.target.name.is_some();
    match req.method {
        Method::GET if req.query.watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

pub(super) fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

pub async fn handle(service: &Service, pages: &Pages, who: &Identity, req: ApiRequest) -> Response {
    let verb = verb(&req);
    let mut target = req.target.clone();
    let result = match (verb, req.target.subresource.as_deref()) {
        ("get" | "update" | "patch", Some("scale")) => super::scale::handle(service, who, &req).await,
        ("create", Some("eviction")) if req.target.kind == Kind::Pod => {
            evict(service, who, &req).await
        }
        // The status subresource: the object read whole, its status written alone.
        ("get", Some("status")) if has_status(req.target.kind) => get(service, who, &req).await,
        ("update", Some("status")) if has_status(req.target.kind) => {
            write(service, who, &req, false).await
        }
        ("patch", Some("status")) if has_status(req.target.kind) => {
            patch(service, who, &req).await
        }
        (_, Some(sub)) => Err(WireError::new(
            ErrorCode::NotFound,
            format!(
                "the server could not find the requested resource: {} has no subresource {sub:?} served",
                resource_name(req.target.kind)
            ),
        )),
        ("get", None) => get(service, who, &req).await,
        ("list", None) => list(service, pages, who, &req).await,
        ("watch", None) => return super::watch::watch(service, who, &req).await,
        ("create", None) => {
            // The name is in the body; errors name it as kube-apiserver does.
            target.name = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string));
            write(service, who, &req, true).await
        }
        ("update", None) => write(service, who, &req, false).await,
        ("patch", None) => patch(service, who, &req).await,
        ("delete", None) => delete(service, who, &req).await,
        ("deletecollection", None) => delete_collection(service, pages, who, &req).await,
        _ => Err(WireError::new(
            ErrorCode::BadRequest,
            format!("method {} is not served on this path", req.method),
        )),
    };
    match result {
        Ok(r) => r,
        Err(e) => error_response(
            &e,
            &Doing {
                verb,
                who,
                target: Some(&target),
            },
        ),
    }
}

pub(super) async fn call(
    service: &Service,
    who: &Identity,
    request: Request,
) -> Result<Answer, WireError> {
    match service.handle(who, request).await {
        Reply::One(Answer::Error(e)) => Err(e),
        Reply::One(r) => Ok(r),
        _ => Err(WireError::new(
            ErrorCode::Internal,
            "the service answered with a stream where one answer was expected",
        )),
    }
}

fn one_object(
    kind: Kind,
    bytes: &[u8],
    revision: u64,
    req: &ApiRequest,
) -> Result<Response, WireError> {
    if table::wanted(&req.accept) {
        let obj = Object::from_json(bytes)
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
        let t = table::table(kind, &[obj], revision, req.query.include_object.as_deref());
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(json_response(StatusCode::OK, &json_of(bytes)))
}

async fn get(service: &Service, who: &Identity, req: &ApiRequest) -> Result<Response, WireError> {
    let t = &req.target;
    let answer = call(
        service,
        who,
        Request::Get {
            kind: t.kind.name().into(),
            namespace: t.namespace.clone(),
            name: t.name.clone().unwrap_or_default(),
        },
    )
    .await?;
    match answer {
        Answer::Object(bytes) => one_object(t.kind, &bytes, 0, req),
        other => Err(WireError::new(ErrorCode::Internal, other.unexpected())),
    }
}

pub(super) async fn list_objects(
    service: &Service,
    who: &Identity,
    target: &Target,
    query: &Query,
) -> Result<(Vec<Object>, u64), WireError> {
    let answer = call(
        service,
        who,
        Request::List {
            kind: target.kind.name().into(),
            namespace: target.namespace.clone(),
            selector: query.label_selector.clone(),
            fields: query.field_selector.clone(),
        },
    )
    .await?;
    let Answer::List { items, revision } = answer else {
        return Err(WireError::new(ErrorCode::Internal, answer.unexpected()));
    };
    let items = items
        .iter()
        .map(|b| Object::from_json(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((items, revision))
}

async fn list(
    service: &Service,
    pages: &Pages,
    who: &Identity,
    req: &ApiRequest,
) -> Result<Response, WireError> {
    let (kind, q) = (req.target.kind, &req.query);
    // What is listed: a continue token is good for the same list only.
    let listed = format!(
        "{}/{}?{}&{}",
        kind.name(),
        req.target.namespace.as_deref().unwrap_or(""),
        q.label_selector,
        q.field_selector
    );
    let page = match &q.continue_ {
        Some(token) => pages.next(who, &listed, token, q.limit)?,
        None => {
            let (items, revision) = list_objects(service, who, &req.target, q).await?;
            pages.first(who, &listed, items, revision, q.limit)
        }
    };
    let (items, revision, next) = (page.items, page.revision, page.next);
    if table::wanted(&req.accept) {
        let mut t = table::table(kind, &items, revision, req.query.include_object.as_deref());
        if let Some(next) = next {
            t["metadata"]["continue"] = next.into();
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let items: Vec<Value> = items
        .iter()
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .collect();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = next {
        metadata["continue"] = next.into();
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", kind.name()),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// The body as JSON: sent as JSON, YAML, or Kubernetes' protobuf (for the kinds kubectl's
/// typed clients send so).
fn body_value(req: &ApiRequest) -> Result<Value, WireError> {
    let media = req.content_type.split(';').next().unwrap_or("").trim();
    if !matches!(
        media,
        "" | "application/json" | "application/yaml" | PROTOBUF
    ) {
        return Err(unsupported_media(media));
    }
    let value: Value = if media == PROTOBUF {
        super::protobuf::decode(&req.body)
            .map_err(|e| WireError::new(ErrorCode::BadRequest, format!("the protobuf body: {e}")))?
    } else if media == "application/yaml" {
        serde_yaml_ng::from_slice(&req.body)
            .map_err(|e| bad_request(format!("the request body is not YAML: {e}")))?
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| bad_request(format!("the request body is not JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(bad_request("the request body is not an object"));
    }
    Ok(value)
}

/// The body as JSON, with the namespace of the path filled in and checked, and the kind
/// checked against the path's.
fn body_object(req: &ApiRequest) -> Result<Vec<u8>, WireError> {
    let t = &req.target;
    let mut value = body_value(req)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(bad_request("the request body is not an object"));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != t.kind.name() {
        return Err(bad_request(format!(
            "the body is a {kind:?}, the path is for {}",
            resource_name(t.kind)
        )));
    }
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| bad_request("metadata: not an object"))?;
    if let Some(ns) = &t.namespace {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), ns.clone().into());
            }
            Some(other) if other != ns => {
                return Err(bad_request(format!(
                    "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(name) = &t.name {
        if meta.get("name").and_then(Value::as_str) != Some(name.as_str()) {
            return Err(bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta.get("name").and_then(Value::as_str).unwrap_or("")
            )));
        }
    }
    serde_json::to_vec(&value).map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}

/// 415: client-go then sends JSON (kubectl tries protobuf first for built-in kinds).
fn unsupported_media(media: &str) -> WireError {
    WireError::new(
        ErrorCode::UnsupportedMediaType,
        format!("the body's content type {media:?} is not served: send application/json"),
    )
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        // RFC 7234 warn-text: a quoted string; kubectl prints it after "Warning: ".
        let text = format!("299 - {:?}", w.replace(['\r', '\n'], " "));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&text) {
            r.headers_mut().append(hyper::header::WARNING, v);
        }
    }
    r
}

/// Kinds with a status of their own, served as the `status` subresource.
pub(super) fn has_status(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Endpoints | Kind::ConfigMap | Kind::Secret | Kind::Event
    )
}

pub(super) fn write_options(req: &ApiRequest) -> Result<WriteOptions, WireError> {
    // As kube-apiserver: without a fieldManager, the User-Agent up to its first '/'.
    let from_agent = req.user_agent.split('/').next().unwrap_or("").trim();
    let manager = req.query.field_manager.clone().or_else(|| {
        Some(from_agent.chars().take(128).collect::<String>()).filter(|m| !m.is_empty())
    });
    if manager.as_ref().is_some_and(|m| m.len() > 128) {
        return Err(bad_request("fieldManager: at most 128 characters"));
    }
    Ok(WriteOptions {
        dry_run: req.query.dry_run,
        validation: req.query.validation().map_err(bad_request)?,
        status: req.target.subresource.as_deref() == Some("status"),
        field_manager: manager,
        force: req.query.force,
    })
}

async fn write(
    service: &Service,
    who: &Identity,
    req: &ApiRequest,
    create: bool,
) -> Result<Response, WireError> {
    let object = body_object(req)?;
    let options = write_options(req)?;
    let request = if create {
        Request::Create { object, options }
    } else {
        Request::Update { object, options }
    };
    match call(service, who, request).await? {
        Answer::Written {
            object,
            created,
            warnings,
        } => {
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(
                json_response(code, &json_of(&object)),
                &warnings,
            ))
        }
        other => Err(WireError::new(ErrorCode::Internal, other.unexpected())),
    }
}

async fn patch(service: &Service, who: &Identity, req: &ApiRequest) -> Result<Response, WireError> {
    let t = &req.target;
    let media = req.content_type.split(';').next().unwrap_or("").trim();
    let patch_type = shoal_api::patch::PatchType::from_content_type(media)
        .ok_or_else(|| unsupported_media(media))?;
    let options = write_options(req)?;
    let request = Request::Patch {
        kind: t.kind.name().into(),
        namespace: t.namespace.clone(),
        name: t.name.clone().unwrap_or_default(),
        patch_type,
        patch: req.body.to_vec(),
        options,
    };
    match call(service, who, request).await? {
        Answer::Written {
            object,
            warnings,
            created,
        } => {
            let mut r = one_object(t.kind, &object, 0, req)?;
            // A server-side apply may create.
            if created {
                *r.status_mut() = StatusCode::CREATED;
            }
            Ok(with_warnings(r, &warnings))
        }
        other => Err(WireError::new(ErrorCode::Internal, other.unexpected())),
    }
}

/// What a delete asks for beyond its target: from the body (kubectl sends DeleteOptions
/// there) over the query.
struct DeleteOpts {
    propagation: shoal_api::PropagationPolicy,
    dry_run: bool,
    /// A pod's own grace period (`--grace-period`, `--now` sends 1, `--force` 0).
    grace: Option<i64>,
}

fn delete_options(req: &ApiRequest) -> Result<DeleteOpts, WireError> {
    let body: Option<Value> = if req.body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&req.body)
                .map_err(|e| bad_request(format!("DeleteOptions: {e}")))?,
        )
    };
    options_of(body.as_ref(), &req.query)
}

fn options_of(body: Option<&Value>, query: &Query) -> Result<DeleteOpts, WireError> {
    let mut query = query.clone();
    if let Some(body) = body {
        if let Some(p) = body["propagationPolicy"].as_str() {
            query.propagation_policy = Some(p.to_string());
        }
        if let Some(Some(d)) = body["dryRun"].as_array().map(|a| a.first()) {
            query.dry_run = d == "All";
        }
        if body["orphanDependents"] == json!(true) {
            query.propagation_policy = Some("Orphan".into());
        }
        if let Some(g) = body["gracePeriodSeconds"].as_i64() {
            query.grace_period_seconds = Some(g);
        }
    }
    if let Some(g) = query.grace_period_seconds.filter(|g| *g < 0) {
        return Err(bad_request(format!(
            "gracePeriodSeconds={g}: a grace period is 0 or more seconds"
        )));
    }
    Ok(DeleteOpts {
        propagation: query.propagation().map_err(bad_request)?,
        dry_run: query.dry_run,
        grace: query.grace_period_seconds,
    })
}

async fn delete(
    service: &Service,
    who: &Identity,
    req: &ApiRequest,
) -> Result<Response, WireError> {
    let t = &req.target;
    let opts = delete_options(req)?;
    let get = Request::Get {
        kind: t.kind.name().into(),
        namespace: t.namespace.clone(),
        name: t.name.clone().unwrap_or_default(),
    };
    let before = match call(service, who, get).await? {
        Answer::Object(b) => json_of(&b),
        other => return Err(WireError::new(ErrorCode::Internal, other.unexpected())),
    };
    if !opts.dry_run {
        delete_one(service, who, t, &opts).await?;
    }
    Ok(json_response(StatusCode::OK, &before))
}

async fn delete_one(
    service: &Service,
    who: &Identity,
    t: &Target,
    opts: &DeleteOpts,
) -> Result<Answer, WireError> {
    let request = Request::Delete {
        kind: t.kind.name().into(),
        namespace: t.namespace.clone(),
        name: t.name.clone().unwrap_or_default(),
        propagation: opts.propagation,
        grace_period: opts.grace,
    };
    call(service, who, request).await
}

/// `pods/NAME/eviction` (`kubectl drain`): Shoal has no PodDisruptionBudgets, so an
/// eviction is the pod's graceful delete, with the Eviction's DeleteOptions.
async fn evict(service: &Service, who: &Identity, req: &ApiRequest) -> Result<Response, WireError> {
    let t = &req.target;
    let eviction = body_value(req)?;
    if eviction["kind"] != "Eviction" {
        return Err(bad_request(format!(
            "the body is a {}, not an Eviction",
            eviction["kind"]
        )));
    }
    let name = t.name.clone().unwrap_or_default();
    if eviction["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return Err(bad_request(format!(
            "the Eviction names pod {}, the path pod {name:?}",
            eviction["metadata"]["name"]
        )));
    }
    let options = Some(&eviction["deleteOptions"]).filter(|o| o.is_object());
    let opts = options_of(options, &req.query)?;
    if !opts.dry_run {
        delete_one(service, who, t, &opts).await?;
    }
    Ok(json_response(
        StatusCode::CREATED,
        &super::status::success(json!({"name": t.name, "kind": "pods"})),
    ))
}

async fn delete_collection(
    service: &Service,
    pages: &Pages,
    who: &Identity,
    req: &ApiRequest,
) -> Result<Response, WireError> {
    let t = &req.target;
    let opts = delete_options(req)?;
    if opts.dry_run {
        return list(service, pages, who, req).await;
    }
    if !req.query.field_selector.is_empty() {
        return Err(bad_request(
            "a delete of a collection takes a label selector only",
        ));
    }
    call(
        service,
        who,
        Request::DeleteSelected {
            kind: t.kind.name().into(),
            namespace: t.namespace.clone(),
            selector: req.query.label_selector.clone(),
            propagation: opts.propagation,
            grace_period: opts.grace,
        },
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &super::status::success(json!({"kind": t.kind.plural(), "group": t.kind.group()})),
    ))
}
