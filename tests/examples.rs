//! Every manifest in `examples/` runs as shipped: applied as the README says, it reaches the
//! state its comments document. A new example without a check here fails the test.

mod kit;

use kit::{field, repo_path, runc_missing, Cluster};
use std::time::Duration;

/// `examples/hello.yaml`: the pod greets with its ConfigMap's greeting.
fn hello(c: &Cluster) {
    c.wait_for("hello greeting", Duration::from_secs(90), |c| {
        c.shoal(&["logs", "hello"])
            .stdout()
            .contains("Hello from the edge from hello")
    });
}

/// `examples/shop.yaml`: the Deployment available, its pod ready, answering with the
/// ConfigMap's greeting on its port, and its Service's endpoints holding it.
fn shop(c: &Cluster) {
    c.wait_for("the shop available", Duration::from_secs(90), |c| {
        let d = c.shoal(&["get", "deploy", "web", "-n", "shop", "-o", "json"]);
        let d: serde_json::Value = serde_json::from_str(&d.stdout()).unwrap_or_default();
        field(&d, "status.availableReplicas") == "1"
    });
    c.wait_for("the shop answering", Duration::from_secs(30), |_| {
        kit::http_get(8080).is_some_and(|b| b.contains("welcome to the shop from web-"))
    });
    c.wait_for("the shop's endpoints", Duration::from_secs(30), |c| {
        let e = c.shoal(&["get", "endpoints", "web", "-n", "shop", "-o", "json"]);
        let e: serde_json::Value = serde_json::from_str(&e.stdout()).unwrap_or_default();
        !field(&e, "subsets.0.addresses.0.ip").is_empty()
    });
}

/// `examples/busybox-web.yaml`: its Deployment available and its page served on the node's
/// port 8081.
fn busybox_web(c: &Cluster) {
    c.wait_for("busybox-web available", Duration::from_secs(120), |c| {
        let d = c.shoal(&["get", "deploy", "busybox-web", "-o", "json"]);
        let d: serde_json::Value = serde_json::from_str(&d.stdout()).unwrap_or_default();
        field(&d, "status.availableReplicas") == "1"
    });
    c.wait_for("busybox-web's page", Duration::from_secs(30), |_| {
        kit::http_get(8081).is_some_and(|b| b.contains("hello from a busybox container"))
    });
}

/// `examples/iot-sampler.yaml`: its claim bound, and the readings the CronJob's sampler
/// appended served on the node's port 8082 (the first within a minute or two).
fn iot_sampler(c: &Cluster) {
    c.wait_for("a reading served", Duration::from_secs(150), |_| {
        kit::http_get(8082).is_some_and(|b| {
            b.lines().any(|l| {
                let mut f = l.split_whitespace();
                let secs = f.next().and_then(|s| s.parse::<u64>().ok());
                let value = f.next().and_then(|v| v.parse::<f64>().ok());
                secs.is_some() && value.is_some()
            })
        })
    });
    let pvc = c.shoal(&["get", "pvc", "readings", "-o", "json"]).ok();
    let pvc: serde_json::Value = serde_json::from_str(&pvc).expect("json");
    assert_eq!(field(&pvc, "status.phase"), "Bound");
    assert_eq!(field(&pvc, "spec.storageClassName"), "local-path");
}

/// An example's file name, and the check of the state it documents.
type Check = (&'static str, fn(&Cluster));

/// The examples of OCI container pods: they need root and runc, and their images built first
/// (`examples/oci/`), as their comments say.
const RUNC_CHECKS: [Check; 1] = [("busybox-web.yaml", busybox_web)];

#[test]
fn every_example_reaches_its_documented_state() {
    let checks: [Check; 3] = [
        ("hello.yaml", hello),
        ("shop.yaml", shop),
        ("iot-sampler.yaml", iot_sampler),
    ];
    let mut shipped: Vec<String> = std::fs::read_dir(repo_path("examples"))
        .expect("examples/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    shipped.sort();
    let mut checked: Vec<String> = checks
        .iter()
        .chain(&RUNC_CHECKS)
        .map(|(n, _)| n.to_string())
        .collect();
    checked.sort();
    assert_eq!(shipped, checked, "each example has its check here");

    let c = Cluster::start(1);
    for (name, check) in checks {
        let path = repo_path("examples").join(name);
        c.shoal(&["apply", "-f", path.to_str().unwrap_or_default()])
            .ok();
        check(&c);
    }
}

#[test]
fn runc_the_oci_examples_reach_their_documented_state() {
    if runc_missing("runc_the_oci_examples_reach_their_documented_state") {
        return;
    }
    let built = std::process::Command::new("sh")
        .arg(repo_path("examples/oci/busybox-image.sh"))
        .output()
        .expect("sh");
    assert!(
        built.status.success(),
        "examples/oci/busybox-image.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let (c, _leftovers) = kit::oci_cluster(66, 1, &[]);
    for (name, check) in RUNC_CHECKS {
        let path = repo_path("examples").join(name);
        c.shoal(&["apply", "-f", path.to_str().unwrap_or_default()])
            .ok();
        check(&c);
    }
}
