//! OCI container pods through real runc, as root: a controller and an agent as processes, and
//! a busybox image built here from Debian's `busybox-static` into an OCI image layout (no
//! registry, no internet), pushed to the controller. Every test here needs runc and root: it
//! is skipped, saying why, where they are missing, and fails instead when
//! SHOAL_REQUIRE_RUNC=1 (CI sets it).

mod kit;

use kit::{field, runc_missing, Cluster};
use shoal_runtime::oci::build::{busybox_layer, tar_dir, write_layout, ImageSpec};
use shoal_runtime::oci::image::Platform;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The busybox image as an OCI layout in `dir`, for this machine and (to show platform
/// selection) an arm64 entry that no amd64 node may pick.
fn busybox_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("busybox-layout");
    let layer = busybox_layer(Path::new("/bin/busybox")).expect("busybox layer");
    let image = |platform: Platform| ImageSpec {
        platform,
        cmd: vec!["sh".into()],
        env: vec!["GREETING=hello from the image".into()],
        ..Default::default()
    };
    let other = Platform {
        os: "linux".into(),
        architecture: if Platform::host().architecture == "arm64" {
            "amd64"
        } else {
            "arm64"
        }
        .into(),
        variant: None,
    };
    write_layout(
        &layout,
        "busybox:1",
        &[
            (image(other), vec![layer.clone()]),
            (image(Platform::host()), vec![layer]),
        ],
    )
    .expect("layout");
    layout
}

/// A layer tar with raw, unchecked names, as a hostile image would carry.
fn hostile_layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(1);
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
    }
    b.into_inner().expect("tar")
}

fn pod(name: &str, image: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: main
    image: {image}
    command: [sh, -c, {script:?}]
    resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"#
    )
}

#[test]
fn runc_pods_run_log_crash_loop_get_oom_killed_complete_jobs_and_roll_out() {
    if runc_missing("runc_pods_run_log_crash_loop_get_oom_killed_complete_jobs_and_roll_out") {
        return;
    }
    let (c, _leftovers) = kit::oci_cluster(61, 1, &[]);
    let scratch = tempfile::tempdir().expect("tmp");
    // Offline delivery: the layout pushed as a directory, and as an OCI archive tarball. An
    // image goes up as its blobs: the second push sends none (two manifests, two configs and
    // the one layer both platforms share are there already).
    let layout = busybox_layout(scratch.path());
    let first = c.shoal(&["push", layout.to_str().expect("utf-8"), "busybox:1"]);
    first.ok();
    assert!(
        first.stderr().contains("busybox:1: sent 5 of 5 blobs"),
        "{}",
        first.stderr()
    );
    let archive = scratch.path().join("busybox.tar");
    std::fs::write(&archive, tar_dir(&layout).expect("tar")).expect("archive");
    let again = c.shoal(&[
        "push",
        archive.to_str().expect("utf-8"),
        "busybox-archive:1",
    ]);
    again.ok();
    assert!(
        again
            .stderr()
            .contains("busybox-archive:1: sent 0 of 5 blobs"),
        "{}",
        again.stderr()
    );

    let manifests = [
        pod(
            "hello",
            "busybox:1",
            "echo $GREETING; echo from $(hostname) as $(id -u); cat /etc/hostname; sleep 600",
            "",
        ),
        pod("crasher", "busybox-archive:1", "echo dying; exit 3", ""),
        pod(
            "hog",
            "busybox:1",
            "x=a; while true; do x=$x$x; done",
            "  restartPolicy: Never\n",
        )
        .replace(
            "resources: {requests: {cpu: 10m, memory: 8Mi}}",
            "resources: {requests: {cpu: 10m, memory: 8Mi}, limits: {memory: 16Mi}}",
        ),
    ];
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&manifests.join("---\n")))
        .ok();
    c.wait_for("hello to log", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "hello"]).stdout() == "hello from the image\nfrom hello as 0\nhello\n"
    });
    let hello = c.pod("hello");
    assert_eq!(field(&hello, "status.phase"), "Running");
    assert!(field(&hello, "status.containerStatuses.0.state.running.startedAt").len() > 10);

    // Three pods, two names, one image: the agent fetched this platform's manifest, config
    // and layer once.
    let log = c.agents[0].log();
    let fetches: Vec<u32> = log
        .lines()
        .filter(|l| l.contains("image fetched from the controller"))
        .filter_map(|l| l.split("fetched=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(fetches.len(), 3, "{log}");
    assert_eq!(fetches.iter().sum::<u32>(), 3, "{log}");

    c.wait_for("the crasher's back-off", Duration::from_secs(60), |c| {
        let p = c.pod("crasher");
        field(&p, "status.containerStatuses.0.state.waiting.reason") == "CrashLoopBackOff"
            && field(
                &p,
                "status.containerStatuses.0.lastState.terminated.exitCode",
            ) == "3"
    });
    assert!(c
        .shoal(&["get", "pods", "--no-headers"])
        .ok()
        .contains("CrashLoopBackOff"));
    assert_eq!(c.shoal(&["logs", "crasher"]).ok(), "dying\n");

    c.wait_for("the hog to be OOM-killed", Duration::from_secs(60), |c| {
        field(&c.pod("hog"), "status.phase") == "Failed"
    });
    let hog = c.pod("hog");
    assert_eq!(
        field(&hog, "status.containerStatuses.0.state.terminated.reason"),
        "OOMKilled"
    );
    assert_eq!(
        field(&hog, "status.containerStatuses.0.state.terminated.exitCode"),
        "137"
    );

    // Pod networking: an address from the node's pod range, reachable from the node and from
    // another pod; a hostPort forwards from the node's address; hostNetwork uses the node's.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: server}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, "mkdir -p /www && echo served by $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, hostPort: {host_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: on-host}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1
    command: [sleep, "600"]
"#
    );
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&server))
        .ok();
    let get = |addr: &str| -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &addr.parse().expect("addr"),
            Duration::from_secs(2),
        ) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    c.wait_for(
        "the server to answer on its pod address",
        Duration::from_secs(60),
        |c| {
            let ip = field(&c.pod("server"), "status.podIP");
            ip.starts_with("10.61.") && get(&format!("{ip}:8080")).ends_with("served by server\n")
        },
    );
    let server_ip = field(&c.pod("server"), "status.podIP");
    assert!(get(&format!("127.0.0.1:{host_port}")).ends_with("served by server\n"));
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&pod(
                "client",
                "busybox:1",
                &format!("wget -q -O - http://{server_ip}:8080/; sleep 600"),
                "",
            )),
        )
        .ok();
    c.wait_for(
        "the client pod to reach the server pod",
        Duration::from_secs(60),
        |c| c.shoal(&["logs", "client"]).stdout() == "served by server\n",
    );
    c.wait_for("the host-network pod", Duration::from_secs(60), |c| {
        let p = c.pod("on-host");
        field(&p, "status.phase") == "Running"
            && !field(&p, "status.hostIP").is_empty()
            && field(&p, "status.podIP") == field(&p, "status.hostIP")
    });

    // A Job of containers completes.
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(
                r#"apiVersion: batch/v1
kind: Job
metadata: {name: count}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1
        command: [sh, -c, "echo counted"]
"#,
            ),
        )
        .ok();
    assert_eq!(
        c.shoal(&[
            "wait",
            "--for=condition=complete",
            "job/count",
            "--timeout",
            "90s"
        ])
        .ok(),
        "job/count condition met\n"
    );

    // A Deployment of containers rolls out and back.
    let deployment = |version: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1
        command: [sh, -c, "echo version $VERSION; sleep 600"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
        )
    };
    let versions = |c: &Cluster| -> Vec<String> {
        let names: Vec<String> = c
            .shoal(&["get", "pods", "-l", "app=web", "--no-headers"])
            .stdout()
            .lines()
            .filter(|l| l.contains(" Running "))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect();
        let mut v: Vec<String> = names
            .iter()
            .map(|n| c.shoal(&["logs", n]).stdout().trim().to_string())
            .collect();
        v.sort();
        v
    };
    let rolled = |c: &Cluster, want: &str| {
        c.shoal(&["rollout", "status", "deploy/web", "--watch=false"])
            .stdout()
            .contains("successfully rolled out")
            && c.shoal(&["get", "pods", "-l", "app=web", "--no-headers"])
                .stdout()
                .lines()
                .count()
                == 2
            && versions(c) == [want, want]
    };
    for v in ["1", "2"] {
        c.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(&deployment(v)))
            .ok();
        c.wait_for(
            &format!("version {v} rolled out"),
            Duration::from_secs(90),
            |c| rolled(c, &format!("version {v}")),
        );
    }
    c.shoal(&["rollout", "undo", "deploy/web"]).ok();
    c.wait_for("the rollback to version 1", Duration::from_secs(90), |c| {
        rolled(c, "version 1")
    });

    // An image with no variant for this node's platform is not scheduled here, and the pod
    // says why.
    let foreign = scratch.path().join("foreign");
    let other = if Platform::host().architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let spec = ImageSpec {
        platform: Platform {
            os: "linux".into(),
            architecture: other.into(),
            variant: None,
        },
        ..Default::default()
    };
    let layer = busybox_layer(Path::new("/bin/busybox")).expect("layer");
    write_layout(&foreign, "foreign:1", &[(spec, vec![layer])]).expect("layout");
    c.shoal(&["push", foreign.to_str().expect("utf-8"), "foreign:1"])
        .ok();
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&pod("foreign", "foreign:1", "true", "")),
        )
        .ok();
    c.wait_for("the foreign pod's reason", Duration::from_secs(30), |c| {
        let p = c.pod("foreign");
        field(&p, "status.phase") == "Pending"
            && field(&p, "status.conditions.0.message")
                == format!("0/1 nodes available: 1 node(s) had a platform image \"foreign:1\" lacks (it has linux/{other})")
    });
    c.shoal(&["delete", "pod", "foreign"]).ok();

    // Hostile images: their layers are refused when unpacked, naming the entry, and nothing
    // is written outside the agent's layer store.
    let agent = &c.agents[0];
    let escape = format!("shoal-escaped-{}", std::process::id());
    let hostile = [
        (
            "traversal",
            hostile_layer(&[(
                &format!("../../../../../../../../tmp/{escape}"),
                tar::EntryType::Regular,
                "",
            )]),
            "path traversal",
        ),
        (
            "symlink",
            hostile_layer(&[
                ("s", tar::EntryType::Symlink, "/tmp"),
                (&format!("s/{escape}"), tar::EntryType::Regular, ""),
            ]),
            "through the symlink",
        ),
    ];
    for (name, layer, why) in hostile {
        let dir = scratch.path().join(name);
        let spec = ImageSpec {
            platform: Platform::host(),
            ..Default::default()
        };
        write_layout(&dir, "evil:1", &[(spec, vec![layer])]).expect("layout");
        c.shoal(&[
            "push",
            dir.to_str().expect("utf-8"),
            &format!("evil-{name}:1"),
        ])
        .ok();
        c.controller
            .shoal_stdin(
                &["apply", "-f", "-"],
                Some(&pod(
                    &format!("evil-{name}"),
                    &format!("evil-{name}:1"),
                    "true",
                    "",
                )),
            )
            .ok();
        c.wait_for(
            &format!("the {name} layer refused"),
            Duration::from_secs(60),
            |c| {
                let p = c.pod(&format!("evil-{name}"));
                field(&p, "status.containerStatuses.0.state.waiting.reason")
                    == "CreateContainerError"
                    && field(&p, "status.containerStatuses.0.state.waiting.message").contains(why)
            },
        );
        assert!(
            !Path::new("/tmp").join(&escape).exists(),
            "{name} wrote outside the store"
        );
        c.shoal(&["delete", "pod", &format!("evil-{name}")]).ok();
    }
    let scratch_left = std::fs::read_dir(agent.dir.join("images/tmp"))
        .expect("tmp")
        .count();
    assert_eq!(scratch_left, 0, "a refused layer leaves nothing behind");

    // Two containers of one pod share its network (the client reaches the server on
    // 127.0.0.1) and its volumes: a configMap mounted read-only, an emptyDir both write.
    let duo = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: "hi from a configmap"}
---
apiVersion: v1
kind: Pod
metadata: {name: duo}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: settings, configMap: {name: settings}}
  - {name: shared, emptyDir: {}}
  containers:
  - name: server
    image: busybox:1
    command: [sh, -c, "mkdir -p /www && cp /settings/greeting /www/index.html && exec httpd -f -p 9090 -h /www"]
    volumeMounts: [{name: settings, mountPath: /settings, readOnly: true}]
  - name: client
    image: busybox:1
    command: [sh, -c, "until wget -q -O /shared/got http://127.0.0.1:9090/ 2>/dev/null; do sleep 0.2; done; cat /shared/got; echo; touch /settings/x 2>/dev/null || echo read-only; sleep 600"]
    volumeMounts: [{name: settings, mountPath: /settings, readOnly: true}, {name: shared, mountPath: /shared}]
"#;
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(duo))
        .ok();
    c.wait_for(
        "the client container to reach its neighbour",
        Duration::from_secs(60),
        |c| {
            c.shoal(&["logs", "duo", "-c", "client"]).stdout() == "hi from a configmap\nread-only\n"
        },
    );
    c.shoal(&["delete", "pod", "duo"]).ok();

    // Deleting the pods removes their containers and network namespaces.
    c.shoal(&["delete", "deploy", "web"]).ok();
    c.shoal(&["delete", "job", "count"]).ok();
    for p in ["hello", "crasher", "hog", "server", "on-host", "client"] {
        c.shoal(&["delete", "pod", p]).ok();
    }
    c.wait_for("every container gone", Duration::from_secs(60), |c| {
        c.shoal(&["get", "pods", "--no-headers"])
            .stdout()
            .is_empty()
            && Command::new("runc")
                .arg("--root")
                .arg(agent.dir.join("runc"))
                .args(["list", "-q"])
                .output()
                .is_ok_and(|o| o.stdout.is_empty())
    });
    // A pod's network namespace goes after its containers: wait for that too, then name any
    // that stayed (CI once saw one still there right after the containers went).
    let pods: Vec<String> = std::fs::read_dir(agent.dir.join("pods"))
        .expect("pods")
        .flatten()
        .map(|pod| format!("shoal-{}", pod.file_name().to_string_lossy()))
        .collect();
    let netns = || {
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pods.iter().any(|p| netns().contains(p.as_str())) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = netns();
    for name in &pods {
        assert!(!left.contains(name.as_str()), "{name} is left in {left}");
    }
}

#[test]
fn runc_containers_outlive_a_killed_agent_and_are_followed_not_duplicated_when_it_returns() {
    if runc_missing(
        "runc_containers_outlive_a_killed_agent_and_are_followed_not_duplicated_when_it_returns",
    ) {
        return;
    }
    let (mut c, _leftovers) = kit::oci_cluster(62, 1, &[]);
    let scratch = tempfile::tempdir().expect("tmp");
    let layout = busybox_layout(scratch.path());
    c.shoal(&["push", layout.to_str().expect("utf-8"), "busybox:1"])
        .ok();
    let manifests = [
        pod("steady", "busybox:1", "echo started; sleep 600", ""),
        pod("gone", "busybox:1", "echo started; sleep 600", ""),
    ];
    c.controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&manifests.join("---\n")))
        .ok();
    c.wait_for("both pods running", Duration::from_secs(60), |c| {
        ["steady", "gone"]
            .iter()
            .all(|p| c.shoal(&["logs", p]).stdout() == "started\n")
    });
    let ip = field(&c.pod("steady"), "status.podIP");
    let runc_list = kit::runc_list;
    let dir = c.agents[0].dir.clone();
    let before = runc_list(&dir);
    assert_eq!(before.len(), 2, "{before:?}");

    // The agent dies (no chance to stop anything); its containers keep running. Meanwhile
    // one pod is deleted.
    let gone_dir = dir.join("pods").join(field(&c.pod("gone"), "metadata.uid"));
    assert!(gone_dir.is_dir());
    c.agents[0].kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runc_list(&dir), before, "the containers outlive the agent");
    c.shoal(&["delete", "pod", "gone"]).ok();
    // The container writes while no agent reads its output: the write goes through (held in
    // its pipe), and reaches its log once the agent is back.
    let steady_id = format!("{}-main", field(&c.pod("steady"), "metadata.uid"));
    let wrote = Command::new("runc")
        .arg("--root")
        .arg(dir.join("runc"))
        .args(["exec", &steady_id, "sh", "-c"])
        .arg("echo while the agent was away > /proc/1/fd/1")
        .status()
        .expect("runc exec");
    assert!(wrote.success(), "a write with no agent reading");

    let token = std::fs::read_to_string(c.controller.dir.join("token")).expect("token");
    let agent = kit::Agent::with(&c.controller, "node-1", &dir)
        .token(token.trim())
        .args(&["--pod-bridge", "shoal-t62"])
        .start();
    c.agents[0] = agent;
    c.wait_for(
        "the deleted pod's container removed",
        Duration::from_secs(60),
        |_| runc_list(&dir).len() == 1,
    );
    // And what it had beside its container: its volumes, namespace and directory.
    c.wait_for(
        "the deleted pod's directory removed",
        Duration::from_secs(30),
        |_| !gone_dir.exists(),
    );
    let steady = c.pod("steady");
    assert_eq!(
        field(&steady, "status.containerStatuses.0.restartCount"),
        "0"
    );
    assert_eq!(
        field(&steady, "status.podIP"),
        ip,
        "the pod kept its address"
    );
    // The returning agent serves the log once it has taken the container back; it must then
    // hold the one start (followed, not started again).
    c.wait_for(
        "the followed pod's log, with one start and what it wrote meanwhile",
        Duration::from_secs(30),
        |c| c.shoal(&["logs", "steady"]).stdout() == "started\nwhile the agent was away\n",
    );
    // Each line timed, the later one no earlier than the first.
    let stamped = c.shoal(&["logs", "steady", "--timestamps"]).ok();
    let times: Vec<&str> = stamped
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(times.len() == 2 && times[0] <= times[1], "{stamped}");
    assert!(
        times
            .iter()
            .all(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{stamped}"
    );
    let since = format!("--since-time={}", times[1]);
    assert_eq!(
        c.shoal(&["logs", "steady", &since]).ok(),
        "while the agent was away\n"
    );
    c.wait_for(
        "the agent saying it follows the container",
        Duration::from_secs(30),
        |c| {
            c.agents[0]
                .log()
                .contains("found the container running; following it")
        },
    );
    c.shoal(&["delete", "pod", "steady"]).ok();
    c.wait_for("no containers left", Duration::from_secs(60), |_| {
        runc_list(&dir).is_empty()
    });
}

#[test]
fn runc_images_lists_what_a_node_holds_and_collects_the_unused_ones() {
    if runc_missing("runc_images_lists_what_a_node_holds_and_collects_the_unused_ones") {
        return;
    }
    // Thresholds of 0%: every image no pod uses goes at the next collection.
    let (c, _leftovers) = kit::oci_cluster(
        63,
        1,
        &[
            "--image-gc-high-threshold",
            "0",
            "--image-gc-low-threshold",
            "0",
        ],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let layout = busybox_layout(dir.path());
    c.shoal(&["push", layout.to_str().expect("utf-8"), "busybox:1"])
        .ok();
    let other = dir.path().join("other");
    let spec = ImageSpec {
        platform: Platform::host(),
        cmd: vec!["true".into()],
        ..Default::default()
    };
    let layer = busybox_layer(Path::new("/bin/busybox")).expect("layer");
    write_layout(&other, "other:1", &[(spec, vec![layer])]).expect("layout");
    c.shoal(&["push", other.to_str().expect("utf-8"), "other:1"])
        .ok();

    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&pod(
                "first",
                "other:1",
                "echo done",
                "  restartPolicy: Never\n",
            )),
        )
        .ok();
    c.wait_for("the first pod done", Duration::from_secs(60), |c| {
        field(&c.pod("first"), "status.phase") == "Succeeded"
    });
    let listed = c.shoal(&["images"]).ok();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("node-1") && l.contains("other:1")),
        "{listed}"
    );
    c.shoal(&["delete", "pod", "first"]).ok();

    // A new image arrives: collection runs, and removes other:1, which nothing uses now.
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&pod("second", "busybox:1", "sleep 600", "")),
        )
        .ok();
    c.wait_for("other:1 collected", Duration::from_secs(60), |c| {
        let listed = c.shoal(&["images"]).stdout();
        !listed.contains("other:1") && listed.contains("busybox:1")
    });
    let listed = c.shoal(&["images"]).ok();
    let line = listed
        .lines()
        .find(|l| l.contains("busybox:1"))
        .expect("busybox listed");
    let platform = Platform::host();
    assert!(
        line.contains(&format!("linux/{}", platform.architecture)) && line.contains(" yes "),
        "{listed}"
    );
    assert!(
        c.agents[0].log().contains("image garbage collection"),
        "{}",
        c.agents[0].log()
    );
    // The image in use is whole: the pod still runs and a new one of it starts.
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(&pod("third", "busybox:1", "echo again; sleep 600", "")),
        )
        .ok();
    c.wait_for(
        "a third pod from the kept image",
        Duration::from_secs(60),
        |c| c.shoal(&["logs", "third"]).stdout() == "again\n",
    );
    // As the kubelet: the node's copy ran without asking the controller (IfNotPresent).
    let described = c.shoal(&["describe", "pod", "third"]).ok();
    assert!(
        described.contains("Container image \"busybox:1\" already present on machine"),
        "{described}"
    );
    // other:1 was collected, and a pod that may not pull it waits, saying why.
    c.controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some(
                &pod("never", "other:1", "true", "  restartPolicy: Never\n")
                    .replace("    image:", "    imagePullPolicy: Never\n    image:"),
            ),
        )
        .ok();
    c.wait_for("ErrImageNeverPull", Duration::from_secs(30), |c| {
        let p = c.pod("never");
        field(&p, "status.containerStatuses.0.state.waiting.reason") == "ErrImageNeverPull"
            && field(&p, "status.containerStatuses.0.state.waiting.message")
                .contains("imagePullPolicy is Never")
    });
    for p in ["second", "third", "never"] {
        c.shoal(&["delete", "pod", p]).ok();
    }
    let root = c.agents[0].dir.join("runc");
    c.wait_for("no containers left", Duration::from_secs(60), |_| {
        Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
            .is_ok_and(|o| o.stdout.is_empty())
    });
}

/// Host devices as the node's admin gives them (`--device`): the node advertises the one it
/// has, a pod that asks for it gets it at the path named, a second one stays Pending with the
/// resource named until the first is gone, a pod that did not ask has no such device, and a
/// wasm pod gets it as a file under /dev. The device is a null device the test makes (a pty
/// cannot serve: the kernel opens a pty only through its own devpts).
#[test]
fn runc_devices_reach_the_pods_that_asked_and_no_more_pods_than_the_node_has() {
    if runc_missing("runc_devices_reach_the_pods_that_asked_and_no_more_pods_than_the_node_has") {
        return;
    }
    let scratch = tempfile::tempdir().expect("tmp");
    let sensor = scratch.path().join("sensor0");
    let made = Command::new("mknod")
        .arg(&sensor)
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(made.success(), "mknod {}", sensor.display());
    let device = format!("devices.shoal.dev/serial={}:/dev/ttyS9", sensor.display());
    let (c, _leftovers) = kit::oci_cluster(69, 1, &["--device", &device]);
    let node: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "node-1", "-o", "json"]).ok())
            .expect("node");
    assert_eq!(
        node["status"]["allocatable"]["devices.shoal.dev/serial"],
        "1"
    );
    kit::push_busybox(&c);
    let serial = |name: &str, script: &str| {
        pod(name, "busybox:1", script, "").replace(
            "resources: {requests: {cpu: 10m, memory: 8Mi}}",
            "resources: {requests: {cpu: 10m, memory: 8Mi}, limits: {devices.shoal.dev/serial: 1}}",
        )
    };
    let script = |who: &str| {
        format!("ls -l /dev/ttyS9; echo reading > /dev/ttyS9 && cat /dev/ttyS9 && echo {who} used it; sleep 600")
    };
    c.apply(&serial("serial-a", &script("a")));
    c.wait_for("serial-a to use its device", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "serial-a"])
            .stdout()
            .contains("a used it")
    });
    let logs = c.shoal(&["logs", "serial-a"]).ok();
    assert!(
        logs.starts_with("crw-") && logs.contains("1,   3"),
        "the node's own device, as on the host: {logs}"
    );

    c.apply(&serial("serial-b", &script("b")));
    c.apply(&pod(
        "plain",
        "busybox:1",
        "test -e /dev/ttyS9 && echo present || echo absent",
        "  restartPolicy: Never\n",
    ));
    c.wait_for(
        "the pod that did not ask to finish",
        Duration::from_secs(60),
        |c| c.pod("plain")["status"]["phase"] == "Succeeded",
    );
    assert_eq!(c.shoal(&["logs", "plain"]).ok().trim(), "absent");
    let b = c.pod("serial-b");
    assert_eq!(b["status"]["phase"], "Pending", "{b}");
    assert!(
        field(&b, "spec.nodeName").is_empty(),
        "no node has a free device: {b}"
    );
    assert!(
        b["status"]["conditions"]
            .to_string()
            .contains("insufficient devices.shoal.dev/serial"),
        "{b}"
    );

    // The device is free once its pod is gone: the waiting pod gets it.
    c.shoal(&["delete", "pod", "serial-a"]).ok();
    c.wait_for(
        "serial-b to use the freed device",
        Duration::from_secs(60),
        |c| {
            c.shoal(&["logs", "serial-b"])
                .stdout()
                .contains("b used it")
        },
    );
    c.shoal(&["delete", "pod", "serial-b"]).ok();

    let probe = c.push_probe_component();
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: serial-wasm}}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {probe}\n    args: [write, /dev/ttyS9, reading, cat, /dev/ttyS9, print, wasm used it]\n    resources: {{limits: {{devices.shoal.dev/serial: 1}}}}\n"
    ));
    c.wait_for("the wasm pod to finish", Duration::from_secs(60), |c| {
        let phase = c.pod("serial-wasm")["status"]["phase"].clone();
        phase == "Succeeded" || phase == "Failed"
    });
    let logs = c.shoal(&["logs", "serial-wasm"]).ok();
    assert_eq!(logs.trim(), "wasm used it");
}
