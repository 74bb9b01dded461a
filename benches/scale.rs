//! Scheduler and controller throughput at fleet scale, printed (not asserted): a 10,000-replica
//! Deployment over 1,000 simulated nodes.
//!
//! The controller is the real one, as a process (store, reconcilers, scheduler, node
//! lifecycle). Each simulated node is what an agent is to the controller without running pods:
//! it joins with a token (its own certificate), holds its own QUIC connection, registers its
//! Node and posts a heartbeat every 10 s. Nothing runs the pods, so they stay Pending on their
//! nodes: what is measured is pods created and bound per second, and the controller's resident
//! memory at the end.
//!
//! Run with `cargo bench --bench scale`; `SHOAL_BENCH_NODES` and `SHOAL_BENCH_REPLICAS` change
//! the size.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{env_or, rss_kib, Controller};
use shoal_agent::AgentConfig;
use shoal_transport::proto::{EventType, Request, Response};
use shoal_transport::{Client, Credentials};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(server: &str, token: &str, name: String, dir: &Path) -> AgentConfig {
    AgentConfig {
        server: server.to_string(),
        token: Some(token.to_string()),
        token_file: None,
        data_dir: dir.join(&name),
        name,
        version: env!("CARGO_PKG_VERSION").into(),
        relaunch: None,
        labels: BTreeMap::new(),
        max_pods: 110,
        capacity: Default::default(),
        devices: Vec::new(),
        pod_bridge: shoal_agent::POD_BRIDGE.into(),
        insecure_registries: vec![],
        image_gc_high_threshold: 85,
        image_gc_low_threshold: 80,
        heartbeat: shoal_agent::HEARTBEAT,
        peer_listen: None,
        container_log_max_size: shoal_agent::CONTAINER_LOG_MAX_SIZE,
        drain_on_stop: true,
        manifests: None,
        images: None,
        cleanup: false,
    }
}

fn node_json(config: &AgentConfig) -> Vec<u8> {
    let mut obj = shoal_api::Object::Node(shoal_agent::node::describe(
        config,
        "127.0.0.1".parse().ok(),
        "cranelift",
        &shoal_api::WasmTarget {
            wasmtime: shoal_runtime::wasm::WASMTIME_VERSION.into(),
            triple: "x86_64-unknown-linux-gnu".into(),
            features: vec![],
        },
        None,
        None,
    ));
    obj.normalize();
    serde_json::to_vec(&obj).expect("node json")
}

/// Joins, connects with the node's own certificate and registers; then posts its status every
/// heartbeat until the process ends.
async fn simulated_node(config: AgentConfig) -> Arc<Client> {
    std::fs::create_dir_all(&config.data_dir).expect("node dir");
    let creds: Credentials = shoal_agent::join::NodeCredentials::load_or_join(
        &config,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("join")
    .get()
    .expect("joined");
    let client = Arc::new(Client::connect(&creds).await.expect("connect as node"));
    let object = node_json(&config);
    match client.call(&Request::PutNode { object }).await {
        Ok(Response::Object(_)) => {}
        other => panic!("register node: {other:?}"),
    }
    let beat = client.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.heartbeat);
        tick.tick().await;
        loop {
            tick.tick().await;
            let object = node_json(&config);
            let _ = beat.call(&Request::PutNode { object }).await;
        }
    });
    client
}

fn deployment(replicas: usize) -> Vec<u8> {
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: fleet}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: fleet}}}}
  template:
    metadata: {{labels: {{app: fleet}}}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: app
        image: registry.local/app:1.0
        resources: {{requests: {{cpu: 10m, memory: 4Mi}}}}
"#
    );
    let parsed = shoal_api::parse_manifests("fleet.yaml", &yaml).expect("manifest");
    parsed[0].object.to_json().expect("json")
}

fn main() {
    let nodes = env_or("SHOAL_BENCH_NODES", 1_000);
    let replicas = env_or("SHOAL_BENCH_REPLICAS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let controller = Controller::start_with_args(&dir.path().join("controller"), &[]);
        let pid = controller.pid().expect("controller pid");
        let idle = rss_kib(pid);
        let admin = Client::connect(&controller.credentials())
            .await
            .expect("connect as admin");
        let token = match admin
            .call(&Request::CreateToken {
                description: "scale bench".into(),
                ttl_secs: None,
                usages: None,
            })
            .await
            .expect("token")
        {
            Response::Token(t) => t,
            other => panic!("{other:?}"),
        };

        // The fleet joins, 50 nodes at a time.
        let start = Instant::now();
        let names: Vec<String> = (0..nodes).map(|i| format!("sim-{i:04}")).collect();
        let fleet = join_fleet(&controller.addr, &token, &names, &dir.path().join("nodes")).await;
        let joined = start.elapsed();
        let with_nodes = rss_kib(pid);

        // Follow the pods from now on, then apply the Deployment.
        let revision = match admin
            .call(&Request::List {
                kind: "Pod".into(),
                namespace: None,
                selector: String::new(),
                fields: String::new(),
            })
            .await
            .expect("list")
        {
            Response::List { revision, .. } => revision,
            other => panic!("{other:?}"),
        };
        let mut watch = admin
            .stream(&Request::Watch {
                kind: "Pod".into(),
                namespace: None,
                selector: "app=fleet".into(),
                fields: String::new(),
                revision,
            })
            .await
            .expect("watch");
        let start = Instant::now();
        match admin
            .call(&Request::Apply {
                objects: vec![deployment(replicas)],
            })
            .await
            .expect("apply")
        {
            Response::Applied(_) => {}
            other => panic!("{other:?}"),
        }
        let (bound, all_created, first_bound) = await_bindings(&mut watch, replicas, start).await;
        let all_bound = start.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let end = rss_kib(pid);
        let store = std::fs::metadata(dir.path().join("controller/state.redb"))
            .map(|m| m.len())
            .unwrap_or(0);

        let figures = Figures {
            nodes,
            replicas,
            joined,
            all_created: all_created.unwrap_or(all_bound),
            first_bound: first_bound.unwrap_or_default(),
            all_bound,
            memory_kib: (idle, with_nodes, end),
            store,
        };
        figures.print(&names, &bound);
        for c in &fleet {
            c.connection().close(0u32.into(), b"bench done");
        }
        drop(controller);
    });
}

/// Joins a simulated node for each of `names`, 50 at a time.
async fn join_fleet(server: &str, token: &str, names: &[String], dir: &Path) -> Vec<Arc<Client>> {
    let start = Instant::now();
    let mut fleet = Vec::with_capacity(names.len());
    for chunk in names.chunks(50) {
        let joining: Vec<_> = chunk
            .iter()
            .map(|n| tokio::spawn(simulated_node(config(server, token, n.clone(), dir))))
            .collect();
        for j in joining {
            fleet.push(j.await.expect("node task"));
        }
        if std::env::var_os("SHOAL_BENCH_VERBOSE").is_some() {
            eprintln!("{} nodes joined after {:?}", fleet.len(), start.elapsed());
        }
    }
    fleet
}

/// Follows the pod watch until `replicas` pods are bound: where each went, when the last was
/// created and when the first was bound.
async fn await_bindings(
    watch: &mut shoal_transport::ResponseStream,
    replicas: usize,
    start: Instant,
) -> (HashMap<String, String>, Option<Duration>, Option<Duration>) {
    let mut created = HashSet::new();
    let mut bound: HashMap<String, String> = HashMap::new();
    let (mut all_created, mut first_bound) = (None, None);
    let deadline = Duration::from_secs(600);
    while bound.len() < replicas {
        let next = tokio::time::timeout(deadline.saturating_sub(start.elapsed()), watch.next())
            .await
            .expect("every pod bound within 10 minutes")
            .expect("watch");
        let Some(Response::Event { type_, object, .. }) = next else {
            panic!("watch ended: {next:?}");
        };
        if type_ == EventType::Deleted {
            continue;
        }
        let pod: serde_json::Value = serde_json::from_slice(&object).expect("pod json");
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        created.insert(name.clone());
        if created.len() == replicas && all_created.is_none() {
            all_created = Some(start.elapsed());
        }
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            first_bound.get_or_insert_with(|| start.elapsed());
            bound.insert(name, node.to_string());
        }
    }
    (bound, all_created, first_bound)
}

/// What the bench measured.
struct Figures {
    nodes: usize,
    replicas: usize,
    joined: Duration,
    all_created: Duration,
    first_bound: Duration,
    all_bound: Duration,
    /// The controller's resident memory idle, with the nodes, and at the end.
    memory_kib: (u64, u64, u64),
    store: u64,
}

impl Figures {
    fn print(&self, names: &[String], bound: &HashMap<String, String>) {
        let Figures {
            nodes,
            replicas,
            joined,
            all_created,
            first_bound,
            all_bound,
            memory_kib: (idle, with_nodes, end),
            store,
        } = *self;
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for n in bound.values() {
            *per_node.entry(n.as_str()).or_default() += 1;
        }
        let fewest = names
            .iter()
            .map(|n| per_node.get(n.as_str()).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let most = per_node.values().copied().max().unwrap_or(0);
        let secs = |d: Duration| d.as_secs_f64();
        println!("{replicas}-replica Deployment over {nodes} simulated nodes (each its own QUIC connection and certificate):");
        println!(
            "  {nodes} nodes joined and registered in      {:>8.2} s",
            secs(joined)
        );
        println!(
            "  all {replicas} pods created after             {:>8.2} s  ({:.0} pods/s)",
            secs(all_created),
            replicas as f64 / secs(all_created)
        );
        println!(
            "  first pod bound after                     {:>8.2} s",
            secs(first_bound)
        );
        println!(
            "  all {replicas} pods bound after               {:>8.2} s  ({:.0} pods/s, apply to last binding)",
            secs(all_bound),
            replicas as f64 / secs(all_bound)
        );
        println!("  pods per node:                            {fewest} to {most}");
        println!(
            "  controller resident memory: idle {:.1} MiB, with {nodes} nodes connected {:.1} MiB, at the end {:.1} MiB",
            idle as f64 / 1024.0,
            with_nodes as f64 / 1024.0,
            end as f64 / 1024.0
        );
        println!(
            "  store file at the end:                    {:>8.1} MiB",
            store as f64 / (1024.0 * 1024.0)
        );
    }
}
