//! Following a kind: list, then watch from the list's revision, resume from the last revision
//! seen, and list again when the controller no longer holds it (`Compacted`). The one follower
//! the agent (its pods; the proxy's Services, Endpoints and Nodes) and the CLI (`get -w`,
//! `wait`) share, as client-go's reflector is Kubernetes'.
//!
//! A [`Watcher`] keeps its place across connections: after a reconnect, [`Watcher::next`] on
//! the new client resumes the watch where the old one stopped, and only lists again when it
//! must. `next` is cancel-safe, so a watcher can sit in a `select!` beside a timer.

use crate::error::{Error, Result};
use crate::proto::{ErrorCode, EventType, Request, Response};
use crate::quic::{Client, ResponseStream};

/// What to follow: a kind, in one namespace or all, narrowed by label and field selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub kind: String,
    pub namespace: Option<String>,
    pub selector: String,
    pub fields: String,
}

impl Selection {
    /// Every object of `kind`, in every namespace.
    pub fn all(kind: &str) -> Selection {
        Selection {
            kind: kind.into(),
            ..Selection::default()
        }
    }

    fn list(&self) -> Request {
        Request::List {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            selector: self.selector.clone(),
            fields: self.fields.clone(),
        }
    }

    fn watch(&self, revision: u64) -> Request {
        Request::Watch {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            selector: self.selector.clone(),
            fields: self.fields.clone(),
            revision,
        }
    }
}

/// What a watcher saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Every selected object (JSON), current at `revision`: the first thing a watcher sees,
    /// and again whenever it could not resume. It replaces whatever the caller knew.
    Listed { items: Vec<Vec<u8>>, revision: u64 },
    /// One object (JSON) changed at `revision`; for a deletion, its last state.
    Changed {
        type_: EventType,
        revision: u64,
        object: Vec<u8>,
    },
}

/// Follows one [`Selection`]; see the module's header.
pub struct Watcher {
    selection: Selection,
    /// The last revision seen; `None` until the first list.
    revision: Option<u64>,
    stream: Option<ResponseStream>,
}

impl Watcher {
    /// A watcher that lists first.
    pub fn new(selection: Selection) -> Watcher {
        Watcher::resuming(selection, None)
    }

    /// A watcher that resumes after `revision` (one an earlier watcher reached), or lists
    /// first when there is none.
    pub fn resuming(selection: Selection, revision: Option<u64>) -> Watcher {
        Watcher {
            selection,
            revision,
            stream: None,
        }
    }

    /// The last revision seen: where a watcher made after a restart resumes.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// The next list or change, over `client`. An error leaves the watcher where it was: the
    /// next call (on this client or a new one) resumes from the last revision seen.
    pub async fn next(&mut self, client: &Client) -> Result<Seen> {
        loop {
            let stream = match (&mut self.stream, self.revision) {
                (Some(stream), _) => stream,
                (None, Some(revision)) => {
                    let opened = client.stream(&self.selection.watch(revision)).await?;
                    self.stream.insert(opened)
                }
                (None, None) => return self.list(client).await,
            };
            let next = stream.next().await;
            match next {
                Ok(Some(Response::Event {
                    type_,
                    revision,
                    object,
                })) => {
                    self.revision = Some(revision);
                    return Ok(Seen::Changed {
                        type_,
                        revision,
                        object,
                    });
                }
                Ok(Some(Response::Error(e))) if e.code == ErrorCode::Compacted => {
                    tracing::debug!(kind = %self.selection.kind, "watch revision compacted; listing again");
                    (self.stream, self.revision) = (None, None);
                }
                Ok(Some(Response::Error(e))) => {
                    self.stream = None;
                    return Err(Error::Refused(e));
                }
                Ok(Some(other)) => {
                    self.stream = None;
                    return Err(Error::Stream(other.unexpected()));
                }
                Ok(None) => {
                    self.stream = None;
                    return Err(Error::Stream(format!(
                        "the controller ended the watch of {}",
                        self.selection.kind
                    )));
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
    }

    /// Lists, and opens the watch from the list's revision before handing the list out, so
    /// nothing that changes in between is missed.
    async fn list(&mut self, client: &Client) -> Result<Seen> {
        let (items, revision) = match client.call(&self.selection.list()).await? {
            Response::List { items, revision } => (items, revision),
            Response::Error(e) => return Err(Error::Refused(e)),
            other => return Err(Error::Stream(other.unexpected())),
        };
        self.stream = Some(client.stream(&self.selection.watch(revision)).await?);
        self.revision = Some(revision);
        Ok(Seen::Listed { items, revision })
    }
}
