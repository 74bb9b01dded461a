//! Store and controller figures, printed (not asserted):
//! - write throughput with group commit vs one durable commit per write;
//! - controller resident memory idle, and with 10,000 stored pods.
//!
//! Run with `cargo bench --bench store`.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::rss_kib;
use shoal_api::{Container, Object, ObjectMeta, Pod, PodSpec};
use shoal_controller::{Store, StoreConfig};
use shoal_transport::proto::{Request, Response};
use shoal_transport::{Client, Credentials};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pod(i: usize) -> Object {
    let mut pod = Object::Pod(Pod {
        metadata: ObjectMeta {
            name: format!("pod-{i}"),
            namespace: Some("default".into()),
            labels: [("app".to_string(), format!("app-{}", i % 50))].into(),
            ..Default::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "registry.local/app:1.0".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    });
    pod.normalize();
    pod
}

async fn write_throughput(group_commit: bool, writes: usize, writers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreConfig {
            group_commit,
            ..Default::default()
        },
    )
    .expect("open store");
    let start = Instant::now();
    let per_writer = writes / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    store.create(pod(w * per_writer + i)).await.expect("write");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    (per_writer * writers) as f64 / start.elapsed().as_secs_f64()
}

async fn controller_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["controller", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SHOAL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn controller");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("shoal controller listening") => break,
            Some(_) => {}
            None => panic!("controller exited"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(child.id());
    let creds = Credentials::load(&dir.path().join("admin.conf")).expect("admin.conf");
    let client = Arc::new(Client::connect(&creds).await.expect("connect"));
    let start = Instant::now();
    let batches: Vec<_> = (0..20)
        .map(|b| {
            let client = client.clone();
            tokio::spawn(async move {
                let objects = (b * 500..(b + 1) * 500)
                    .map(|i| pod(i).to_json().expect("json"))
                    .collect();
                match client
                    .call(&Request::Apply { objects })
                    .await
                    .expect("apply")
                {
                    Response::Applied(o) => assert_eq!(o.len(), 500),
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    for b in batches {
        b.await.expect("batch");
    }
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = rss_kib(child.id());
    let file = std::fs::metadata(dir.path().join("state.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "controller resident memory, idle:            {:>8.1} MiB",
        idle as f64 / 1024.0
    );
    println!(
        "controller resident memory, 10,000 pods:     {:>8.1} MiB",
        loaded as f64 / 1024.0
    );
    println!(
        "10,000 pods applied over QUIC in:             {:>8.2} s ({:.0} pods/s)",
        took.as_secs_f64(),
        10_000.0 / took.as_secs_f64()
    );
    println!(
        "store file with 10,000 pods:                  {:>8.1} MiB",
        file as f64 / (1024.0 * 1024.0)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "store writes (64 concurrent writers, durable commits, redb on {}):",
            std::env::temp_dir().display()
        );
        let one = write_throughput(false, 1_000, 64).await;
        let group = write_throughput(true, 10_000, 64).await;
        println!("  one commit per write:  {one:>10.0} writes/s");
        println!(
            "  group commit:          {group:>10.0} writes/s  ({:.1}x)",
            group / one
        );
        controller_memory().await;
    });
}
