//! Static pods (`shoal agent --manifests DIR`, the kubelet's staticPodPath): a pod written as a
//! file on the node runs with the controller and without it, shows in the API as a mirror pod
//! (made again when deleted there), restarts when its file changes and stops when the file
//! goes; a node that has never reached its controller runs them from the images it was given.
//! Real processes, a real wasm component serving HTTP.

mod kit;

use kit::{field, Agent, Cluster, Controller};
use std::path::Path;
use std::time::{Duration, Instant};

const PORT: u16 = 18791;
/// The never-joined node's test runs beside the other: its pod serves on a port of its own.
const FIRST_BOOT_PORT: u16 = 18792;

fn manifest(greeting: &str) -> String {
    manifest_on(PORT, greeting)
}

fn manifest_on(port: u16, greeting: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: probe:2
    args: [serve, "{port}", {greeting}]
    ports: [{{containerPort: {port}}}]
"#
    )
}

fn wait_until(what: &str, timeout: Duration, agent: &Agent, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- agent:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_agent(controller: &Controller, dir: &Path, manifests: &Path) -> Agent {
    let token = std::fs::read_to_string(controller.dir.join("token")).expect("token");
    Agent::with(controller, "node-1", &dir.join("node-1"))
        .token(token.trim())
        .args(&["--manifests", manifests.to_str().unwrap_or_default()])
        .start()
}

#[test]
fn a_static_pod_runs_from_its_file_with_and_without_the_controller_and_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let file = manifests.join("web.yaml");
    std::fs::write(&file, manifest("hello static one")).unwrap();
    let mut c = Cluster::adopt(Controller::start(&dir.path().join("c")), vec![]);
    c.push_probe_component();
    let agent = start_agent(&c.controller, dir.path(), &manifests);
    c.agents.push(agent);
    wait_until(
        "the static pod serving",
        Duration::from_secs(60),
        &c.agents[0],
        || kit::http_get(PORT).is_some_and(|b| b.contains("hello static one")),
    );
    assert!(c.agents[0]
        .log()
        .contains("running the static pods of this directory"));

    // Its mirror in the API, with the static pod's status; deleted there, it is made again
    // and the pod runs on.
    let mirror = |c: &Cluster| -> serde_json::Value {
        let out = c
            .shoal(&["get", "pod", "web-node-1", "-o", "json"])
            .stdout();
        serde_json::from_str(&out).unwrap_or_default()
    };
    c.wait_for("the mirror pod Running", Duration::from_secs(30), |c| {
        field(&mirror(c), "status.phase") == "Running"
    });
    let first = mirror(&c);
    assert_eq!(field(&first, "spec.nodeName"), "node-1");
    assert_eq!(
        field(&first, "metadata.ownerReferences.0.kind"),
        "Node",
        "{first}"
    );
    let mirrored = |p: &serde_json::Value| {
        p["metadata"]["annotations"]["kubernetes.io/config.mirror"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(mirrored(&first).len(), 64, "{first}");
    c.shoal(&["delete", "pod", "web-node-1"]).ok();
    c.wait_for("the mirror made again", Duration::from_secs(30), |c| {
        let m = mirror(c);
        field(&m, "status.phase") == "Running"
            && field(&m, "metadata.uid") != field(&first, "metadata.uid")
    });
    assert!(kit::http_get(PORT).is_some_and(|b| b.contains("hello static one")));

    // A changed file: the pod restarts as it now says, and its mirror follows.
    std::fs::write(&file, manifest("hello static two")).unwrap();
    wait_until(
        "the changed pod serving",
        Duration::from_secs(60),
        &c.agents[0],
        || kit::http_get(PORT).is_some_and(|b| b.contains("hello static two")),
    );
    c.wait_for(
        "the mirror of the changed file",
        Duration::from_secs(30),
        |c| {
            let m = mirror(c);
            !mirrored(&m).is_empty() && mirrored(&m) != mirrored(&first)
        },
    );

    // The agent started without --manifests: its static pod does not run, and its mirror
    // goes from the API; with them again, both are back.
    c.agents[0].terminate();
    c.agents[0].wait_exit(Duration::from_secs(20));
    c.agents[0] = Agent::start(&c.controller, "node-1", &dir.path().join("node-1"));
    c.wait_for(
        "the mirror of the static pod that no longer runs gone",
        Duration::from_secs(60),
        |c| {
            let got = c.shoal(&["get", "pod", "web-node-1"]);
            !got.0.status.success() && got.stderr().contains("not found")
        },
    );
    c.agents[0].terminate();
    c.agents[0].wait_exit(Duration::from_secs(20));
    c.agents[0] = start_agent(&c.controller, dir.path(), &manifests);
    c.wait_for("the mirror back", Duration::from_secs(60), |c| {
        field(&mirror(c), "status.phase") == "Running"
    });

    // No controller at all: the agent starts again and runs it from the file.
    c.controller.kill9();
    c.agents[0].terminate();
    c.agents[0].wait_exit(Duration::from_secs(20));
    assert!(
        kit::http_get(PORT).is_none(),
        "a wasm pod ends with its agent"
    );
    c.agents[0] = start_agent(&c.controller, dir.path(), &manifests);
    wait_until(
        "the static pod serving with no controller",
        Duration::from_secs(60),
        &c.agents[0],
        || kit::http_get(PORT).is_some_and(|b| b.contains("hello static two")),
    );

    // A removed file stops it.
    std::fs::remove_file(&file).unwrap();
    wait_until(
        "the pod of the removed file stopped",
        Duration::from_secs(60),
        &c.agents[0],
        || kit::http_get(PORT).is_none(),
    );

    // A file that cannot run is named in the log with why.
    std::fs::write(
        manifests.join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - {name: c, image: x, envFrom: [{configMapRef: {name: cfg}}]}\n",
    )
    .unwrap();
    wait_until(
        "the bad manifest named",
        Duration::from_secs(30),
        &c.agents[0],
        || {
            let log = c.agents[0].log();
            log.contains("bad.yaml") && log.contains("a static pod may not use other API objects")
        },
    );
}

#[test]
fn a_static_pod_starts_on_a_node_that_never_reached_its_controller_and_is_mirrored_once_it_does() {
    let dir = tempfile::tempdir().unwrap();
    // A device set up with its token, its manifests and the image they run; the controller
    // it is meant for is down when it boots (the token is minted, then the controller goes).
    let mut controller = Controller::start(&dir.path().join("c"));
    let (addr, data) = (controller.addr.clone(), controller.dir.clone());
    controller.kill9();
    let manifests = dir.path().join("manifests");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        manifest_on(FIRST_BOOT_PORT, "hello first boot"),
    )
    .unwrap();
    std::fs::copy(
        kit::wasm_fixture("probe", "wasm32-wasip2"),
        images.join("probe:2.wasm"),
    )
    .unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let token = std::fs::read_to_string(data.join("token")).expect("token");
    let agent = Agent::with(&controller, "node-1", &dir.path().join("node-1"))
        .token(token.trim())
        .args(&[
            "--manifests",
            manifests.to_str().unwrap_or_default(),
            "--images",
            images.to_str().unwrap_or_default(),
        ])
        .start();
    wait_until(
        "the static pod serving before the node ever joined",
        Duration::from_secs(90),
        &agent,
        || kit::http_get(FIRST_BOOT_PORT).is_some_and(|b| b.contains("hello first boot")),
    );
    let log = agent.log();
    assert!(
        log.contains("loaded an image from the images directory") && log.contains("probe:2"),
        "{log}"
    );
    assert!(
        log.contains("notes.txt"),
        "the skipped file is named: {log}"
    );
    wait_until(
        "the join tried and put off",
        Duration::from_secs(60),
        &agent,
        || agent.log().contains("cannot join the cluster yet"),
    );
    assert!(
        !dir.path().join("node-1/node.conf").exists(),
        "no credential before the controller answers"
    );

    // The controller comes up: the node joins with its token and the pod is mirrored.
    let c = Cluster::adopt(Controller::start_listening(&data, &addr, &[]), vec![agent]);
    c.wait_for("the mirror pod Running", Duration::from_secs(90), |c| {
        let out = c
            .shoal(&["get", "pod", "web-node-1", "-o", "json"])
            .stdout();
        let pod: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        field(&pod, "status.phase") == "Running" && field(&pod, "spec.nodeName") == "node-1"
    });
    assert!(dir.path().join("node-1/node.conf").exists());
    assert!(c.agents[0].log().contains("joined the cluster"));
    assert!(kit::http_get(FIRST_BOOT_PORT).is_some_and(|b| b.contains("hello first boot")));
}
