//! OCI pod figures on a loopback cluster (a controller and one agent, real processes, real
//! runc), printed: apply-to-Running latency (median, p99) of a busybox container pod with the
//! image already on the node, beside a bare `runc run --detach` of a bundle made from the same
//! image, in the same run; and where the time goes, from the agent's log: the controller's
//! part (apply, schedule, the watch to the node), the agent's preparing (volumes, env, image),
//! the sandbox (network namespace, veth, address), the container's bundle (root file system,
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

/// `runc run --detach` of one bundle, `RUNS` times: to the container running.
fn bare_runc(dir: &Path, layout: &Path) -> Vec<Duration> {
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
    let root = dir.join("bare-runc");
    let mut times = Vec::new();
    for i in 0..RUNS {
        let id = format!("shoal-bench-bare-{}-{i}", std::process::id());
        let t = Instant::now();
        let out = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            // Detached, the container keeps runc's stdio: a pipe here would never close.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runc run");
        times.push(t.elapsed());
        assert!(out.success(), "runc run --detach failed: {out}");
        runc(&root, &["delete", "--force", &id]);
    }
    times
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
        ("agent: volumes, env, image", of(&pods, "prepare_ms")),
        (
            "agent: sandbox (netns, veth, address)",
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
        let mut bare = bare_runc(dir.path(), &layout);

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
        let mut cached = Vec::new();
        for i in 0..RUNS {
            let name = format!("oci-{i}");
            cached.push(apply_until_running(&client, &name, pod(&name)).await);
        }
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
            kit::latency_row("bare `runc run --detach`, same image:", &mut bare, 1)
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
        println!("  apply to Running / bare runc: {ratio:.2}x (goal <= 1.15x)");
        breakdown(&agent.log(), &mut cached);
        drop(agent);
    });
}
