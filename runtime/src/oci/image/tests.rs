//! The image store, with real files: platforms chosen from indexes, archives imported,
//! garbage collection, digests checked.

use super::*;
use crate::oci::build::{tar_dir, write_layout, ImageSpec};

fn platform(arch: &str) -> Platform {
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: (arch == "arm").then(|| "v7".to_string()),
    }
}

fn layer(file: &str, text: &str) -> Vec<u8> {
    let d = tempfile::tempdir().expect("tmp");
    fs::write(d.path().join(file), text).expect("write");
    tar_dir(d.path()).expect("tar")
}

fn layout(dir: &Path, arches: &[&str]) {
    let images: Vec<_> = arches
        .iter()
        .map(|a| {
            (
                ImageSpec {
                    platform: platform(a),
                    cmd: vec![format!("/bin/{a}")],
                    ..Default::default()
                },
                vec![layer("base", "shared"), layer("arch", a)],
            )
        })
        .collect();
    write_layout(dir, "multi:1", &images).expect("layout");
}

#[test]
fn the_node_platform_is_chosen_from_an_index() {
    let d = tempfile::tempdir().expect("tmp");
    layout(&d.path().join("l"), &["amd64", "arm64", "arm"]);
    let store = ImageStore::new(&d.path().join("store")).expect("store");
    for arch in ["arm64", "arm", "amd64"] {
        let m = store
            .import_dir(&d.path().join("l"), &platform(arch))
            .expect(arch);
        let image = store.image(&m).expect("image");
        assert_eq!(image.config.architecture().to_string(), arch);
        let run = image.config.config().clone().unwrap_or_default();
        assert_eq!(run.cmd(), &Some(vec![format!("/bin/{arch}")]));
        store.layer_dir(&image.layers[0]).expect("unpack");
        let top = store.layer_dir(&image.layers[1]).expect("unpack");
        assert_eq!(fs::read_to_string(top.join("arch")).expect("file"), arch);
    }
    // The shared base layer is stored and unpacked once for all three.
    let layers = fs::read_dir(store.dir().join("layers"))
        .expect("layers")
        .count();
    assert_eq!(layers, 4);
    let e = store
        .import_dir(&d.path().join("l"), &platform("riscv64"))
        .expect_err("no riscv64")
        .to_string();
    assert!(
        e.contains("no linux/riscv64 image (it has: linux/amd64, linux/arm64, linux/arm/v7)"),
        "{e}"
    );
}

#[test]
fn archives_and_docker_save_import() {
    let d = tempfile::tempdir().expect("tmp");
    let store = ImageStore::new(&d.path().join("store")).expect("store");
    // An OCI layout as a tarball.
    layout(&d.path().join("l"), &["amd64"]);
    let archive = d.path().join("l.tar");
    fs::write(&archive, tar_dir(&d.path().join("l")).expect("tar")).expect("archive");
    let m = store
        .import_archive(&archive, &platform("amd64"))
        .expect("oci archive");
    assert_eq!(store.image(&m).expect("image").layers.len(), 2);
    // Imported under a name: the name is that image from then on.
    assert_eq!(store.recorded("given:1"), None);
    let named = store
        .import_as(&archive, "given:1", &platform("amd64"))
        .expect("named import");
    assert_eq!(named, m);
    assert_eq!(store.recorded("given:1").as_deref(), Some(m.as_str()));
    // docker save: manifest.json naming a config file and layer tars.
    let ds = d.path().join("ds");
    fs::create_dir_all(ds.join("abc")).expect("dir");
    let tar = layer("hello", "docker");
    fs::write(ds.join("abc/layer.tar"), &tar).expect("layer");
    // As docker writes it: the OCI image spec's required rootfs, with the layer's diff id.
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    fs::write(
        ds.join("cfg.json"),
        format!(
            r#"{{"os":"linux","architecture":"amd64","config":{{"Entrypoint":["/hello"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        ),
    )
    .expect("config");
    fs::write(
        ds.join("manifest.json"),
        r#"[{"Config":"cfg.json","RepoTags":["hello:1"],"Layers":["abc/layer.tar"]}]"#,
    )
    .expect("manifest");
    let archive = d.path().join("ds.tar");
    fs::write(&archive, tar_dir(&ds).expect("tar")).expect("archive");
    let m = store
        .import_archive(&archive, &platform("amd64"))
        .expect("docker save");
    let image = store.image(&m).expect("image");
    let run = image.config.config().clone().unwrap_or_default();
    assert_eq!(run.entrypoint(), &Some(vec!["/hello".to_string()]));
    let e = store
        .import_archive(&archive, &platform("arm64"))
        .expect_err("amd64 only")
        .to_string();
    assert!(
        e.contains("no linux/arm64 image (it has: linux/amd64)"),
        "{e}"
    );
    let e = store
        .import_archive(&d.path().join("ds/cfg.json"), &platform("amd64"))
        .expect_err("not an archive")
        .to_string();
    assert!(e.contains("not an image archive"), "{e}");
}

#[test]
fn platforms_are_read_from_layouts_and_archives_without_the_layers() {
    let d = tempfile::tempdir().expect("tmp");
    layout(&d.path().join("l"), &["amd64", "arm"]);
    let want = vec![platform("amd64"), platform("arm")];
    assert_eq!(image_platforms(&d.path().join("l")).expect("dir"), want);
    let archive = d.path().join("l.tar");
    fs::write(&archive, tar_dir(&d.path().join("l")).expect("tar")).expect("archive");
    assert_eq!(image_platforms(&archive).expect("archive"), want);
    let wasm = d.path().join("m.wasm");
    fs::write(&wasm, b"\0asm\x01\0\0\0").expect("wasm");
    assert_eq!(image_platforms(&wasm).expect("wasm"), vec![]);
}

#[test]
fn collection_starts_at_the_high_threshold_and_frees_down_to_the_low_one() {
    let cases = [
        // (total, available, high, low, need)
        (1000, 500, 85, 80, None),
        (1000, 151, 85, 80, None),
        (1000, 150, 85, 80, Some(50)),
        (1000, 100, 85, 80, Some(100)),
        (1000, 100, 0, 0, Some(900)),
        (0, 0, 85, 80, None),
    ];
    for (total, available, high, low, want) in cases {
        assert_eq!(
            gc_need(total, available, high, low),
            want,
            "{total} {available} {high} {low}"
        );
    }
}

#[test]
fn unused_images_are_collected_least_recently_used_first_keeping_shared_layers() {
    let d = tempfile::tempdir().expect("tmp");
    let store = ImageStore::new(&d.path().join("store")).expect("store");
    // Two images sharing their base layer, and a third on its own.
    layout(&d.path().join("a"), &["amd64"]);
    let a = store
        .import_dir(&d.path().join("a"), &platform("amd64"))
        .expect("a");
    let b_layout = d.path().join("b");
    write_layout(
        &b_layout,
        "b:1",
        &[(
            ImageSpec {
                platform: platform("amd64"),
                ..Default::default()
            },
            vec![layer("base", "shared"), layer("only-b", "b")],
        )],
    )
    .expect("b");
    let b = store.import_dir(&b_layout, &platform("amd64")).expect("b");
    for (name, digest) in [("a:1", &a), ("b:1", &b)] {
        store.record(name, digest).expect("record");
        for l in store.image(digest).expect("image").layers {
            store.layer_dir(&l).expect("unpack");
        }
    }
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|i| i.size > 0 && i.platform == "linux/amd64"));

    // b is in use, so only a may go; its base layer stays for b.
    let in_use: std::collections::HashSet<String> = [b.clone()].into();
    let plan = plan_gc(&listed, &in_use, u64::MAX);
    assert_eq!(
        plan.iter()
            .map(|i| i.reference.as_str())
            .collect::<Vec<_>>(),
        ["a:1"]
    );
    assert!(store.remove(&plan).expect("remove") > 0);
    assert!(!store.has_blob(&a));
    let b_image = store.image(&b).expect("b is whole");
    for l in &b_image.layers {
        assert!(store.has_blob(l));
        assert!(store
            .dir()
            .join("layers")
            .join(sha256_hex(l).expect("hex"))
            .exists());
    }
    assert_eq!(store.list().expect("list").len(), 1);
    assert!(plan_gc(&store.list().expect("list"), &in_use, u64::MAX).is_empty());
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let d = tempfile::tempdir().expect("tmp");
    layout(&d.path().join("l"), &["amd64"]);
    let index: Index = read_json(&d.path().join("l/index.json")).expect("index");
    let manifest: Manifest =
        read_json(&layout_blob(&d.path().join("l"), &digest_of(&index.manifests()[0])).expect("p"))
            .expect("manifest");
    let victim = layout_blob(&d.path().join("l"), &digest_of(&manifest.layers()[1])).expect("p");
    fs::write(&victim, b"tampered").expect("tamper");
    let store = ImageStore::new(&d.path().join("store")).expect("store");
    let e = store
        .import_dir(&d.path().join("l"), &platform("amd64"))
        .expect_err("tampered")
        .to_string();
    assert!(e.contains("digest mismatch"), "{e}");
    assert!(!store.has_blob(&digest_of(&manifest.layers()[1])));
    assert!(
        !store.has_blob(&digest_of(&index.manifests()[0])),
        "no half-imported image"
    );
    assert_eq!(
        fs::read_dir(store.dir().join("tmp")).expect("tmp").count(),
        0
    );
}
