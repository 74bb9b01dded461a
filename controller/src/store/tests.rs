//! Store tests on a real redb file in a temporary directory.

use super::*;
use shoal_api::{ConfigMap, Namespace, ObjectMeta, PropagationPolicy, Secret};

fn cm(ns: &str, name: &str, value: &str) -> Object {
    let mut c = ConfigMap {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    c.data.insert("k".into(), value.into());
    Object::ConfigMap(c)
}

fn ns(name: &str) -> Object {
    Object::Namespace(Namespace {
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreConfig::default()).unwrap()
}

#[tokio::test]
async fn revisions_and_optimistic_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let start = store.revision();
    assert!(start >= 1, "the default namespace is created on open");
    let created = store.create(cm("default", "a", "1")).await.unwrap();
    assert_eq!(created.revision, start + 1);
    assert_eq!(
        created.object.metadata().resource_version,
        (start + 1).to_string()
    );
    assert_eq!(created.object.metadata().generation, 1);
    assert!(!created.object.metadata().uid.is_empty());

    let again = store.create(cm("default", "a", "1")).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists(_)), "{again}");

    let updated = store
        .update(cm("default", "a", "2"), Some(created.revision))
        .await
        .unwrap();
    assert_eq!(updated.object.metadata().generation, 2, "data changed");
    assert_eq!(updated.object.metadata().uid, created.object.metadata().uid);

    let stale = store
        .update(cm("default", "a", "3"), Some(created.revision))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::Conflict(_)), "{stale}");
    let key = ObjectKey::new(Kind::ConfigMap, Some("default"), "a");
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        stored, updated.object,
        "a refused write leaves the object as it was"
    );
}

#[tokio::test]
async fn objects_need_their_namespace_and_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.create(cm("shop", "a", "1")).await.unwrap_err();
    assert_eq!(err.to_string(), "namespaces \"shop\" not found");
    store.create(ns("shop")).await.unwrap();
    store.create(cm("shop", "a", "1")).await.unwrap();
    store.create(cm("shop", "b", "1")).await.unwrap();
    store.create(cm("default", "c", "1")).await.unwrap();
    let changes = store
        .write(vec![Op::DeleteNamespace {
            name: "shop".into(),
        }])
        .await
        .unwrap();
    assert_eq!(changes.len(), 3);
    assert!(store
        .list(Kind::ConfigMap, Some("shop"))
        .await
        .unwrap()
        .0
        .is_empty());
    assert_eq!(store.list(Kind::ConfigMap, None).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn a_namespace_whose_objects_a_finalizer_holds_terminates_until_the_last_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(ns("shop")).await.unwrap();
    let mut held = cm("shop", "held", "1");
    held.metadata_mut().finalizers = vec!["example.com/keep".into()];
    store.create(held).await.unwrap();
    store.create(cm("shop", "plain", "1")).await.unwrap();
    let delete = || Op::DeleteNamespace {
        name: "shop".into(),
    };
    store.write(vec![delete()]).await.unwrap();
    let ns_key = ObjectKey::new(Kind::Namespace, None, "shop");
    let Some(Object::Namespace(n)) = store.get(&ns_key).await.unwrap() else {
        panic!("the namespace stays while a finalizer holds something in it");
    };
    assert!(n.metadata.deletion_timestamp.is_some());
    assert_eq!(
        n.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let (left, _) = store.list(Kind::ConfigMap, Some("shop")).await.unwrap();
    assert_eq!(left.len(), 1, "only the held object is left");
    let held = left.into_iter().next().unwrap();
    assert!(held.metadata().deletion_timestamp.is_some());
    let err = store.create(cm("shop", "new", "1")).await.unwrap_err();
    assert!(err.to_string().contains("being deleted"), "{err}");
    // Deleting it again changes nothing; the last finalizer gone, both go.
    let again = store.write(vec![delete()]).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    let mut released = held;
    released.metadata_mut().finalizers.clear();
    store
        .write(vec![Op::Update {
            object: released,
            expected: None,
        }])
        .await
        .unwrap();
    assert!(store.get(&ns_key).await.unwrap().is_none());
    assert!(store
        .list(Kind::ConfigMap, Some("shop"))
        .await
        .unwrap()
        .0
        .is_empty());
}

#[tokio::test]
async fn a_failed_request_in_a_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = store.revision();
    let err = store
        .write(vec![
            Op::Create(cm("default", "x", "1")),
            Op::Create(cm("missing", "y", "1")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
    assert_eq!(store.revision(), before);
    assert!(store
        .get(&ObjectKey::new(Kind::ConfigMap, Some("default"), "x"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn watch_resumes_from_a_revision_and_sees_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let from = store.revision();
    for i in 0..5 {
        store
            .create(cm("default", &format!("c{i}"), "v"))
            .await
            .unwrap();
    }
    let mut w = store.watch(from, Some(Kind::ConfigMap)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(w.next().await.unwrap().revision);
    }
    // Live changes follow the replayed ones without a gap or a repeat.
    let writer = store.clone();
    let live = tokio::spawn(async move {
        for i in 5..10 {
            writer
                .create(cm("default", &format!("c{i}"), "v"))
                .await
                .unwrap();
        }
    });
    for _ in 0..5 {
        seen.push(w.next().await.unwrap().revision);
    }
    live.await.unwrap();
    let expected: Vec<u64> = (from + 1..=from + 10).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn compacted_revisions_ask_for_a_relist() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            log_retention: 10,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..30 {
        store
            .create(cm("default", &format!("c{i}"), "v"))
            .await
            .unwrap();
    }
    let err = store.watch(1, None).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Compacted { .. }), "{err}");
    assert!(store.watch(store.revision() - 5, None).await.is_ok());
}

#[tokio::test]
async fn secrets_are_sealed_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let mut s = Secret {
            metadata: ObjectMeta {
                name: "db".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        s.data
            .insert("password".into(), "c3VwZXItc2VjcmV0LXBhc3N3b3Jk".into());
        store.create(Object::Secret(s)).await.unwrap();
        let key = ObjectKey::new(Kind::Secret, Some("default"), "db");
        assert!(store.get(&key).await.unwrap().is_some());
    }
    let file = std::fs::read(dir.path().join("state.redb")).unwrap();
    let needle = b"c3VwZXItc2VjcmV0LXBhc3N3b3Jk";
    assert!(
        !file.windows(needle.len()).any(|w| w == needle),
        "secret data is readable in the file"
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = store.revision();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.create(cm("default", &format!("c{i}"), "v"))
                    .await
                    .unwrap()
                    .revision
            })
        })
        .collect();
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 200, "every write has its own revision");
    assert_eq!(store.revision(), before + 200);
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(
        reopened.list(Kind::ConfigMap, None).await.unwrap().0.len(),
        200
    );
    assert_eq!(reopened.revision(), before + 200);
}

/// A finalizer holds a deleted object (marked, still there) until an update takes the last one
/// away; none may be added meanwhile.
#[tokio::test]
async fn a_finalizer_holds_a_deleted_object_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut held = cm("default", "held", "1");
    held.metadata_mut().finalizers = vec!["example.com/cleanup".into(), "b/two".into()];
    store.create(held).await.unwrap();
    let key = ObjectKey::new(Kind::ConfigMap, Some("default"), "held");
    let marked = store.delete(key.clone(), None).await.unwrap();
    assert_eq!(marked.type_, ChangeType::Modified);
    let stored = store.get(&key).await.unwrap().expect("still there");
    assert!(stored.metadata().deletion_timestamp.is_some());

    let mut added = stored.clone();
    added.metadata_mut().finalizers.push("c/new".into());
    let e = store.update(added, None).await.unwrap_err();
    assert!(e.to_string().contains("no new finalizers"), "{e}");

    let mut one = stored.clone();
    one.metadata_mut().finalizers = vec!["b/two".into()];
    assert_eq!(
        store.update(one.clone(), None).await.unwrap().type_,
        ChangeType::Modified
    );
    one.metadata_mut().finalizers.clear();
    assert_eq!(
        store.update(one, None).await.unwrap().type_,
        ChangeType::Deleted
    );
    assert!(store.get(&key).await.unwrap().is_none());

    // Without one, a delete removes at once.
    store.create(cm("default", "plain", "1")).await.unwrap();
    let plain = ObjectKey::new(Kind::ConfigMap, Some("default"), "plain");
    assert_eq!(
        store.delete(plain, None).await.unwrap().type_,
        ChangeType::Deleted
    );
}

#[tokio::test]
async fn orphaning_strips_the_owner_and_foreground_only_marks_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = store.create(cm("default", "owner", "1")).await.unwrap();
    let uid = owner.object.metadata().uid.clone();
    let owned = |name: &str| {
        let mut o = cm("default", name, "1");
        o.metadata_mut()
            .owner_references
            .push(shoal_api::OwnerReference {
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: uid.clone(),
                controller: Some(true),
                ..Default::default()
            });
        o
    };
    store.create(owned("a")).await.unwrap();
    store.create(owned("b")).await.unwrap();
    store.create(cm("default", "stranger", "1")).await.unwrap();
    let key = |n: &str| ObjectKey::new(Kind::ConfigMap, Some("default"), n);

    let marked = store
        .write(vec![Op::DeleteWith {
            key: key("owner"),
            policy: PropagationPolicy::Foreground,
            grace: None,
        }])
        .await
        .unwrap();
    let m = marked[0].object.metadata();
    assert!(m.deletion_timestamp.is_some());
    assert_eq!(
        m.finalizers,
        vec![shoal_api::FOREGROUND_DELETION.to_string()]
    );
    assert!(
        store.get(&key("owner")).await.unwrap().is_some(),
        "still there"
    );

    let changes = store
        .write(vec![Op::DeleteWith {
            key: key("owner"),
            policy: PropagationPolicy::Orphan,
            grace: None,
        }])
        .await
        .unwrap();
    assert_eq!(changes.len(), 3, "two dependents rewritten, one owner gone");
    assert!(store.get(&key("owner")).await.unwrap().is_none());
    for n in ["a", "b"] {
        let o = store.get(&key(n)).await.unwrap().expect("dependents stay");
        assert!(o.metadata().owner_references.is_empty(), "{n}");
    }
    assert!(store.get(&key("stranger")).await.unwrap().is_some());
}

#[tokio::test]
async fn a_watcher_far_behind_catches_up_in_chunks_without_losing_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let from = store.revision();
    for batch in 0..5 {
        let ops = (0..500)
            .map(|i| Op::Create(cm("default", &format!("cm-{batch}-{i}"), "1")))
            .collect();
        store.write(ops).await.unwrap();
    }
    let mut watch = store.watch(from, Some(Kind::ConfigMap)).await.unwrap();
    let live = store.create(cm("default", "last", "1")).await.unwrap();
    let mut revisions = Vec::new();
    while revisions.last() != Some(&live.revision) {
        revisions.push(watch.next().await.unwrap().revision);
    }
    assert_eq!(revisions.len(), 2501);
    assert!(
        revisions.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none twice"
    );
}

/// Whether the root-only test can run here, saying why not (a failure with
/// SHOAL_REQUIRE_RUNC=1, which CI sets, as for every test that needs root).
fn root_or_skip(test: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    if std::env::var("SHOAL_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test} needs root (it mounts a tmpfs)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: not root");
    false
}

/// Unmounts the test's disk however the test ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk: the write that does not fit fails saying why, nothing committed before it is
/// lost, and once there is room again the store takes writes with no restart (redb refuses
/// every transaction on a handle that saw an I/O error until the file is opened again). The
/// disk is a 16 MiB tmpfs mounted for the test, so it needs root.
#[tokio::test]
async fn root_store_takes_writes_again_once_a_full_disk_has_room() {
    if !root_or_skip("root_store_takes_writes_again_once_a_full_disk_has_room") {
        return;
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
    let store = open(&disk.join("store"));
    for i in 0..5 {
        store
            .create(cm("default", &format!("kept-{i}"), "x"))
            .await
            .unwrap();
    }

    // Fill the disk, then write until a commit does not fit.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
    }
    let big = "y".repeat(256 << 10);
    let mut failed = None;
    for i in 0..64 {
        if let Err(e) = store.create(cm("default", &format!("big-{i}"), &big)).await {
            failed = Some((i, e));
            break;
        }
    }
    let (at, e) = failed.expect("a write fails on the full disk");
    let said = shoal_transport::report(&e).to_string();
    assert!(said.contains("No space left on device"), "{said}");
    let revision = store.revision();

    // Room again: the next write is taken, and everything before the failure is there.
    std::fs::remove_file(&filler).unwrap();
    let after = store.create(cm("default", "after", "z")).await.unwrap();
    assert_eq!(after.revision, revision + 1);
    let names = |objects: Vec<Object>| {
        objects
            .iter()
            .map(|o| o.name().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (listed, _) = store.list(Kind::ConfigMap, Some("default")).await.unwrap();
    let mut want: std::collections::BTreeSet<String> = (0..5)
        .map(|i| format!("kept-{i}"))
        .chain((0..at).map(|i| format!("big-{i}")))
        .collect();
    want.insert("after".into());
    assert_eq!(names(listed), want, "the failed write {at} is not there");

    // A watcher from before the failure sees the same history, and the file opens again.
    let mut watch = store
        .watch(revision - 1, Some(Kind::ConfigMap))
        .await
        .unwrap();
    let next = watch.next().await.unwrap();
    assert_eq!(next.revision, revision);
    drop(watch);
    drop(store);
    let again = open(&disk.join("store"));
    let (listed, _) = again.list(Kind::ConfigMap, Some("default")).await.unwrap();
    assert_eq!(names(listed), want);
}
