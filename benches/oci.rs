//! OCI pod figures on a loopback cluster (a controller and one agent, real processes, real
//! runc), printed: apply-to-Running latency (median, p99) of a busybox container pod with the
//! image already on the node, beside a bare `runc run --detach` of a bundle made from the same
//! image, in the same run: once alone (before the cluster starts, each container removed
//! before the next) and once side by side (a bare start, then a pod's, both left running), so
//! the ratio compares starts on the same machine; and where the time goes, from the agent's
//! log: the controller's
//! part (apply, schedule, the watch to the node), the agent's preparing (volumes, env, image,
//! and the sandbox: network namespace, veth, address, made beside the rest, whose own time is
//! printed too), the container's bundle (root file system,
//! config.json, FIFOs) and runc's start, and the status report back.
//!
//! Run with `cargo bench --bench oci` as root with runc installed (`apt-get install runc
//! busybox-static`); without them it says why and does nothing.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{apply_until_running, Agent, Controller};
use shoal_runtime::oci::build::{busybox_layer, write_layout, ImageSpec};
use shoal_runtime::oci::image::{ImageStore, Platform};
use shoal_runtime::oci::spec;
use shoal_runtime::ContainerSpec;
use shoal_transport::Client;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;

fn pod(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "oci"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "main", "image": "busybox:1", "command": ["sleep", "1000000"],
            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}
    }))
    .expect("json")
}

fn runc(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .expect("runc")
}

/// A bundle made from the image, for bare `runc run --detach` starts of it.
struct Bare {
    root: std::path::PathBuf,
    bundle: std::path::PathBuf,
    ids: Vec<String>,
}

impl Bare {
    fn new(dir: &Path, layout: &Path) -> Bare {
        let store = ImageStore::new(&dir.join("bare-images")).expect("store");
        let digest = store.import_dir(layout, &Platform::host()).expect("import");
        let image = store.image(&digest).expect("image");
        let bundle = dir.join("bare-bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
        store
            .copy_rootfs(&image, &bundle.join("rootfs"))
            .expect("rootfs");
        let container = ContainerSpec {
            command: vec!["sleep".into(), "1000000".into()],
            hostname: "bare".into(),
            ..Default::default()
        };
        let config = spec::runtime_spec(
            &container,
            &image.config.config().clone().unwrap_or_default(),
            &spec::User::default(),
            "/shoal/bench-bare",
        )
        .expect("spec");
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&config).expect("json"),
        )
        .expect("config");
        Bare {
            root: dir.join("bare-runc"),
            bundle,
            ids: Vec::new(),
        }
    }

    /// One `runc run --detach`, to the container running; it is left running, as the
    /// agent's pods are, until [`Bare::remove_all`].
    fn start(&mut self) -> Duration {
        let id = format!("shoal-bench-bare-{}-{}", std::process::id(), self.ids.len());
        let t = Instant::now();
        let out = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--detach", "--bundle"])
            .arg(&self.bundle)
            .arg(&id)
            // Detached, the container keeps runc's stdio: a pipe here would never close.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runc run");
        let took = t.elapsed();
        assert!(out.success(), "runc run --detach failed: {out}");
        self.ids.push(id);
        took
    }

    fn remove_all(&mut self) {
        for id in self.ids.drain(..) {
            runc(&self.root, &["delete", "--force", &id]);
        }
    }
}

/// The value of `key=...` in a log line, in milliseconds.
fn field_ms(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// The median of each phase of the benchmark's pods' starts, from the agent's log.
fn breakdown(log: &str, totals: &mut [Duration]) {
    let pods: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pod started") && l.contains("pod=oci-"))
        .collect();
    let bundles: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("container bundle made") && l.contains("default/oci-"))
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let of =
        |lines: &[&str], key: &str| median(lines.iter().filter_map(|l| field_ms(l, key)).collect());
    let total = {
        totals.sort();
        totals
            .get(totals.len() / 2)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let agent = of(&pods, "total_ms");
    println!(
        "  where apply to Running goes (medians of {} pods, ms):",
        pods.len()
    );
    let rows = [
        (
            "controller: apply, schedule, watch to the node",
            total - agent,
        ),
        (
            "agent: preparing (volumes, env, image, sandbox)",
            of(&pods, "prepare_ms"),
        ),
        (
            "  of which beside the rest: sandbox (netns, veth)",
            of(&pods, "sandbox_ms"),
        ),
        (
            "agent: bundle (rootfs, config.json, FIFOs)",
            of(&bundles, "bundle_ms"),
        ),
        ("agent: runc spawned", of(&bundles, "spawn_ms")),
        (
            "agent: runc creating and starting it",
            of(&bundles, "runc_ms"),
        ),
        ("agent: container start, all of it", of(&pods, "start_ms")),
        (
            "agent: status report to the controller",
            of(&pods, "report_ms"),
        ),
    ];
    for (what, ms) in rows {
        println!("    {what:<50} {ms:>7.1}");
    }
}

fn main() {
    if let Err(why) = shoal_runtime::oci::find_runc() {
        println!("oci bench skipped: {why}");
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        println!("oci bench skipped: no /bin/busybox (apt-get install busybox-static)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = dir.path().join("busybox");
        let spec = ImageSpec {
            platform: Platform::host(),
            ..Default::default()
        };
        let layer = busybox_layer(Path::new("/bin/busybox")).expect("layer");
        write_layout(&layout, "busybox:1", &[(spec, vec![layer])]).expect("layout");
        // Alone: before the cluster starts, each container removed before the next.
        let mut runc_alone = Bare::new(dir.path(), &layout);
        let mut alone: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let took = runc_alone.start();
                runc_alone.remove_all();
                took
            })
            .collect();

        let controller = Controller::start(&dir.path().join("controller"));
        let agent = Agent::with(&controller, "bench-node", &dir.path().join("agent"))
            .args(&["--log", "info,shoal_runtime::oci=debug"])
            .start();
        let _leftovers = kit::Leftovers(vec![agent.dir.clone()], None);
        controller
            .shoal(&["push", layout.to_str().expect("path"), "busybox:1"])
            .ok();
        let client = Client::connect(&controller.credentials())
            .await
            .expect("connect");
        loop {
            let out = controller.shoal(&["get", "nodes", "--no-headers"]).stdout();
            if out.contains(" Ready ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The first pod imports and unpacks the image; the figures are for the ones after.
        apply_until_running(&client, "warmup", pod("warmup")).await;
        // Side by side: a bare start, then a pod's, each left running, so both see the same
        // machine (the agent and controller idle beside them, as many containers running).
        let mut runc_beside = Bare::new(&dir.path().join("beside"), &layout);
        let (mut bare, mut cached) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            bare.push(runc_beside.start());
            let name = format!("oci-{i}");
            cached.push(apply_until_running(&client, &name, pod(&name)).await);
        }
        runc_beside.remove_all();
        kit::delete_pods(&client, "bench=oci").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline
            && !runc(&agent.dir.join("runc"), &["list", "-q"])
                .stdout
                .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        println!("OCI pods on a loopback cluster (controller + 1 agent, runc, busybox image):");
        println!(
            "{}",
            kit::latency_row("bare `runc run --detach`, alone:", &mut alone, 1)
        );
        println!(
            "{}",
            kit::latency_row("bare `runc run --detach`, beside the pods:", &mut bare, 1)
        );
        println!(
            "{}",
            kit::latency_row("apply to Running, image on the node:", &mut cached, 1)
        );
        let median = |v: &mut [Duration]| {
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        let ratio = median(&mut cached).as_secs_f64() / median(&mut bare).as_secs_f64();
        let alone = median(&mut cached).as_secs_f64() / median(&mut alone).as_secs_f64();
        println!(
            "  apply to Running / bare runc beside it: {ratio:.2}x (goal <= 1.15x); / alone: {alone:.2}x"
        );
        breakdown(&agent.log(), &mut cached);
        drop(agent);
    });
}
