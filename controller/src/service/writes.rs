//! Writes of one object as the Kubernetes API makes them: create (POST) and replace (PUT),
//! with `resourceVersion` preconditions, `dryRun` and `fieldValidation`. `apply` (Shoal's own
//! create-or-update) shares how a replacement keeps what the cluster owns.

use super::*;
use shoal_transport::proto::{FieldValidation, WriteOptions};

/// How long a name `generateName` completes is made (Kubernetes adds five characters).
const GENERATED_SUFFIX: usize = 5;

/// Decodes one object sent to the API and checks it: fields Shoal does not support are
/// refused (`Strict`) or returned as warnings (`Warn`), then the object is validated.
pub(super) fn admit_one(
    bytes: &[u8],
    validation: FieldValidation,
) -> Result<(Object, Vec<String>)> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::BadRequest("the request body is not UTF-8 JSON".into()))?;
    let mut parsed = shoal_api::manifest::parse_manifests("request body", text)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    if parsed.len() != 1 {
        return Err(Error::BadRequest(format!(
            "the request body holds {} objects; a create or update takes exactly one",
            parsed.len()
        )));
    }
    let one = parsed.remove(0);
    let unknown: Vec<String> = one
        .unknown_fields
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    let warnings = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            return Err(Error::BadRequest(format!(
                "strict decoding error: {} (fields Shoal does not support; send fieldValidation=Warn, kubectl --validate=warn, to write the rest)",
                unknown.join(", ")
            )))
        }
        FieldValidation::Ignore => Vec::new(),
        _ => unknown,
    };
    let mut obj = one.object;
    obj.normalize();
    if let Object::Secret(s) = &mut obj {
        fold_string_data(s);
    }
    let mut causes = validate(&obj);
    causes.extend(crate::reconcile::cronjob::admission_errors(&obj));
    if !causes.is_empty() {
        return Err(Error::InvalidObject {
            kind: obj.kind(),
            name: obj.name().to_string(),
            causes,
        });
    }
    Ok((obj, warnings))
}

/// `desired` replacing `stored`: what the cluster owns (status, uid, timestamps, generation)
/// is kept. `keep_owned` also keeps owner references and finalizers the write leaves out
/// (Shoal's apply: a manifest never names them); a replacement (PUT) sets them as sent.
pub(super) fn replaced(desired: &Object, stored: &Object, keep_owned: bool) -> Result<Object> {
    let mut next = desired
        .with_status_of(stored)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let sm = stored.metadata().clone();
    let m = next.metadata_mut();
    m.uid = sm.uid;
    m.creation_timestamp = sm.creation_timestamp;
    m.deletion_timestamp = sm.deletion_timestamp;
    m.deletion_grace_period_seconds = sm.deletion_grace_period_seconds;
    m.generation = sm.generation;
    m.resource_version = sm.resource_version.clone();
    m.generate_name = sm.generate_name;
    if keep_owned && m.owner_references.is_empty() {
        m.owner_references = sm.owner_references;
    }
    if keep_owned && m.finalizers.is_empty() {
        m.finalizers = sm.finalizers;
    }
    // A write that sends none (a manifest never does) keeps who set what.
    if m.managed_fields.is_empty() {
        m.managed_fields = sm.managed_fields;
    }
    shoal_api::immutable::keep_cluster_fields(stored, &mut next);
    if let Some((field, why)) = shoal_api::immutable::violation(stored, &next) {
        return Err(Error::InvalidObject {
            kind: next.kind(),
            name: next.name().to_string(),
            causes: vec![shoal_api::FieldError::new(field, why)],
        });
    }
    Ok(next)
}

/// Where `apply` keeps the manifest it applied last, as kubectl does.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What `apply` of `desired` makes of `stored`: kubectl's three-way merge, the manifest
/// applied last (its annotation) saying which fields the manifest owns, so a re-apply keeps
/// what others set since (`scale`, `rollout pause`) and removes what the manifest dropped.
/// The result carries the new manifest as its annotation.
pub(super) fn applied(desired: &Object, stored: Option<&Object>) -> Result<Object> {
    let internal = |e: serde_json::Error| Error::Internal(e.to_string());
    let mut modified = serde_json::to_value(desired).map_err(internal)?;
    if let Some(m) = modified.as_object_mut() {
        m.remove("status");
    }
    if let Some(a) = modified
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.as_object_mut())
    {
        a.remove(LAST_APPLIED);
    }
    let record = serde_json::to_string(&modified).map_err(internal)?;
    let mut next = match stored {
        None => desired.clone(),
        Some(stored) => {
            let original = stored
                .metadata()
                .annotations
                .get(LAST_APPLIED)
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or(serde_json::Value::Null);
            let current = serde_json::to_value(stored).map_err(internal)?;
            let merged = shoal_api::patch::three_way(&original, &modified, &current, "");
            let mut obj = Object::deserialize_as(desired.kind(), merged).map_err(|e| {
                Error::Invalid(format!("{} {:?}: {e}", desired.kind(), desired.name()))
            })?;
            obj.normalize();
            obj
        }
    };
    next.metadata_mut()
        .annotations
        .insert(LAST_APPLIED.into(), record);
    Ok(next)
}

fn modified(key: &ObjectKey) -> Error {
    Error::Conflict(format!(
        "Operation cannot be fulfilled on {key}: the object has been modified; please apply your changes to the latest version and try again"
    ))
}

fn written(obj: &Object, created: bool, warnings: Vec<String>) -> Result<Response> {
    Ok(Response::Written {
        object: encode(obj)?,
        created,
        warnings,
    })
}

impl Service {
    /// A create, update or patch of one object.
    pub(super) async fn write(&self, req: Request) -> Result<Response> {
        match req {
            Request::Create { object, options } => self.create_object(&object, options).await,
            Request::Update { object, options } => self.update_object(&object, options).await,
            Request::Patch {
                kind,
                namespace,
                name,
                patch_type,
                patch,
                options,
            } => {
                let kind = kind
                    .parse::<Kind>()
                    .map_err(|e| Error::BadRequest(e.to_string()))?;
                let key = ObjectKey::new(kind, namespace.as_deref(), &name);
                self.patch(&key, patch_type, &patch, options).await
            }
            _ => Err(Error::BadRequest("not a write of one object".into())),
        }
    }

    pub(super) async fn create_object(
        &self,
        object: &[u8],
        options: WriteOptions,
    ) -> Result<Response> {
        let (mut obj, warnings) = admit_one(object, options.validation)?;
        let meta = obj.metadata_mut();
        if meta.name.is_empty() && !meta.generate_name.is_empty() {
            meta.name = generated_name(&meta.generate_name);
        }
        if meta.name.is_empty() {
            return Err(Error::InvalidObject {
                kind: obj.kind(),
                name: String::new(),
                causes: vec![shoal_api::FieldError::new(
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            });
        }
        let key = ObjectKey::of(&obj);
        let _allocating = match obj.kind() {
            Kind::Service => Some(self.allocating.lock().await),
            _ => None,
        };
        if self.store.get(&key).await?.is_some() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let mut obj = self.allocate(&obj, None).await?;
        super::managed::record_update(None, &mut obj, &options)?;
        if options.dry_run {
            return written(&obj, true, warnings);
        }
        let change = self.store.create(obj).await?;
        written(&change.object, true, warnings)
    }

    pub(super) async fn update_object(
        &self,
        object: &[u8],
        options: WriteOptions,
    ) -> Result<Response> {
        let (desired, warnings) = admit_one(object, options.validation)?;
        let key = ObjectKey::of(&desired);
        let precondition = match desired.metadata().resource_version.as_str() {
            "" => None,
            rv => Some(rv.parse::<u64>().map_err(|_| {
                Error::BadRequest(format!(
                    "resourceVersion {rv:?} is not one this server gave out"
                ))
            })?),
        };
        let _allocating = match desired.kind() {
            Kind::Service => Some(self.allocating.lock().await),
            _ => None,
        };
        for _ in 0..5 {
            let stored = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            let revision = stored.metadata().revision();
            if precondition.is_some_and(|rv| rv != revision) {
                return Err(modified(&key));
            }
            let next = if options.status {
                // The status subresource: the status written, the rest as stored.
                stored.with_status_of(&desired)?
            } else {
                let next = self.allocate(&desired, Some(&stored)).await?;
                let mut next = replaced(&next, &stored, false)?;
                if next.kind() == Kind::Node {
                    let annotations = shoal_api::node_restriction::record_admin_labels(
                        &stored.metadata().labels,
                        &next.metadata().labels,
                        &next.metadata().annotations,
                    );
                    next.metadata_mut().annotations = annotations;
                }
                super::managed::record_update(Some(&stored), &mut next, &options)?;
                next
            };
            if options.dry_run || next == stored {
                return written(&next, false, warnings);
            }
            let stored = if options.status {
                self.store.update_status(next, Some(revision)).await
            } else {
                self.store.update(next, Some(revision)).await
            };
            match stored {
                Ok(change) => return written(&change.object, false, warnings),
                Err(Error::Conflict(_)) if precondition.is_none() => continue,
                Err(Error::Conflict(_)) => return Err(modified(&key)),
                Err(e) => return Err(e),
            }
        }
        Err(modified(&key))
    }
}

impl Service {
    async fn patch(
        &self,
        key: &ObjectKey,
        patch_type: shoal_api::patch::PatchType,
        patch: &[u8],
        options: WriteOptions,
    ) -> Result<Response> {
        if patch_type == shoal_api::patch::PatchType::Apply {
            return self.server_apply(key, patch, options).await;
        }
        let patch: serde_json::Value = serde_json::from_slice(patch)
            .map_err(|e| Error::BadRequest(format!("the patch is not JSON: {e}")))?;
        // A patch that names a resourceVersion is a precondition; otherwise it is applied
        // again to what is stored after a concurrent write, as kube-apiserver does.
        let pinned = patch
            .pointer("/metadata/resourceVersion")
            .is_some_and(|v| !v.is_null());
        for _ in 0..5 {
            let stored = self
                .store
                .get(key)
                .await?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            let current: serde_json::Value =
                serde_json::to_value(&stored).map_err(|e| Error::Internal(e.to_string()))?;
            let patched = shoal_api::patch::apply(patch_type, &current, &patch)
                .map_err(|e| Error::BadRequest(format!("the patch does not apply: {e}")))?;
            let same_identity = patched.get("kind") == current.get("kind")
                && patched.pointer("/metadata/name") == current.pointer("/metadata/name")
                && patched.pointer("/metadata/namespace") == current.pointer("/metadata/namespace");
            if !same_identity {
                return Err(Error::BadRequest(
                    "a patch may not change an object's kind, name or namespace".into(),
                ));
            }
            let bytes = serde_json::to_vec(&patched).map_err(|e| Error::Internal(e.to_string()))?;
            match self.update_object(&bytes, options.clone()).await {
                Err(Error::Conflict(_)) if !pinned => continue,
                other => return other,
            }
        }
        Err(modified(key))
    }
}

/// `prefix` and five random characters of Kubernetes' alphabet (no vowels, no look-alikes).
fn generated_name(prefix: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..GENERATED_SUFFIX)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    // The whole name stays within the 63 characters of a DNS label.
    let mut cut = prefix.len().min(63 - GENERATED_SUFFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &prefix[..cut])
}
