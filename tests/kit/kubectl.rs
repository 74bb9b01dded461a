//! kubectl as the tests drive it: the real binary, with a cluster's kubeconfig, skipped (or
//! failed, with `SHOAL_REQUIRE_KUBECTL=1`) where it is not on the PATH.

use super::Cluster;
use std::path::Path;
use std::process::{Command, Output};

pub fn kubectl_missing(test: &str) -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return false;
    }
    if std::env::var("SHOAL_REQUIRE_KUBECTL").as_deref() == Ok("1") {
        panic!("{test} needs kubectl 1.32 on the PATH (the machine image has it)");
    }
    super::skipped(test, "kubectl is not on the PATH");
    true
}

/// kubectl with the cluster's admin kubeconfig (and no cache shared between tests).
pub fn kubectl(c: &Cluster, args: &[&str]) -> Output {
    kubectl_as(&c.controller.config(), c, args, None)
}

pub fn kubectl_as(config: &Path, c: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    let cache = c.controller.config().with_file_name("kube-cache");
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", config)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args);
    super::output_of(cmd, stdin)
}

#[track_caller]
pub fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl {what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
pub fn fails(out: Output, what: &str) -> String {
    assert!(!out.status.success(), "kubectl {what} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `kubectl get KIND NAME -o json`, which must succeed.
#[track_caller]
pub fn get_json(c: &Cluster, kind: &str, name: &str) -> serde_json::Value {
    json(&ok(
        kubectl(c, &["get", kind, name, "-o", "json"]),
        "get -o json",
    ))
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn deployment(image: &str, replicas: Option<u32>) -> String {
    let replicas = replicas
        .map(|r| format!("  replicas: {r}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
{replicas}  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: probe
        image: {image}
        args: [print, serving, sleep, \"600000\"]
        resources: {{requests: {{cpu: 10m, memory: 4Mi}}}}
"
    )
}

/// `kubectl apply` of the `web` Deployment of `image` with `replicas`, then waits until that
/// many of its pods run.
pub fn apply_web(c: &Cluster, image: &str, replicas: usize) {
    let manifest = deployment(image, Some(replicas as u32));
    ok(
        kubectl_as(
            &c.controller.config(),
            c,
            &["apply", "-f", "-"],
            Some(&manifest),
        ),
        "apply",
    );
    c.wait_for(
        "the web pods Running",
        std::time::Duration::from_secs(60),
        |c| {
            c.pods("app=web")
                .iter()
                .filter(|p| super::field(p, "status.phase") == "Running")
                .count()
                == replicas
        },
    );
}
