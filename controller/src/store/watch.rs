//! A watcher: replays the change log after a revision, then follows live commits, delivering
//! each change exactly once and in revision order.

use super::codec;
use super::writer::LogEntry;
use super::{Change, Db, SecretCipher, LOG, META, META_COMPACTED, META_REVISION};
use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase};
use shoal_api::Kind;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

pub struct Watch {
    db: Arc<Db>,
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
    /// A watcher from `revision`, with what the log holds after it already read (off the async
    /// threads): fails at once when the log no longer reaches back that far.
    pub(crate) async fn new(
        db: Arc<Db>,
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
        w.replay().await?;
        Ok(w)
    }

    /// The revision of the last change considered: where a reconnecting client resumes.
    pub fn revision(&self) -> u64 {
        self.seen
    }

    fn wanted(&self, c: &Change) -> bool {
        self.kind.is_none_or(|k| c.object.kind() == k)
    }

    /// Reads the logged changes after `seen` (a chunk of them) into `pending`. The read and
    /// the decoding run on a blocking thread: a replay can be a thousand sealed objects.
    async fn replay(&mut self) -> Result<()> {
        let (db, cipher, seen, kind) = (self.db.clone(), self.cipher.clone(), self.seen, self.kind);
        let read = tokio::task::spawn_blocking(move || read_log(&*db.get()?, &cipher, seen, kind))
            .await
            .map_err(|e| Error::Internal(format!("reading the change log: {e}")))??;
        self.seen = read.seen;
        self.catching_up = read.more;
        self.pending.extend(read.changes);
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
                self.replay().await?;
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
                Err(broadcast::error::RecvError::Lagged(_)) => self.replay().await?,
                Err(broadcast::error::RecvError::Closed) => return Err(Error::Closed),
            }
        }
    }
}

/// What one replay read: the wanted changes, the last revision considered, and whether the
/// log holds more after it.
struct Replayed {
    changes: Vec<Change>,
    seen: u64,
    more: bool,
}

/// Reads up to [`REPLAY_CHUNK`] logged changes after `seen` (those of `kind`, if given).
fn read_log(
    db: &Database,
    cipher: &SecretCipher,
    mut seen: u64,
    kind: Option<Kind>,
) -> Result<Replayed> {
    let txn = db.begin_read().map_err(|e| Error::store("watch", e))?;
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
    if seen < compacted {
        return Err(Error::Compacted {
            requested: seen,
            compacted,
        });
    }
    if seen > current {
        return Err(Error::Invalid(format!(
            "revision {seen} is in the future (the store is at {current})"
        )));
    }
    let log = txn.open_table(LOG).map_err(|e| Error::store("watch", e))?;
    let mut changes = Vec::new();
    for (read, entry) in log
        .range(seen + 1..)
        .map_err(|e| Error::store("watch", e))?
        .enumerate()
    {
        if read == REPLAY_CHUNK {
            return Ok(Replayed {
                changes,
                seen,
                more: true,
            });
        }
        let (rev, bytes) = entry.map_err(|e| Error::store("watch", e))?;
        let entry: LogEntry = postcard::from_bytes(bytes.value())
            .map_err(|e| Error::Corrupt(format!("change log entry {}: {e}", rev.value())))?;
        let change = Change {
            revision: rev.value(),
            type_: entry.type_,
            object: codec::decode(cipher, &entry.key, &entry.value)?,
        };
        seen = change.revision;
        if kind.is_none_or(|k| change.object.kind() == k) {
            changes.push(change);
        }
    }
    Ok(Replayed {
        changes,
        seen,
        more: false,
    })
}
