//! kubectl's generators and node maintenance against a real controller and two agents:
//! `create configmap|secret|namespace` (which kubectl sends as protobuf), `run`, `expose`,
//! and `drain` through evictions, each checked in the cluster's state afterwards.

mod kit;

use kit::kubectl::{apply_web, fails, get_json, kubectl, kubectl_missing, ok};
use kit::{field, Cluster};
use std::time::Duration;

#[test]
fn kubectl_creates_from_its_generators_and_drains_a_node() {
    if kubectl_missing("kubectl_creates_from_its_generators_and_drains_a_node") {
        return;
    }
    let c = Cluster::start(2);
    let image = c.push_probe();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("settings.conf");
    std::fs::write(&file, "level=debug\n").expect("a file");

    // kubectl's typed clients send these as protobuf.
    let from_file = format!("--from-file={}", file.display());
    ok(
        kubectl(
            &c,
            &[
                "create",
                "configmap",
                "settings",
                &from_file,
                "--from-literal=mode=edge",
            ],
        ),
        "create configmap",
    );
    let cm = get_json(&c, "cm", "settings");
    assert_eq!(cm["data"]["settings.conf"], "level=debug\n", "{cm}");
    assert_eq!(cm["data"]["mode"], "edge", "{cm}");
    ok(
        kubectl(
            &c,
            &[
                "create",
                "secret",
                "generic",
                "token",
                "--from-literal=pw=s3cret",
            ],
        ),
        "create secret",
    );
    let pw = ok(
        kubectl(&c, &["get", "secret", "token", "-o", "jsonpath={.data.pw}"]),
        "get secret",
    );
    assert_eq!(pw, "czNjcmV0", "base64 of s3cret");
    ok(
        kubectl(&c, &["create", "namespace", "team"]),
        "create namespace",
    );
    let ns = ok(kubectl(&c, &["get", "ns", "team", "-o", "name"]), "get ns");
    assert_eq!(ns.trim(), "namespace/team");
    // Workloads too: a Deployment with replicas 0 (a pointer set to zero stays zero), a Job
    // that runs to completion, a NodePort Service.
    ok(
        kubectl(
            &c,
            &[
                "create",
                "deployment",
                "idle",
                &format!("--image={image}"),
                "--replicas=0",
            ],
        ),
        "create deployment",
    );
    let idle = get_json(&c, "deploy", "idle");
    assert_eq!(idle["spec"]["replicas"], 0, "{idle}");
    assert_eq!(
        idle["spec"]["selector"]["matchLabels"]["app"], "idle",
        "{idle}"
    );
    let job = kubectl(
        &c,
        &[
            "create",
            "job",
            "once",
            &format!("--image={image}"),
            "--",
            "print",
            "done",
        ],
    );
    ok(job, "create job");
    let once = get_json(&c, "job", "once");
    assert_eq!(
        once["spec"]["template"]["spec"]["restartPolicy"], "Never",
        "{once}"
    );
    // (It would run as an OCI pod: its check is the object; it goes again.)
    ok(kubectl(&c, &["delete", "job", "once"]), "delete job");
    ok(
        kubectl(
            &c,
            &["create", "service", "nodeport", "edge", "--tcp=80:8080"],
        ),
        "create service",
    );
    let edge = get_json(&c, "svc", "edge");
    assert_eq!(edge["spec"]["type"], "NodePort", "{edge}");
    assert_eq!(edge["spec"]["ports"][0]["targetPort"], 8080, "{edge}");
    assert!(
        edge["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .is_some_and(|p| p >= 30000),
        "{edge}"
    );

    // run and expose send JSON.
    let run = format!("--image={image}");
    ok(
        kubectl(
            &c,
            &[
                "run",
                "solo",
                &run,
                "--labels=app=solo",
                r#"--overrides={"spec":{"runtimeClassName":"wasm"}}"#,
                "--",
                "print",
                "solo",
                "sleep",
                "600000",
            ],
        ),
        "run",
    );
    c.wait_for("the solo pod Running", Duration::from_secs(60), |c| {
        field(&c.pod("solo"), "status.phase") == "Running"
    });
    ok(
        kubectl(
            &c,
            &["expose", "pod", "solo", "--port=80", "--target-port=8080"],
        ),
        "expose",
    );
    let svc = get_json(&c, "svc", "solo");
    assert_eq!(svc["spec"]["selector"]["app"], "solo", "{svc}");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.43.")),
        "{svc}"
    );

    // drain: cordon, then each pod evicted; the Deployment's come back on the other node.
    apply_web(&c, image, 2);
    let node = field(&c.pod("solo"), "spec.nodeName");
    let other = if node == "node-1" { "node-2" } else { "node-1" };
    let out = ok(
        kubectl(
            &c,
            &[
                "drain",
                &node,
                "--ignore-daemonsets",
                "--force",
                "--timeout=90s",
            ],
        ),
        "drain",
    );
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    let nodes = ok(kubectl(&c, &["get", "node", &node]), "get node");
    assert!(nodes.contains("SchedulingDisabled"), "{nodes}");
    let gone = fails(
        kubectl(&c, &["get", "pod", "solo"]),
        "get of the evicted pod",
    );
    assert!(gone.contains("not found"), "{gone}");
    c.wait_for(
        "the web pods Running on the other node",
        Duration::from_secs(60),
        |c| {
            let pods = c.pods("app=web");
            pods.len() == 2
                && pods.iter().all(|p| {
                    field(p, "status.phase") == "Running" && field(p, "spec.nodeName") == other
                })
        },
    );
    ok(kubectl(&c, &["uncordon", &node]), "uncordon");
    let nodes = ok(kubectl(&c, &["get", "node", &node]), "get node");
    assert!(!nodes.contains("SchedulingDisabled"), "{nodes}");
}
