//! The test kit: starts real `shoal` processes, each with its own data dir, and runs the CLI
//! against them. Every end-to-end test goes through it.
#![allow(dead_code)]

pub mod kubectl;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// The binary agents run (those of [`Hosts`] and [`Agent::with`]): `SHOAL_AGENT_BIN` when set
/// (a bench comparing builds, or the tests run against the agent flavour of
/// `build-static.sh`), else the one cargo built.
pub fn agent_bin() -> std::ffi::OsString {
    std::env::var_os("SHOAL_AGENT_BIN").unwrap_or_else(|| shoal_bin().into())
}

/// A `shoal controller` process.
pub struct Controller {
    child: Option<Child>,
    pub dir: PathBuf,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Controller {
    /// Starts a controller on `dir`, on a free loopback port, and waits until it serves.
    pub fn start(dir: &Path) -> Controller {
        Controller::start_with_args(dir, &[])
    }

    pub fn start_with_args(dir: &Path, extra: &[&str]) -> Controller {
        Controller::start_listening(dir, "127.0.0.1:0", extra)
    }

    /// A controller listening on `listen` (an address of a test's own network, say).
    pub fn start_listening(dir: &Path, listen: &str, extra: &[&str]) -> Controller {
        let mut child = Command::new(shoal_bin())
            .args(["controller", "--listen", listen, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("SHOAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal controller");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("shoal controller listening on ") {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("controller did not start:\n{}", log.lock().unwrap());
            }
        };
        Controller {
            child: Some(child),
            dir: dir.to_path_buf(),
            addr,
            log,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs the CLI against this controller.
    pub fn shoal(&self, args: &[&str]) -> Run {
        self.shoal_stdin(args, None)
    }

    pub fn shoal_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(shoal_bin());
        cmd.args(args).env("SHOAL_CONFIG", self.config());
        Run(output_of(cmd, stdin))
    }

    /// SIGKILL, as a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn credentials(&self) -> shoal_transport::Credentials {
        shoal_transport::Credentials::load(&self.config()).expect("admin.conf")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The outcome of one CLI run, with helpers that say what went wrong when a test fails.
pub struct Run(pub Output);

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.0.status.success(),
            "shoal failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn fails(&self) -> String {
        assert!(
            !self.0.status.success(),
            "shoal should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

/// Runs `cmd` to its end with `stdin` (or none) as its input; its output.
pub fn output_of(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the program runs");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        pipe.write_all(text.as_bytes())
            .expect("the program's stdin");
    }
    child.wait_with_output().expect("the program finishes")
}

/// A number from the environment, or `default` (the benches' sizes).
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Builds the wasm fixtures from `examples/wasm` once per test binary and returns the path of
/// `NAME.wasm` for `target` (`wasm32-wasip1` modules or `wasm32-wasip2` components).
pub fn wasm_fixture(name: &str, target: &str) -> PathBuf {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-fixtures");
        // The host build is the reference the wasm builds are compared with.
        for t in ["wasm32-wasip1", "wasm32-wasip2", env!("SHOAL_HOST_TARGET")] {
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--target",
                    t,
                    "--manifest-path",
                ])
                .arg(repo_path("examples/wasm/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir)
                // The wasi:http component links against its host's imports: wasm only.
                .args(if t.starts_with("wasm32") {
                    &[][..]
                } else {
                    &["--workspace", "--exclude", "http-hello"][..]
                })
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "building the wasm fixtures for {t} failed (rustup target add {t}):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(target_dir)
    });
    match dir {
        Ok(d) if target.starts_with("wasm32") => {
            d.join(target).join("release").join(format!("{name}.wasm"))
        }
        Ok(d) => d.join(target).join("release").join(name),
        Err(e) => panic!("{e}"),
    }
}

/// The same fixture built for this machine, as the reference for WASI behaviour.
pub fn native_fixture(name: &str) -> PathBuf {
    wasm_fixture(name, env!("SHOAL_HOST_TARGET"))
}

/// A `shoal agent` process.
pub struct Agent {
    child: Option<Child>,
    pub name: String,
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
    /// The pod bridge of an agent in the machine's own network namespace: what it changed
    /// there (its nftables table, forwarding) is undone when its cluster ends.
    root_bridge: Option<String>,
}

impl Agent {
    /// An agent of `controller` with the controller's bootstrap token.
    pub fn start(controller: &Controller, name: &str, dir: &Path) -> Agent {
        Agent::with(controller, name, dir).start()
    }

    /// An agent set up step by step: `Agent::with(&c, "pi", dir).token(t).args(&[..]).start()`.
    pub fn with<'a>(controller: &'a Controller, name: &str, dir: &Path) -> AgentSpec<'a> {
        AgentSpec {
            controller,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            token: None,
            args: Vec::new(),
            program: vec![agent_bin()],
        }
    }

    fn spawn(spec: AgentSpec<'_>) -> Agent {
        let AgentSpec {
            controller,
            name,
            dir,
            token,
            args: extra,
            program,
        } = spec;
        let token = token.unwrap_or_else(|| {
            std::fs::read_to_string(controller.dir.join("token"))
                .expect("token")
                .trim()
                .to_string()
        });
        let (name, dir) = (name.as_str(), dir.as_path());
        let root_bridge = (program.len() == 1).then(|| {
            (extra.iter())
                .skip_while(|a| *a != "--pod-bridge")
                .nth(1)
                .cloned()
                .unwrap_or_else(|| "shoal0".to_string())
        });
        let mut child = Command::new(&program[0])
            .args(&program[1..])
            .args(["agent", "--server", &controller.addr])
            // An empty token: the test gives it another way (--token-file in `extra`).
            .args(if token.is_empty() {
                vec![]
            } else {
                vec!["--token", token.as_str()]
            })
            .args(["--name", name, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("SHOAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Agent {
            child: Some(child),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            log,
            root_bridge,
        }
    }
}

/// How an agent is to be started (see [`Agent::with`]).
pub struct AgentSpec<'a> {
    controller: &'a Controller,
    name: String,
    dir: PathBuf,
    /// `None`: the controller's bootstrap token; empty: none (the test gives it another way,
    /// `--token-file` in the args).
    token: Option<String>,
    args: Vec<String>,
    /// The command line before `agent ...` (qemu and an ARM build of shoal, say).
    program: Vec<std::ffi::OsString>,
}

impl AgentSpec<'_> {
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn program(mut self, program: &[&std::ffi::OsStr]) -> Self {
        self.program = program.iter().map(|p| p.to_os_string()).collect();
        self
    }

    pub fn start(self) -> Agent {
        Agent::spawn(self)
    }
}

impl Agent {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Asks the agent to stop, as systemd or Ctrl-C does (SIGTERM).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("kill -TERM");
            assert!(sent.success(), "SIGTERM to agent {pid}");
        }
    }

    /// Waits for the process to exit by itself (for agents that must fail).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// At most this many clusters run at once in one test binary: each is several processes, and
/// a 2-core machine running more of them at once starves them all.
const CONCURRENT_CLUSTERS: usize = 2;

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

/// A place among the clusters allowed to run; given back when dropped.
pub struct Slot;

impl Slot {
    pub fn take() -> Slot {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= CONCURRENT_CLUSTERS {
            n = FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        FREED.notify_one();
    }
}

impl Drop for Cluster {
    /// The agents stopped, and what those in the machine's namespace changed in it undone
    /// (as `shoal reset` would), so a test leaves no table or forwarding switch behind.
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill9();
            if let Some(bridge) = &a.root_bridge {
                let _ = shoal_runtime::oci::nat::remove(bridge, &a.dir);
            }
        }
    }
}

/// A controller and N agents, each a real process with its own data dir.
pub struct Cluster {
    pub controller: Controller,
    pub agents: Vec<Agent>,
    _dir: tempfile::TempDir,
    _slot: Slot,
}

impl Cluster {
    /// Starts the cluster and waits until every agent's node is Ready.
    pub fn start(agents: usize) -> Cluster {
        let slot = Slot::take();
        let dir = tempfile::tempdir().expect("tempdir");
        let controller = Controller::start(&dir.path().join("controller"));
        let agents: Vec<Agent> = (1..=agents)
            .map(|i| {
                Agent::start(
                    &controller,
                    &format!("node-{i}"),
                    &dir.path().join(format!("agent-{i}")),
                )
            })
            .collect();
        let cluster = Cluster {
            controller,
            agents,
            _dir: dir,
            _slot: slot,
        };
        cluster.wait_nodes_ready();
        cluster
    }

    /// A cluster around processes a test started itself (with flags of its own).
    pub fn adopt(controller: Controller, agents: Vec<Agent>) -> Cluster {
        Cluster {
            controller,
            agents,
            _dir: tempfile::tempdir().expect("tempdir"),
            _slot: Slot::take(),
        }
    }

    pub fn shoal(&self, args: &[&str]) -> Run {
        self.controller.shoal(args)
    }

    /// Waits until every agent's node is Ready.
    pub fn wait_nodes_ready(&self) {
        let names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        self.wait_for("every node Ready", Duration::from_secs(60), |c| {
            let out = c.shoal(&["get", "nodes", "--no-headers"]).stdout();
            names.iter().all(|n| {
                out.lines()
                    .any(|l| l.split_whitespace().take(2).eq([n.as_str(), "Ready"]))
            })
        });
    }

    /// Pushes the probe fixture as a WASI p2 component, `probe:2`.
    pub fn push_probe_component(&self) -> &'static str {
        let wasm = wasm_fixture("probe", "wasm32-wasip2");
        self.shoal(&["push", wasm.to_str().expect("utf-8 path"), "probe:2"])
            .ok();
        "probe:2"
    }

    /// Keeps `dir` (the processes' data) until the cluster is dropped.
    pub fn keep(mut self, dir: tempfile::TempDir) -> Cluster {
        self._dir = dir;
        self
    }

    /// Polls `check` until it holds; on timeout, fails with the cluster's logs.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Cluster) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let agents: Vec<String> = self
            .agents
            .iter()
            .map(|a| format!("--- agent {}:\n{}", a.name, a.log()))
            .collect();
        panic!(
            "timed out waiting for {what}\npods:\n{}\n--- controller:\n{}\n{}",
            self.shoal(&["get", "pods", "-A", "-o", "wide"]).stdout(),
            self.controller.log(),
            agents.join("\n")
        );
    }

    /// `shoal apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        self.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(yaml))
            .ok();
    }

    /// The pods matching `selector`, as JSON objects.
    pub fn pods(&self, selector: &str) -> Vec<serde_json::Value> {
        let out = self
            .shoal(&["get", "pods", "-l", selector, "-o", "json"])
            .stdout();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        // One match prints as the object itself, more as a List.
        match v["items"].as_array() {
            Some(items) => items.clone(),
            None if v["kind"] == "Pod" => vec![v],
            None => vec![],
        }
    }

    /// The pod as JSON.
    pub fn pod(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.shoal(&["get", "pod", name, "-o", "json"]).ok())
            .expect("pod JSON")
    }

    /// Waits until the controller's reconcile loop has run a whole pass that began after this
    /// call, so that a negative check made next ("no more pods") does not race a pass still
    /// under way. Two ReplicaSets mark the passes (their pods can be scheduled nowhere): the
    /// second is written only once the first's pod exists, so the pass that makes the
    /// second's pod began after the pass that made the first's had ended.
    pub fn wait_reconcile_pass(&self) {
        static MARKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MARKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let names = [format!("pass-mark-{n}-a"), format!("pass-mark-{n}-b")];
        for name in &names {
            self.apply(&format!(
                "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{pass-mark: {name}}}}}\n  template:\n    metadata: {{labels: {{pass-mark: {name}}}}}\n    spec:\n      nodeSelector: {{pass-mark: nowhere}}\n      containers: [{{name: mark, image: pass-mark:1}}]\n"
            ));
            let selector = format!("pass-mark={name}");
            self.wait_for("a reconcile pass", Duration::from_secs(30), |c| {
                !c.pods(&selector).is_empty()
            });
        }
        for name in &names {
            self.shoal(&["delete", "replicaset", name]).ok();
        }
    }
}

/// Resident memory of a process, KiB (for benchmarks).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl Cluster {
    /// Pushes the probe fixture (a WASI p1 module) to the controller as `probe:1`.
    pub fn push_probe(&self) -> &'static str {
        let wasm = wasm_fixture("probe", "wasm32-wasip1");
        self.shoal(&["push", wasm.to_str().expect("utf-8 path"), "probe:1"])
            .ok();
        "probe:1"
    }
}

/// Every change to the pods matching a selector from now on, for checks that must hold at each
/// revision the store went through (not at a sample of them).
pub struct PodWatch {
    rt: tokio::runtime::Runtime,
    stream: shoal_transport::ResponseStream,
    _client: shoal_transport::Client,
}

impl PodWatch {
    /// Lists the matching pods and watches from that list's revision; returns the list too.
    pub fn start(c: &Cluster, selector: &str) -> (PodWatch, Vec<Vec<u8>>) {
        use shoal_transport::proto::{Request, Response};
        // A runtime of its own keeps the connection alive while the CLI runs in between.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(shoal_transport::Client::connect(
                &c.controller.credentials(),
            ))
            .expect("connect");
        let list = Request::List {
            kind: "Pod".into(),
            namespace: Some("default".into()),
            selector: selector.into(),
            fields: String::new(),
        };
        let (items, revision) = match rt.block_on(client.call(&list)).expect("list") {
            Response::List { items, revision } => (items, revision),
            other => panic!("{other:?}"),
        };
        let watch = Request::Watch {
            kind: "Pod".into(),
            namespace: Some("default".into()),
            selector: selector.into(),
            fields: String::new(),
            revision,
        };
        let stream = rt.block_on(client.stream(&watch)).expect("watch");
        (
            PodWatch {
                rt,
                stream,
                _client: client,
            },
            items,
        )
    }

    /// The next change, `None` if there was none within `wait`; panics if the watch ends.
    pub fn next(&mut self, wait: Duration) -> Option<(shoal_transport::proto::EventType, Vec<u8>)> {
        use shoal_transport::proto::Response;
        let stream = &mut self.stream;
        match self
            .rt
            .block_on(async { tokio::time::timeout(wait, stream.next()).await })
        {
            Err(_) => None,
            Ok(Ok(Some(Response::Event { type_, object, .. }))) => Some((type_, object)),
            Ok(other) => panic!("the watch ended: {other:?}"),
        }
    }
}

/// Why these tests cannot run here, if they cannot.
/// Says that `test` did not run and why, on the test binary's real stderr (libtest captures
/// `eprintln!` of a passing test, and a test that returns early passes): `.ci/run` counts
/// these lines, so a skip is reported as a skip.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

pub fn runc_missing(test: &str) -> bool {
    let why = if !Path::new("/bin/busybox").exists() {
        Some("busybox is not installed (apt-get install busybox-static)".to_string())
    } else {
        shoal_runtime::oci::find_runc().err()
    };
    match why {
        None => false,
        Some(why) => {
            if std::env::var("SHOAL_REQUIRE_RUNC").as_deref() == Ok("1") {
                panic!("{test} needs runc, root and busybox: {why} (apt-get install runc busybox-static)");
            }
            skipped(test, &why);
            true
        }
    }
}

/// Removes what the agents left in runc and in network namespaces: the agents are killed when
/// the test ends, and their containers (which outlive an agent by design) must not.
pub struct Leftovers(pub Vec<PathBuf>, pub Option<String>);

/// A cluster for OCI pods: its own pod range (`10.N.0.0/16`) and its agents on their own
/// bridge, so clusters of tests running at once never share addresses.
/// The containers runc holds for the agent whose data directory is `agent_dir`, sorted.
pub fn runc_list(agent_dir: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(agent_dir.join("runc"))
        .args(["list", "-q"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut ids: Vec<String> = out.lines().map(str::to_owned).collect();
    ids.sort();
    ids
}

pub fn oci_cluster(n: u8, agents: usize, agent_args: &[&str]) -> (Cluster, Leftovers) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cidr = format!("10.{n}.0.0/16");
    let bridge = format!("shoal-t{n}");
    let controller =
        Controller::start_with_args(&dir.path().join("controller"), &["--cluster-cidr", &cidr]);
    let token = std::fs::read_to_string(controller.dir.join("token")).expect("token");
    let mut args = vec!["--pod-bridge", bridge.as_str()];
    args.extend_from_slice(agent_args);
    let agents: Vec<Agent> = (1..=agents)
        .map(|i| {
            Agent::with(
                &controller,
                &format!("node-{i}"),
                &dir.path().join(format!("agent-{i}")),
            )
            .token(token.trim())
            .args(&args)
            .start()
        })
        .collect();
    let leftovers = Leftovers(
        agents.iter().map(|a| a.dir.clone()).collect(),
        Some(bridge.clone()),
    );
    let cluster = Cluster::adopt(controller, agents).keep(dir);
    cluster.wait_nodes_ready();
    (cluster, leftovers)
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for dir in &self.0 {
            let root = dir.join("runc");
            let ids = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            for id in ids.lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .output();
            }
            for pod in std::fs::read_dir(dir.join("pods"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let ns = format!("shoal-{}", pod.file_name().to_string_lossy());
                if Path::new("/var/run/netns").join(&ns).exists() {
                    let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
                }
                // subPath binds (pods/UID/subpaths/CONTAINER/N), before the tempdir goes.
                for c in std::fs::read_dir(pod.path().join("subpaths"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    for m in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                        let _ = Command::new("umount").arg("-l").arg(m.path()).output();
                    }
                }
            }
            for c in std::fs::read_dir(dir.join("containers"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(c.path().join("rootfs"))
                    .output();
            }
        }
        if let Some(bridge) = &self.1 {
            // The pods' outbound NAT, and forwarding as it was (in this namespace: hosts'
            // agents change only theirs).
            for dir in &self.0 {
                let _ = shoal_runtime::oci::nat::remove(bridge, dir);
            }
            let _ = Command::new("ip").args(["link", "delete", bridge]).output();
        }
    }
}

/// Applies a pod (in the default namespace) and waits for the watch to show it Running; how long
/// that took (for benchmarks).
pub async fn apply_until_running(
    client: &shoal_transport::Client,
    name: &str,
    pod: Vec<u8>,
) -> Duration {
    let revision = match client
        .call(&shoal_transport::proto::Request::List {
            kind: "Namespace".into(),
            namespace: None,
            selector: String::new(),
            fields: String::new(),
        })
        .await
        .expect("list")
    {
        shoal_transport::proto::Response::List { revision, .. } => revision,
        other => panic!("{other:?}"),
    };
    let mut watch = client
        .stream(&shoal_transport::proto::Request::Watch {
            kind: "Pod".into(),
            namespace: Some("default".into()),
            selector: String::new(),
            fields: String::new(),
            revision,
        })
        .await
        .expect("watch");
    let start = std::time::Instant::now();
    match client
        .call(&shoal_transport::proto::Request::Apply { objects: vec![pod] })
        .await
        .expect("apply")
    {
        shoal_transport::proto::Response::Applied(_) => {}
        other => panic!("{other:?}"),
    }
    loop {
        match watch.next().await.expect("watch") {
            Some(shoal_transport::proto::Response::Event { object, .. }) => {
                let v: serde_json::Value = serde_json::from_slice(&object).expect("pod");
                if v["metadata"]["name"] == name && v["status"]["phase"] == "Running" {
                    return start.elapsed();
                }
            }
            other => panic!("watch ended: {other:?}"),
        }
    }
}

/// A field of an object's JSON by dotted path (`status.containerStatuses.0.state`), as text:
/// strings bare, anything else as JSON, a missing field empty.
pub fn field(v: &serde_json::Value, path: &str) -> String {
    let mut at = v;
    for part in path.split('.') {
        at = match part.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[part],
        };
    }
    match at {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Deletes the default namespace's pods matching `selector` (benchmarks' clean-up).
pub async fn delete_pods(client: &shoal_transport::Client, selector: &str) {
    client
        .call(&shoal_transport::proto::Request::DeleteSelected {
            kind: "Pod".into(),
            namespace: Some("default".into()),
            selector: selector.into(),
            propagation: Default::default(),
            grace_period: None,
        })
        .await
        .expect("delete pods");
}

/// A latency line of a benchmark: median and p99 of `samples` (sorted here).
pub fn latency_row(label: &str, samples: &mut [Duration], decimals: usize) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "  {label:<48} median {:>7.decimals$} ms  p99 {:>7.decimals$} ms",
        ms(at(0.5)),
        ms(at(0.99))
    )
}

/// Separate hosts on one machine: a network namespace per host, each with its own address on
/// a bridge in the machine's namespace (`10.T.0.1/24`, the hosts `.11`, `.12`, ...), so what
/// runs in them talks across a real link that a test can cut. Everything is removed on drop.
pub struct Hosts {
    pub bridge: String,
    pub names: Vec<String>,
    /// The machine's address on the bridge, where a controller listens.
    pub gateway: String,
    pub addresses: Vec<String>,
    /// Each host's cable: the machine's end of its veth.
    pub links: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// `n` hosts on `10.{tag}.0.0/24`; tests running at once use different tags.
    pub fn create(tag: u8, n: usize) -> Hosts {
        let bridge = format!("shoal-h{tag}");
        let hosts = Hosts {
            bridge: bridge.clone(),
            names: (1..=n).map(|i| format!("shoal-h{tag}-{i}")).collect(),
            gateway: format!("10.{tag}.0.1"),
            addresses: (1..=n).map(|i| format!("10.{tag}.0.{}", 10 + i)).collect(),
            links: (1..=n).map(|i| format!("shoal-h{tag}v{i}")).collect(),
        };
        hosts.remove();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.gateway),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for (i, (name, addr)) in hosts.names.iter().zip(&hosts.addresses).enumerate() {
            let outside = format!("shoal-h{tag}v{}", i + 1);
            ip(&["netns", "add", name]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", name,
            ]);
            ip(&["link", "set", &outside, "master", &bridge, "up"]);
            ip(&[
                "-n",
                name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", name, "link", "set", "eth0", "up"]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
            // No default route: a host reaches the bridge's /24 and nothing else, so nothing
            // a test does can leave the machine.
        }
        hosts
    }

    /// The command line that runs a program inside host `i` (0-based): only its network is
    /// the host's; files and mounts are the machine's, as on a real second host they would
    /// be its own.
    pub fn run_in(&self, i: usize) -> Vec<std::ffi::OsString> {
        vec![
            "nsenter".into(),
            format!("--net=/var/run/netns/{}", self.names[i]).into(),
            "--".into(),
            agent_bin(),
        ]
    }

    /// Pulls host `i`'s cable: it reaches neither the controller nor the other hosts.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.links[i], "down"]);
    }

    /// Plugs host `i`'s cable back in.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.links[i], "up"]);
    }

    /// The agent of host `i` (0-based), named `node-{i+1}`, on the data dir `dir`.
    pub fn agent(
        &self,
        i: usize,
        controller: &Controller,
        dir: &Path,
        token: &str,
        extra: &[&str],
    ) -> Agent {
        let program = self.run_in(i);
        let program: Vec<&std::ffi::OsStr> = program.iter().map(|s| s.as_os_str()).collect();
        Agent::with(controller, &format!("node-{}", i + 1), dir)
            .program(&program)
            .token(token)
            .args(extra)
            .start()
    }

    /// Runs a command inside host `i` and returns its output.
    pub fn exec(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.names[i]])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn remove(&self) {
        for name in &self.names {
            if Path::new("/var/run/netns").join(name).exists() {
                let _ = Command::new("ip").args(["netns", "delete", name]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A cluster across [`Hosts`]: a controller on the machine's side of the bridge and an agent in each host, the hosts
/// labelled `role=...` from `roles`; every node Ready, busybox pushed as `busybox:1`.
pub fn hosts_cluster(hosts: &Hosts, tag: u8, roles: &[&str]) -> (Cluster, Leftovers) {
    hosts_cluster_with(hosts, tag, roles, &[], &[])
}

/// The arguments [`hosts_cluster`] gives the agent of a host with `role`, then `extra`: what a
/// test restarting that agent gives it again.
pub fn host_agent_args<'a>(role: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args = vec![
        "--labels".to_string(),
        format!("role={role}"),
        "--pod-bridge".to_string(),
        "shoal0".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// [`hosts_cluster`] with more arguments for the controller and for every agent.
pub fn hosts_cluster_with(
    hosts: &Hosts,
    tag: u8,
    roles: &[&str],
    controller_args: &[&str],
    agent_args: &[&str],
) -> (Cluster, Leftovers) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Pods get 10.{tag+1}.N.0/24 on node N.
    let cidr = format!("10.{}.0.0/16", tag + 1);
    let mut args = vec!["--cluster-cidr", cidr.as_str()];
    args.extend_from_slice(controller_args);
    let controller = Controller::start_listening(
        &dir.path().join("controller"),
        &format!("{}:0", hosts.gateway),
        &args,
    );
    let token = std::fs::read_to_string(controller.dir.join("token")).expect("token");
    let agents: Vec<Agent> = roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let args = host_agent_args(role, agent_args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hosts.agent(
                i,
                &controller,
                &dir.path().join(format!("agent-{}", i + 1)),
                token.trim(),
                &args,
            )
        })
        .collect();
    let leftovers = Leftovers(agents.iter().map(|a| a.dir.clone()).collect(), None);
    let c = Cluster::adopt(controller, agents).keep(dir);
    c.wait_nodes_ready();
    push_busybox(&c);
    (c, leftovers)
}

/// Builds the busybox image here (from Debian's busybox-static) and pushes it as `busybox:1`.
pub fn push_busybox(c: &Cluster) {
    let scratch = tempfile::tempdir().expect("tmp");
    let layout = scratch.path().join("busybox");
    let layer =
        shoal_runtime::oci::build::busybox_layer(Path::new("/bin/busybox")).expect("busybox layer");
    let image = shoal_runtime::oci::build::ImageSpec {
        platform: shoal_runtime::oci::image::Platform::host(),
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    shoal_runtime::oci::build::write_layout(&layout, "busybox:1", &[(image, vec![layer])])
        .expect("layout");
    c.shoal(&["push", layout.to_str().expect("utf-8"), "busybox:1"])
        .ok();
}

/// The body a plain HTTP GET of `/` on `127.0.0.1:port` answers (chunks as sent), if it does:
/// for pods on the node's network.
pub fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}
