//! Persistent volumes on the node's own disk, end to end with real processes: a claim with no
//! class gets the default `local-path` one, its directory is made on the node its first pod
//! is scheduled to, and the data a pod writes there is read by the next pod of the claim,
//! also after the agent was killed and started again. A released volume goes as its reclaim
//! policy says: with its data (Delete), or kept with it (Retain). Wasm pods, so no root or
//! runc is needed.

mod kit;

use kit::{field, Agent, Cluster, Controller};
use std::time::Duration;

fn json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&c.shoal(args).ok()).expect("JSON")
}

fn pod(name: &str, image: &str, claim: &str, args: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    args: [{args}]\n    volumeMounts: [{{name: data, mountPath: /data}}]\n  volumes:\n  - name: data\n    persistentVolumeClaim: {{claimName: {claim}}}\n"
    )
}

#[track_caller]
fn finished(c: &Cluster, name: &str) -> String {
    c.wait_for(&format!("{name} to finish"), Duration::from_secs(60), |c| {
        let phase = field(&c.pod(name), "status.phase");
        phase == "Succeeded" || phase == "Failed"
    });
    assert_eq!(
        field(&c.pod(name), "status.phase"),
        "Succeeded",
        "{}",
        c.pod(name)
    );
    c.shoal(&["logs", name]).ok()
}

#[test]
fn a_claims_data_outlives_its_pods_and_the_agent_and_goes_as_its_reclaim_policy_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start(&dir.path().join("controller"));
    let agent_dir = dir.path().join("node-1");
    let agent = Agent::start(&controller, "node-1", &agent_dir);
    let mut c = Cluster::adopt(controller, vec![agent]);
    c.wait_nodes_ready();
    let image = c.push_probe_component();
    let classes = c.shoal(&["get", "storageclass"]).ok();
    assert!(
        classes.contains("local-path (default)") && classes.contains("shoal.dev/local-path"),
        "{classes}"
    );

    // No class named: the default one; bound once its first pod is scheduled.
    c.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: readings}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 64Mi}}\n");
    let claim = json(&c, &["get", "pvc", "readings", "-o", "json"]);
    assert_eq!(field(&claim, "spec.storageClassName"), "local-path");
    assert_eq!(field(&claim, "status.phase"), "Pending");
    c.apply(&pod(
        "writer",
        image,
        "readings",
        "write, /data/last, \"21.5C\", print, written",
    ));
    assert_eq!(finished(&c, "writer").trim(), "written");
    let claim = json(&c, &["get", "pvc", "readings", "-o", "json"]);
    assert_eq!(field(&claim, "status.phase"), "Bound");
    assert_eq!(field(&claim, "status.capacity.storage"), "64Mi");
    let volume = field(&claim, "spec.volumeName");
    let pv = json(&c, &["get", "pv", &volume, "-o", "json"]);
    assert_eq!(field(&pv, "spec.persistentVolumeReclaimPolicy"), "Delete");
    assert_eq!(
        field(
            &pv,
            "spec.nodeAffinity.required.nodeSelectorTerms.0.matchExpressions.0.values.0"
        ),
        "node-1"
    );
    let data = std::path::PathBuf::from(field(&pv, "spec.local.path"));
    assert!(
        data.starts_with(agent_dir.join("storage")),
        "{}",
        data.display()
    );
    assert_eq!(
        std::fs::read_to_string(data.join("last")).expect("data"),
        "21.5C"
    );
    let table = c.shoal(&["get", "pvc"]).ok();
    assert!(
        table.contains("Bound") && table.contains("RWO") && table.contains("local-path"),
        "{table}"
    );

    // Its replacement reads it; so does a pod after the agent was killed and restarted.
    c.shoal(&["delete", "pod", "writer"]).ok();
    c.apply(&pod("reader", image, "readings", "cat, /data/last"));
    assert_eq!(finished(&c, "reader"), "21.5C");
    c.agents[0].kill9();
    c.agents[0] = Agent::start(&c.controller, "node-1", &agent_dir);
    c.wait_nodes_ready();
    c.apply(&pod("after-restart", image, "readings", "cat, /data/last"));
    assert_eq!(finished(&c, "after-restart"), "21.5C");

    // A claim that does not exist keeps its pod Pending, saying so.
    c.apply(&pod("orphan", image, "nope", "print, never"));
    c.wait_for("the orphan's reason", Duration::from_secs(30), |c| {
        c.pod("orphan")["status"]["conditions"]
            .to_string()
            .contains("persistentvolumeclaim \\\"nope\\\" not found")
    });

    // A claim a running pod uses is held (Terminating) with its data until the pod is gone.
    c.apply(&pod("holder", image, "readings", "sleep, \"600000\""));
    c.wait_for("the holder running", Duration::from_secs(60), |c| {
        field(&c.pod("holder"), "status.phase") == "Running"
    });
    c.shoal(&["delete", "pvc", "readings"]).ok();
    let held = json(&c, &["get", "pvc", "readings", "-o", "json"]);
    assert!(
        !field(&held, "metadata.deletionTimestamp").is_empty(),
        "{held}"
    );
    assert!(c.shoal(&["get", "pvc"]).ok().contains("Terminating"));
    // Longer than the agents' reclaim period: the data stays while the pod runs.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        std::fs::read_to_string(data.join("last")).expect("data"),
        "21.5C"
    );

    // Delete: the claim's pods gone, the claim, the data and the volume go.
    c.shoal(&["delete", "pod", "reader", "after-restart", "holder"])
        .ok();
    c.wait_for("the released volume gone", Duration::from_secs(60), |c| {
        let got = c.shoal(&["get", "pv", &volume]);
        !got.0.status.success() && got.stderr().contains("not found")
    });
    assert!(!data.exists(), "{} deleted with its volume", data.display());

    // Retain: a volume made by hand keeps its data once released.
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).expect("dir");
    c.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: manual-1}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: manual\n  hostPath: {{path: {}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: logs}}\nspec:\n  storageClassName: manual\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 100Mi}}}}\n",
        kept.display()
    ));
    c.wait_for(
        "the claim bound to the volume made by hand",
        Duration::from_secs(30),
        |c| {
            field(
                &json(c, &["get", "pvc", "logs", "-o", "json"]),
                "spec.volumeName",
            ) == "manual-1"
        },
    );
    c.apply(&pod("logger", image, "logs", "write, /data/log, boot"));
    finished(&c, "logger");
    c.shoal(&["delete", "pod", "logger"]).ok();
    c.shoal(&["delete", "pvc", "logs"]).ok();
    c.wait_for("the volume released", Duration::from_secs(30), |c| {
        field(
            &json(c, &["get", "pv", "manual-1", "-o", "json"]),
            "status.phase",
        ) == "Released"
    });
    // Longer than the agents' reclaim period: the data stays.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        std::fs::read_to_string(kept.join("log")).expect("kept"),
        "boot"
    );
    c.shoal(&["get", "pv", "manual-1"]).ok();

    // A namespace deleted with a claim a running pod uses: the claim goes through its
    // finalizer (the pod went with the namespace), the namespace once it is empty, and the
    // volume with its data as its policy says.
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: site}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: buffer, namespace: site}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Mi}}\n");
    let sleeper = pod(
        "buffering",
        image,
        "buffer",
        "write, /data/b, x, sleep, \"600000\"",
    )
    .replace(
        "metadata: {name: buffering}",
        "metadata: {name: buffering, namespace: site}",
    );
    c.apply(&sleeper);
    c.wait_for("the pod in site running", Duration::from_secs(60), |c| {
        let p = json(c, &["get", "pod", "buffering", "-n", "site", "-o", "json"]);
        field(&p, "status.phase") == "Running"
    });
    let claim = json(&c, &["get", "pvc", "buffer", "-n", "site", "-o", "json"]);
    let volume = field(&claim, "spec.volumeName");
    let pv = json(&c, &["get", "pv", &volume, "-o", "json"]);
    let data = std::path::PathBuf::from(field(&pv, "spec.local.path"));
    assert!(data.join("b").exists(), "{}", data.display());
    c.shoal(&["delete", "namespace", "site"]).ok();
    c.wait_for(
        "the namespace, its claim and the volume gone",
        Duration::from_secs(60),
        |c| {
            let gone = |args: &[&str]| {
                let got = c.shoal(args);
                !got.0.status.success() && got.stderr().contains("not found")
            };
            gone(&["get", "namespace", "site"]) && gone(&["get", "pv", &volume])
        },
    );
    assert!(!data.exists(), "{} deleted with its volume", data.display());
}
