//! The API service: every operation of the controller, behind identities and permissions,
//! independent of the door it is reached through (QUIC today; HTTP later calls the same code).

use crate::error::{Error, Result};
use crate::store::{Change, ChangeType, ObjectKey, Op, Store, Watch};
use base64::Engine as _;
use shoal_api::validate::validate;
use shoal_api::{Kind, Namespace, Object, ObjectMeta, Secret, Selector};
use shoal_transport::pki::JoinToken;
use shoal_transport::proto::{
    ApplyOutcome, ApplyResult, ErrorCode, EventType, Request, Response, WireError,
};
use shoal_transport::Identity;

/// The namespace Shoal keeps its own objects in (join tokens), as Kubernetes' kube-system.
pub const SYSTEM_NAMESPACE: &str = "shoal-system";
const TOKEN_TYPE: &str = "shoal.io/bootstrap-token";

/// What an operation answers: one response, or a stream of watch events.
pub enum Reply {
    One(Response),
    Watch(WatchStream),
}

#[derive(Clone)]
pub struct Service {
    store: Store,
    ca_hash: String,
}

fn bad_request(message: impl Into<String>) -> WireError {
    WireError {
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
}

fn parse_kind(kind: &str) -> std::result::Result<Kind, WireError> {
    kind.parse::<Kind>().map_err(|e| bad_request(e.to_string()))
}

fn parse_selector(s: &str) -> std::result::Result<Selector, WireError> {
    Selector::parse(s).map_err(|e| bad_request(e.to_string()))
}

fn encode(obj: &Object) -> Result<Vec<u8>> {
    obj.to_json().map_err(|e| Error::Internal(e.to_string()))
}

impl Service {
    pub fn new(store: Store, ca_hash: String) -> Self {
        Service { store, ca_hash }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates what every cluster has from the start: the system namespace.
    pub async fn bootstrap(&self) -> Result<()> {
        let key = ObjectKey::new(Kind::Namespace, None, SYSTEM_NAMESPACE);
        if self.store.get(&key)?.is_none() {
            let ns = Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: SYSTEM_NAMESPACE.into(),
                    ..Default::default()
                },
                ..Default::default()
            });
            match self.store.create(ns).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Handles one request from `who`. Errors come back as [`Response::Error`].
    pub async fn handle(&self, who: &Identity, req: Request) -> Reply {
        match self.dispatch(who, req).await {
            Ok(r) => r,
            Err(e) => Reply::One(Response::Error(e)),
        }
    }

    fn authorize(&self, who: &Identity, req: &Request) -> std::result::Result<(), WireError> {
        match (who, req) {
            (_, Request::WhoAmI) => Ok(()),
            (Identity::Admin(_), _) => Ok(()),
            (Identity::Anonymous, _) => Err(WireError {
                code: ErrorCode::Unauthenticated,
                message: "this connection presented no client certificate: use the credential file the controller wrote (DATA_DIR/admin.conf) with --config or SHOAL_CONFIG".into(),
            }),
            (Identity::Node(n), _) => Err(WireError {
                code: ErrorCode::Forbidden,
                message: format!("node {n:?} may not perform this operation"),
            }),
        }
    }

    async fn dispatch(
        &self,
        who: &Identity,
        req: Request,
    ) -> std::result::Result<Reply, WireError> {
        self.authorize(who, &req)?;
        let one = |r: Response| Ok(Reply::One(r));
        match req {
            Request::WhoAmI => one(Response::Identity(who.to_string())),
            Request::Apply { objects } => one(Response::Applied(self.apply(objects).await?)),
            Request::Get {
                kind,
                namespace,
                name,
            } => {
                let key = ObjectKey::new(parse_kind(&kind)?, namespace.as_deref(), &name);
                let obj = self
                    .store
                    .get(&key)?
                    .ok_or_else(|| Error::NotFound(key.to_string()))?;
                one(Response::Object(encode(&obj)?))
            }
            Request::List {
                kind,
                namespace,
                selector,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let (items, revision) = self.store.list(kind, namespace.as_deref())?;
                let items = items
                    .iter()
                    .filter(|o| selector.matches(&o.metadata().labels))
                    .map(encode)
                    .collect::<Result<Vec<_>>>()?;
                one(Response::List { items, revision })
            }
            Request::Watch {
                kind,
                namespace,
                selector,
                revision,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let from = if revision == 0 {
                    self.store.revision()
                } else {
                    revision
                };
                let watch = self.store.watch(from, Some(kind))?;
                Ok(Reply::Watch(WatchStream {
                    watch,
                    namespace,
                    selector,
                }))
            }
            Request::Delete {
                kind,
                namespace,
                name,
            } => {
                let key = ObjectKey::new(parse_kind(&kind)?, namespace.as_deref(), &name);
                let changes = self.delete(&key).await?;
                one(Response::Deleted(
                    changes
                        .iter()
                        .map(|c| c.object.reference())
                        .take(1)
                        .collect(),
                ))
            }
            Request::DeleteSelected {
                kind,
                namespace,
                selector,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let (items, _) = self.store.list(kind, namespace.as_deref())?;
                let mut deleted = Vec::new();
                for obj in items
                    .iter()
                    .filter(|o| selector.matches(&o.metadata().labels))
                {
                    match self.delete(&ObjectKey::of(obj)).await {
                        Ok(_) => deleted.push(obj.reference()),
                        Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                one(Response::Deleted(deleted))
            }
            Request::CreateToken { description } => one(Response::Token(
                self.create_token(&description, None).await?,
            )),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Vec<Change>> {
        if key.kind == Kind::Namespace {
            if key.name == "default" || key.name == SYSTEM_NAMESPACE {
                return Err(Error::Forbidden(format!(
                    "namespace {:?} may not be deleted",
                    key.name
                )));
            }
            self.store
                .write(vec![Op::DeleteNamespace {
                    name: key.name.clone(),
                }])
                .await
                .map(|mut c| {
                    // The namespace itself is the last change; report it first.
                    c.rotate_right(1);
                    c
                })
        } else {
            self.store
                .write(vec![Op::Delete {
                    key: key.clone(),
                    expected: None,
                }])
                .await
        }
    }

    /// Decodes and checks every object before writing any, so a bad manifest changes nothing.
    fn admit(objects: Vec<Vec<u8>>) -> Result<Vec<Object>> {
        let mut admitted = Vec::with_capacity(objects.len());
        let mut problems = Vec::new();
        for (i, bytes) in objects.iter().enumerate() {
            let mut obj = match Object::from_json(bytes) {
                Ok(o) => o,
                Err(e) => {
                    problems.push(format!("object {}: {e}", i + 1));
                    continue;
                }
            };
            obj.normalize();
            if let Object::Secret(s) = &mut obj {
                fold_string_data(s);
            }
            let errors = validate(&obj);
            if errors.is_empty() {
                admitted.push(obj);
            } else {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                problems.push(format!(
                    "{} {:?} is invalid: {}",
                    obj.kind(),
                    obj.name(),
                    list.join("; ")
                ));
            }
        }
        if !problems.is_empty() {
            const SHOWN: usize = 20;
            let more = problems.len().saturating_sub(SHOWN);
            problems.truncate(SHOWN);
            if more > 0 {
                problems.push(format!("... and {more} more objects with problems"));
            }
            return Err(Error::Invalid(format!("nothing was applied:\n{}", problems.join("\n"))));
        }
        // Namespaces first, so objects in a new namespace can follow in the same manifest.
        admitted.sort_by_key(|o| o.kind() != Kind::Namespace);
        Ok(admitted)
    }

    async fn apply(&self, objects: Vec<Vec<u8>>) -> Result<Vec<ApplyOutcome>> {
        let admitted = Self::admit(objects)?;
        let mut outcomes = Vec::with_capacity(admitted.len());
        for obj in admitted {
            let result = self.apply_one(obj.clone()).await?;
            outcomes.push(ApplyOutcome {
                reference: obj.reference(),
                namespace: obj.namespace().map(str::to_string),
                result,
            });
        }
        Ok(outcomes)
    }

    /// Create, or replace what the manifest says while keeping what the cluster owns
    /// (status, uid, timestamps); retried on a concurrent write.
    async fn apply_one(&self, desired: Object) -> Result<ApplyResult> {
        let key = ObjectKey::of(&desired);
        for _ in 0..5 {
            let Some(stored) = self.store.get(&key)? else {
                match self.store.create(desired.clone()).await {
                    Ok(_) => return Ok(ApplyResult::Created),
                    Err(Error::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            let mut next = desired
                .with_status_of(&stored)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let sm = stored.metadata().clone();
            let m = next.metadata_mut();
            m.uid = sm.uid;
            m.creation_timestamp = sm.creation_timestamp;
            m.deletion_timestamp = sm.deletion_timestamp;
            m.generation = sm.generation;
            m.resource_version = sm.resource_version.clone();
            if m.owner_references.is_empty() {
                m.owner_references = sm.owner_references;
            }
            if m.finalizers.is_empty() {
                m.finalizers = sm.finalizers;
            }
            if next == stored {
                return Ok(ApplyResult::Unchanged);
            }
            match self
                .store
                .update(next, Some(stored.metadata().revision()))
                .await
            {
                Ok(_) => return Ok(ApplyResult::Configured),
                Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "{key} kept changing while it was applied; try again"
        )))
    }

    /// Stores a join token (as a Secret in the system namespace) and returns it.
    pub async fn create_token(
        &self,
        description: &str,
        token: Option<JoinToken>,
    ) -> Result<String> {
        let token = token.unwrap_or_else(|| JoinToken::new(self.ca_hash.clone()));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: format!("join-token-{}", &token.secret[..8.min(token.secret.len())]),
                namespace: Some(SYSTEM_NAMESPACE.into()),
                ..Default::default()
            },
            type_: Some(TOKEN_TYPE.into()),
            ..Default::default()
        };
        secret.data.insert("secret".into(), b64(&token.secret));
        secret.data.insert("description".into(), b64(description));
        match self.store.create(Object::Secret(secret)).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok(token.to_string()),
            Err(e) => Err(e),
        }
    }
}

/// Kubernetes folds `stringData` into base64 `data` on write; so does Shoal.
fn fold_string_data(s: &mut Secret) {
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data
            .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    }
}

/// A watch filtered to what the client asked for.
pub struct WatchStream {
    watch: Watch,
    namespace: Option<String>,
    selector: Selector,
}

impl WatchStream {
    /// The next change as a response frame.
    pub async fn next(&mut self) -> Response {
        loop {
            let change = match self.watch.next().await {
                Ok(c) => c,
                Err(e) => return Response::Error(e.into()),
            };
            let obj = &change.object;
            if self
                .namespace
                .as_deref()
                .is_some_and(|ns| obj.namespace() != Some(ns))
            {
                continue;
            }
            if !self.selector.matches(&obj.metadata().labels) {
                continue;
            }
            let type_ = match change.type_ {
                ChangeType::Added => EventType::Added,
                ChangeType::Modified => EventType::Modified,
                ChangeType::Deleted => EventType::Deleted,
            };
            return match encode(obj) {
                Ok(object) => Response::Event {
                    type_,
                    revision: change.revision,
                    object,
                },
                Err(e) => Response::Error(e.into()),
            };
        }
    }
}
