//! The single writer: drains queued writes into one durable transaction (group commit),
//! stamps each change with the next revision, appends it to the change log, compacts the log,
//! then publishes the changes to watchers and answers every writer.
//!
//! Each request is all-or-nothing: its ops are applied to an overlay that joins the batch only
//! if every op succeeded, so one refused write never leaves another half done.

use super::codec;
use super::{
    Change, ChangeType, Db, ObjectKey, Op, SecretCipher, StoreConfig, WriteRequest, LOG, META,
    META_COMPACTED, META_REVISION, OBJECTS,
};
use crate::error::{Error, Result};
use rand::Rng;
use redb::{Database, ReadableDatabase, ReadableTable, Table};
use shoal_api::{Kind, Namespace, Object, ObjectMeta, PropagationPolicy, FOREGROUND_DELETION};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LogEntry {
    pub type_: ChangeType,
    pub key: String,
    pub value: Vec<u8>,
}

/// Creates the tables and the `default` namespace on a new file; returns the current revision.
pub(crate) fn initialize(db: &Database, cipher: &SecretCipher) -> Result<u64> {
    let txn = db
        .begin_write()
        .map_err(|e| Error::store("initialize", e))?;
    let revision;
    {
        let mut objects = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::store("initialize", e))?;
        let mut log = txn
            .open_table(LOG)
            .map_err(|e| Error::store("initialize", e))?;
        let mut meta = txn
            .open_table(META)
            .map_err(|e| Error::store("initialize", e))?;
        let current = read_meta(&meta, META_REVISION)?;
        let key = ObjectKey::new(Kind::Namespace, None, "default").encode();
        if objects
            .get(key.as_str())
            .map_err(|e| Error::store("initialize", e))?
            .is_none()
        {
            let mut batch = Batch::new(current, &objects, cipher);
            let mut ns = Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: "default".into(),
                    ..Default::default()
                },
                ..Default::default()
            });
            ns.normalize();
            batch.apply_request(&[Op::Create(ns)], &now())?;
            let Batch {
                overlay,
                log: entries,
                next_revision,
                ..
            } = batch;
            flush(&mut objects, &mut log, overlay, entries)?;
            meta.insert(META_REVISION, next_revision - 1)
                .map_err(|e| Error::store("initialize", e))?;
            revision = next_revision - 1;
        } else {
            revision = current;
        }
    }
    txn.commit().map_err(|e| Error::store("initialize", e))?;
    Ok(revision)
}

pub(crate) fn spawn(
    db: Arc<Db>,
    cipher: Arc<SecretCipher>,
    config: StoreConfig,
    mut rx: mpsc::Receiver<WriteRequest>,
    changes: broadcast::Sender<Arc<Change>>,
    revision: Arc<AtomicU64>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut requests = vec![first];
                while config.group_commit && requests.len() < config.max_batch {
                    match rx.try_recv() {
                        Ok(r) => requests.push(r),
                        Err(_) => break,
                    }
                }
                if db.is_closed() {
                    reopen(&db, &revision);
                }
                let ops: Vec<&[Op]> = requests.iter().map(|r| r.ops.as_slice()).collect();
                match db
                    .get()
                    .and_then(|open| commit(&open, &cipher, &config, &ops))
                {
                    Ok((results, new_revision)) => {
                        revision.store(new_revision, Ordering::Release);
                        for (req, result) in requests.into_iter().zip(results) {
                            if let Ok(done) = &result {
                                for c in done {
                                    // No watcher listening is fine.
                                    let _ = changes.send(Arc::new(c.clone()));
                                }
                            }
                            let _ = req.reply.send(result);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %shoal_transport::report(&e), "store commit failed");
                        for req in requests {
                            let _ = req.reply.send(Err(e.clone()));
                        }
                        if db.needs_reopen() {
                            reopen(&db, &revision);
                        }
                    }
                }
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start the store writer: {e}")))
}

/// Opens the file again after a failed write, and takes the revision it holds: the one
/// committed last, which a failed commit never moved.
fn reopen(db: &Db, revision: &AtomicU64) {
    let stored = db.reopen().and_then(|()| {
        let open = db.get()?;
        let txn = open
            .begin_read()
            .map_err(|e| Error::store("reading the revision", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| Error::store("reading the revision", e))?;
        Ok(meta
            .get(META_REVISION)
            .map_err(|e| Error::store("reading the revision", e))?
            .map(|v| v.value())
            .unwrap_or(0))
    });
    match stored {
        Ok(stored) => {
            revision.fetch_max(stored, Ordering::AcqRel);
            tracing::warn!(
                revision = stored,
                "store file reopened after a failed write; writes go on"
            );
        }
        Err(e) => tracing::error!(
            error = %shoal_transport::report(&e),
            "cannot reopen the store file after a failed write; trying again with the next write"
        ),
    }
}

fn read_meta(meta: &Table<&str, u64>, key: &str) -> Result<u64> {
    Ok(meta
        .get(key)
        .map_err(|e| Error::store("read meta", e))?
        .map(|v| v.value())
        .unwrap_or(0))
}

type Results = Vec<Result<Vec<Change>>>;

fn commit(
    db: &Database,
    cipher: &SecretCipher,
    config: &StoreConfig,
    requests: &[&[Op]],
) -> Result<(Results, u64)> {
    let txn = db
        .begin_write()
        .map_err(|e| Error::store("begin write", e))?;
    let results;
    let new_revision;
    {
        let mut objects = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::store("open objects", e))?;
        let mut log = txn
            .open_table(LOG)
            .map_err(|e| Error::store("open log", e))?;
        let mut meta = txn
            .open_table(META)
            .map_err(|e| Error::store("open meta", e))?;
        let current = read_meta(&meta, META_REVISION)?;
        let now = now();
        let mut batch = Batch::new(current, &objects, cipher);
        results = requests
            .iter()
            .map(|ops| batch.apply_request(ops, &now))
            .collect::<Vec<_>>();
        let Batch {
            overlay,
            log: entries,
            next_revision,
            ..
        } = batch;
        new_revision = next_revision - 1;
        flush(&mut objects, &mut log, overlay, entries)?;
        meta.insert(META_REVISION, new_revision)
            .map_err(|e| Error::store("write meta", e))?;
        compact(&mut log, &mut meta, new_revision, config.log_retention)?;
    }
    txn.commit().map_err(|e| Error::store("commit", e))?;
    Ok((results, new_revision))
}

fn flush(
    objects: &mut Table<&str, &[u8]>,
    log: &mut Table<u64, &[u8]>,
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    entries: Vec<(u64, LogEntry)>,
) -> Result<()> {
    for (k, v) in overlay {
        match v {
            Some(bytes) => objects.insert(k.as_str(), bytes.as_slice()).map(|_| ()),
            None => objects.remove(k.as_str()).map(|_| ()),
        }
        .map_err(|e| Error::store("write object", e))?;
    }
    for (rev, entry) in entries {
        let bytes = postcard::to_allocvec(&entry).map_err(|e| Error::Internal(e.to_string()))?;
        log.insert(rev, bytes.as_slice())
            .map_err(|e| Error::store("append log", e))?;
    }
    Ok(())
}

/// Drops log entries older than the retention window and records how far it reaches back.
fn compact(
    log: &mut Table<u64, &[u8]>,
    meta: &mut Table<&str, u64>,
    revision: u64,
    retention: u64,
) -> Result<()> {
    let floor = revision.saturating_sub(retention);
    if floor <= read_meta(meta, META_COMPACTED)? {
        return Ok(());
    }
    loop {
        let first = log
            .first()
            .map_err(|e| Error::store("compact", e))?
            .map(|(k, _)| k.value());
        match first {
            Some(k) if k <= floor => {
                log.remove(k).map_err(|e| Error::store("compact", e))?;
            }
            _ => break,
        }
    }
    meta.insert(META_COMPACTED, floor)
        .map_err(|e| Error::store("compact", e))?;
    Ok(())
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The writes of one transaction, not yet in the file.
struct Batch<'a> {
    table: &'a Table<'a, &'static str, &'static [u8]>,
    cipher: &'a SecretCipher,
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    log: Vec<(u64, LogEntry)>,
    next_revision: u64,
}

/// The writes of one request, joined to the batch only when all of them succeed.
struct Pending {
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    log: Vec<(u64, LogEntry)>,
    changes: Vec<Change>,
}

impl<'a> Batch<'a> {
    fn new(
        current: u64,
        table: &'a Table<'a, &'static str, &'static [u8]>,
        cipher: &'a SecretCipher,
    ) -> Self {
        Batch {
            table,
            cipher,
            overlay: BTreeMap::new(),
            log: Vec::new(),
            next_revision: current + 1,
        }
    }

    fn apply_request(&mut self, ops: &[Op], now: &str) -> Result<Vec<Change>> {
        let mut p = Pending {
            overlay: BTreeMap::new(),
            log: Vec::new(),
            changes: Vec::new(),
        };
        let start = self.next_revision;
        for op in ops {
            if let Err(e) = self.apply(&mut p, op, now) {
                self.next_revision = start;
                return Err(e);
            }
        }
        self.overlay.extend(p.overlay);
        self.log.extend(p.log);
        Ok(p.changes)
    }

    fn read(&self, p: &Pending, key: &str) -> Result<Option<Object>> {
        let bytes = match p.overlay.get(key).or_else(|| self.overlay.get(key)) {
            Some(v) => v.clone(),
            None => self
                .table
                .get(key)
                .map_err(|e| Error::store("read", e))?
                .map(|v| v.value().to_vec()),
        };
        bytes
            .map(|b| codec::decode(self.cipher, key, &b))
            .transpose()
    }

    /// Keys under `prefix`, as the file and both overlays together see them.
    fn keys_with_prefix(&self, p: &Pending, prefix: &str) -> Result<Vec<String>> {
        let mut keys = std::collections::BTreeSet::new();
        for entry in self
            .table
            .range(prefix..)
            .map_err(|e| Error::store("scan", e))?
        {
            let (k, _) = entry.map_err(|e| Error::store("scan", e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            keys.insert(k.value().to_string());
        }
        for (k, v) in self.overlay.iter().chain(p.overlay.iter()) {
            if k.starts_with(prefix) {
                if v.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    fn record(
        &mut self,
        p: &mut Pending,
        type_: ChangeType,
        key: String,
        mut obj: Object,
    ) -> Result<()> {
        let revision = self.next_revision;
        self.next_revision += 1;
        obj.metadata_mut().resource_version = revision.to_string();
        let value = codec::encode(self.cipher, &key, &obj)?;
        p.overlay.insert(
            key.clone(),
            (type_ != ChangeType::Deleted).then(|| value.clone()),
        );
        p.log.push((revision, LogEntry { type_, key, value }));
        p.changes.push(Change {
            revision,
            type_,
            object: obj,
        });
        Ok(())
    }

    fn apply(&mut self, p: &mut Pending, op: &Op, now: &str) -> Result<()> {
        match op {
            Op::Create(obj) | Op::CreateWithUid(obj) => {
                let mut obj = obj.clone();
                obj.normalize();
                if obj.name().is_empty() {
                    let generated = self.generate_name(p, &obj)?;
                    obj.metadata_mut().name = generated;
                }
                let key = ObjectKey::of(&obj);
                if self.read(p, &key.encode())?.is_some() {
                    return Err(Error::AlreadyExists(key.to_string()));
                }
                if let Some(ns) = obj.namespace() {
                    let ns_key = ObjectKey::new(Kind::Namespace, None, ns);
                    match self.read(p, &ns_key.encode())? {
                        None => return Err(Error::NotFound(ns_key.to_string())),
                        Some(n) if n.metadata().deletion_timestamp.is_some() => {
                            return Err(Error::Invalid(format!(
                                "namespace {ns:?} is being deleted; nothing new may be created in it"
                            )))
                        }
                        Some(_) => {}
                    }
                }
                let m = obj.metadata_mut();
                if !matches!(op, Op::CreateWithUid(_)) || m.uid.is_empty() {
                    m.uid = uuid::Uuid::new_v4().to_string();
                }
                m.creation_timestamp = Some(now.to_string());
                m.deletion_timestamp = None;
                m.deletion_grace_period_seconds = None;
                m.generation = 1;
                self.record(p, ChangeType::Added, key.encode(), obj)
            }
            Op::Update { object, expected } => {
                let mut obj = object.clone();
                obj.normalize();
                let key = ObjectKey::of(&obj);
                let stored = self.existing(p, &key, *expected)?;
                let sm = stored.metadata();
                let generation = if stored.spec_fingerprint()? == obj.spec_fingerprint()? {
                    sm.generation
                } else {
                    sm.generation + 1
                };
                let (uid, created, deleting, grace) = (
                    sm.uid.clone(),
                    sm.creation_timestamp.clone(),
                    sm.deletion_timestamp.clone(),
                    sm.deletion_grace_period_seconds,
                );
                if deleting.is_some() {
                    if let Some(new) =
                        (obj.metadata().finalizers.iter()).find(|f| !sm.finalizers.contains(f))
                    {
                        return Err(Error::Invalid(format!(
                            "{key}: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizer {new:?}"
                        )));
                    }
                }
                let m = obj.metadata_mut();
                m.uid = uid;
                m.creation_timestamp = created;
                m.deletion_timestamp = deleting;
                m.deletion_grace_period_seconds = grace;
                m.generation = generation;
                // Its last finalizer gone, an object being deleted goes.
                let gone = m.deletion_timestamp.is_some() && m.finalizers.is_empty();
                let change = if gone {
                    ChangeType::Deleted
                } else {
                    ChangeType::Modified
                };
                self.record(p, change, key.encode(), obj)?;
                if gone {
                    self.settle_namespace(p, &key)?;
                }
                Ok(())
            }
            Op::UpdateStatus { object, expected } => {
                let mut obj = object.clone();
                obj.normalize();
                let key = ObjectKey::of(&obj);
                let stored = self.existing(p, &key, *expected)?;
                let merged = stored
                    .with_status_of(&obj)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                self.record(p, ChangeType::Modified, key.encode(), merged)
            }
            Op::Delete { key, expected } => {
                let stored = self.existing(p, key, *expected)?;
                self.remove(p, key, stored, now)?;
                self.settle_namespace(p, key)
            }
            Op::DeleteWith { key, policy, grace } => {
                self.delete_with(p, key, *policy, *grace, now)?;
                self.settle_namespace(p, key)
            }
            Op::DeleteNamespace { name } => self.delete_namespace(p, name, now),
        }
    }

    /// A namespace's deletion, as Kubernetes': everything in it is deleted; what a finalizer
    /// holds is marked and stays, and so does the namespace, `Terminating` (nothing new may be
    /// created in it), until the last of them goes (`settle_namespace`).
    fn delete_namespace(&mut self, p: &mut Pending, name: &str, now: &str) -> Result<()> {
        let ns_key = ObjectKey::new(Kind::Namespace, None, name);
        let mut ns = self.existing(p, &ns_key, None)?;
        for kind in Kind::ALL.iter().filter(|k| k.namespaced()) {
            for key in self.keys_with_prefix(p, &ObjectKey::prefix(*kind, Some(name)))? {
                let Some(obj) = self.read(p, &key)? else {
                    continue;
                };
                if obj.metadata().deletion_timestamp.is_none() {
                    self.remove(p, &ObjectKey::of(&obj), obj, now)?;
                }
            }
        }
        if self.namespace_empty(p, name)? {
            return self.record(p, ChangeType::Deleted, ns_key.encode(), ns);
        }
        if ns.metadata().deletion_timestamp.is_some() {
            return Ok(());
        }
        ns.metadata_mut().deletion_timestamp = Some(now.to_string());
        if let Object::Namespace(n) = &mut ns {
            n.status.get_or_insert_with(Default::default).phase = Some("Terminating".into());
        }
        self.record(p, ChangeType::Modified, ns_key.encode(), ns)
    }

    /// After an object under `key` went or was marked: its namespace, if it is being deleted
    /// and nothing is left in it, goes too.
    fn settle_namespace(&mut self, p: &mut Pending, key: &ObjectKey) -> Result<()> {
        let Some(name) = key.namespace.as_deref() else {
            return Ok(());
        };
        let ns_key = ObjectKey::new(Kind::Namespace, None, name);
        let Some(ns) = self.read(p, &ns_key.encode())? else {
            return Ok(());
        };
        if ns.metadata().deletion_timestamp.is_none() || !self.namespace_empty(p, name)? {
            return Ok(());
        }
        self.record(p, ChangeType::Deleted, ns_key.encode(), ns)
    }

    fn namespace_empty(&self, p: &Pending, name: &str) -> Result<bool> {
        for kind in Kind::ALL.iter().filter(|k| k.namespaced()) {
            if !self
                .keys_with_prefix(p, &ObjectKey::prefix(*kind, Some(name)))?
                .is_empty()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A deletion as the caller asked it (`propagationPolicy`), with a pod's own grace
    /// period stamped on what is deleted, for its node to stop it within that.
    fn delete_with(
        &mut self,
        p: &mut Pending,
        key: &ObjectKey,
        policy: PropagationPolicy,
        grace: Option<i64>,
        now: &str,
    ) -> Result<()> {
        let mut stored = self.existing(p, key, None)?;
        if let Some(g) = grace {
            let m = stored.metadata_mut();
            m.deletion_grace_period_seconds = Some(g);
            m.deletion_timestamp.get_or_insert_with(|| now.to_string());
        }
        match policy {
            PropagationPolicy::Background => self.remove(p, key, stored, now),
            PropagationPolicy::Orphan => {
                let uid = stored.metadata().uid.clone();
                for mut dependent in self.dependents(p, &stored)? {
                    dependent
                        .metadata_mut()
                        .owner_references
                        .retain(|o| o.uid != uid);
                    let dk = ObjectKey::of(&dependent).encode();
                    self.record(p, ChangeType::Modified, dk, dependent)?;
                }
                self.remove(p, key, stored, now)
            }
            PropagationPolicy::Foreground => {
                let mut obj = stored;
                let m = obj.metadata_mut();
                if m.deletion_timestamp.is_none() {
                    m.deletion_timestamp = Some(now.to_string());
                }
                if !m.finalizers.iter().any(|f| f == FOREGROUND_DELETION) {
                    m.finalizers.push(FOREGROUND_DELETION.into());
                }
                self.record(p, ChangeType::Modified, key.encode(), obj)
            }
        }
    }

    /// Deletes `stored`, unless a finalizer holds it (one other than `foregroundDeletion`, which
    /// Shoal's own garbage collector settles): then it is only marked as being deleted, and
    /// goes once an update takes its last finalizer away, as in Kubernetes.
    fn remove(
        &mut self,
        p: &mut Pending,
        key: &ObjectKey,
        mut stored: Object,
        now: &str,
    ) -> Result<()> {
        let m = stored.metadata_mut();
        let held = m.finalizers.iter().any(|f| f != FOREGROUND_DELETION);
        if !held {
            return self.record(p, ChangeType::Deleted, key.encode(), stored);
        }
        m.deletion_timestamp.get_or_insert_with(|| now.to_string());
        self.record(p, ChangeType::Modified, key.encode(), stored)
    }

    /// The objects in `owner`'s namespace whose ownerReferences name it.
    fn dependents(&self, p: &Pending, owner: &Object) -> Result<Vec<Object>> {
        let (Some(ns), uid) = (owner.namespace(), owner.metadata().uid.as_str()) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        // Events name what they are about, never an owner.
        let kinds = Kind::ALL
            .iter()
            .filter(|k| k.namespaced() && **k != Kind::Event);
        for kind in kinds {
            for key in self.keys_with_prefix(p, &ObjectKey::prefix(*kind, Some(ns)))? {
                if let Some(obj) = self.read(p, &key)? {
                    if obj.metadata().owner_references.iter().any(|o| o.uid == uid) {
                        found.push(obj);
                    }
                }
            }
        }
        Ok(found)
    }

    fn existing(&self, p: &Pending, key: &ObjectKey, expected: Option<u64>) -> Result<Object> {
        let stored = self
            .read(p, &key.encode())?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if let Some(expected) = expected {
            let actual = stored.metadata().revision();
            if expected != actual {
                return Err(Error::Conflict(format!(
                    "{key} was modified (resourceVersion {actual}, the request expected {expected}); get it again and retry"
                )));
            }
        }
        Ok(stored)
    }

    fn generate_name(&self, p: &Pending, obj: &Object) -> Result<String> {
        let base = &obj.metadata().generate_name;
        let mut rng = rand::rng();
        for _ in 0..16 {
            let suffix: String = (0..5)
                .map(|_| {
                    let chars = b"bcdfghjklmnpqrstvwxz2456789";
                    chars[rng.random_range(0..chars.len())] as char
                })
                .collect();
            let name = format!("{base}{suffix}");
            let key = ObjectKey::new(obj.kind(), obj.namespace(), &name);
            if self.read(p, &key.encode())?.is_none() {
                return Ok(name);
            }
        }
        Err(Error::Conflict(format!(
            "could not generate a unique name from {base:?}"
        )))
    }
}
