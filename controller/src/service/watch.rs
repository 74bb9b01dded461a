//! A watch as a client sees it: the store's changes, filtered to its namespace, selector and
//! fields.

use super::encode;
use super::fields::Fields;
use crate::store::{ChangeType, Watch};
use shoal_api::Selector;
use shoal_transport::proto::{EventType, Response};

/// A watch filtered to what the client asked for.
pub struct WatchStream {
    pub(super) watch: Watch,
    pub(super) namespace: Option<String>,
    pub(super) selector: Selector,
    pub(super) fields: Fields,
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
            if !self.selector.matches(&obj.metadata().labels) || !self.fields.matches(obj) {
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
