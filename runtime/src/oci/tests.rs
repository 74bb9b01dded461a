//! The OCI executor with real runc, as root: these tests skip (saying why) where runc or root is
//! missing, and fail instead when SHOAL_REQUIRE_RUNC=1.

use super::build::{busybox_layer, write_layout, ImageSpec};
use super::image::{ImageStore, Platform};
use super::*;
use crate::ExitReason;

/// runc, or why these tests cannot run here.
fn runc_or_skip(test: &str) -> Option<PathBuf> {
    match find_runc() {
        Ok(p) => Some(p),
        Err(why) => {
            if std::env::var("SHOAL_REQUIRE_RUNC").as_deref() == Ok("1") {
                panic!("{test} needs runc and root: {why} (apt-get install runc)");
            }
            // Past libtest's capture, so .ci/run counts it as a skip.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    rt: Arc<RuncRuntime>,
    image: PathBuf,
}

impl Fixture {
    fn new(runc: PathBuf) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = dir.path().join("layout");
        let spec = ImageSpec {
            platform: Platform::host(),
            cmd: vec!["sh".into(), "-c".into(), "echo from-image-cmd".into()],
            env: vec!["GREETING=hello".into()],
            working_dir: Some("/tmp".into()),
            ..Default::default()
        };
        let layer = busybox_layer(Path::new("/bin/busybox")).expect("busybox layer");
        write_layout(&layout, "busybox:test", &[(spec, vec![layer])]).expect("layout");
        let store = Arc::new(ImageStore::new(&dir.path().join("images")).expect("store"));
        let digest = store
            .import_dir(&layout, &Platform::host())
            .expect("import");
        let image = store.blob_path(&digest).expect("blob");
        let rt = Arc::new(RuncRuntime::new(runc, dir.path(), store).expect("runtime"));
        Fixture { dir, rt, image }
    }

    fn spec(&self, name: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: format!("test/{name}"),
            key: format!("runctest-{}-{name}", std::process::id()),
            artifact: self.image.clone(),
            command: command.iter().map(|s| s.to_string()).collect(),
            hostname: name.into(),
            log_path: self.dir.path().join(format!("{name}.log")),
            ..Default::default()
        }
    }

    fn log(&self, name: &str) -> String {
        let path = self.dir.path().join(format!("{name}.log"));
        crate::logs::read(&path, None, &crate::logs::View::default()).unwrap_or_default()
    }
}

#[tokio::test]
async fn runc_runs_an_image_with_its_config_and_reports_exit_codes() {
    let Some(runc) = runc_or_skip("runc_runs_an_image_with_its_config_and_reports_exit_codes")
    else {
        return;
    };
    let f = Fixture::new(runc);
    // The image's Cmd, Env and WorkingDir apply when the pod says nothing.
    let h = f.rt.run(f.spec("plain", &[])).expect("start");
    assert_eq!(h.wait().await.reason, ExitReason::Completed);
    assert_eq!(f.log("plain"), "from-image-cmd\n");

    let mut s = f.spec(
        "env",
        &[
            "sh",
            "-c",
            "echo $GREETING $MODE $(pwd) $(hostname) $(id -u); echo oops >&2; exit 3",
        ],
    );
    s.env = vec![("MODE".into(), "pod".into())];
    let h = f.rt.run(s).expect("start");
    let exit = h.wait().await;
    assert_eq!((exit.code, exit.reason), (3, ExitReason::Error));
    // stdout and stderr reach the log through runc's two pipes: each keeps its order, but
    // not their interleaving (as with Docker and containerd).
    let mut lines: Vec<String> = f.log("env").lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["hello pod /tmp env 0", "oops"]);

    // Hardening: the default seccomp profile refuses mount, capabilities are the default set.
    let s = f.spec(
        "hardened",
        &[
            "sh",
            "-c",
            "mkdir -p /m; mount -t tmpfs t /m && echo mounted; grep CapEff /proc/self/status",
        ],
    );
    let h = f.rt.run(s).expect("start");
    h.wait().await;
    let log = f.log("hardened");
    assert!(!log.contains("mounted"), "{log}");
    assert!(log.contains("CapEff:\t00000000a80425fb"), "{log}");

    // runAsUser and a read-only root filesystem.
    let mut s = f.spec("ro", &["sh", "-c", "id -u; touch /x || echo read-only"]);
    s.security.run_as_user = Some(1000);
    s.security.read_only_root_filesystem = true;
    let h = f.rt.run(s).expect("start");
    h.wait().await;
    let log = f.log("ro");
    for line in ["1000", "touch: /x: Read-only file system", "read-only"] {
        assert!(log.lines().any(|l| l == line), "{line:?} in {log}");
    }
}

#[tokio::test]
async fn runc_memory_hog_is_oom_killed_and_stop_kills_after_grace() {
    let Some(runc) = runc_or_skip("runc_memory_hog_is_oom_killed_and_stop_kills_after_grace")
    else {
        return;
    };
    let f = Fixture::new(runc);
    let mut s = f.spec("hog", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    s.memory_limit = Some(16 << 20);
    let h = f.rt.run(s).expect("start");
    let exit = h.wait().await;
    assert_eq!((exit.code, exit.reason), (137, ExitReason::OOMKilled));

    // PID 1 ignores SIGTERM: the stop escalates to SIGKILL after the grace period.
    let h =
        f.rt.run(f.spec("sleeper", &["sleep", "600"]))
            .expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop(Duration::from_millis(500));
    let exit = h.wait().await;
    assert_eq!(exit.reason, ExitReason::Killed);
    assert!(
        f.rt.containers().expect("list").is_empty(),
        "the container was deleted"
    );
}

#[tokio::test]
async fn runc_container_is_found_again_by_a_new_runtime() {
    let Some(runc) = runc_or_skip("runc_container_is_found_again_by_a_new_runtime") else {
        return;
    };
    let f = Fixture::new(runc.clone());
    let spec = f.spec("long", &["sh", "-c", "echo started; sleep 600"]);
    let first = f.rt.run(spec.clone()).expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A second runtime over the same directories (the agent restarted) follows the running
    // container instead of starting another.
    let again =
        Arc::new(RuncRuntime::new(runc, f.dir.path(), f.rt.images().clone()).expect("runtime"));
    let adopted = again.run(spec.clone()).expect("adopt");
    assert_eq!(f.log("long"), "started\n", "no second start");
    assert_eq!(
        again.containers().expect("list"),
        vec![container_id(&spec.key)]
    );
    adopted.stop(Duration::from_millis(200));
    assert_eq!(adopted.wait().await.reason, ExitReason::Killed);
    assert_eq!(first.wait().await.code, 137);
    assert_eq!(
        again.remove_except(&[]).expect("clean"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn runc_runs_from_a_copied_root_when_there_is_no_overlayfs() {
    let Some(runc) = runc_or_skip("runc_runs_from_a_copied_root_when_there_is_no_overlayfs") else {
        return;
    };
    let f = Fixture::new(runc.clone());
    let copying = Arc::new(
        RuncRuntime::new(runc, f.dir.path(), f.rt.images().clone())
            .expect("runtime")
            .copying_rootfs(),
    );
    // Writes stay in the container's own copy: the image is untouched for the next one.
    let s = f.spec(
        "copy",
        &[
            "sh",
            "-c",
            "echo $GREETING > /tmp/mine; cat /tmp/mine; ls /bin/busybox",
        ],
    );
    let h = copying.run(s).expect("start");
    assert_eq!(h.wait().await.reason, ExitReason::Completed);
    assert_eq!(f.log("copy"), "hello\n/bin/busybox\n");
    let s = f.spec("fresh", &["sh", "-c", "cat /tmp/mine || echo fresh"]);
    let h = copying.run(s).expect("start");
    h.wait().await;
    let log = f.log("fresh");
    assert!(
        log.lines().any(|l| l == "fresh") && !log.contains("hello"),
        "{log}"
    );
}

/// The default profile is an allow-list: a container cannot make namespaces (clone's flags are
/// masked, unshare is not on the list) or mount, even as root inside it.
#[tokio::test]
async fn runc_the_default_seccomp_profile_keeps_a_container_from_namespaces_and_mounts() {
    let Some(runc) = runc_or_skip(
        "runc_the_default_seccomp_profile_keeps_a_container_from_namespaces_and_mounts",
    ) else {
        return;
    };
    let f = Fixture::new(runc);
    let script = "unshare -U true && echo unshare-ok; unshare -n true && echo netns-ok; \
                  mount -t tmpfs none /tmp && echo mount-ok; echo plain-ok";
    let h =
        f.rt.run(f.spec("seccomp", &["sh", "-c", script]))
            .expect("start");
    assert_eq!(h.wait().await.reason, ExitReason::Completed);
    let log = f.log("seccomp");
    assert!(log.contains("plain-ok"), "{log}");
    for escaped in ["unshare-ok", "netns-ok", "mount-ok"] {
        assert!(!log.contains(escaped), "{escaped}: {log}");
    }
    assert!(log.contains("Operation not permitted"), "{log}");
}

#[test]
fn a_process_is_awaited_through_its_pidfd_without_polling() {
    let mut child = std::process::Command::new("sleep")
        .arg("0.2")
        .spawn()
        .expect("spawn sleep");
    let pid = i32::try_from(child.id()).expect("a pid");
    assert!(super::await_exit_of(pid), "pidfds work on this kernel");
    // It has exited (a zombie until reaped): reaping it does not block.
    assert!(child.try_wait().expect("try_wait").is_some());
    assert!(!super::await_exit_of(-1), "no such process");
}
