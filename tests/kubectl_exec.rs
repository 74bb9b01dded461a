//! `kubectl exec` (and `attach`, `port-forward`, `delete --grace-period`) through the HTTPS
//! door, the controller and the node's real runc (root): output on its own channels, input
//! through a pipe and its end, the exit code, a terminal (under `script`, so kubectl has one to
//! give), and the refusals: a container the pod lacks, a wasm pod, a node's credential. Then
//! requests through `kubectl port-forward` to an OCI and a wasm pod, and deletions that cut a
//! pod's grace period short. Needs runc, root and kubectl: skipped, saying why, where they are
//! missing; fails instead when SHOAL_REQUIRE_RUNC=1 / SHOAL_REQUIRE_KUBECTL=1 (CI sets both).

mod kit;

use kit::kubectl::{fails, kubectl, kubectl_as, kubectl_missing, ok};
use kit::{field, runc_missing};
use std::time::Duration;

#[test]
fn runc_kubectl_exec_runs_commands_in_containers() {
    let test = "runc_kubectl_exec_runs_commands_in_containers";
    if runc_missing(test) || kubectl_missing(test) {
        return;
    }
    let (c, _leftovers) = kit::oci_cluster(87, 1, &[]);
    kit::push_busybox(&c);
    let probe = c.push_probe();
    let idle = "trap 'exit 0' TERM; while :; do sleep 1; done";
    let ticks = "trap 'exit 0' TERM; while :; do echo tick; sleep 0.3; done";
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, {idle:?}]
    env: [{{name: GREETING, value: from the spec}}]
  - name: side
    image: busybox:1
    command: [sh, -c, {ticks:?}]
---
apiVersion: v1
kind: Pod
metadata: {{name: module}}
spec:
  runtimeClassName: wasm
  containers:
  - name: probe
    image: {probe}
    args: [sleep, "600000"]
"#
    ));
    c.wait_for("both pods running", Duration::from_secs(90), |c| {
        field(&c.pod("shell"), "status.phase") == "Running"
            && field(&c.pod("module"), "status.phase") == "Running"
    });

    // Output comes back on its own channels, the exit code becomes kubectl's, and the
    // command runs as the container's process would (its environment).
    let out = kubectl(
        &c,
        &[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; echo to-stderr >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the spec\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );

    // Input through a pipe, larger than one message, and its end (cat exits on it).
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let out = kubectl_as(
        &c.controller.config(),
        &c,
        &[
            "exec",
            "-i",
            "shell",
            "-c",
            "side",
            "--",
            "sh",
            "-c",
            "wc -c; hostname",
        ],
        Some(&input),
    );
    let text = ok(out, "exec -i");
    let mut lines = text.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some(input.len().to_string().as_str())
    );
    assert_eq!(lines.next(), Some("shell"), "{text}");

    // A terminal: kubectl gives one when it has one itself (script provides it), and the
    // command sees a terminal of kubectl's size.
    let script = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty cols 91 rows 17; kubectl --cache-dir {} exec -it shell -c main -- sh -c 'tty; stty size'",
            c.controller.config().with_file_name("kube-cache").display()
        ))
        .arg("/dev/null")
        .env("KUBECONFIG", c.controller.config())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (bsdutils) runs");
    let text = String::from_utf8_lossy(&script.stdout);
    assert!(script.status.success(), "{text}");
    assert!(text.contains("/dev/pts/"), "a terminal: {text}");
    assert!(text.contains("17 91"), "kubectl's size: {text}");

    // A caller that goes away ends its command (SIGTERM through runc), not left running.
    let (mut away, started) = first_line(
        &c,
        &[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo $$ > /tmp/held; echo started; exec sleep 1000",
        ],
    );
    assert_eq!(started, "started\n");
    away.kill().expect("kubectl killed");
    let _ = away.wait();
    let alive = "kill -0 $(cat /tmp/held) 2>/dev/null";
    c.wait_for(
        "the abandoned command ended",
        Duration::from_secs(30),
        |c| {
            !kubectl(c, &["exec", "shell", "-c", "main", "--", "sh", "-c", alive])
                .status
                .success()
        },
    );

    // kubectl attach shows what the container writes from now on.
    let (mut attached, line) = first_line(&c, &["attach", "shell", "-c", "side"]);
    assert_eq!(line, "tick\n");
    attached.kill().expect("kubectl killed");
    let _ = attached.wait();
    let e = fails(
        kubectl(&c, &["attach", "-i", "shell", "-c", "side"]),
        "attach with input",
    );
    assert!(e.contains("take no input"), "{e}");

    // What cannot be is refused, saying why, before anything runs.
    let e = fails(
        kubectl(&c, &["exec", "shell", "-c", "nope", "--", "true"]),
        "exec into a missing container",
    );
    assert!(e.contains("container \"nope\" is not valid"), "{e}");
    let e = fails(
        kubectl(&c, &["exec", "module", "--", "true"]),
        "exec into a wasm pod",
    );
    assert!(
        e.contains("a wasm pod has no processes to exec into"),
        "{e}"
    );
    let node_config = c.agents[0].dir.join("node.conf");
    let e = fails(
        kubectl_as(&node_config, &c, &["exec", "shell", "--", "true"], None),
        "exec with a node's credential",
    );
    assert!(e.contains("Forbidden") || e.contains("forbidden"), "{e}");

    // The QUIC door's own verb runs the same.
    let out = c.shoal(&[
        "exec",
        "shell",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "echo hi; exit 4",
    ]);
    assert_eq!(out.0.status.code(), Some(4), "{}", out.stderr());
    assert_eq!(out.stdout(), "hi\n");

    port_forward_reaches_a_pods_port(&c);
    deletions_take_their_own_grace_period(&c);
}

/// `kubectl port-forward` to a busybox httpd (requests through it on several connections,
/// one of them a megabyte) and to a wasm pod's declared port; a wasm pod's undeclared port
/// and a node's credential are refused.
fn port_forward_reaches_a_pods_port(c: &kit::Cluster) {
    let serve = "mkdir -p /www && echo hello-from-web > /www/index.html && head -c 1048576 /dev/urandom > /www/big && exec httpd -f -p 8080 -h /www";
    let probe = c.push_probe_component();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: httpd
    image: busybox:1
    command: [sh, -c, {serve:?}]
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: wasm-web}}
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: {probe}
    args: [serve, "18787", hello from wasm]
    ports: [{{containerPort: 18787}}]
    readinessProbe: {{tcpSocket: {{port: 18787}}, periodSeconds: 1}}
"#
    ));
    c.wait_for("both ready", Duration::from_secs(90), |c| {
        ["web", "wasm-web"].iter().all(|name| {
            let pod = c.pod(name);
            let conditions = pod["status"]["conditions"].as_array().cloned();
            conditions
                .unwrap_or_default()
                .iter()
                .any(|k| k["type"] == "Ready" && k["status"] == "True")
        })
    });

    let web = Forward::start(c, "pod/web", 8080);
    for _ in 0..3 {
        let answer =
            String::from_utf8_lossy(&web.get("/index.html").expect("an answer")).into_owned();
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
            "{answer}"
        );
        assert!(answer.ends_with("hello-from-web\n"), "{answer}");
    }
    let big = web.get("/big").expect("the big answer");
    let body = big
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| big.len() - i - 4);
    assert_eq!(body, Some(1_048_576), "the whole megabyte came through");
    web.stop();
    let quic = Forward::shoal(c, "pod/web", 8080);
    let answer = String::from_utf8_lossy(&quic.get("/index.html").expect("an answer")).into_owned();
    assert!(answer.ends_with("hello-from-web\n"), "{answer}");
    quic.stop();

    let wasm = Forward::start(c, "pod/wasm-web", 18787);
    let answer = String::from_utf8_lossy(&wasm.get("/").expect("an answer")).into_owned();
    assert!(answer.ends_with("hello from wasm"), "{answer}");
    wasm.stop();
    // A wasm pod shares its node's address: only its declared ports are reached. kubectl
    // gives up on the first connection, saying why.
    let undeclared = Forward::start(c, "pod/wasm-web", 18788);
    let _ = undeclared.get("/");
    let e = undeclared.ended();
    assert!(e.contains("declares no TCP containerPort 18788"), "{e}");

    let node_config = c.agents[0].dir.join("node.conf");
    let e = fails(
        kubectl_as(&node_config, c, &["port-forward", "pod/web", ":8080"], None),
        "port-forward with a node's credential",
    );
    assert!(e.contains("Forbidden") || e.contains("forbidden"), "{e}");
}

/// A `kubectl port-forward` (or `shoal port-forward`) running, on the local port it chose.
struct Forward {
    process: std::process::Child,
    local: u16,
    stderr: tempfile::NamedTempFile,
}

impl Forward {
    fn start(c: &kit::Cluster, target: &str, port: u16) -> Forward {
        let mut kubectl = std::process::Command::new("kubectl");
        kubectl.env("KUBECONFIG", c.controller.config());
        Forward::run(kubectl, target, port)
    }

    /// The same through the QUIC door: `shoal port-forward`.
    fn shoal(c: &kit::Cluster, target: &str, port: u16) -> Forward {
        let mut shoal = std::process::Command::new(kit::shoal_bin());
        shoal.env("SHOAL_CONFIG", c.controller.config());
        Forward::run(shoal, target, port)
    }

    fn run(mut command: std::process::Command, target: &str, port: u16) -> Forward {
        let stderr = tempfile::NamedTempFile::new().expect("a file for the errors");
        let mut process = command
            .args(["port-forward", "--address", "127.0.0.1", target])
            .arg(format!(":{port}"))
            .stdout(std::process::Stdio::piped())
            .stderr(stderr.reopen().expect("kubectl's stderr"))
            .spawn()
            .expect("kubectl runs");
        let mut out = std::io::BufReader::new(process.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("its first line");
        // The rest is read and dropped: a Go program writing to a closed stdout dies of SIGPIPE.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let local = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no local port in {line:?}"));
        Forward {
            process,
            local,
            stderr,
        }
    }

    /// An HTTP/1.0 GET of `path` through the forward: the whole answer.
    fn get(&self, path: &str) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.local))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        Ok(answer)
    }

    /// Waits (a while) for it to end by itself, as kubectl does when the pod refuses, and
    /// returns what it wrote to stderr.
    fn ended(mut self) -> String {
        for _ in 0..100 {
            if self.process.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop()
    }

    /// Ends it and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.process.kill();
        let _ = self.process.wait();
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

/// Two pods that ignore SIGTERM and would be given 10 minutes to stop: a deletion's own grace
/// period (`kubectl delete --now`, `shoal delete --grace-period 0`) stops them within it.
fn deletions_take_their_own_grace_period(c: &kit::Cluster) {
    let beats = tempfile::tempdir().expect("tempdir");
    let stubborn =
        "trap '' TERM; i=0; while :; do i=$((i+1)); echo $i > /beats/$HOSTNAME; sleep 0.2; done";
    for name in ["stubborn-a", "stubborn-b"] {
        c.apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 600
  volumes: [{{name: beats, hostPath: {{path: {dir}}}}}]
  containers:
  - name: main
    image: busybox:1
    command: [sh, -c, {stubborn:?}]
    volumeMounts: [{{name: beats, mountPath: /beats}}]
"#,
            dir = beats.path().display()
        ));
    }
    let beat = |name: &str| std::fs::read_to_string(beats.path().join(name)).unwrap_or_default();
    let beating = |name: &str| {
        let before = beat(name);
        std::thread::sleep(Duration::from_millis(1500));
        !before.is_empty() && beat(name) != before
    };
    c.wait_for(
        "both stubborn pods beating",
        Duration::from_secs(90),
        |_| beating("stubborn-a") && beating("stubborn-b"),
    );

    ok(
        kubectl(c, &["delete", "pod", "stubborn-a", "--now"]),
        "delete --now",
    );
    c.shoal(&["delete", "pod", "stubborn-b", "--grace-period", "0"])
        .ok();
    // Their spec's 600 s would keep both beating for ten minutes.
    c.wait_for(
        "both stopped within their deletion's grace",
        Duration::from_secs(60),
        |_| !beating("stubborn-a") && !beating("stubborn-b"),
    );
}

/// Starts kubectl with `args` and reads the first line it prints (the rest is drained); the
/// caller ends it.
fn first_line(c: &kit::Cluster, args: &[&str]) -> (std::process::Child, String) {
    let mut child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", c.controller.config())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("kubectl's first line");
    // The rest is read and dropped: a Go program writing to a closed stdout dies of SIGPIPE.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, line)
}
