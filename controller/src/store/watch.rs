//! A watcher: replays the change log after a revision, then follows live commits, delivering
//! each change exactly once and in revision order.

use super::codec;
use super::writer::LogEntry;
use super::{Change, SecretCipher, LOG, META, META_COMPACTED, META_REVISION};
use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase};
use shoal_api::Kind;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

pub struct Watch {
    db: Arc<Database>,
    cipher: Arc<SecretCipher>,
    live: broadcast::Receiver<Arc<Change>>,
    /// Highest revision already considered (delivered or filtered out).
    seen: u64,
    kind: Option<Kind>,
    pending: VecDeque<Change>,
    /// The last replay stopped at [`REPLAY_CHUNK`] entries: the log holds more to read before
    /// following live commits.
    catching_up: bool,
}

/// Most log entries one replay decodes into memory. A watcher far behind (a slow client,
/// a burst of 30,000 writes) catches up chunk by chunk instead of holding them all at once.
const REPLAY_CHUNK: usize = 1024;

impl Watch {
    pub(crate) fn new(
        db: Arc<Database>,
        cipher: Arc<SecretCipher>,
        live: broadcast::Receiver<Arc<Change>>,
        revision: u64,
        kind: Option<Kind>,
    ) -> Result<Watch> {
        let mut w = Watch {
            db,
            cipher,
            live,
            seen: revision,
            kind,
            pending: VecDeque::new(),
            catching_up: false,
        };
        w.replay()?;
        Ok(w)
    }

    /// The revision of the last change considered: where a reconnecting client resumes.
    pub fn revision(&self) -> u64 {
        self.seen
    }

    fn wanted(&self, c: &Change) -> bool {
        self.kind.is_none_or(|k| c.object.kind() == k)
    }

    /// Reads every logged change after `seen` into `pending`.
    fn replay(&mut self) -> Result<()> {
        let txn = self.db.begin_read().map_err(|e| Error::store("watch", e))?;
        let meta = txn.open_table(META).map_err(|e| Error::store("watch", e))?;
        let get = |k| -> Result<u64> {
            Ok(meta
                .get(k)
                .map_err(|e| Error::store("watch", e))?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let compacted = get(META_COMPACTED)?;
        let current = get(META_REVISION)?;
        if self.seen < compacted {
            return Err(Error::Compacted {
                requested: self.seen,
                compacted,
            });
        }
        if self.seen > current {
            return Err(Error::Invalid(format!(
                "revision {} is in the future (the store is at {current})",
                self.seen
            )));
        }
        let log = txn.open_table(LOG).map_err(|e| Error::store("watch", e))?;
        self.catching_up = false;
        for (read, entry) in log
            .range(self.seen + 1..)
            .map_err(|e| Error::store("watch", e))?
            .enumerate()
        {
            if read == REPLAY_CHUNK {
                self.catching_up = true;
                break;
            }
            let (rev, bytes) = entry.map_err(|e| Error::store("watch", e))?;
            let entry: LogEntry = postcard::from_bytes(bytes.value())
                .map_err(|e| Error::Corrupt(format!("change log entry {}: {e}", rev.value())))?;
            let change = Change {
                revision: rev.value(),
                type_: entry.type_,
                object: codec::decode(&self.cipher, &entry.key, &entry.value)?,
            };
            self.seen = change.revision;
            if self.wanted(&change) {
                self.pending.push_back(change);
            }
        }
        Ok(())
    }

    /// The next change. Fails with [`Error::Compacted`] if this watcher fell so far behind
    /// that the log no longer holds what it missed: the caller must relist.
    pub async fn next(&mut self) -> Result<Change> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            if self.catching_up {
                self.replay()?;
                continue;
            }
            match self.live.recv().await {
                Ok(c) if c.revision > self.seen => {
                    self.seen = c.revision;
                    if self.wanted(&c) {
                        return Ok((*c).clone());
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.replay()?,
                Err(broadcast::error::RecvError::Closed) => return Err(Error::Closed),
            }
        }
    }
}
