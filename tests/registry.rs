//! Wasm artifacts pulled from a real OCI registry (Debian's `docker-registry`, started by the
//! test on loopback): the pod runs, the artifact is verified and then reused from the cache,
//! and a missing image leaves the pod waiting with the registry's answer.

mod kit;
#[path = "kit/registry.rs"]
mod registry;

use kit::{wasm_fixture, Cluster};
use registry::Registry;
use sha2::Digest as _;
use std::time::Duration;

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
                    && out.contains("MANIFEST_UNKNOWN")
            },
        );
    })
    .await
    .unwrap();
}

fn container_pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {image}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_image_is_pulled_from_a_registry_for_the_node_platform_verified_and_layers_reused() {
    if kit::runc_missing(
        "runc_image_is_pulled_from_a_registry_for_the_node_platform_verified_and_layers_reused",
    ) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let layer = shoal_runtime::oci::build::busybox_layer(std::path::Path::new("/bin/busybox"))
        .expect("busybox layer");
    let host = shoal_runtime::oci::image::Platform::host().architecture;
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    // An index with this machine's image and another architecture's (which must not be run).
    let native = registry
        .push_container("busybox:native", &host, &layer, "echo native image")
        .await;
    let foreign = registry
        .push_container("busybox:foreign", other, &layer, "echo wrong platform")
        .await;
    registry
        .push_index(
            "busybox:1",
            &[(foreign.0, foreign.1, other), (native.0, native.1, &host)],
        )
        .await;
    // Another image sharing the layer, and one whose layer the registry serves corrupted.
    registry
        .push_container("busybox:other", &host, &layer, "echo other image")
        .await;
    let mut unique = layer.clone();
    unique.extend_from_slice(&[0u8; 1024]);
    registry
        .push_container("corrupt:1", &host, &unique, "echo never")
        .await;
    let corrupt_layer = {
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &unique).unwrap();
            e.finish().unwrap()
        };
        hex::encode(sha2::Sha256::digest(&gz))
    };
    let data = registry
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&corrupt_layer[..2])
        .join(&corrupt_layer)
        .join("data");
    std::fs::write(&data, b"not the layer you asked for").expect("corrupt the blob");

    let addr = registry.addr.clone();
    tokio::task::spawn_blocking(move || {
        let (c, _leftovers) = kit::oci_cluster(64, 1, &[]);
        let done = |c: &Cluster, name: &str| {
            c.shoal(&["get", "pod", name, "-o", "json"])
                .stdout()
                .contains("\"phase\": \"Succeeded\"")
        };
        for (name, tag) in [
            ("first", "busybox:1"),
            ("second", "busybox:1"),
            ("third", "busybox:other"),
        ] {
            c.controller
                .shoal_stdin(
                    &["apply", "-f", "-"],
                    Some(&container_pod(name, &format!("{addr}/{tag}"))),
                )
                .ok();
            c.wait_for(&format!("{name} to run"), Duration::from_secs(60), |c| {
                done(c, name)
            });
        }
        assert_eq!(c.shoal(&["logs", "first"]).ok(), "native image\n");
        assert_eq!(c.shoal(&["logs", "third"]).ok(), "other image\n");
        let agent = &c.agents[0];
        let pulls = agent.log().matches("image pulled from a registry").count();
        assert_eq!(
            pulls,
            2,
            "busybox:1 pulled once, busybox:other once:\n{}",
            agent.log()
        );
        let layers = std::fs::read_dir(agent.dir.join("images/layers"))
            .expect("layers")
            .count();
        assert_eq!(layers, 1, "the two images share one unpacked layer");

        c.controller
            .shoal_stdin(
                &["apply", "-f", "-"],
                Some(&container_pod("corrupt", &format!("{addr}/corrupt:1"))),
            )
            .ok();
        c.wait_for("the corrupt layer refused", Duration::from_secs(60), |c| {
            let out = c.shoal(&["get", "pod", "corrupt", "-o", "json"]).stdout();
            (out.contains("ErrImagePull") || out.contains("ImagePullBackOff"))
                && out.contains("digest")
        });
        let kept = agent.dir.join("images/blobs/sha256").join(&corrupt_layer);
        assert!(!kept.exists(), "the corrupt blob was not stored");

        // imagePullPolicy Never: an image on the node runs, one that is not never gets pulled.
        let never = |name: &str, tag: &str| {
            container_pod(name, &format!("{addr}/{tag}"))
                .replace("    image:", "    imagePullPolicy: Never\n    image:")
        };
        c.controller
            .shoal_stdin(
                &["apply", "-f", "-"],
                Some(&format!(
                    "{}---\n{}",
                    never("kept", "busybox:1"),
                    never("absent", "busybox:native")
                )),
            )
            .ok();
        c.wait_for(
            "Never: the kept image runs, the absent one waits",
            Duration::from_secs(60),
            |c| {
                done(c, "kept")
                    && c.shoal(&["get", "pod", "absent", "-o", "json"])
                        .stdout()
                        .contains("ErrImageNeverPull")
            },
        );
        assert_eq!(
            agent.log().matches("image pulled from a registry").count(),
            2,
            "Never pulled nothing"
        );
    })
    .await
    .unwrap();
}

/// A registry's token service, as the test's stand-in for Docker Hub's `auth.docker.io`:
/// it gives a token to a request with Basic credentials, answers 401 to one without, and
/// keeps what each request asked for (its request line and `Authorization`).
struct TokenService {
    realm: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TokenService {
    fn start() -> TokenService {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(&stream);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                let auth = head
                    .iter()
                    .find_map(|h| {
                        h.to_ascii_lowercase()
                            .starts_with("authorization:")
                            .then(|| h["authorization:".len()..].trim().to_string())
                    })
                    .unwrap_or_default();
                let line = head.first().cloned().unwrap_or_default();
                kept.lock().unwrap().push(format!("{line} auth={auth}"));
                let (status, body) = if auth.starts_with("Basic ") {
                    ("200 OK", r#"{"token": "shoal-test-token"}"#)
                } else {
                    ("401 Unauthorized", r#"{"details": "credentials required"}"#)
                };
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenService { realm, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_token_challenge_is_answered_with_the_pods_pull_secret() {
    let tokens = TokenService::start();
    let Some(registry) = Registry::start_challenging(&tokens.realm) else {
        return;
    };
    registry
        .push_wasm(&wasm_fixture("probe", "wasm32-wasip1"), "private/probe:v1")
        .await;
    let image = format!("{}/private/probe:v1", registry.addr);
    let addr = registry.addr.clone();
    let seen = move || tokens.seen();
    tokio::task::spawn_blocking(move || {
        let c = Cluster::start(1);
        let config = format!(
            r#"{{"auths": {{"http://{addr}": {{"username": "puller", "password": "s3cret"}}}}}}"#
        );
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pull}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
            base64_encode(config.as_bytes())
        );
        let with_secret = pod("with-secret", &image)
            .replace("  containers:", "  imagePullSecrets: [{name: pull}]\n  containers:");
        c.controller
            .shoal_stdin(
                &["apply", "-f", "-"],
                Some(&format!("{secret}---\n{with_secret}")),
            )
            .ok();
        c.wait_for("the pod with the secret to run", Duration::from_secs(60), |c| {
            c.shoal(&["get", "pod", "with-secret", "-o", "json"])
                .stdout()
                .contains("\"phase\": \"Succeeded\"")
        });
        assert_eq!(c.shoal(&["logs", "with-secret"]).ok(), "from the registry\n");
        let puller = format!("Basic {}", base64_encode(b"puller:s3cret"));
        let asked = seen();
        assert!(
            asked.iter().any(|r| r.contains("scope=repository%3Aprivate%2Fprobe%3Apull")
                && r.contains("service=shoal-test")
                && r.ends_with(&format!("auth={puller}"))),
            "the agent asked the token service for pull access with the secret's credentials: {asked:#?}"
        );
        // Asked for again (Always: the node's copy would otherwise serve it, as the kubelet's
        // does), without credentials this time.
        let without = pod("without", &image)
            .replace("    image:", "    imagePullPolicy: Always\n    image:");
        c.controller
            .shoal_stdin(&["apply", "-f", "-"], Some(&without))
            .ok();
        c.wait_for(
            "the pod without credentials refused by the token service",
            Duration::from_secs(60),
            |c| {
                let out = c.shoal(&["get", "pod", "without", "-o", "json"]).stdout();
                (out.contains("ErrImagePull") || out.contains("ImagePullBackOff"))
                    && out.contains("token service")
                    && out.contains("401")
            },
        );
    })
    .await
    .unwrap();
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
