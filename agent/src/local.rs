//! The node's own record of what it was told to run: its pods, the ConfigMaps and Secrets they
//! use, and the Services, Endpoints and Nodes its proxy routes by. With it, a node that cannot
//! reach the controller (a cut link, or a reboot while offline) keeps running its pods and
//! starts them again, and its proxy keeps its last known endpoints.
//!
//! It is a redb file in the data dir: every change is one transaction, so a power loss mid-write
//! leaves the state before it or after it, never half of it. Secrets are sealed with the node's
//! own key (`local.key`, mode 0600), as the controller seals its store.

use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use shoal_api::{Kind, Object};
use shoal_transport::seal::{self, SecretCipher};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");

/// One change to the local state, for [`Local::apply`].
#[derive(Clone, Debug)]
pub enum Change {
    /// Keep the object (replacing what was kept under its key).
    Keep(Box<Object>),
    /// Forget what is kept under the key.
    Forget(String),
}

pub struct Local {
    /// `None` between closing the file after a failed write and opening it again: redb
    /// refuses every transaction on a handle that once failed to write (a full SD card)
    /// until then, so the next write opens it again and the node's state is kept once there
    /// is room, with no restart.
    db: RwLock<Option<Database>>,
    cipher: SecretCipher,
    path: PathBuf,
}

/// Where an object is kept: pods by uid (the supervisor's key, stable while a name is
/// reused), the rest by namespace and name.
pub fn key_of(obj: &Object) -> String {
    let m = obj.metadata();
    match obj.kind() {
        Kind::Pod => format!("Pod/{}", m.uid),
        kind => key(kind, m.namespace.as_deref(), &m.name),
    }
}

pub fn key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{}/{name}", kind.name(), namespace.unwrap_or_default())
}

fn prefix(kind: Kind) -> String {
    format!("{}/", kind.name())
}

/// Why a data dir cannot be used while another agent runs with it.
fn in_use(data_dir: &Path) -> String {
    format!(
        "another agent runs with the data dir {} (its local.redb is locked): stop it first",
        data_dir.display()
    )
}

/// Fails, saying so, when an agent runs with `data_dir` (it holds the lock on its local state).
pub fn ensure_unused(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("local.redb");
    if !path.exists() {
        return Ok(());
    }
    match Database::open(&path) {
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::Config(in_use(data_dir))),
        // Openable, or broken: either way no agent holds it.
        _ => Ok(()),
    }
}

impl Local {
    /// Opens (or creates) `DATA_DIR/local.redb`. A file that cannot be opened is moved aside
    /// with a warning and a new one started: the node then runs what the controller tells it
    /// next, as on its first day.
    pub fn open(data_dir: &Path) -> Result<Local> {
        let path = data_dir.join("local.redb");
        let cipher = SecretCipher::load_or_create(&data_dir.join("local.key"))?;
        let db = match Database::create(&path) {
            Ok(db) => db,
            // Another agent holds it (redb locks the file): not broken, and not ours to move.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Config(in_use(data_dir)));
            }
            Err(e) => {
                let aside =
                    path.with_extension(format!("broken-{}", chrono::Utc::now().timestamp()));
                tracing::error!(path = %path.display(), error = %shoal_transport::report(&e), aside = %aside.display(), "the node's local state cannot be read; starting a new one");
                std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
                Database::create(&path).map_err(|e| local(&path, e))?
            }
        };
        shoal_transport::pki::make_private_file(&path)?;
        let txn = db.begin_write().map_err(|e| local(&path, e))?;
        txn.open_table(OBJECTS).map_err(|e| local(&path, e))?;
        txn.commit().map_err(|e| local(&path, e))?;
        Ok(Local {
            db: RwLock::new(Some(db)),
            cipher,
            path,
        })
    }

    /// Runs `f` on the open file, opening it again first if a failed write closed it.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        if let Some(db) = self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return f(db);
        }
        self.reopen()?;
        self.with_db(f)
    }

    /// Whether the file refuses every write until it is opened again.
    fn needs_reopen(&self) -> bool {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|db| {
                matches!(
                    db.begin_write(),
                    Err(redb::TransactionError::Storage(
                        redb::StorageError::PreviousIo
                    ))
                )
            })
    }

    /// Closes the file and opens it again; what was committed before is read back as it is.
    fn reopen(&self) -> Result<()> {
        let mut open = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Dropped first: redb locks the file while a handle is open.
        open.take();
        let db = Database::create(&self.path).map_err(|e| local(&self.path, e))?;
        *open = Some(db);
        tracing::warn!(path = %self.path.display(), "the node's local state reopened after a failed write");
        Ok(())
    }

    /// Its key, and its bytes as kept (with its apiVersion and kind, as the controller sent it).
    fn encode(&self, obj: &Object) -> Result<(String, Vec<u8>)> {
        let mut obj = obj.clone();
        obj.normalize();
        let k = key_of(&obj);
        let bytes = seal::encode(&self.cipher, &k, &obj)?;
        Ok((k, bytes))
    }

    fn write(&self, f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<()>) -> Result<()> {
        let e = |e: redb::Error| local(&self.path, e);
        let written = self.with_db(|db| {
            let txn = db.begin_write().map_err(|x| e(x.into()))?;
            {
                let mut table = txn.open_table(OBJECTS).map_err(|x| e(x.into()))?;
                f(&mut table)?;
            }
            txn.commit().map_err(|x| e(x.into()))
        });
        if written.is_err() && self.needs_reopen() {
            if let Err(err) = self.reopen() {
                tracing::error!(error = %shoal_transport::report(&err), "cannot reopen the node's local state; trying again with the next write");
            }
        }
        written
    }

    /// Keeps `obj` (replacing what was kept under its key).
    pub fn put(&self, obj: &Object) -> Result<()> {
        let (k, bytes) = self.encode(obj)?;
        self.write(|t| {
            t.insert(k.as_str(), bytes.as_slice())
                .map(drop)
                .map_err(|e| local(&self.path, e))
        })
    }

    pub fn remove(&self, k: &str) -> Result<()> {
        self.write(|t| t.remove(k).map(drop).map_err(|e| local(&self.path, e)))
    }

    /// Makes the objects kept of `kind` exactly `objects`, in one transaction.
    pub fn replace(&self, kind: Kind, objects: &[Object]) -> Result<()> {
        let encoded: Vec<(String, Vec<u8>)> = objects
            .iter()
            .map(|o| self.encode(o))
            .collect::<Result<_>>()?;
        let p = prefix(kind);
        self.write(|t| {
            let e = |x: redb::StorageError| local(&self.path, x);
            let stale: Vec<String> = t
                .range(p.as_str()..)
                .map_err(e)?
                .map_while(|r| r.ok().map(|(k, _)| k.value().to_string()))
                .take_while(|k| k.starts_with(&p))
                .collect();
            for k in stale {
                t.remove(k.as_str()).map_err(e)?;
            }
            for (k, b) in &encoded {
                t.insert(k.as_str(), b.as_slice()).map_err(e)?;
            }
            Ok(())
        })
    }

    /// Applies `changes` in order, in one transaction: a burst of watch events costs one
    /// commit (one fsync), not one each.
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        let mut encoded = Vec::with_capacity(changes.len());
        for c in changes {
            encoded.push(match c {
                Change::Keep(obj) => {
                    let (k, bytes) = self.encode(obj)?;
                    (k, Some(bytes))
                }
                Change::Forget(k) => (k.clone(), None),
            });
        }
        self.write(|t| {
            let e = |x: redb::StorageError| local(&self.path, x);
            for (k, bytes) in &encoded {
                match bytes {
                    Some(b) => t.insert(k.as_str(), b.as_slice()).map(drop).map_err(e)?,
                    None => t.remove(k.as_str()).map(drop).map_err(e)?,
                }
            }
            Ok(())
        })
    }

    pub fn get(&self, k: &str) -> Result<Option<Object>> {
        let e = |x: redb::Error| local(&self.path, x);
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|x| e(x.into()))?;
            let table = txn.open_table(OBJECTS).map_err(|x| e(x.into()))?;
            match table.get(k).map_err(|x| e(x.into()))? {
                Some(v) => Ok(Some(seal::decode(&self.cipher, k, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Every object kept of `kind`; one that does not decode is left out with a warning.
    pub fn list(&self, kind: Kind) -> Result<Vec<Object>> {
        let e = |x: redb::Error| local(&self.path, x);
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|x| e(x.into()))?;
            let table = txn.open_table(OBJECTS).map_err(|x| e(x.into()))?;
            let p = prefix(kind);
            let mut out = Vec::new();
            for entry in table.range(p.as_str()..).map_err(|x| e(x.into()))? {
                let (k, v) = entry.map_err(|x| e(x.into()))?;
                if !k.value().starts_with(&p) {
                    break;
                }
                match seal::decode(&self.cipher, k.value(), v.value()) {
                    Ok(o) => out.push(o),
                    Err(err) => {
                        tracing::warn!(key = k.value(), error = %err, "a kept object does not decode; left out")
                    }
                }
            }
            Ok(out)
        })
    }

    /// The objects kept of `kind`, typed.
    pub fn list_typed<T: TryFrom<Object>>(&self, kind: Kind) -> Vec<T> {
        match self.list(kind) {
            Ok(objects) => objects
                .into_iter()
                .filter_map(|o| T::try_from(o).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %shoal_transport::report(&e), kind = kind.name(), "cannot read the node's local state");
                Vec::new()
            }
        }
    }

    /// Best effort: a write that fails is logged, and the node runs on from memory.
    pub fn keep(&self, obj: &Object) {
        if let Err(e) = self.put(obj) {
            tracing::warn!(key = %key_of(obj), error = %shoal_transport::report(&e), "cannot keep an object in the node's local state");
        }
    }

    pub fn forget(&self, k: &str) {
        if let Err(e) = self.remove(k) {
            tracing::warn!(key = k, error = %shoal_transport::report(&e), "cannot drop an object from the node's local state");
        }
    }
}

fn local(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Local {
        path: path.display().to_string(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Pod, Secret};

    fn pod(uid: &str) -> Object {
        let mut p = Pod::default();
        p.metadata.name = format!("p-{uid}");
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = uid.into();
        Object::Pod(p)
    }

    #[test]
    fn objects_survive_reopening_and_secrets_are_sealed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::open(dir.path()).unwrap();
        local.put(&pod("a")).unwrap();
        local.put(&pod("b")).unwrap();
        let mut s = Secret::default();
        s.metadata.name = "db".into();
        s.metadata.namespace = Some("default".into());
        s.data
            .insert("password".into(), "aHVudGVyMi1zZWNyZXQ=".into());
        local.put(&Object::Secret(s)).unwrap();
        local.remove("Pod/b").unwrap();
        drop(local);

        let raw = std::fs::read(dir.path().join("local.redb")).unwrap();
        let needle = b"aHVudGVyMi1zZWNyZXQ=";
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the secret's value is not on disk in the clear"
        );
        let local = Local::open(dir.path()).unwrap();
        let pods: Vec<Pod> = local.list_typed(Kind::Pod);
        assert_eq!(
            pods.iter()
                .map(|p| p.metadata.uid.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        let secret: Secret = local
            .get(&key(Kind::Secret, Some("default"), "db"))
            .unwrap()
            .and_then(|o| o.try_into().ok())
            .unwrap();
        assert_eq!(secret.data["password"], "aHVudGVyMi1zZWNyZXQ=");
    }

    #[test]
    fn replace_makes_a_kind_exactly_what_was_listed_and_leaves_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::open(dir.path()).unwrap();
        local.put(&pod("a")).unwrap();
        local.put(&pod("b")).unwrap();
        let mut svc = shoal_api::Service::default();
        svc.metadata.name = "web".into();
        local.put(&Object::Service(svc)).unwrap();
        local.replace(Kind::Pod, &[pod("c")]).unwrap();
        let pods: Vec<Pod> = local.list_typed(Kind::Pod);
        assert_eq!(
            pods.iter()
                .map(|p| p.metadata.uid.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(local.list(Kind::Service).unwrap().len(), 1);
    }

    /// A second agent on the same data dir is refused, and the first one's state is neither
    /// moved aside (as a broken file would be) nor touched.
    #[test]
    fn a_data_dir_in_use_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        ensure_unused(dir.path()).unwrap();
        let first = Local::open(dir.path()).unwrap();
        first.put(&pod("a")).unwrap();
        let err = Local::open(dir.path()).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("another agent runs")),
            "{err:?}"
        );
        assert!(ensure_unused(dir.path()).is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(!names.iter().any(|n| n.contains("broken")), "{names:?}");
        assert_eq!(first.list(Kind::Pod).unwrap().len(), 1);
        drop(first);
        ensure_unused(dir.path()).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_database_is_moved_aside_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local.redb"), b"half a page of nothing").unwrap();
        let local = Local::open(dir.path()).unwrap();
        assert!(local.list(Kind::Pod).unwrap().is_empty());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("broken"));
        assert!(
            aside,
            "the unreadable file is kept for a look, beside the new one"
        );
    }

    #[test]
    fn a_batch_of_changes_is_applied_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = Local::open(dir.path()).expect("open");
        let changes = [
            Change::Keep(Box::new(pod("a"))),
            Change::Keep(Box::new(pod("b"))),
            Change::Forget("Pod/a".into()),
        ];
        local.apply(&changes).expect("apply");
        let kept: Vec<String> = local
            .list(Kind::Pod)
            .expect("list")
            .iter()
            .map(|o| o.metadata().uid.clone())
            .collect();
        assert_eq!(kept, vec!["b".to_string()]);
    }

    /// A full SD card: the write that does not fit fails naming why; once there is room the
    /// next write is kept with no restart (redb refuses every transaction on a handle that saw
    /// an I/O error until it is opened again), and nothing kept before is lost. The card is a
    /// 16 MiB tmpfs mounted for the test, so it needs root.
    #[test]
    fn root_local_state_takes_writes_again_once_a_full_disk_has_room() {
        use std::os::unix::fs::MetadataExt;
        let test = "root_local_state_takes_writes_again_once_a_full_disk_has_room";
        // /proc/self belongs to the process's effective user.
        if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            if std::env::var("SHOAL_REQUIRE_RUNC").as_deref() == Ok("1") {
                panic!("{test} needs root (it mounts a tmpfs)");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: not root");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "shoal-test"])
            .arg(&disk)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t tmpfs");
        let _unmount = Unmount(disk.clone());
        let local = Local::open(&disk).unwrap();
        local.put(&pod("kept")).unwrap();

        let filler = disk.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 1 << 20];
            while f.write_all(&chunk).is_ok() {}
        }
        let big = |i: usize| {
            let mut p = pod(&format!("big-{i}"));
            p.metadata_mut()
                .annotations
                .insert("filler".into(), "y".repeat(256 << 10));
            p
        };
        let at = (0..64)
            .find_map(|i| local.put(&big(i)).err().map(|e| (i, e)))
            .expect("a write fails on the full disk");
        let said = shoal_transport::report(&at.1).to_string();
        assert!(said.contains("No space left on device"), "{said}");

        std::fs::remove_file(&filler).unwrap();
        local.put(&pod("after")).unwrap();
        let uids = |l: &Local| {
            l.list(Kind::Pod)
                .unwrap()
                .iter()
                .map(|o| o.metadata().uid.clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let want: std::collections::BTreeSet<String> = ["kept", "after"]
            .into_iter()
            .map(String::from)
            .chain((0..at.0).map(|i| format!("big-{i}")))
            .collect();
        assert_eq!(uids(&local), want, "the failed write {} is not kept", at.0);
        drop(local);
        assert_eq!(uids(&Local::open(&disk).unwrap()), want);
    }
}
