//! A real OCI registry for tests: Debian's `docker-registry` on a loopback port, with pushes
//! through `oci-client` (a dev-dependency only). Included with `#[path]` by the tests that
//! pull from one, so the others do not build it; each uses what it needs of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `docker-registry` process on a loopback port, removed when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    /// What the test's own pushes authenticate with.
    pub auth: oci_client::secrets::RegistryAuth,
}

impl Registry {
    /// `None` (with the reason printed) when docker-registry is not installed, outside CI.
    pub fn start() -> Option<Registry> {
        Registry::start_with("")
    }

    /// A registry whose access controller is distribution's `silly` one: a request without
    /// an `Authorization` header is answered 401 with a Bearer challenge naming `realm`.
    pub fn start_challenging(realm: &str) -> Option<Registry> {
        Registry::start_with(&format!(
            "auth: {{silly: {{realm: \"{realm}\", service: shoal-test}}}}\n"
        ))
    }

    pub fn start_with(auth: &str) -> Option<Registry> {
        let bin = "/usr/bin/docker-registry";
        if !std::path::Path::new(bin).exists() {
            let hint = "docker-registry is not installed: apt-get install docker-registry";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{hint}");
            }
            crate::kit::skipped("a registry test", hint);
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
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n{auth}",
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
                    dir,
                    auth: if auth.is_empty() {
                        oci_client::secrets::RegistryAuth::Anonymous
                    } else {
                        oci_client::secrets::RegistryAuth::Basic("pusher".into(), "push".into())
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not start on {addr}");
    }

    /// Pushes a wasm module as an OCI artifact (wasm config and layer media types).
    pub async fn push_wasm(&self, file: &std::path::Path, repo_tag: &str) {
        use oci_client::client::{Config, ImageLayer};
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
        self.push(repo_tag, layer, config).await;
    }

    /// Pushes one layer and a config as `repo_tag`.
    pub async fn push(
        &self,
        repo_tag: &str,
        layer: oci_client::client::ImageLayer,
        config: oci_client::client::Config,
    ) -> oci_client::Reference {
        let reference: oci_client::Reference = format!("{}/{repo_tag}", self.addr).parse().unwrap();
        self.client()
            .push(&reference, &[layer], config, &self.auth, None)
            .await
            .expect("push to the test registry");
        reference
    }
}

impl Registry {
    pub fn client(&self) -> oci_client::Client {
        use oci_client::client::{ClientConfig, ClientProtocol};
        shoal_transport::install_crypto_provider();
        oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![self.addr.clone()]),
            ..Default::default()
        })
    }

    /// Pushes a container image (one gzipped layer) for `arch`; returns its manifest's digest
    /// and size as the registry stores it.
    pub async fn push_container(
        &self,
        repo_tag: &str,
        arch: &str,
        layer: &[u8],
        cmd: &str,
    ) -> (String, i64) {
        use oci_client::client::{Config, ImageLayer};
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, layer).unwrap();
            e.finish().unwrap()
        };
        let layer = ImageLayer::new(
            gz,
            "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            None,
        );
        let config = serde_json::json!({
            "os": "linux",
            "architecture": arch,
            "config": {"Cmd": ["sh", "-c", cmd], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = Config::new(
            serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json".into(),
            None,
        );
        let reference = self.push(repo_tag, layer, config).await;
        let (bytes, digest) = self
            .client()
            .pull_manifest_raw(
                &reference,
                &self.auth,
                &["application/vnd.oci.image.manifest.v1+json"],
            )
            .await
            .expect("manifest back");
        (digest, bytes.len() as i64)
    }

    /// Pushes an image index naming `manifests` (digest, size, architecture).
    pub async fn push_index(&self, repo_tag: &str, manifests: &[(String, i64, &str)]) {
        use oci_client::manifest::{ImageIndexEntry, OciImageIndex, Platform};
        let reference: oci_client::Reference = format!("{}/{repo_tag}", self.addr).parse().unwrap();
        let index = OciImageIndex {
            schema_version: 2,
            media_type: Some("application/vnd.oci.image.index.v1+json".into()),
            manifests: manifests
                .iter()
                .map(|(digest, size, arch)| ImageIndexEntry {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: digest.clone(),
                    size: *size,
                    platform: Some(Platform {
                        architecture: (*arch).into(),
                        os: "linux".into(),
                        os_version: None,
                        os_features: None,
                        variant: None,
                        features: None,
                    }),
                    annotations: None,
                    artifact_type: None,
                })
                .collect(),
            artifact_type: None,
            annotations: None,
        };
        self.client()
            .push_manifest_list(&reference, &self.auth, index)
            .await
            .expect("push the index");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
