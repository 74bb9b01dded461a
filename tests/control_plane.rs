//! End-to-end tests of the control plane with the real binary: apply/get/delete round trips,
//! durability across kill -9, bad input, mutual TLS, and watch resumption.

mod kit;

use kit::{repo_path, Controller};
use serde_json::Value;
use shoal_transport::proto::{ErrorCode, EventType, Request, Response};
use shoal_transport::{Client, JoinToken};
use std::collections::BTreeMap;

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).expect("valid YAML output")
}

#[test]
fn apply_get_delete_round_trip_of_a_multi_document_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path());
    let manifest = repo_path("examples/shop.yaml");
    let manifest = manifest.to_str().unwrap();

    let out = c.shoal(&["apply", "-f", manifest]).ok();
    assert_eq!(
        out,
        "namespace/shop created\nconfigmap/shop-config created\ndeployment.apps/web created\nservice/web created\n"
    );
    assert!(c
        .shoal(&["apply", "-f", manifest])
        .ok()
        .lines()
        .all(|l| l.ends_with(" unchanged")));

    // What was stored comes back, with the fields the server owns filled in.
    let cm = yaml(
        &c.shoal(&["get", "cm", "shop-config", "-n", "shop", "-o", "yaml"])
            .ok(),
    );
    assert_eq!(cm["data"]["greeting"], "welcome to the shop");
    assert_eq!(cm["metadata"]["namespace"], "shop");
    assert!(cm["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(cm["metadata"]["resourceVersion"].as_str().is_some());
    let deploy = yaml(
        &c.shoal(&["get", "deploy/web", "-n", "shop", "-o", "yaml"])
            .ok(),
    );
    assert_eq!(deploy["apiVersion"], "apps/v1");
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "50m"
    );
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    // The file:// image was pushed and pinned by its digest.
    let image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    assert!(image.starts_with("http-hello@sha256:"), "{image}");
    let svc = yaml(
        &c.shoal(&["get", "svc", "web", "-n", "shop", "-o", "json"])
            .ok(),
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");

    // A changed manifest reconfigures, bumping the generation.
    let changed = std::fs::read_to_string(manifest)
        .unwrap()
        .replace("replicas: 1", "replicas: 5")
        .replace("file://http-hello.wasm", image);
    let out = c.shoal_stdin(&["apply", "-f", "-"], Some(&changed)).ok();
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/shop-config unchanged"), "{out}");
    let deploy2 = yaml(
        &c.shoal(&["get", "deploy", "web", "-n", "shop", "-o", "yaml"])
            .ok(),
    );
    assert_eq!(deploy2["spec"]["replicas"], 5);
    assert_eq!(deploy2["metadata"]["generation"], 2);
    assert_eq!(deploy2["metadata"]["uid"], deploy["metadata"]["uid"]);

    // Tables, selectors and short names.
    let table = c
        .shoal(&["get", "deploy", "-A", "-l", "app in (web,api)"])
        .ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE"
        ]
    );
    assert!(lines[1].starts_with("shop        web "), "{table}");
    assert_eq!(
        c.shoal(&["get", "deploy", "-n", "shop", "-l", "app=other"])
            .stderr()
            .trim(),
        "No resources found in shop namespace."
    );
    assert_eq!(
        c.shoal(&["get", "ns", "-o", "name"]).ok(),
        "namespace/default\nnamespace/shoal-system\nnamespace/shop\n"
    );

    // Delete by manifest removes everything it names; the namespace takes its contents along.
    let out = c.shoal(&["delete", "-f", manifest]).ok();
    assert_eq!(
        out,
        "configmap \"shop-config\" deleted\ndeployment.apps \"web\" deleted\nservice \"web\" deleted\nnamespace \"shop\" deleted\n"
    );
    let err = c.shoal(&["get", "cm", "shop-config", "-n", "shop"]).fails();
    assert!(err.contains("Error from server (NotFound): configmaps \"shop-config\" in namespace \"shop\" not found"), "{err}");
    // What is left is what every cluster has: the cluster DNS Service.
    let all = c.shoal(&["get", "all", "-A", "--no-headers"]).ok();
    let left: Vec<&str> = all.lines().collect();
    assert_eq!(left.len(), 1, "{all}");
    assert!(
        left[0].starts_with("shoal-system   service/shoal-dns   ClusterIP   10.43.0.10 "),
        "{all}"
    );
}

#[test]
fn bad_manifests_are_refused_with_a_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path());
    c.shoal(&[
        "apply",
        "-f",
        repo_path("examples/shop.yaml").to_str().unwrap(),
    ])
    .ok();
    let before = c.shoal(&["get", "all", "-A", "-o", "yaml"]).ok();
    let before_cm = c.shoal(&["get", "cm", "-A", "-o", "yaml"]).ok();

    let cases: &[(&str, &str)] = &[
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n   namespace: shop\n", "line 5"),
        ("apiVersion: v1\nkind: Widget\nmetadata: {name: a}\n", "unknown kind \"Widget\""),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: many\n", "spec.replicas: invalid type"),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: web, image: x, ports: [{containerPort: 99999}]}\n",
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            // A good object before a bad one: neither is written.
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fresh, namespace: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name, namespace: shop}\nspec: {ports: [{port: 80}]}\n",
            "metadata.name: \"Bad_Name\" is not a valid DNS-1123 label",
        ),
    ];
    for (manifest, expected) in cases {
        let err = c.shoal_stdin(&["apply", "-f", "-"], Some(manifest)).fails();
        assert!(
            err.contains(expected),
            "for\n{manifest}\nexpected {expected:?} in:\n{err}"
        );
    }
    // Both problems of the Deployment are reported at once.
    let err = c
        .shoal_stdin(&["apply", "-f", "-"], Some(cases[3].0))
        .fails();
    assert!(err.contains("spec.template.spec.containers[0].ports[0].containerPort: must be between 1 and 65535, got 99999"), "{err}");
    // Strict validation refuses fields Shoal does not support; the default warns.
    let unsupported = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: shop}\nsurprise: true\n";
    let err = c
        .shoal_stdin(
            &["apply", "--validate", "strict", "-f", "-"],
            Some(unsupported),
        )
        .fails();
    assert!(err.contains("unknown field \"surprise\""), "{err}");

    assert_eq!(
        c.shoal(&["get", "all", "-A", "-o", "yaml"]).ok(),
        before,
        "the store changed"
    );
    assert_eq!(
        c.shoal(&["get", "cm", "-A", "-o", "yaml"]).ok(),
        before_cm,
        "the store changed"
    );

    let run = c.shoal_stdin(&["apply", "-f", "-"], Some(unsupported));
    assert!(
        run.stderr()
            .contains("Warning: ConfigMap \"extra\" (document 1): unknown field \"surprise\""),
        "{}",
        run.stderr()
    );
    assert_eq!(run.ok(), "configmap/extra created\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_identity_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path());
    let creds = c.credentials();

    // No client certificate: the handshake completes (so agents can join), the API refuses.
    let anon = Client::connect_anonymous(&c.addr, &creds.certificate_authority)
        .await
        .unwrap();
    let list = Request::List {
        kind: "Secret".into(),
        namespace: None,
        selector: String::new(),
        fields: String::new(),
    };
    match anon.call(&list).await.unwrap() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unauthenticated);
            assert!(e.message.contains("no client certificate"), "{}", e.message);
        }
        other => panic!("an anonymous client was answered: {other:?}"),
    }

    // A certificate from another CA does not even complete the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = shoal_transport::Ca::load_or_create(other_dir.path()).unwrap();
    let forged = other_ca
        .issue_client(
            "admin",
            shoal_transport::pki::ADMIN_ORG,
            shoal_transport::pki::DEFAULT_CERT_TTL,
        )
        .unwrap();
    let mut bad = creds.clone();
    bad.client_certificate = forged.cert_pem;
    bad.client_key = forged.key_pem;
    let refused = match Client::connect(&bad).await {
        Err(_) => true,
        Ok(client) => matches!(client.call(&list).await, Err(_) | Ok(Response::Error(_))),
    };
    assert!(
        refused,
        "a client certificate from a foreign CA was accepted"
    );

    // A join token that pins another CA is refused before anything is sent.
    let wrong = JoinToken::parse(&format!("SHOAL1::{}::secret", "ab".repeat(32))).unwrap();
    let err = Client::connect_with_token(&c.addr, &wrong)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .starts_with("the controller's CA does not match the token"),
        "{err}"
    );
    // The real token's pin matches.
    let token =
        JoinToken::parse(&std::fs::read_to_string(dir.path().join("token")).unwrap()).unwrap();
    Client::connect_with_token(&c.addr, &token)
        .await
        .expect("the real token's CA pin matches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_truncated_frames_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path());
    let client = Client::connect(&c.credentials()).await.unwrap();
    let revision_before = match client
        .call(&Request::List {
            kind: "Namespace".into(),
            namespace: None,
            selector: String::new(),
            fields: String::new(),
        })
        .await
        .unwrap()
    {
        Response::List { revision, .. } => revision,
        other => panic!("{other:?}"),
    };
    let raw = |bytes: Vec<u8>| {
        let conn = client.connection().clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
            shoal_transport::frame::read::<Response, _>(&mut recv, 1 << 20)
                .await
                .unwrap()
        }
    };
    let mut huge = (64u32 << 20).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 16]);
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1; 10]);
    let garbage = [
        7u32.to_be_bytes().to_vec(),
        vec![1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    for (bytes, expected) in [
        (huge, "exceeds the"),
        (truncated, "truncated frame"),
        (garbage, "malformed frame"),
    ] {
        match raw(bytes).await {
            Some(Response::Error(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest);
                assert!(
                    e.message.contains(expected),
                    "{expected:?} not in {:?}",
                    e.message
                );
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // The connection still works and nothing was written.
    match client
        .call(&Request::List {
            kind: "Namespace".into(),
            namespace: None,
            selector: String::new(),
            fields: String::new(),
        })
        .await
        .unwrap()
    {
        Response::List { revision, .. } => assert_eq!(revision, revision_before),
        other => panic!("{other:?}"),
    }
}

fn configmap_json(name: &str, value: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"value": value},
    }))
    .unwrap()
}

async fn list_configmaps(client: &Client) -> (BTreeMap<String, String>, u64) {
    match client
        .call(&Request::List {
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            selector: String::new(),
            fields: String::new(),
        })
        .await
        .unwrap()
    {
        Response::List { items, revision } => (
            items
                .iter()
                .map(|b| {
                    let v: Value = serde_json::from_slice(b).unwrap();
                    (
                        v["metadata"]["name"].as_str().unwrap().to_string(),
                        v["data"]["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            revision,
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Controller::start(dir.path());
    let client = std::sync::Arc::new(Client::connect(&c.credentials()).await.unwrap());
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Eight concurrent writers, each writing its own sequence of objects until the kill.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let value = format!("value-{w}-{i}");
                    match client
                        .call(&Request::Apply {
                            objects: vec![configmap_json(&name, &value)],
                        })
                        .await
                    {
                        Ok(Response::Applied(_)) => acked.lock().unwrap().push((name, value)),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    c.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let c = Controller::start(dir.path());
    let client = Client::connect(&c.credentials()).await.unwrap();
    let (stored, _) = list_configmaps(&client).await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|(n, v)| stored.get(n) != Some(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    // Everything in the file decodes, and new writes work on the reopened store.
    let out = c.shoal(&["get", "cm", "-o", "json"]).ok();
    assert!(serde_json::from_str::<Value>(&out).is_ok());
    c.shoal_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after-restart}\n"),
    )
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_from_its_last_revision_sees_every_change_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path());
    let creds = c.credentials();
    let writer = Client::connect(&creds).await.unwrap();
    let (_, start) = list_configmaps(&writer).await;

    let watch = |revision: u64| Request::Watch {
        kind: "ConfigMap".into(),
        namespace: Some("default".into()),
        selector: String::new(),
        fields: String::new(),
        revision,
    };
    let mut seen: Vec<(u64, EventType, String)> = Vec::new();
    let mut written = 0;
    let mut revision = start;
    for round in 0..3 {
        let watcher = Client::connect(&creds).await.unwrap();
        let mut stream = watcher.stream(&watch(revision)).await.unwrap();
        // Changes made while this watcher was away, then more while it listens.
        for i in 0..5 {
            let name = format!("cm-{round}-{i}");
            writer
                .call(&Request::Apply {
                    objects: vec![configmap_json(&name, "1")],
                })
                .await
                .unwrap();
            writer
                .call(&Request::Apply {
                    objects: vec![configmap_json(&name, "2")],
                })
                .await
                .unwrap();
            written += 2;
        }
        writer
            .call(&Request::Delete {
                kind: "ConfigMap".into(),
                namespace: Some("default".into()),
                name: format!("cm-{round}-0"),
                propagation: Default::default(),
                grace_period: None,
            })
            .await
            .unwrap();
        written += 1;
        // Read part of what is there, then drop the connection mid-stream.
        let take = if round == 2 { written - seen.len() } else { 7 };
        for _ in 0..take {
            match stream.next().await.unwrap() {
                Some(Response::Event {
                    type_,
                    revision: r,
                    object,
                }) => {
                    let v: Value = serde_json::from_slice(&object).unwrap();
                    seen.push((
                        r,
                        type_,
                        v["metadata"]["name"].as_str().unwrap().to_string(),
                    ));
                    revision = r;
                }
                other => panic!("{other:?}"),
            }
        }
        drop(stream);
        watcher.close().await;
    }
    assert_eq!(seen.len(), written, "every change once");
    let revisions: Vec<u64> = seen.iter().map(|s| s.0).collect();
    let expected: Vec<u64> = (start + 1..=start + written as u64).collect();
    assert_eq!(revisions, expected, "in order, none repeated, none skipped");
    assert_eq!(seen.iter().filter(|s| s.1 == EventType::Deleted).count(), 3);
    assert_eq!(seen.iter().filter(|s| s.1 == EventType::Added).count(), 15);
}

/// `shoal apply` merges as `kubectl apply` does: what the manifest never named (replicas set
/// by `scale`, a pause) survives a re-apply; what it named and dropped goes.
#[test]
fn re_apply_is_a_three_way_merge_as_in_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path());
    let manifest = |message: &str, label: bool| {
        let extra = if label { ", extra: yes" } else { "" };
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, labels: {{app: web{extra}}}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      runtimeClassName: wasm\n      containers:\n      - {{name: probe, image: probe:1, args: [print, {message}]}}\n"
        )
    };
    let apply = |text: &str| c.shoal_stdin(&["apply", "-f", "-"], Some(text)).ok();
    assert_eq!(
        apply(&manifest("one", true)),
        "deployment.apps/web created\n"
    );
    c.shoal(&["scale", "deploy/web", "--replicas", "3"]).ok();
    c.shoal(&["rollout", "pause", "deploy/web"]).ok();
    assert_eq!(
        apply(&manifest("one", true)),
        "deployment.apps/web unchanged\n"
    );
    assert_eq!(
        apply(&manifest("two", false)),
        "deployment.apps/web configured\n"
    );
    let d = yaml(&c.shoal(&["get", "deploy", "web", "-o", "yaml"]).ok());
    assert_eq!(d["spec"]["replicas"], 3, "the scale survives: {d:?}");
    assert_eq!(d["spec"]["paused"], true, "the pause survives");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["args"][1],
        "two"
    );
    assert!(
        d["metadata"]["labels"].get("extra").is_none(),
        "a dropped label goes: {d:?}"
    );
    let last = d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("the manifest applied last");
    let last: Value = serde_json::from_str(last).expect("JSON");
    assert!(last["spec"].get("replicas").is_none(), "{last}");
    // A manifest that names replicas owns them again.
    let owned =
        manifest("two", false).replace("spec:\n  selector", "spec:\n  replicas: 1\n  selector");
    apply(&owned);
    let d = yaml(&c.shoal(&["get", "deploy", "web", "-o", "yaml"]).ok());
    assert_eq!(d["spec"]["replicas"], 1);
}
