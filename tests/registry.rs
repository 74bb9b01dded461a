//! Wasm artifacts pulled from a real OCI registry (Debian's `docker-registry`, started by the
//! test on loopback): the pod runs, the artifact is verified and then reused from the cache,
//! and a missing image leaves the pod waiting with the registry's answer.

mod kit;

use kit::{wasm_fixture, Cluster};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `docker-registry` process on a loopback port, removed when dropped.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// `None` (with the reason printed) when docker-registry is not installed, outside CI.
    fn start() -> Option<Registry> {
        let bin = "/usr/bin/docker-registry";
        if !std::path::Path::new(bin).exists() {
            let hint = "docker-registry is not installed: apt-get install docker-registry";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{hint}");
            }
            eprintln!("skipped: {hint}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.path().join("data").display()
            ),
        )
        .ok()?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Some(Registry {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not start on {addr}");
    }

    /// Pushes a wasm module as an OCI artifact (wasm config and layer media types).
    async fn push_wasm(&self, file: &std::path::Path, repo_tag: &str) {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        shoal_transport::install_crypto_provider();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![self.addr.clone()]),
            ..Default::default()
        });
        let reference: oci_client::Reference = format!("{}/{repo_tag}", self.addr).parse().unwrap();
        let layer = ImageLayer::new(
            std::fs::read(file).unwrap(),
            "application/wasm".into(),
            None,
        );
        let config = Config::new(
            b"{}".to_vec(),
            "application/vnd.wasm.config.v0+json".into(),
            None,
        );
        client
            .push(
                &reference,
                &[layer],
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .expect("push to the test registry");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  containers:\n  - name: probe\n    image: {image}\n    args: [print, from the registry]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_artifact_is_pulled_from_a_registry_verified_and_reused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    registry
        .push_wasm(&wasm_fixture("probe", "wasm32-wasip1"), "probe:v1")
        .await;
    let image = format!("{}/probe:v1", registry.addr);
    tokio::task::spawn_blocking(move || {
        let c = Cluster::start(1);
        let done = |c: &Cluster, name: &str| {
            c.shoal(&["get", "pod", name, "-o", "json"])
                .stdout()
                .contains("\"phase\": \"Succeeded\"")
        };
        c.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(&pod("first", &image)))
            .ok();
        c.wait_for("the first pod to run", Duration::from_secs(60), |c| {
            done(c, "first")
        });
        assert_eq!(c.shoal(&["logs", "first"]).ok(), "from the registry\n");
        c.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(&pod("second", &image)))
            .ok();
        c.wait_for("the second pod to run", Duration::from_secs(60), |c| {
            done(c, "second")
        });
        let pulls = c.agents[0]
            .log()
            .matches("artifact pulled from a registry")
            .count();
        assert_eq!(
            pulls,
            1,
            "the second pod reused the verified artifact:\n{}",
            c.agents[0].log()
        );

        let missing = image.replace("probe:v1", "absent:v1");
        c.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(&pod("absent", &missing)))
            .ok();
        c.wait_for(
            "ErrImagePull naming the registry",
            Duration::from_secs(60),
            |c| {
                let out = c.shoal(&["get", "pod", "absent", "-o", "json"]).stdout();
                (out.contains("ErrImagePull") || out.contains("ImagePullBackOff"))
                    && out.contains("pulling from 127.0.0.1:")
            },
        );
    })
    .await
    .unwrap();
}
