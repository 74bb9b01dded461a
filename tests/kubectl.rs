//! The real kubectl against a real controller and agent on loopback, with the kubeconfig the
//! controller wrote (`admin.conf`): discovery, reads in every output, writes through create,
//! apply (a true three-way merge), patches of each type, scale, labels, deletes with each
//! propagation, watches, and refusals worded as kube-apiserver words them. Each step checks
//! the cluster's state afterwards, not only kubectl's exit code.
//!
//! kubectl must be on the PATH; where it is not, the tests are skipped with the reason, and
//! fail when `SHOAL_REQUIRE_KUBECTL=1` (CI sets it).

mod kit;

use kit::kubectl::{
    apply_web, deployment, fails, get_json, json, kubectl, kubectl_as, kubectl_missing, ok,
};
use kit::{field, Cluster};
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn kubectl_discovers_and_reads_the_cluster() {
    if kubectl_missing("kubectl_discovers_and_reads_the_cluster") {
        return;
    }
    let c = Cluster::start(1);
    let version = ok(kubectl(&c, &["version", "-o", "json"]), "version");
    let v = json(&version);
    assert_eq!(v["serverVersion"]["minor"], "32", "{version}");
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|g| g.contains("shoal")),
        "{version}"
    );

    let resources = ok(
        kubectl(&c, &["api-resources", "--no-headers"]),
        "api-resources",
    );
    for (name, short, group) in [
        ("deployments", "deploy", "apps/v1"),
        ("pods", "po", "v1"),
        ("jobs", "", "batch/v1"),
        ("cronjobs", "cj", "batch/v1"),
        ("persistentvolumeclaims", "pvc", "v1"),
        ("persistentvolumes", "pv", "v1"),
        ("storageclasses", "sc", "storage.k8s.io/v1"),
        ("networkpolicies", "netpol", "networking.k8s.io/v1"),
    ] {
        assert!(
            resources.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&name)
                    && (short.is_empty() || cols.contains(&short))
                    && cols.contains(&group)
            }),
            "{name} {short} {group} in:\n{resources}"
        );
    }
    let classes = ok(kubectl(&c, &["get", "storageclass"]), "get storageclass");
    assert!(
        classes.contains("local-path (default)") && classes.contains("WaitForFirstConsumer"),
        "{classes}"
    );
    let all = ok(
        kubectl(&c, &["api-resources", "--categories=all", "-o", "name"]),
        "categories",
    );
    assert!(
        all.contains("deployments.apps") && !all.contains("configmaps"),
        "{all}"
    );
    // A NetworkPolicy written and read back as kubectl shows one; explain describes it.
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: a}}}]\n    ports: [{port: 5432}]\n";
    ok(
        kubectl_as(
            &c.controller.config(),
            &c,
            &["apply", "-f", "-"],
            Some(policy),
        ),
        "apply networkpolicy",
    );
    let listed = ok(kubectl(&c, &["get", "netpol"]), "get netpol");
    assert!(
        listed.contains("POD-SELECTOR") && listed.contains("app=db"),
        "{listed}"
    );
    let explained = ok(
        kubectl(&c, &["explain", "networkpolicy.spec.ingress.from"]),
        "explain networkpolicy",
    );
    assert!(explained.contains("namespaceSelector"), "{explained}");
    // explain reads the OpenAPI schemas: the fields Shoal honours, as Kubernetes describes them.
    let explained = ok(kubectl(&c, &["explain", "deployment.spec"]), "explain");
    assert!(explained.contains("KIND:       Deployment"), "{explained}");
    assert!(
        explained.contains("replicas\t<integer>") && explained.contains("Number of desired pods"),
        "{explained}"
    );
    let image_field = ok(
        kubectl(&c, &["explain", "pods.spec.containers.image"]),
        "explain a field",
    );
    assert!(
        image_field.contains("FIELD: image <string>"),
        "{image_field}"
    );
    let missing = fails(
        kubectl(&c, &["explain", "pods.spec.nothing"]),
        "explain of no field",
    );
    assert!(missing.contains("nothing"), "{missing}");

    let nodes = ok(kubectl(&c, &["get", "nodes"]), "get nodes");
    assert!(
        nodes
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["node-1", "Ready"])),
        "{nodes}"
    );
    let image = c.push_probe();
    apply_web(&c, image, 2);

    // Every output kubectl has, from the server's Table or the objects.
    let wide = ok(kubectl(&c, &["get", "pods", "-o", "wide"]), "get -o wide");
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{wide}"
    );
    assert_eq!(
        wide.lines()
            .filter(|l| l.contains("Running") && l.contains("node-1"))
            .count(),
        2,
        "{wide}"
    );
    let narrow = ok(kubectl(&c, &["get", "pods"]), "get");
    assert!(
        !narrow.contains("NODE"),
        "wide columns only with -o wide:\n{narrow}"
    );
    let list = json(&ok(
        kubectl(&c, &["get", "pods", "-o", "json"]),
        "get -o json",
    ));
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let yaml = ok(
        kubectl(&c, &["get", "deploy", "web", "-o", "yaml"]),
        "get -o yaml",
    );
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let names = ok(
        kubectl(&c, &["get", "pods", "-l", "app=web", "-o", "name"]),
        "-o name",
    );
    assert_eq!(
        names.lines().filter(|l| l.starts_with("pod/web-")).count(),
        2,
        "{names}"
    );
    let path = ok(
        kubectl(
            &c,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        ),
        "jsonpath",
    );
    assert_eq!(path, image);
    let columns = ok(
        kubectl(
            &c,
            &[
                "get",
                "pods",
                "-o",
                "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName",
                "--no-headers",
            ],
        ),
        "custom-columns",
    );
    assert_eq!(
        columns.lines().filter(|l| l.ends_with("node-1")).count(),
        2,
        "{columns}"
    );
    let on_node = ok(
        kubectl(
            &c,
            &[
                "get",
                "pods",
                "-A",
                "--field-selector",
                "spec.nodeName=node-1",
                "-o",
                "name",
            ],
        ),
        "field selector",
    );
    assert_eq!(on_node.lines().count(), 2, "{on_node}");
    let elsewhere = ok(
        kubectl(
            &c,
            &[
                "get",
                "pods",
                "--field-selector",
                "spec.nodeName=node-9",
                "-o",
                "name",
            ],
        ),
        "field selector",
    );
    assert!(elsewhere.trim().is_empty(), "{elsewhere}");
    let everywhere = ok(kubectl(&c, &["get", "svc", "-A"]), "-A");
    assert!(
        everywhere
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("NAMESPACE"))
            && everywhere.contains("shoal-system"),
        "{everywhere}"
    );
    let paged = json(&ok(
        kubectl(&c, &["get", "pods", "--chunk-size=1", "-o", "json"]),
        "paged",
    ));
    assert_eq!(
        paged["items"].as_array().map(Vec::len),
        Some(2),
        "paging gives every item once"
    );
    // Logs, relayed from the pod's node: whole, the last lines, followed.
    let pod = names
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("pod/")
        .to_string();
    let logs = ok(kubectl(&c, &["logs", &pod]), "logs");
    assert!(logs.contains("serving"), "{logs}");
    let tail = ok(
        kubectl(&c, &["logs", &pod, "--tail=1", "-c", "probe"]),
        "logs --tail",
    );
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let mut follow = Command::new("kubectl")
        .env("KUBECONFIG", c.controller.config())
        .args(["logs", "-f", &pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let mut first = String::new();
    let mut reader = std::io::BufReader::new(follow.stdout.take().expect("stdout"));
    reader.read_line(&mut first).expect("a followed line");
    assert!(first.contains("serving"), "{first}");
    assert!(
        follow.try_wait().expect("kubectl logs -f").is_none(),
        "-f keeps following"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let err = fails(
        kubectl(&c, &["logs", &pod, "--previous"]),
        "logs --previous",
    );
    assert!(err.contains("previous terminated container"), "{err}");
    // Each line with its time; from a time on: the line's own time keeps it, a second later not.
    let stamped = ok(kubectl(&c, &["logs", &pod, "--timestamps"]), "--timestamps");
    let (time, line) = stamped
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .unwrap_or_default();
    let at = chrono::DateTime::parse_from_rfc3339(time).map_err(|e| format!("{stamped}: {e}"));
    assert!(line.contains("serving"), "{stamped}");
    // (kubectl sends sinceTime to the second, as metav1.Time goes.)
    let later = (at.unwrap() + chrono::Duration::seconds(1)).to_rfc3339();
    let since = |t: &str| {
        ok(
            kubectl(&c, &["logs", &pod, &format!("--since-time={t}")]),
            t,
        )
    };
    assert!(since(time).contains("serving") && !since(&later).contains("serving"));
    assert!(ok(kubectl(&c, &["logs", &pod, "--since=1h"]), "since").contains("serving"));
    let some = ok(
        kubectl(&c, &["logs", &pod, "--limit-bytes=4"]),
        "logs --limit-bytes",
    );
    assert_eq!(some, "serv", "the first 4 bytes of the log");

    let described = ok(
        kubectl(&c, &["describe", "pods", "-l", "app=web"]),
        "describe",
    );
    assert!(
        described.contains("Started container probe"),
        "events in describe:\n{described}"
    );
    let none = kubectl(&c, &["get", "pod", "nothing"]);
    let err = fails(none, "get of a missing pod");
    assert!(
        err.contains("Error from server (NotFound): pods \"nothing\" not found"),
        "{err}"
    );

    // A watch-list (client-go's sendInitialEvents) gets the whole state, more than a watch's
    // buffer holds, then the bookmark that ends it.
    let many: String = (0..300)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: bulk}}\ndata: {{n: \"{i}\"}}\n---\n"))
        .collect();
    ok(
        kubectl(&c, &["create", "namespace", "bulk"]),
        "create namespace",
    );
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&many))
        .ok();
    let path = "/api/v1/namespaces/bulk/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=2";
    let events = ok(kubectl(&c, &["get", "--raw", path]), "a watch-list");
    let events: Vec<serde_json::Value> = events.lines().map(json).collect();
    assert_eq!(events.len(), 301, "300 ADDED and a BOOKMARK");
    assert!(events[..300].iter().all(|e| e["type"] == "ADDED"));
    let end = &events[300];
    assert_eq!(end["type"], "BOOKMARK", "{end}");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{end}"
    );
    let plain = "/api/v1/namespaces/bulk/configmaps?watch=1&timeoutSeconds=2";
    let events = ok(kubectl(&c, &["get", "--raw", plain]), "a watch");
    assert_eq!(
        events.lines().count(),
        300,
        "every object, without a bookmark"
    );
    let e = fails(
        kubectl(
            &c,
            &[
                "get",
                "--raw",
                "/api/v1/configmaps?watch=1&sendInitialEvents=true",
            ],
        ),
        "sendInitialEvents without bookmarks",
    );
    assert!(e.contains("requires allowWatchBookmarks"), "{e}");
}

#[test]
fn kubectl_writes_merge_and_refuse_like_kubernetes() {
    if kubectl_missing("kubectl_writes_merge_and_refuse_like_kubernetes") {
        return;
    }
    let c = Cluster::start(1);
    let image = c.push_probe();
    let config = c.controller.config();
    let apply = |yaml: &str| kubectl_as(&config, &c, &["apply", "-f", "-"], Some(yaml));
    let replicas = |c: &Cluster| {
        ok(
            kubectl(
                c,
                &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
            ),
            "replicas",
        )
    };

    // A watch from before the rollout sees it.
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &config)
        .args(["get", "deploy", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let out = ok(apply(&deployment(image, None)), "apply");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    c.wait_for("one web pod Running", Duration::from_secs(60), |c| {
        c.pods("app=web")
            .iter()
            .any(|p| field(p, "status.phase") == "Running")
    });
    let stdout = watch.stdout.take().expect("watch output");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch event");
    assert_eq!(first, "deployment.apps/web");

    // kubectl scale, then a re-apply of the manifest (no replicas in it) with a new image:
    // the three-way merge keeps the scale and takes the image.
    ok(
        kubectl(&c, &["scale", "deploy", "web", "--replicas=3"]),
        "scale",
    );
    assert_eq!(replicas(&c), "3");
    // The watch saw the deployment change since (its status, then the scale).
    let modified = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch event");
    assert_eq!(modified, "deployment.apps/web");

    // The status subresource: read whole, written alone (the spec in a status patch is not).
    let st = json(&ok(
        kubectl(
            &c,
            &["get", "deploy", "web", "--subresource=status", "-o", "json"],
        ),
        "get --subresource=status",
    ));
    assert_eq!(st["spec"]["replicas"], 3, "{st}");
    let patched = json(&ok(
        kubectl(
            &c,
            &[
                "patch",
                "deploy",
                "web",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":7},"status":{"observedGeneration":99}}"#,
                "-o",
                "json",
            ],
        ),
        "patch --subresource=status",
    ));
    assert_eq!(patched["status"]["observedGeneration"], 99, "{patched}");
    assert_eq!(patched["spec"]["replicas"], 3, "{patched}");
    assert_eq!(replicas(&c), "3");
    let e = fails(
        kubectl(
            &c,
            &["get", "cm", "kube-root-ca.crt", "--subresource=status"],
        ),
        "a ConfigMap's status",
    );
    assert!(e.contains("NotFound") || e.contains("not found"), "{e}");
    let wasm = kit::wasm_fixture("probe", "wasm32-wasip1");
    c.shoal(&["push", wasm.to_str().unwrap(), "probe:1.1"]).ok();
    let out = ok(apply(&deployment("probe:1.1", None)), "re-apply");
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert_eq!(
        replicas(&c),
        "3",
        "the re-apply kept kubectl scale's replicas"
    );
    // An env var the manifest drops is removed; the container merges by name.
    let with_env = |vars: &str| {
        deployment("probe:1.1", None).replace(
            "        resources:",
            &format!("        env: [{vars}]\n        resources:"),
        )
    };
    ok(
        apply(&with_env("{name: A, value: a}, {name: B, value: b}")),
        "apply env",
    );
    ok(apply(&with_env("{name: A, value: a}")), "apply fewer env");
    let env = &get_json(&c, "deploy", "web")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &serde_json::json!([{"name": "A", "value": "a"}]),
        "{env}"
    );
    ok(apply(&deployment("probe:1.1", None)), "apply without env");
    let image_now = ok(
        kubectl(
            &c,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        ),
        "image",
    );
    assert_eq!(image_now, "probe:1.1");
    let _ = watch.kill();
    let _ = watch.wait();

    // kustomize, diff and edit: all three go through the same patches.
    let dir = tempfile::tempdir().expect("tempdir");
    let kz = dir.path();
    std::fs::write(kz.join("web.yaml"), deployment(image, None)).expect("manifest");
    std::fs::write(
        kz.join("kustomization.yaml"),
        "resources: [web.yaml]\nnamePrefix: k-\nlabels:\n- pairs: {team: edge}\n",
    )
    .expect("kustomization");
    let kz_arg = kz.to_str().expect("utf-8 path");
    ok(kubectl(&c, &["apply", "-k", kz_arg]), "apply -k");
    let k = get_json(&c, "deploy", "k-web");
    assert_eq!(k["metadata"]["labels"]["team"], "edge", "{k}");
    let same = kubectl(&c, &["diff", "-k", kz_arg]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "no difference: {}",
        String::from_utf8_lossy(&same.stdout)
    );
    std::fs::write(kz.join("web.yaml"), deployment("probe:1.1", None)).expect("manifest");
    let changed = kubectl(&c, &["diff", "-k", kz_arg]);
    let diff = String::from_utf8_lossy(&changed.stdout).to_string();
    assert_eq!(changed.status.code(), Some(1), "a difference: {diff}");
    assert!(
        diff.lines()
            .any(|l| l.starts_with('-') && l.trim_end().ends_with("image: probe:1"))
            && diff
                .lines()
                .any(|l| l.starts_with('+') && l.trim_end().ends_with("image: probe:1.1")),
        "{diff}"
    );
    assert_eq!(
        get_json(&c, "deploy", "k-web")["spec"]["template"]["spec"]["containers"][0]["image"],
        "probe:1",
        "diff wrote nothing"
    );
    let editor = kz.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/image: probe:1$/image: probe:1.1/' \"$1\"\n",
    )
    .expect("editor");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let edit = Command::new("kubectl")
        .env("KUBECONFIG", &config)
        .env("EDITOR", &editor)
        .args(["edit", "deploy", "k-web"])
        .output()
        .expect("kubectl edit");
    assert!(
        edit.status.success(),
        "{}",
        String::from_utf8_lossy(&edit.stderr)
    );
    assert_eq!(
        get_json(&c, "deploy", "k-web")["spec"]["template"]["spec"]["containers"][0]["image"],
        "probe:1.1"
    );
    ok(kubectl(&c, &["delete", "-k", kz_arg]), "delete -k");

    // Patches of each type, and the verbs built on them.
    ok(
        kubectl(
            &c,
            &[
                "patch",
                "deploy",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":2}}"#,
            ],
        ),
        "merge patch",
    );
    assert_eq!(replicas(&c), "2");
    ok(
        kubectl(
            &c,
            &[
                "patch",
                "deploy",
                "web",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/replicas","value":1}]"#,
            ],
        ),
        "json patch",
    );
    assert_eq!(replicas(&c), "1");
    ok(
        kubectl(
            &c,
            &[
                "patch",
                "deploy",
                "web",
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"probe","env":[{"name":"MODE","value":"x"}]}]}}}}"#,
            ],
        ),
        "strategic patch",
    );
    let d = get_json(&c, "deploy", "web");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["env"][0]["value"], "x", "{d}");
    assert_eq!(
        container["image"], "probe:1.1",
        "a strategic patch merges the container by name"
    );
    ok(
        kubectl(&c, &["set", "image", "deploy/web", "probe=probe:1"]),
        "set image",
    );
    ok(
        kubectl(&c, &["rollout", "restart", "deploy/web"]),
        "rollout restart",
    );
    let d = get_json(&c, "deploy", "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "probe:1"
    );
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    ok(
        kubectl(&c, &["label", "deploy", "web", "tier=front"]),
        "label",
    );
    ok(
        kubectl(&c, &["annotate", "deploy", "web", "note=hi"]),
        "annotate",
    );
    let d = get_json(&c, "deploy", "web");
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["note"], "hi");
    ok(
        kubectl(
            &c,
            &[
                "wait",
                "--for=condition=available",
                "deploy/web",
                "--timeout=60s",
            ],
        ),
        "wait",
    );
    // The revision before the restart: the same image, without the restart's annotation.
    ok(
        kubectl(&c, &["rollout", "undo", "deploy/web"]),
        "rollout undo",
    );
    let d = get_json(&c, "deploy", "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "probe:1"
    );
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_null(),
        "{d}"
    );
    ok(kubectl(&c, &["rollout", "pause", "deploy/web"]), "pause");
    let paused = ok(
        kubectl(
            &c,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.paused}"],
        ),
        "paused",
    );
    assert_eq!(paused, "true");
    ok(kubectl(&c, &["rollout", "resume", "deploy/web"]), "resume");
    ok(
        kubectl(&c, &["rollout", "status", "deploy/web", "--timeout=60s"]),
        "rollout status",
    );

    // A node's labels and taints written with kubectl outlive its heartbeats.
    ok(
        kubectl(&c, &["label", "node", "node-1", "site=roof"]),
        "label node",
    );
    ok(
        kubectl(
            &c,
            &["taint", "node", "node-1", "dedicated=edge:PreferNoSchedule"],
        ),
        "taint",
    );
    std::thread::sleep(Duration::from_secs(12));
    let node = get_json(&c, "node", "node-1");
    assert_eq!(node["metadata"]["labels"]["site"], "roof", "{node}");
    assert_eq!(node["spec"]["taints"][0]["key"], "dedicated", "{node}");

    // Refusals read as against Kubernetes.
    let bad = deployment(image, Some(1))
        .replace("replicas: 1", "replicas: -1")
        .replace("name: web,", "name: bad,");
    let err = fails(apply(&bad), "apply of an invalid Deployment");
    assert!(
        err.contains("The Deployment \"bad\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    let unknown = deployment(image, Some(1))
        .replace("name: web,", "name: odd,")
        .replace("  selector:", "  paused2: true\n  selector:");
    let err = fails(apply(&unknown), "strict validation");
    assert!(err.contains("unknown field \"spec.paused2\""), "{err}");
    let warned = kubectl_as(
        &config,
        &c,
        &["apply", "--validate=warn", "-f", "-"],
        Some(&unknown),
    );
    let warned_err = String::from_utf8_lossy(&warned.stderr).to_string();
    ok(warned, "apply --validate=warn");
    assert!(
        warned_err.contains("Warning: unknown field \"spec.paused2\""),
        "{warned_err}"
    );
    let dry = ok(
        kubectl(
            &c,
            &["scale", "deploy", "web", "--replicas=5", "--dry-run=server"],
        ),
        "dry run",
    );
    assert!(dry.contains("scaled"), "{dry}");
    assert_eq!(replicas(&c), "1", "a dry run writes nothing");
    let node_config = c.agents[0].dir.join("node.conf");
    let err = fails(
        kubectl_as(&node_config, &c, &["get", "secrets"], None),
        "a node listing Secrets",
    );
    assert!(
        err.contains("Error from server (Forbidden): secrets is forbidden: User \"system:node:node-1\" cannot list resource \"secrets\""),
        "{err}"
    );

    // Deletes: orphaning keeps the ReplicaSet; a cascade takes the pods with it.
    ok(kubectl(&c, &["delete", "deploy", "odd"]), "delete");
    ok(
        kubectl(&c, &["delete", "deploy", "web", "--cascade=orphan"]),
        "delete --cascade=orphan",
    );
    let rs = ok(
        kubectl(&c, &["get", "rs", "-l", "app=web", "-o", "name"]),
        "get rs",
    );
    assert!(!rs.trim().is_empty(), "an orphaned ReplicaSet stays");
    ok(
        kubectl(
            &c,
            &["delete", "rs", "-l", "app=web", "--cascade=foreground"],
        ),
        "delete -l",
    );
    c.wait_for("the web pods gone", Duration::from_secs(60), |c| {
        c.pods("app=web").is_empty()
    });
    let left = ok(kubectl(&c, &["get", "rs,deploy", "-o", "name"]), "get");
    assert!(left.trim().is_empty(), "{left}");

    // A node's open watch ends the moment the node is deleted (its certificate stops working).
    let mut node_watch = Command::new("kubectl")
        .env("KUBECONFIG", &node_config)
        .args(["get", "nodes", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get -w as the node");
    let mut seen = String::new();
    std::io::BufReader::new(node_watch.stdout.take().expect("stdout"))
        .read_line(&mut seen)
        .expect("the node's watch lists");
    assert_eq!(seen.trim(), "node/node-1");
    ok(kubectl(&c, &["delete", "node", "node-1"]), "delete node");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node_watch.try_wait().expect("kubectl").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted node's watch is still open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
