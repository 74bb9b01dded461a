//! Events about a pod: recorded at once while the controller is reachable, held (the newest
//! [`HELD_EVENTS`]) while it is not, and sent on reconnect saying when they happened.

use super::{client, Inner, Supervisor};
use crate::sync::lock;
use shoal_api::{ObjectReference, Pod};
use std::collections::VecDeque;

/// Events held while the controller is out of reach: the newest [`HELD_EVENTS`], and how many
/// older ones were dropped to keep to that.
#[derive(Default)]
pub(super) struct HeldEvents {
    events: VecDeque<Held>,
    dropped: usize,
}

/// An event held: what it is about, its type, reason and message.
type Held = (ObjectReference, String, String, String);

const HELD_EVENTS: usize = 256;

impl HeldEvents {
    /// Holds an event, dropping the oldest past [`HELD_EVENTS`].
    fn hold(&mut self, event: Held) {
        if self.events.len() == HELD_EVENTS {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Takes what is held, and how many were dropped.
    fn take(&mut self) -> (VecDeque<Held>, usize) {
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.dropped),
        )
    }
}

impl Supervisor {
    /// Sends the events held while the controller was out of reach. Returns how many.
    pub async fn send_held_events(&self, client: &shoal_transport::Client) -> usize {
        let (events, dropped) = lock(&self.0.held_events).take();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "older events from while disconnected were not kept"
            );
        }
        let n = events.len();
        for (about, type_, reason, message) in events {
            crate::events::record(client, &about, &type_, &reason, message).await;
        }
        n
    }
}

/// Records an Event about `pod` (best effort: a lost link loses the event, not the pod).
/// Without the controller the event is held and sent on reconnect, saying when it happened.
pub(super) async fn event(inner: &Inner, pod: &Pod, type_: &str, reason: &str, message: String) {
    let about = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.metadata.namespace_or_default().to_string()),
        name: Some(pod.metadata.name.clone()),
        uid: Some(pod.metadata.uid.clone()),
    };
    match client(inner) {
        Some(client) => crate::events::record(&client, &about, type_, reason, message).await,
        None => {
            let message = format!("{message} (at {}, while disconnected)", crate::node::now());
            lock(&inner.held_events).hold((about, type_.into(), reason.into(), message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_events_keep_the_newest_and_count_the_dropped() {
        let mut held = HeldEvents::default();
        for i in 0..HELD_EVENTS + 3 {
            held.hold((
                ObjectReference::default(),
                "Normal".into(),
                "Started".into(),
                i.to_string(),
            ));
        }
        let (events, dropped) = held.take();
        assert_eq!(dropped, 3);
        assert_eq!(events.len(), HELD_EVENTS);
        assert_eq!(events.front().map(|e| e.3.as_str()), Some("3"));
        assert_eq!(held.take().1, 0, "taking empties it");
    }
}
