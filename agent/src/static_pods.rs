//! Static pods (the kubelet's `staticPodPath`): pods written as manifests in a directory on the
//! node (`shoal agent --manifests DIR`), run by the agent itself, with or without a controller.
//! The directory is read at start and every [`RESCAN`]: a new file starts its pods, a changed
//! one restarts them (a pod's uid is a digest of the node, its file and what it says, so any
//! change is a new pod), a removed one stops them. A file that cannot be used is named in the
//! log with why, and the others run.
//!
//! As the kubelet's, a static pod is named `NAME-NODE`, bound to this node, and may not use
//! other API objects (ConfigMaps, Secrets, service accounts): nothing it needs may have to come
//! from a controller that is not there. While the controller is reachable, each static pod has
//! a mirror pod in the API (annotated `kubernetes.io/config.mirror`, owned by the Node), which
//! shows its status; a mirror deleted there is made again, as the kubelet does, and the static
//! pod runs on: only its file stops it.

use crate::config::Link;
use crate::error::{expect_ok, Error, Result};
use crate::pod::Supervisor;
use sha2::{Digest, Sha256};
use shoal_api::{Object, OwnerReference, Pod};
use shoal_transport::proto::{Request, Response};
use shoal_transport::Client;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the directory is read again.
pub const RESCAN: Duration = Duration::from_secs(5);

/// The most a manifest file may hold: a pod spec is a few KiB.
const MAX_FILE: u64 = 1 << 20;

/// The static pods the manifests in `dir` describe for `node`, and a line for each file or
/// document that cannot be used, naming it and why.
pub fn read(dir: &Path, node: &str) -> (Vec<Pod>, Vec<String>) {
    let (mut pods, mut problems) = (Vec::new(), Vec::new());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return (pods, vec![format!("{}: {e}", dir.display())]),
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            // Editors' swap and backup files, and hidden files, are not manifests.
            !name.starts_with('.')
                && [".yaml", ".yml", ".json"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
        })
        .collect();
    files.sort();
    for file in files {
        match read_file(&file, node) {
            Ok(mut found) => pods.append(&mut found),
            Err(why) => problems.push(format!("{}: {why}", file.display())),
        }
    }
    (pods, problems)
}

fn read_file(file: &Path, node: &str) -> std::result::Result<Vec<Pod>, String> {
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    if size > MAX_FILE {
        return Err(format!(
            "{size} bytes; a manifest may be {MAX_FILE} at most"
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let parsed = shoal_api::parse_manifests(&file.display().to_string(), &text)
        .map_err(|e| e.to_string())?;
    let mut pods = Vec::new();
    for p in parsed {
        let doc = p.document;
        let Object::Pod(pod) = p.object else {
            return Err(format!(
                "document {doc} is a {}; only Pods run as static pods",
                p.object.kind()
            ));
        };
        if !p.unknown_fields.is_empty() {
            return Err(format!(
                "document {doc}: fields Shoal does not support: {}",
                p.unknown_fields.join(", ")
            ));
        }
        pods.push(static_pod(pod, file, node).map_err(|why| format!("document {doc}: {why}"))?);
    }
    Ok(pods)
}

/// `pod` as this node runs it from `file`: named `NAME-NODE`, bound here, with a uid that
/// changes with anything it says.
fn static_pod(mut pod: Pod, file: &Path, node: &str) -> std::result::Result<Pod, String> {
    if let Some(what) = pod.uses_api_objects() {
        return Err(format!(
            "pod {:?} uses {what}: a static pod may not use other API objects",
            pod.metadata.name
        ));
    }
    pod.metadata.name = format!("{}-{node}", pod.metadata.name);
    pod.metadata.namespace = Some(pod.metadata.namespace_or_default().to_string());
    pod.spec.node_name = Some(node.to_string());
    pod.status = None;
    let mut obj = Object::Pod(pod.clone());
    obj.normalize();
    let errors = shoal_api::validate::validate(&obj);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "pod {:?} is invalid: {}",
            pod.metadata.name,
            list.join("; ")
        ));
    }
    let bytes = serde_json::to_vec(&obj).map_err(|e| e.to_string())?;
    let mut digest = Sha256::new();
    digest.update(node.as_bytes());
    digest.update([0]);
    digest.update(file.as_os_str().as_encoded_bytes());
    digest.update([0]);
    digest.update(&bytes);
    let hash = hex::encode(digest.finalize());
    pod.metadata.uid = format!("static-{}", &hash[..32]);
    let annotations = &mut pod.metadata.annotations;
    annotations.insert(shoal_api::CONFIG_SOURCE.into(), "file".into());
    annotations.insert(shoal_api::CONFIG_HASH.into(), hash);
    Ok(pod)
}

/// The mirror pod of the static `pod`: the same pod with no uid or status, annotated with
/// the static pod's digest and owned by its Node (`node_uid`).
pub fn mirror(pod: &Pod, node_uid: &str) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = String::new();
    m.status = None;
    let hash = m
        .metadata
        .annotations
        .get(shoal_api::CONFIG_HASH)
        .cloned()
        .unwrap_or_default();
    m.metadata
        .annotations
        .insert(shoal_api::CONFIG_MIRROR.into(), hash);
    let node = m.spec.node_name.clone().unwrap_or_default();
    m.metadata.owner_references = vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node,
        uid: node_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }];
    m
}

/// The key of a pod by namespace and name.
fn key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace_or_default().to_string(),
        p.metadata.name.clone(),
    )
}

/// What the mirrors of this node's static pods need, given the pods bound to the node in the
/// API (`there`) and the static pods running (`wanted`).
#[derive(Debug, Default, PartialEq)]
struct MirrorPlan {
    /// Mirrors of static pods no longer there, or of an older version of one: by namespace
    /// and name.
    delete: Vec<(String, String)>,
    /// Static pods without a current mirror, by index in `wanted`.
    create: Vec<usize>,
    /// Static pods whose name a pod that is no mirror has in the API: they run unmirrored.
    clash: Vec<(String, String)>,
}

fn mirror_plan(there: &[Pod], wanted: &[Pod]) -> MirrorPlan {
    let hash = |p: &Pod, a: &str| p.metadata.annotations.get(a).cloned();
    let current = |m: &Pod, s: &Pod| {
        m.is_mirror() && hash(m, shoal_api::CONFIG_MIRROR) == hash(s, shoal_api::CONFIG_HASH)
    };
    let mut plan = MirrorPlan::default();
    for m in there.iter().filter(|p| p.is_mirror()) {
        if !wanted.iter().any(|s| key(s) == key(m) && current(m, s)) {
            plan.delete.push(key(m));
        }
    }
    for (i, s) in wanted.iter().enumerate() {
        match there.iter().find(|p| key(p) == key(s)) {
            Some(m) if current(m, s) => {}
            Some(m) if !m.is_mirror() => plan.clash.push(key(s)),
            _ => plan.create.push(i),
        }
    }
    plan
}

/// Brings the mirrors of this node's static pods `pods` up to date in the API.
async fn mirror_all(
    client: &Client,
    node: &str,
    pods: &[Pod],
    supervisor: &Supervisor,
    told: &mut Vec<(String, String)>,
) -> Result<()> {
    let listed = client
        .call(&Request::List {
            kind: "Pod".into(),
            namespace: None,
            selector: String::new(),
            fields: format!("spec.nodeName={node}"),
        })
        .await?;
    let Response::List { items, .. } = listed else {
        return Err(Error::Internal(listed.unexpected()));
    };
    let there: Vec<Pod> = items
        .iter()
        .filter_map(|b| Object::from_json(b).ok()?.into_typed::<Pod>().ok())
        .collect();
    let plan = mirror_plan(&there, pods);
    for (ns, name) in &plan.delete {
        delete(client, ns, name).await?;
    }
    for k in plan.clash {
        if !told.contains(&k) {
            tracing::warn!(pod = %k.1, namespace = %k.0, "a pod of this name that is not a mirror is in the API: the static pod runs, without a mirror");
            told.push(k);
        }
    }
    let mut node_uid = None;
    for p in plan.create.iter().filter_map(|i| pods.get(*i)) {
        if node_uid.is_none() {
            node_uid = Some(node_uid_of(client, node).await?);
        }
        let m = mirror(p, node_uid.as_deref().unwrap_or_default());
        let object =
            serde_json::to_vec(&Object::Pod(m)).map_err(|e| Error::Internal(e.to_string()))?;
        let made = client
            .call(&Request::Create {
                object,
                options: Default::default(),
            })
            .await?;
        expect_ok_or_object(made)?;
        let (ns, name) = key(p);
        tracing::info!(pod = %name, namespace = %ns, "made the mirror pod of a static pod");
        supervisor.report_pod(&p.metadata.uid).await;
    }
    Ok(())
}

fn expect_ok_or_object(r: Response) -> Result<()> {
    match r {
        Response::Object(_) | Response::Written { .. } => Ok(()),
        other => expect_ok(other),
    }
}

async fn delete(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let r = client
        .call(&Request::Delete {
            kind: "Pod".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
            propagation: Default::default(),
            grace_period: Some(0),
        })
        .await?;
    expect_ok_or_object(r)
}

async fn node_uid_of(client: &Client, node: &str) -> Result<String> {
    let r = client
        .call(&Request::Get {
            kind: "Node".into(),
            namespace: None,
            name: node.into(),
        })
        .await?;
    let Response::Object(b) = r else {
        return Err(Error::Internal(r.unexpected()));
    };
    let obj = Object::from_json(&b).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(obj.metadata().uid.clone())
}

/// Without a manifests directory: the mirrors an earlier agent of this node made (run with
/// `--manifests`) are deleted on the first connection, as their static pods no longer run.
pub async fn clear_mirrors(
    node: String,
    supervisor: Supervisor,
    mut link: Link,
    shutdown: CancellationToken,
) {
    loop {
        let client = link.borrow().clone();
        if let Some(client) = client {
            match mirror_all(&client, &node, &[], &supervisor, &mut Vec::new()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %shoal_transport::report(&e), "old mirror pods not cleared yet")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = link.changed() => {}
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

/// Runs the static pods of `dir` until `shutdown`, reading it again every [`RESCAN`], and
/// keeps their mirror pods while the controller is reachable (`link`).
pub async fn run(
    dir: std::path::PathBuf,
    node: String,
    supervisor: Supervisor,
    link: Link,
    shutdown: CancellationToken,
) {
    tracing::info!(dir = %dir.display(), "running the static pods of this directory");
    let mut told: Vec<String> = Vec::new();
    let mut told_mirrors = Vec::new();
    loop {
        let (d, n) = (dir.clone(), node.clone());
        let (pods, problems) = tokio::task::spawn_blocking(move || read(&d, &n))
            .await
            .unwrap_or_default();
        // Each problem said once, while it lasts.
        for p in problems.iter().filter(|p| !told.contains(p)) {
            tracing::warn!(problem = %p, "a static pod manifest is not used");
        }
        told = problems;
        supervisor.set_static(pods.clone()).await;
        let client = link.borrow().clone();
        if let Some(client) = client {
            if let Err(e) = mirror_all(&client, &node, &pods, &supervisor, &mut told_mirrors).await
            {
                tracing::debug!(error = %shoal_transport::report(&e), "static pods' mirrors not brought up to date");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, annotations: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p
    }

    #[test]
    fn mirrors_follow_the_static_pods_that_run() {
        let running = |name: &str, hash: &str| named(name, &[(shoal_api::CONFIG_HASH, hash)]);
        let mirror_of = |name: &str, hash: &str| named(name, &[(shoal_api::CONFIG_MIRROR, hash)]);
        let k = |n: &str| ("default".to_string(), n.to_string());
        let wanted = [
            running("same", "h1"),
            running("changed", "h2"),
            running("new", "h3"),
            running("taken", "h4"),
        ];
        let there = [
            mirror_of("same", "h1"),
            mirror_of("changed", "old"),
            mirror_of("removed", "h9"),
            named("taken", &[]),
            named("ordinary", &[]),
        ];
        let plan = mirror_plan(&there, &wanted);
        assert_eq!(plan.delete, [k("changed"), k("removed")]);
        assert_eq!(plan.create, [1, 2], "changed and new get (new) mirrors");
        assert_eq!(plan.clash, [k("taken")]);
        // No static pods (an agent without --manifests): every mirror goes, nothing else.
        let none = mirror_plan(&there, &[]);
        assert_eq!(none.delete, [k("same"), k("changed"), k("removed")]);
        assert!(none.create.is_empty() && none.clash.is_empty());
    }

    #[test]
    fn manifests_become_static_pods_whose_uid_follows_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let web = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  runtimeClassName: wasm\n  containers:\n  - {name: web, image: probe:2}\n";
        std::fs::write(dir.path().join("web.yaml"), web).unwrap();
        std::fs::write(dir.path().join(".web.yaml.swp"), "not yaml: [").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let (pods, problems) = read(dir.path(), "pi-1");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(pods.len(), 1);
        let p = &pods[0];
        assert_eq!(p.metadata.name, "web-pi-1");
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.spec.node_name.as_deref(), Some("pi-1"));
        assert!(p.is_static() && p.metadata.uid.starts_with("static-"));
        let same = read(dir.path(), "pi-1").0;
        assert_eq!(
            same[0].metadata.uid, p.metadata.uid,
            "stable while unchanged"
        );

        std::fs::write(
            dir.path().join("web.yaml"),
            web.replace("probe:2", "probe:3"),
        )
        .unwrap();
        let changed = read(dir.path(), "pi-1").0;
        assert_ne!(
            changed[0].metadata.uid, p.metadata.uid,
            "a change is a new pod"
        );

        // Broken files are named with why; the others still run.
        std::fs::write(dir.path().join("bad.yaml"), "kind: Pod\nmetadata: {name: [").unwrap();
        std::fs::write(
            dir.path().join("secret.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: s}\nspec:\n  containers:\n  - {name: c, image: x}\n  volumes:\n  - {name: v, secret: {secretName: db}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("svc.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap();
        let (pods, problems) = read(dir.path(), "pi-1");
        assert_eq!(pods.len(), 1);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("bad.yaml"), "{problems:?}");
        assert!(
            problems[1].contains("secret.yaml") && problems[1].contains("a Secret volume"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("svc.yaml") && problems[2].contains("only Pods"),
            "{problems:?}"
        );
    }
}
