//! Pod spec fidelity: fields Shoal accepts do what Kubernetes documents, checked on running
//! pods that print what they got. (This file grows with issue #22; what is here so far is
//! the container environment.)

mod kit;

use kit::{field, Cluster};
use std::time::Duration;

/// envFrom (with a prefix, keys that are not names skipped), env on top of it, `$(VAR)` in
/// env values and args, `$$`, optional references to what does not exist, and fieldRefs.
#[test]
fn a_containers_environment_is_built_as_kubernetes_builds_it() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    c.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{A: "1", B: "2", 1st: "x"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{PASSWORD: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: envy, labels: {{app: web}}}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    args: [env, A, env, B, env, S_PASSWORD, env, GREETING, env, GONE, env, IP, env, NODE, env, APP, print, "cmd=$(A)-$(GREETING) $$(A) $(NOPE)"]
    envFrom:
    - configMapRef: {{name: cfg}}
    - prefix: S_
      secretRef: {{name: sec}}
    - configMapRef: {{name: absent, optional: true}}
    env:
    - {{name: B, value: env-wins}}
    - {{name: GREETING, value: "hi-$(A)"}}
    - {{name: GONE, valueFrom: {{secretKeyRef: {{name: sec, key: NOPE, optional: true}}}}}}
    - {{name: IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"#
    ));
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        field(&c.pod("envy"), "status.phase") == "Succeeded"
    });
    let log = c.shoal(&["logs", "envy"]).ok();
    let ip = field(&c.pod("envy"), "status.podIP");
    for want in [
        "A=1".to_string(),
        "B=env-wins".into(),
        "S_PASSWORD=hunter2".into(),
        "GREETING=hi-1".into(),
        "GONE=<unset>".into(),
        format!("IP={ip}"),
        "NODE=node-1".into(),
        "APP=web".into(),
        "cmd=1-hi-1 $(A) $(NOPE)".into(),
    ] {
        assert!(log.lines().any(|l| l == want), "{want:?} not in\n{log}");
    }
    let described = c.shoal(&["describe", "pod", "envy"]).ok();
    assert!(
        described.contains("InvalidEnvironmentVariableNames") && described.contains("[1st]"),
        "{described}"
    );
}
