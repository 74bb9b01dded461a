//! The store: objects in a redb file, each write stamped with a cluster-wide revision.
//!
//! * Optimistic concurrency: an update naming a stale `resourceVersion` is refused.
//! * Group commit: one writer thread drains every pending write into one durable transaction,
//!   so N concurrent writers pay for one fsync, not N.
//! * Watch: every change is kept in a bounded change log keyed by revision; a watcher resumes
//!   from any revision still in the log, or is told to relist when it was compacted away.
//! * Secrets are sealed with an AEAD key from the data dir before they touch the file.

mod codec;
mod watch;
mod writer;
pub(crate) use writer::now;

pub use shoal_transport::seal::SecretCipher;
pub use watch::Watch;

use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, TableDefinition};
use shoal_api::{Kind, Object};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("changelog");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACTED: &str = "compacted";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as watchers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub revision: u64,
    pub type_: ChangeType,
    /// The object after the change; for a deletion, its last state.
    pub object: Object,
}

/// A write, applied atomically within a group commit.
#[derive(Clone, Debug)]
pub enum Op {
    /// Fails if the object exists, or if its namespace does not.
    Create(Object),
    /// As [`Op::Create`], keeping the object's uid: a pod a node ran while cut off from the
    /// controller, made in the API under the uid it runs with.
    CreateWithUid(Object),
    /// Replaces an existing object. With `expected`, fails unless the stored revision matches.
    Update {
        object: Object,
        expected: Option<u64>,
    },
    /// Replaces only the status of an existing object, keeping its spec and metadata.
    UpdateStatus {
        object: Object,
        expected: Option<u64>,
    },
    /// Deletes one object. With `expected`, fails unless the stored revision matches.
    Delete {
        key: ObjectKey,
        expected: Option<u64>,
    },
    /// Deletes a namespace and everything in it, in one transaction.
    DeleteNamespace { name: String },
    /// Deletes one object, choosing what becomes of its dependents (the objects in its
    /// namespace whose ownerReferences name its uid). Background is [`Op::Delete`]; Orphan
    /// strips those references in the same transaction; Foreground only marks the object
    /// (deletionTimestamp and the `foregroundDeletion` finalizer) for the garbage collector.
    DeleteWith {
        key: ObjectKey,
        policy: shoal_api::PropagationPolicy,
        /// A pod's own grace period for this deletion, stamped on the object its watchers
        /// see deleted (with its deletionTimestamp), so its node stops it within that.
        grace: Option<i64>,
    },
}

/// Where an object lives: its kind, namespace (for namespaced kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        let namespace = kind
            .namespaced()
            .then(|| namespace.unwrap_or("default").to_string());
        ObjectKey {
            kind,
            namespace,
            name: name.to_string(),
        }
    }

    pub fn of(obj: &Object) -> Self {
        ObjectKey::new(obj.kind(), obj.namespace(), obj.name())
    }

    /// `pods/default/web-1`; cluster-scoped kinds use an empty namespace (`nodes//pi-1`).
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind.plural(),
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
    }

    pub(crate) fn prefix(kind: Kind, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if kind.namespaced() => format!("{}/{}/", kind.plural(), ns),
            _ => format!("{}/", kind.plural()),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = self.kind.plural();
        match &self.namespace {
            Some(ns) => write!(f, "{plural} \"{}\" in namespace \"{ns}\"", self.name),
            None => write!(f, "{plural} \"{}\"", self.name),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many changes the log keeps for watchers to resume from.
    pub log_retention: u64,
    /// Share one durable transaction between concurrent writers (off only for benchmarks).
    pub group_commit: bool,
    /// Most writes folded into one transaction.
    pub max_batch: usize,
    /// Most memory redb keeps for its page cache. Its own default (1 GiB) would let a
    /// controller on a small board hold its whole file in memory; the kernel's page cache
    /// serves what falls out.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            log_retention: 20_000,
            group_commit: true,
            max_batch: 1024,
            cache_bytes: 32 << 20,
        }
    }
}

pub(crate) struct WriteRequest {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Result<Vec<Change>>>,
}

/// The open redb file. redb refuses every transaction on a handle that once failed to write
/// (a full disk, an I/O error) until the file is closed and opened again; the writer does that
/// here, so a controller whose disk filled up takes writes again once there is room, without a
/// restart, and what was committed before is read back from the file as it is.
pub(crate) struct Db {
    path: PathBuf,
    cache_bytes: usize,
    /// `None` between closing the file and opening it again.
    open: RwLock<Option<Arc<Database>>>,
}

impl Db {
    fn open(path: &Path, cache_bytes: usize) -> Result<Db> {
        Ok(Db {
            path: path.to_path_buf(),
            cache_bytes,
            open: RwLock::new(Some(Arc::new(Self::create(path, cache_bytes)?))),
        })
    }

    fn create(path: &Path, cache_bytes: usize) -> Result<Database> {
        Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| Error::store(format!("opening {}", path.display()), e))
    }

    /// The database as it is open now, for one transaction: a clone is never kept, or the
    /// file could not be closed.
    pub(crate) fn get(&self) -> Result<Arc<Database>> {
        self.open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::Reopening)
    }

    fn is_closed(&self) -> bool {
        self.open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Whether the handle refuses every write until it is opened again.
    fn needs_reopen(&self) -> bool {
        match self.get() {
            Ok(db) => matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::PreviousIo
                ))
            ),
            Err(_) => true,
        }
    }

    /// Closes the file and opens it again. Only the writer calls this, between transactions;
    /// reads in flight hold the old handle for one transaction, so they are waited for.
    fn reopen(&self) -> Result<()> {
        let taken = self
            .open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut db) = taken {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(held) if Instant::now() < deadline => {
                        db = held;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(held) => {
                        *self.open.write().unwrap_or_else(PoisonError::into_inner) = Some(held);
                        return Err(Error::Internal(
                            "the store file is still being read after 5 s; not reopened".into(),
                        ));
                    }
                }
            }
        }
        let db = Self::create(&self.path, self.cache_bytes)?;
        *self.open.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
        Ok(())
    }
}

struct Inner {
    db: Arc<Db>,
    /// `None` only while dropping.
    writes: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    changes: broadcast::Sender<Arc<Change>>,
    cipher: Arc<SecretCipher>,
    revision: Arc<AtomicU64>,
}

impl Drop for Inner {
    /// Lets the writer finish what is queued and release the file, so the same data dir can be
    /// opened again at once.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) `DIR/state.redb` with the secrets key `DIR/secrets.key`.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cipher = Arc::new(
            SecretCipher::load_or_create(&dir.join("secrets.key")).map_err(codec::sealing)?,
        );
        let path = dir.join("state.redb");
        let db = Arc::new(Db::open(&path, config.cache_bytes)?);
        shoal_transport::pki::make_private_file(&path)
            .map_err(|e| Error::store("securing the store file", e))?;
        let revision = writer::initialize(&*db.get()?, &cipher)?;
        let revision = Arc::new(AtomicU64::new(revision));
        let (changes, _) = broadcast::channel(4096);
        let (writes, rx) = mpsc::channel(config.max_batch * 4);
        let writer = writer::spawn(
            db.clone(),
            cipher.clone(),
            config,
            rx,
            changes.clone(),
            revision.clone(),
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                writes: Some(writes),
                writer: Some(writer),
                changes,
                cipher,
                revision,
            }),
        })
    }

    /// The newest committed revision.
    pub fn revision(&self) -> u64 {
        self.inner.revision.load(Ordering::Acquire)
    }

    /// Applies `ops` atomically (all or none) and durably; returns one change per object touched.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Change>> {
        let (reply, rx) = oneshot::channel();
        let writes = self.inner.writes.as_ref().ok_or(Error::Closed)?;
        writes
            .send(WriteRequest { ops, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub async fn create(&self, obj: Object) -> Result<Change> {
        self.single(Op::Create(obj)).await
    }

    pub async fn update(&self, obj: Object, expected: Option<u64>) -> Result<Change> {
        self.single(Op::Update {
            object: obj,
            expected,
        })
        .await
    }

    pub async fn update_status(&self, obj: Object, expected: Option<u64>) -> Result<Change> {
        self.single(Op::UpdateStatus {
            object: obj,
            expected,
        })
        .await
    }

    pub async fn delete(&self, key: ObjectKey, expected: Option<u64>) -> Result<Change> {
        self.single(Op::Delete { key, expected }).await
    }

    async fn single(&self, op: Op) -> Result<Change> {
        self.write(vec![op])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("a write returned no change".into()))
    }

    /// The object at `key`, read on a blocking thread (redb reads the file, and a Secret is
    /// unsealed on the way).
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Object>> {
        let key = key.clone();
        self.read(move |r| r.get(&key)).await
    }

    /// Every object of `kind` (in `namespace`, or in all), with the revision they are current at.
    pub async fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<(Vec<Object>, u64)> {
        let namespace = namespace.map(str::to_string);
        self.read(move |r| {
            let mut out = Vec::new();
            let revision = r.scan(kind, namespace.as_deref(), |o| out.push(o))?;
            Ok((out, revision))
        })
        .await
    }

    /// Every object of `kind` as its type (one that does not convert is skipped). Each is
    /// converted as it is decoded, so a list of 10,000 pods is never in memory twice.
    pub async fn list_typed<T>(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<T>>
    where
        T: TryFrom<Object, Error = shoal_api::Error> + Send + 'static,
    {
        let namespace = namespace.map(str::to_string);
        self.read(move |r| {
            let mut out = Vec::new();
            r.scan(kind, namespace.as_deref(), |o| {
                out.extend(o.into_typed::<T>().ok())
            })?;
            Ok(out)
        })
        .await
    }

    /// Runs a read on a blocking thread: a list of thousands of objects is milliseconds of
    /// file reads and decoding that would otherwise stall every task on its async thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (db, cipher) = (self.inner.db.clone(), self.inner.cipher.clone());
        tokio::task::spawn_blocking(move || {
            f(&Reader {
                db: db.get()?,
                cipher,
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("a store read failed: {e}")))?
    }

    /// Changes after `revision` (exclusive), optionally of one kind. Fails with
    /// [`Error::Compacted`] when the log no longer reaches back that far.
    pub async fn watch(&self, revision: u64, kind: Option<Kind>) -> Result<Watch> {
        Watch::new(
            self.inner.db.clone(),
            self.inner.cipher.clone(),
            self.inner.changes.subscribe(),
            revision,
            kind,
        )
        .await
    }
}

/// The store's read side, for a blocking thread.
struct Reader {
    db: Arc<Database>,
    cipher: Arc<SecretCipher>,
}

impl Reader {
    fn get(&self, key: &ObjectKey) -> Result<Option<Object>> {
        let txn = self.db.begin_read().map_err(|e| Error::store("read", e))?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::store("read", e))?;
        let k = key.encode();
        match table.get(k.as_str()).map_err(|e| Error::store("read", e))? {
            Some(v) => Ok(Some(codec::decode(&self.cipher, &k, v.value())?)),
            None => Ok(None),
        }
    }

    /// Decodes every object of `kind` (in `namespace`, or in all) in key order; returns the
    /// revision they are current at.
    fn scan(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        mut each: impl FnMut(Object),
    ) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| Error::store("list", e))?;
        let meta = txn.open_table(META).map_err(|e| Error::store("list", e))?;
        let revision = meta
            .get(META_REVISION)
            .map_err(|e| Error::store("list", e))?
            .map(|v| v.value())
            .unwrap_or(0);
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::store("list", e))?;
        let prefix = ObjectKey::prefix(kind, namespace);
        for entry in table
            .range(prefix.as_str()..)
            .map_err(|e| Error::store("list", e))?
        {
            let (k, v) = entry.map_err(|e| Error::store("list", e))?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            each(codec::decode(&self.cipher, k.value(), v.value())?);
        }
        Ok(revision)
    }
}

#[cfg(test)]
mod tests;
