//! The service behind its doors: who may do what, joining, tokens.

use super::*;
use crate::store::StoreConfig;
use shoal_transport::proto::ErrorCode;

pub(super) async fn service() -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(dir.path()).unwrap());
    let peer_ca = Arc::new(Ca::load_or_create_peer(dir.path()).unwrap());
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let artifacts = Arc::new(Artifacts::open(dir.path()).unwrap());
    let s = Service::new(store, ca, peer_ca, artifacts, Default::default());
    s.bootstrap().await.unwrap();
    (dir, s)
}

pub(super) fn json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn pod(name: &str, node: &str, secret: &str) -> Vec<u8> {
    json(
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
            "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}}),
    )
}

fn secret(name: &str) -> Vec<u8> {
    json(
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"k": "v"}}),
    )
}

/// Creates Node `name` as an admin would.
async fn add_node(s: &Service, name: &str) {
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let admin = Identity::Admin("admin".into());
    call(
        s,
        &admin,
        Request::Apply {
            objects: vec![json(node)],
        },
    )
    .await
    .unwrap();
}

pub(super) async fn call(
    s: &Service,
    who: &Identity,
    req: Request,
) -> std::result::Result<Response, ErrorCode> {
    match s.handle(who, req).await {
        Reply::One(Response::Error(e)) => Err(e.code),
        Reply::One(r) => Ok(r),
        _ => Ok(Response::Ok),
    }
}

#[tokio::test]
async fn a_node_reads_only_what_is_bound_to_it_and_writes_only_its_own_status() {
    let (_dir, s) = service().await;
    let admin = Identity::Admin("admin".into());
    let objects = vec![
        pod("mine", "pi-1", "used"),
        pod("theirs", "pi-2", "other"),
        secret("used"),
        secret("other"),
        secret("unused"),
    ];
    call(&s, &admin, Request::Apply { objects }).await.unwrap();
    let me = Identity::Node("pi-1".into());
    let list = |fields: &str| Request::List {
        kind: "Pod".into(),
        namespace: None,
        selector: String::new(),
        fields: fields.into(),
    };
    let get_secret = |name: &str| Request::Get {
        kind: "Secret".into(),
        namespace: Some("default".into()),
        name: name.into(),
    };
    let node_obj = |name: &str| {
        json(serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
    };
    let status_of = |name: &str| {
        json(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "status": {"phase": "Running"}}),
        )
    };

    match call(&s, &me, list("spec.nodeName=pi-1")).await {
        Ok(Response::List { items, .. }) => assert_eq!(items.len(), 1, "only its own pod"),
        other => panic!("{other:?}"),
    }
    let cases: Vec<(&str, Request, Option<ErrorCode>)> = vec![
        ("list every pod", list(""), Some(ErrorCode::Forbidden)),
        (
            "list another node's pods",
            list("spec.nodeName=pi-2"),
            Some(ErrorCode::Forbidden),
        ),
        ("a secret its pod uses", get_secret("used"), None),
        (
            "a secret another node's pod uses",
            get_secret("other"),
            Some(ErrorCode::Forbidden),
        ),
        (
            "a secret no pod uses",
            get_secret("unused"),
            Some(ErrorCode::Forbidden),
        ),
        (
            "register itself",
            Request::PutNode {
                object: node_obj("pi-1"),
            },
            None,
        ),
        (
            "register as another node",
            Request::PutNode {
                object: node_obj("pi-2"),
            },
            Some(ErrorCode::Forbidden),
        ),
        (
            "status of its pod",
            Request::UpdateStatus {
                object: status_of("mine"),
            },
            None,
        ),
        (
            "status of another node's pod",
            Request::UpdateStatus {
                object: status_of("theirs"),
            },
            Some(ErrorCode::Forbidden),
        ),
        (
            "a Node that does not decode",
            Request::PutNode {
                object: b"{\"kind\": \"Node\", \"metadata\": ".to_vec(),
            },
            Some(ErrorCode::Invalid),
        ),
        (
            "a pod status that does not decode",
            Request::UpdateStatus {
                object: b"not json".to_vec(),
            },
            Some(ErrorCode::Invalid),
        ),
        (
            "apply",
            Request::Apply {
                objects: vec![secret("mine")],
            },
            Some(ErrorCode::Forbidden),
        ),
        (
            "delete",
            Request::Delete {
                kind: "Pod".into(),
                namespace: None,
                name: "theirs".into(),
                propagation: Default::default(),
                grace_period: None,
            },
            Some(ErrorCode::Forbidden),
        ),
        (
            "create a token",
            Request::CreateToken {
                description: String::new(),
                ttl_secs: None,
                usages: None,
            },
            Some(ErrorCode::Forbidden),
        ),
    ];
    for (what, req, want) in cases {
        let got = call(&s, &me, req).await.err();
        assert_eq!(got, want, "{what}");
    }
}

/// A node makes and removes the mirror pods of its static pods, and nothing else: no plain
/// pod, no mirror bound elsewhere or using a Secret, no deletion of a pod that is not its
/// mirror; a static pod's status goes on its mirror only.
#[tokio::test]
async fn a_node_creates_and_deletes_only_its_own_mirror_pods() {
    let (_dir, s) = service().await;
    let admin = Identity::Admin("admin".into());
    call(
        &s,
        &admin,
        Request::Apply {
            objects: vec![pod("plain", "pi-1", "x")],
        },
    )
    .await
    .unwrap();
    let me = Identity::Node("pi-1".into());
    let mirror = |name: &str, node: &str, extra: serde_json::Value| {
        let mut v = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"kubernetes.io/config.mirror": "abc"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}});
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        Request::Create {
            object: json(v),
            options: Default::default(),
        }
    };
    let delete = |name: &str| Request::Delete {
        kind: "Pod".into(),
        namespace: None,
        name: name.into(),
        propagation: Default::default(),
        grace_period: None,
    };
    let none = serde_json::json!({});
    let with_secret =
        serde_json::json!({"volumes": [{"name": "v", "secret": {"secretName": "db"}}]});
    let plain = Request::Create {
        object: pod("sneaky", "pi-1", "db"),
        options: Default::default(),
    };
    let static_status = json(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain", "annotations": {"kubernetes.io/config.source": "file"}},
        "status": {"phase": "Running"}}));
    let cases: Vec<(&str, Request, Option<ErrorCode>)> = vec![
        ("its mirror", mirror("web-pi-1", "pi-1", none.clone()), None),
        ("a plain pod", plain, Some(ErrorCode::Forbidden)),
        (
            "a mirror bound to another node",
            mirror("web-pi-2", "pi-2", none.clone()),
            Some(ErrorCode::Forbidden),
        ),
        (
            "a mirror that uses a Secret",
            mirror("db-pi-1", "pi-1", with_secret),
            Some(ErrorCode::Forbidden),
        ),
        (
            "a static pod's status on a pod that is not its mirror",
            Request::UpdateStatus {
                object: static_status,
            },
            Some(ErrorCode::Forbidden),
        ),
        (
            "delete a pod that is not a mirror",
            delete("plain"),
            Some(ErrorCode::Forbidden),
        ),
        ("delete its mirror", delete("web-pi-1"), None),
    ];
    for (what, req, want) in cases {
        let got = call(&s, &me, req).await.err();
        assert_eq!(got, want, "{what}");
    }
}

#[tokio::test]
async fn joining_needs_a_known_token_secret_and_the_ca_sets_the_name() {
    use shoal_transport::pki::{fingerprint_of_cert, node_key_and_csr, pem_to_der};
    let (_dir, s) = service().await;
    let token = s.create_token("test", None, None, None).await.unwrap();
    let token = shoal_transport::JoinToken::parse(&token).unwrap();
    let (_, csr_pem) = node_key_and_csr("pi-9").unwrap();
    let anon = Identity::Anonymous;
    let join = |secret: &str, name: &str, csr: &str| Request::Join {
        secret: secret.into(),
        node_name: name.into(),
        csr_pem: csr.into(),
    };
    assert_eq!(
        call(&s, &anon, join("wrong", "pi-9", &csr_pem)).await.err(),
        Some(ErrorCode::Forbidden)
    );
    let key = match call(&s, &anon, join(&token.secret, "pi-9", &csr_pem)).await {
        Ok(Response::Joined { cert_pem, .. }) => {
            let der = pem_to_der(&cert_pem).unwrap();
            assert_eq!(
                shoal_transport::pki::identity_of(&der),
                Identity::Node("pi-9".into())
            );
            fingerprint_of_cert(&der).unwrap()
        }
        other => panic!("{other:?}"),
    };
    let me = Identity::Node("pi-9".into());
    assert_eq!(s.authenticate(me.clone(), Some(&key)).await, Ok(me.clone()));
    // Another device may not take the name; the same key may join again.
    let (_, other_csr) = node_key_and_csr("pi-9").unwrap();
    assert_eq!(
        call(&s, &anon, join(&token.secret, "pi-9", &other_csr))
            .await
            .err(),
        Some(ErrorCode::Conflict)
    );
    assert!(call(&s, &anon, join(&token.secret, "pi-9", &csr_pem))
        .await
        .is_ok());
    for bad in ["Not_A_Name", "shoal-controller", "127.0.0.1", "localhost"] {
        assert_eq!(
            call(&s, &anon, join(&token.secret, bad, &csr_pem))
                .await
                .err(),
            Some(ErrorCode::Invalid),
            "{bad}"
        );
    }
    // Deleting the node revokes its certificate at once.
    let admin = Identity::Admin("admin".into());
    add_node(&s, "pi-9").await;
    call(
        &s,
        &admin,
        Request::Delete {
            kind: "Node".into(),
            namespace: None,
            name: "pi-9".into(),
            grace_period: None,
            propagation: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.authenticate(me, Some(&key)).await.map_err(|e| e.code),
        Err(ErrorCode::Unauthenticated)
    );
}

#[tokio::test]
async fn a_token_used_up_or_deleted_joins_no_more() {
    use shoal_transport::pki::node_key_and_csr;
    let (_dir, s) = service().await;
    let token = s.create_token("once", None, None, Some(1)).await.unwrap();
    let secret = shoal_transport::JoinToken::parse(&token).unwrap().secret;
    let join = |name: &str| Request::Join {
        secret: secret.clone(),
        node_name: name.into(),
        csr_pem: node_key_and_csr(name).unwrap().1,
    };
    let anon = Identity::Anonymous;
    assert!(call(&s, &anon, join("a")).await.is_ok());
    match s.handle(&anon, join("b")).await {
        Reply::One(Response::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Forbidden);
            assert!(
                e.message.contains("used up (1 of 1 joins)"),
                "{}",
                e.message
            );
        }
        _ => panic!("a used-up token joined a node"),
    }
    let again = s.create_token("any", None, None, None).await.unwrap();
    let t = shoal_transport::JoinToken::parse(&again).unwrap();
    let listed = s.list_tokens().await.unwrap();
    assert!(listed
        .iter()
        .any(|i| i.id == t.secret[..8] && i.usages.is_none()));
    s.delete_token(&t.secret[..8]).await.unwrap();
    let join = Request::Join {
        secret: t.secret.clone(),
        node_name: "c".into(),
        csr_pem: node_key_and_csr("c").unwrap().1,
    };
    assert_eq!(
        call(&s, &anon, join).await.err(),
        Some(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn a_node_that_joined_before_keys_were_bound_is_bound_once_if_it_still_exists() {
    use shoal_transport::pki::{fingerprint_of_csr, node_key_and_csr};
    let (_dir, s) = service().await;
    let century = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    let (_, csr) = node_key_and_csr("old").unwrap();
    let key = fingerprint_of_csr(&csr).unwrap();
    let old = Identity::Node("old".into());
    // No Node of that name (deleted before the upgrade): nothing is bound.
    s.adopt_legacy_node(&old, Some(&key), Some(century))
        .await
        .unwrap();
    assert!(s.authenticate(old.clone(), Some(&key)).await.is_err());
    add_node(&s, "old").await;
    // A certificate of today's lifetime is never adopted; a century-long one is, once.
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    s.adopt_legacy_node(&old, Some(&key), Some(year))
        .await
        .unwrap();
    assert!(s.authenticate(old.clone(), Some(&key)).await.is_err());
    s.adopt_legacy_node(&old, Some(&key), Some(century))
        .await
        .unwrap();
    assert_eq!(
        s.authenticate(old.clone(), Some(&key)).await,
        Ok(old.clone())
    );
    let (_, other) = node_key_and_csr("old").unwrap();
    let other = fingerprint_of_csr(&other).unwrap();
    s.adopt_legacy_node(&old, Some(&other), Some(century))
        .await
        .unwrap();
    assert!(
        s.authenticate(old, Some(&other)).await.is_err(),
        "the first key keeps the name"
    );
}

#[tokio::test]
async fn nodes_registering_at_once_get_different_pod_ranges() {
    let (_dir, s) = service().await;
    let register = |name: &'static str| {
        let s = s.clone();
        tokio::spawn(async move {
            let me = Identity::Node(name.into());
            let node = json(serde_json::json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name}}));
            match s.handle(&me, Request::PutNode { object: node }).await {
                Reply::One(Response::Object(bytes)) => {
                    let n: shoal_api::Node =
                        Object::from_json(&bytes).unwrap().into_typed().unwrap();
                    n.spec.pod_cidr.expect("a pod range")
                }
                _ => panic!("{name} did not register"),
            }
        })
    };
    let names = ["n1", "n2", "n3", "n4", "n5", "n6"];
    let tasks: Vec<_> = names.iter().map(|n| register(n)).collect();
    let mut ranges = std::collections::BTreeSet::new();
    for t in tasks {
        ranges.insert(t.await.unwrap());
    }
    assert_eq!(ranges.len(), names.len(), "{ranges:?}");
}

#[tokio::test]
async fn what_a_node_writes_is_bounded_in_size() {
    let (_dir, s) = service().await;
    let me = Identity::Node("pi-1".into());
    let labels: serde_json::Map<String, serde_json::Value> = (0..2000)
        .map(|i| (format!("k{i}"), serde_json::Value::from("v".repeat(60))))
        .collect();
    let node = json(serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "pi-1", "labels": labels}}));
    match s.handle(&me, Request::PutNode { object: node }).await {
        Reply::One(Response::Error(e)) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("more than the 65536"), "{}", e.message);
        }
        _ => panic!("a 200 KB Node was taken"),
    }
    let handlers: Vec<serde_json::Value> = (0..5)
        .map(|i| serde_json::json!({"name": format!("h{i}")}))
        .collect();
    let node = json(serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "pi-1"}, "status": {"runtimeHandlers": handlers}}));
    assert_eq!(
        call(&s, &me, Request::PutNode { object: node }).await.err(),
        Some(ErrorCode::Invalid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_joining_at_once_with_one_token_is_counted_not_refused() {
    use shoal_transport::pki::node_key_and_csr;
    let (_dir, s) = service().await;
    let s = Arc::new(s);
    let token = s.create_token("fleet", None, None, Some(40)).await.unwrap();
    let secret = shoal_transport::JoinToken::parse(&token).unwrap().secret;
    let joins: Vec<_> = (0..40)
        .map(|i| {
            let (s, secret) = (s.clone(), secret.clone());
            tokio::spawn(async move {
                let name = format!("pi-{i}");
                let (_, csr_pem) = node_key_and_csr(&name).unwrap();
                let join = Request::Join {
                    secret,
                    node_name: name,
                    csr_pem,
                };
                call(&s, &Identity::Anonymous, join).await
            })
        })
        .collect();
    for j in joins {
        assert!(matches!(j.await.unwrap(), Ok(Response::Joined { .. })));
    }
    // The 41st is past the token's usages.
    let (_, csr_pem) = node_key_and_csr("pi-40").unwrap();
    let late = Request::Join {
        secret,
        node_name: "pi-40".into(),
        csr_pem,
    };
    assert_eq!(
        call(&s, &Identity::Anonymous, late).await.err(),
        Some(ErrorCode::Forbidden)
    );
}

fn config_map(name: &str, rv: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"a": "1"}});
    if !rv.is_empty() {
        v["metadata"]["resourceVersion"] = rv.into();
    }
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    json(v)
}

fn written(r: std::result::Result<Response, ErrorCode>) -> (Object, bool, Vec<String>) {
    match r {
        Ok(Response::Written {
            object,
            created,
            warnings,
        }) => (Object::from_json(&object).unwrap(), created, warnings),
        other => panic!("not written: {other:?}"),
    }
}

#[tokio::test]
async fn create_update_and_patch_keep_kubernetes_preconditions() {
    use shoal_api::patch::PatchType;
    use shoal_transport::proto::{FieldValidation, WriteOptions};
    let (_dir, s) = service().await;
    let admin = Identity::Admin("admin".into());
    let opts = WriteOptions::default();
    let create = |object, options| Request::Create { object, options };
    let (made, created, _) = written(
        call(
            &s,
            &admin,
            create(config_map("cfg", "", serde_json::json!({})), opts.clone()),
        )
        .await,
    );
    assert!(created);
    let rv = made.metadata().resource_version.clone();
    assert_eq!(
        call(
            &s,
            &admin,
            create(config_map("cfg", "", serde_json::json!({})), opts.clone())
        )
        .await
        .err(),
        Some(ErrorCode::AlreadyExists)
    );

    // An update naming the stored resourceVersion goes through; naming an older one is a
    // conflict, and changes nothing.
    let update = |object| Request::Update {
        object,
        options: opts.clone(),
    };
    let changed = config_map("cfg", &rv, serde_json::json!({"data": {"a": "2"}}));
    let (after, created, _) = written(call(&s, &admin, update(changed)).await);
    assert!(!created);
    let stale = config_map("cfg", &rv, serde_json::json!({"data": {"a": "3"}}));
    assert_eq!(
        call(&s, &admin, update(stale)).await.err(),
        Some(ErrorCode::Conflict)
    );
    let missing = config_map("gone", "", serde_json::json!({}));
    assert_eq!(
        call(&s, &admin, update(missing)).await.err(),
        Some(ErrorCode::NotFound)
    );

    // A patch applies to what is stored; a dry run answers without writing.
    let patch = |p: serde_json::Value, dry_run| Request::Patch {
        kind: "ConfigMap".into(),
        namespace: Some("default".into()),
        name: "cfg".into(),
        patch_type: PatchType::Merge,
        patch: json(p),
        options: WriteOptions {
            dry_run,
            ..opts.clone()
        },
    };
    let (dry, _, _) = written(
        call(
            &s,
            &admin,
            patch(serde_json::json!({"data": {"b": "x"}}), true),
        )
        .await,
    );
    let Object::ConfigMap(dry) = dry else {
        panic!()
    };
    assert_eq!(dry.data.get("b").map(String::as_str), Some("x"));
    let key = ObjectKey::new(Kind::ConfigMap, Some("default"), "cfg");
    let Some(Object::ConfigMap(stored)) = s.store().get(&key).await.unwrap() else {
        panic!()
    };
    assert_eq!(stored.data.get("a").map(String::as_str), Some("2"));
    assert!(!stored.data.contains_key("b"), "the dry run wrote nothing");
    assert_eq!(
        stored.metadata.resource_version,
        after.metadata().resource_version
    );
    let pinned = serde_json::json!({"metadata": {"resourceVersion": rv}, "data": {"c": "1"}});
    assert_eq!(
        call(&s, &admin, patch(pinned, false)).await.err(),
        Some(ErrorCode::Conflict)
    );

    // Fields Shoal does not know: warned, refused under Strict, dropped under Ignore.
    let odd = || config_map("odd", "", serde_json::json!({"spec": {"x": 1}}));
    let (_, _, warnings) = written(call(&s, &admin, create(odd(), opts.clone())).await);
    assert_eq!(warnings, ["unknown field \"spec\""]);
    let strict = WriteOptions {
        validation: FieldValidation::Strict,
        ..opts.clone()
    };
    let other = config_map("odd2", "", serde_json::json!({"spec": {"x": 1}}));
    assert_eq!(
        call(&s, &admin, create(other, strict)).await.err(),
        Some(ErrorCode::BadRequest)
    );

    // generateName completes the name; a node may create nothing.
    let generated = json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"generateName": "gen-", "namespace": "default"}}));
    let (obj, _, _) = written(call(&s, &admin, create(generated, opts.clone())).await);
    assert!(
        obj.name().starts_with("gen-") && obj.name().len() == 9,
        "{}",
        obj.name()
    );
    let node = Identity::Node("pi".into());
    let by_node = config_map("n", "", serde_json::json!({}));
    assert_eq!(
        call(&s, &node, create(by_node, opts.clone())).await.err(),
        Some(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn a_pods_deletion_carries_its_own_grace_period_to_its_node() {
    let (_dir, s) = service().await;
    let admin = Identity::Admin("admin".into());
    add_node(&s, "pi").await;
    let apply = Request::Apply {
        objects: vec![pod("p", "pi", "s"), secret("s")],
    };
    call(&s, &admin, apply).await.unwrap();
    let delete = |grace| Request::Delete {
        kind: "Pod".into(),
        namespace: Some("default".into()),
        name: "p".into(),
        propagation: Default::default(),
        grace_period: grace,
    };
    assert_eq!(
        call(&s, &admin, delete(Some(-3))).await.err(),
        Some(ErrorCode::BadRequest),
        "a negative grace period is refused"
    );
    let mut events = s
        .store()
        .watch(s.store().revision(), Some(Kind::Pod))
        .await
        .unwrap();
    call(&s, &admin, delete(Some(0))).await.unwrap();
    // What the node hears: the pod gone, with the deletion's grace period on it.
    let deleted = loop {
        let change = events.next().await.unwrap();
        if change.type_ == crate::store::ChangeType::Deleted {
            break change.object;
        }
    };
    let m = deleted.metadata();
    assert_eq!(m.deletion_grace_period_seconds, Some(0));
    assert!(m.deletion_timestamp.is_some());
}

#[tokio::test]
async fn a_port_forward_reaches_a_running_pod_through_its_node_for_admins_only() {
    let (_dir, s) = service().await;
    let admin = Identity::Admin("admin".into());
    add_node(&s, "pi").await;
    let pods = [
        json(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
            "spec": {"nodeName": "pi", "containers": [{"name": "c", "image": "x"}]}}),
        ),
        json(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mod"},
            "spec": {"nodeName": "pi", "runtimeClassName": "wasm", "containers": [{"name": "c",
            "image": "x", "ports": [{"containerPort": 8080}]}]}}),
        ),
    ];
    call(
        &s,
        &admin,
        Request::Apply {
            objects: pods.to_vec(),
        },
    )
    .await
    .unwrap();
    let forward = |pod: &str, port| Request::PortForward {
        namespace: "default".into(),
        pod: pod.into(),
        port,
    };
    let refusal = |r: Reply| match r {
        Reply::One(Response::Error(e)) => (e.code, e.message),
        _ => panic!("not refused"),
    };
    let (code, message) = refusal(s.handle(&admin, forward("app", Some(80))).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("is not running (Pending)"), "{message}");
    for (name, ip) in [("app", "10.42.0.7"), ("mod", "192.168.1.20")] {
        let status = json(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "status": {"phase": "Running", "podIP": ip}}));
        let node = Identity::Node("pi".into());
        call(&s, &node, Request::UpdateStatus { object: status })
            .await
            .unwrap();
    }
    // Any port of a pod's own address; a wasm pod's only where it declares one.
    match s.handle(&admin, forward("app", Some(80))).await {
        Reply::ToNode { node, request } => {
            assert_eq!(node, "pi");
            assert_eq!(
                request,
                Request::Dial {
                    ip: "10.42.0.7".into(),
                    port: 80,
                    udp: false,
                    from: None,
                }
            );
        }
        _ => panic!("not relayed to the pod's node"),
    }
    assert!(matches!(
        s.handle(&admin, forward("mod", Some(8080))).await,
        Reply::ToNode { .. }
    ));
    let (_, message) = refusal(s.handle(&admin, forward("mod", Some(9090))).await);
    assert!(
        message.contains("declares no TCP containerPort 9090"),
        "{message}"
    );
    assert!(matches!(
        s.handle(&admin, forward("app", None)).await,
        Reply::One(Response::Ok)
    ));
    // A node may not, not even to its own pods.
    let node = Identity::Node("pi".into());
    assert_eq!(
        call(&s, &node, forward("app", None)).await.err(),
        Some(ErrorCode::Forbidden)
    );
}
