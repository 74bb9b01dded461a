//! `kubectl apply --server-side` against a real controller and agent on loopback: it creates,
//! keeps managed fields (`--show-managed-fields`), removes what its configuration no longer
//! names, leaves what others set, conflicts with another manager's fields (a `kubectl scale`,
//! another `--field-manager`) unless `--force-conflicts`, and takes `--dry-run=server` and
//! `kubectl diff --server-side`. Lists read in pages come from one snapshot.
//!
//! kubectl must be on the PATH; where it is not, the test is skipped with the reason, and fails
//! when `SHOAL_REQUIRE_KUBECTL=1` (CI sets it).

mod kit;

use kit::kubectl::{fails, get_json, json, kubectl, kubectl_as, kubectl_missing, ok};
use kit::Cluster;

fn server_apply(c: &Cluster, manifest: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_as(&c.controller.config(), c, &args, Some(manifest))
}

/// The `web` Deployment of the kubectl tests, labelled `tier: front` too if `tier`.
fn deployment(image: &str, replicas: Option<u32>, tier: bool) -> String {
    let manifest = kit::kubectl::deployment(image, replicas);
    if !tier {
        return manifest;
    }
    let plain = "metadata: {name: web, labels: {app: web}}";
    assert!(manifest.contains(plain), "{manifest}");
    manifest.replace(
        plain,
        "metadata: {name: web, labels: {app: web, tier: front}}",
    )
}

/// The managers of an object and the fields each owns, as `manager/operation: .a.b, ...`.
fn managers(c: &Cluster, kind: &str, name: &str) -> Vec<String> {
    let obj = json(&ok(
        kubectl(
            c,
            &["get", kind, name, "-o", "json", "--show-managed-fields"],
        ),
        "get --show-managed-fields",
    ));
    let entries = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            format!(
                "{}/{}: {}",
                e["manager"].as_str().unwrap_or(""),
                e["operation"].as_str().unwrap_or(""),
                e["fieldsV1"]
            )
        })
        .collect()
}

#[test]
fn kubectl_apply_server_side_owns_fields_and_conflicts_like_kubernetes() {
    let test = "kubectl_apply_server_side_owns_fields_and_conflicts_like_kubernetes";
    if kubectl_missing(test) {
        return;
    }
    let c = Cluster::start(1);
    let probe = c.push_probe();

    // Created, and the fields it set are kubectl's.
    let out = ok(
        server_apply(&c, &deployment(probe, Some(2), true), &[]),
        "apply --server-side",
    );
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let owners = managers(&c, "deployment", "web");
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert!(owners[0].starts_with("kubectl/Apply: "), "{owners:?}");
    for field in [
        "\"f:replicas\"",
        "\"f:tier\"",
        "\"k:{\\\"name\\\":\\\"probe\\\"}\"",
    ] {
        assert!(owners[0].contains(field), "{field} in {owners:?}");
    }
    // Managed fields are hidden unless asked for, as kubectl hides them.
    let plain = get_json(&c, "deployment", "web");
    assert!(plain["metadata"]["managedFields"].is_null(), "{plain}");

    // A dry run changes nothing.
    ok(
        server_apply(&c, &deployment(probe, Some(7), true), &["--dry-run=server"]),
        "apply --server-side --dry-run=server",
    );
    assert_eq!(get_json(&c, "deployment", "web")["spec"]["replicas"], 2);

    // Someone else scales it: the replicas are theirs now. An apply that would set them back
    // conflicts, naming the field and who owns it, and changes nothing.
    ok(
        kubectl(&c, &["scale", "deployment", "web", "--replicas=3"]),
        "scale",
    );
    let e = fails(
        server_apply(&c, &deployment(probe, Some(2), true), &[]),
        "apply --server-side over a scale",
    );
    assert!(e.contains("conflict with \"kubectl\""), "{e}");
    assert!(e.contains(".spec.replicas"), "{e}");
    assert_eq!(get_json(&c, "deployment", "web")["spec"]["replicas"], 3);
    // Without replicas, the configuration leaves them to the scaler; the label it no longer
    // names is removed, being only its own.
    ok(
        server_apply(&c, &deployment(probe, None, false), &[]),
        "apply --server-side without replicas",
    );
    let d = get_json(&c, "deployment", "web");
    assert_eq!(d["spec"]["replicas"], 3, "{d}");
    assert!(d["metadata"]["labels"]["tier"].is_null(), "{d}");
    assert_eq!(d["metadata"]["labels"]["app"], "web");
    // Forced, the replicas are taken over.
    ok(
        server_apply(
            &c,
            &deployment(probe, Some(2), false),
            &["--force-conflicts"],
        ),
        "apply --server-side --force-conflicts",
    );
    assert_eq!(get_json(&c, "deployment", "web")["spec"]["replicas"], 2);
    let owners = managers(&c, "deployment", "web");
    let applier = owners
        .iter()
        .find(|o| o.starts_with("kubectl/Apply"))
        .expect("kubectl's apply");
    assert!(applier.contains("\"f:replicas\""), "{owners:?}");
    assert!(
        !owners
            .iter()
            .any(|o| o.starts_with("kubectl/Update") && o.contains("\"f:replicas\"")),
        "the scaler lost the replicas: {owners:?}"
    );

    // kubectl diff --server-side shows what an apply would change, and changes nothing.
    let relabelled = deployment(probe, Some(2), true).replace("tier: front", "tier: back");
    let out = kubectl_as(
        &c.controller.config(),
        &c,
        &["diff", "--server-side", "-f", "-"],
        Some(&relabelled),
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "diff found a change: {out:?}");
    assert!(shown.contains("+    tier: back"), "{shown}");
    assert!(get_json(&c, "deployment", "web")["metadata"]["labels"]["tier"].is_null());

    // Two appliers of one ConfigMap: each owns its keys; the same key with another value
    // conflicts with the first.
    let config = |value: &str, key: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared}}\ndata: {{{key}: {value:?}}}\n")
    };
    let out = ok(
        server_apply(&c, &config("1", "a"), &["--field-manager=ci"]),
        "apply as ci",
    );
    assert_eq!(out.trim(), "configmap/shared serverside-applied");
    // The same apply again writes nothing.
    let rv = get_json(&c, "configmap", "shared")["metadata"]["resourceVersion"].clone();
    ok(
        server_apply(&c, &config("1", "a"), &["--field-manager=ci"]),
        "the same apply as ci",
    );
    let again = get_json(&c, "configmap", "shared")["metadata"]["resourceVersion"].clone();
    assert_eq!(rv, again, "a repeated apply is no write");
    ok(
        server_apply(&c, &config("2", "b"), &["--field-manager=ops"]),
        "apply as ops",
    );
    let data = get_json(&c, "configmap", "shared")["data"].clone();
    assert_eq!(data, serde_json::json!({"a": "1", "b": "2"}));
    let e = fails(
        server_apply(&c, &config("3", "a"), &["--field-manager=ops"]),
        "apply of ci's key as ops",
    );
    assert!(e.contains("conflict with \"ci\""), "{e}");
    assert!(e.contains(".data.a"), "{e}");
    // ops drops b: it goes, being only ops's.
    ok(
        server_apply(
            &c,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\n",
            &["--field-manager=ops"],
        ),
        "apply as ops without b",
    );
    let data = get_json(&c, "configmap", "shared")["data"].clone();
    assert_eq!(data, serde_json::json!({"a": "1"}));
}

#[test]
fn kubectl_lists_in_pages_from_one_snapshot() {
    let test = "kubectl_lists_in_pages_from_one_snapshot";
    if kubectl_missing(test) {
        return;
    }
    let c = Cluster::start(1);
    ok(kubectl(&c, &["create", "namespace", "paged"]), "namespace");
    for name in ["page-a", "page-b", "page-c"] {
        let args = ["create", "configmap", name, "-n", "paged"];
        ok(kubectl(&c, &args), "create configmap");
    }
    let path = "/api/v1/namespaces/paged/configmaps";
    let list = |query: &str| {
        let raw = ok(
            kubectl(&c, &["get", "--raw", &format!("{path}?{query}")]),
            query,
        );
        let v = json(&raw);
        let names: Vec<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let meta = &v["metadata"];
        let token = meta["continue"].as_str().map(str::to_owned);
        (names, meta["resourceVersion"].clone(), token)
    };
    let (first, revision, token) = list("limit=2");
    assert_eq!(first, ["page-a", "page-b"]);
    let token = token.expect("a continue token");
    // Between the pages, one is deleted and one added before them: the next page is the rest
    // of the list as it was, at the first page's resourceVersion.
    ok(
        kubectl(&c, &["delete", "configmap", "page-c", "-n", "paged"]),
        "delete",
    );
    ok(
        kubectl(&c, &["create", "configmap", "page-0", "-n", "paged"]),
        "create",
    );
    let (rest, at, more) = list(&format!("limit=2&continue={token}"));
    assert_eq!(
        (rest, at, more),
        (vec!["page-c".to_string()], revision, None)
    );
    let (now, _, _) = list("limit=10");
    assert_eq!(
        now,
        ["page-0", "page-a", "page-b"],
        "a new list sees the changes"
    );
    // kubectl's own paging reads the same way.
    let names = ok(
        kubectl(
            &c,
            &[
                "get",
                "configmaps",
                "-n",
                "paged",
                "--chunk-size=1",
                "-o",
                "name",
            ],
        ),
        "--chunk-size",
    );
    assert_eq!(names.lines().count(), 3, "{names}");
    let err = fails(
        kubectl(
            &c,
            &["get", "--raw", &format!("{path}?limit=1&continue=1/2/x")],
        ),
        "a forged token",
    );
    assert!(err.contains("is not a token this server gave"), "{err}");
}
