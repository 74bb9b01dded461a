//! Events: what happened to an object, for `describe`. A repeat of the same reason and message
//! about the same object folds into one Event with a count (as Kubernetes does); Events older
//! than [`TTL`] age out.

use crate::error::{Error, Result};
use crate::store::{ObjectKey, Store};
use sha2::{Digest, Sha256};
use shoal_api::{Event, EventSource, Kind, Object, ObjectMeta, ObjectReference};
use std::time::Duration;

/// How long an Event is kept after it last happened.
pub const TTL: Duration = Duration::from_secs(3600);

/// The object an Event is about.
pub fn reference(obj: &Object) -> ObjectReference {
    ObjectReference {
        api_version: Some(obj.kind().api_version().into()),
        kind: Some(obj.kind().name().into()),
        namespace: obj.namespace().map(str::to_string),
        name: Some(obj.name().to_string()),
        uid: Some(obj.metadata().uid.clone()),
    }
}

/// The Event's name: the object and a digest of what happened, so a repeat finds it.
fn event_name(about: &ObjectReference, reason: &str, message: &str) -> String {
    let digest = Sha256::digest(format!(
        "{}/{reason}/{message}",
        about.uid.as_deref().unwrap_or("")
    ));
    format!(
        "{}.{}",
        about.name.as_deref().unwrap_or("object"),
        hex::encode(&digest[..6])
    )
}

/// Builds the Event to store (or the folded repeat of `existing`).
#[allow(clippy::too_many_arguments)]
pub fn event(
    about: &ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
    now: &str,
    existing: Option<&Event>,
) -> Event {
    let mut e = existing.cloned().unwrap_or_else(|| Event {
        metadata: ObjectMeta {
            name: event_name(about, reason, message),
            namespace: Some(about.namespace.clone().unwrap_or_else(|| "default".into())),
            ..Default::default()
        },
        involved_object: about.clone(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(0),
        first_timestamp: Some(now.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: host.map(str::to_string),
        }),
        ..Default::default()
    });
    e.count = Some(e.count.unwrap_or(0) + 1);
    e.last_timestamp = Some(now.into());
    e
}

/// Records an Event; losing a race with a repeat only loses one count.
pub async fn record(
    store: &Store,
    about: &ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    if let Err(e) = try_record(store, about, type_, reason, message, component, None).await {
        tracing::debug!(error = %shoal_transport::report(&e), reason, "event not recorded");
    }
}

pub async fn try_record(
    store: &Store,
    about: &ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
) -> Result<()> {
    let now = crate::store::now();
    let ns = about.namespace.clone().unwrap_or_else(|| "default".into());
    let key = ObjectKey::new(Kind::Event, Some(&ns), &event_name(about, reason, message));
    let existing: Option<Event> = store.get(&key).await?.and_then(|o| o.into_typed().ok());
    let e = event(
        about,
        type_,
        reason,
        message,
        component,
        host,
        &now,
        existing.as_ref(),
    );
    let result = match existing {
        Some(old) => {
            store
                .update(Object::Event(e), Some(old.metadata.revision()))
                .await
        }
        None => store.create(Object::Event(e)).await,
    };
    match result {
        Ok(_) | Err(Error::Conflict(_)) | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes Events that last happened longer ago than [`TTL`].
pub async fn expire(store: &Store, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let (events, _) = store.list(Kind::Event, None).await?;
    for obj in events {
        let Ok(e) = obj.into_typed::<Event>() else {
            continue;
        };
        let last = e
            .last_timestamp
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        if last.is_some_and(|t| (now - t).to_std().unwrap_or_default() > TTL) {
            let key = ObjectKey::new(
                Kind::Event,
                e.metadata.namespace.as_deref(),
                &e.metadata.name,
            );
            match store.delete(key, None).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_folds_into_one_event_with_a_count() {
        let about = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("web-1".into()),
            uid: Some("u1".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        };
        let first = event(
            &about,
            "Warning",
            "BackOff",
            "back-off 10s",
            "agent",
            Some("pi-1"),
            "2026-01-01T00:00:00Z",
            None,
        );
        assert_eq!(
            (first.count, first.metadata.namespace.as_deref()),
            (Some(1), Some("shop"))
        );
        let again = event(
            &about,
            "Warning",
            "BackOff",
            "back-off 10s",
            "agent",
            Some("pi-1"),
            "2026-01-01T00:01:00Z",
            Some(&first),
        );
        assert_eq!(again.metadata.name, first.metadata.name);
        assert_eq!(again.count, Some(2));
        assert_eq!(
            again.first_timestamp.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            again.last_timestamp.as_deref(),
            Some("2026-01-01T00:01:00Z")
        );
        let other = event(
            &about,
            "Normal",
            "Started",
            "started",
            "agent",
            None,
            "2026-01-01T00:00:00Z",
            None,
        );
        assert_ne!(other.metadata.name, first.metadata.name);
    }
}
