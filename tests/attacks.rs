//! Attacks: what a thief with one device's data dir (its node.conf and key) or a join token
//! tries, against the real binary on loopback with real certificates. Each finding of the
//! security review is an attack here that must now fail, with the error asserted; beside them,
//! the honest path (joins, renewals, controller restarts, admin credentials) keeps working.

mod kit;

use kit::{field, Agent, Cluster, Controller};
use shoal_transport::proto::{ErrorCode, Request, Response};
use shoal_transport::{Client, Credentials, JoinToken};
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What a thief takes from a device: its credential file.
fn stolen(agent: &Agent) -> Credentials {
    Credentials::load(&agent.dir.join("node.conf")).expect("node.conf")
}

fn bootstrap_token(c: &Cluster) -> JoinToken {
    let t = std::fs::read_to_string(c.controller.dir.join("token")).expect("token");
    JoinToken::parse(&t).expect("token parses")
}

/// One request with `creds`; a refused connection counts as an error answer.
async fn ask(creds: &Credentials, req: &Request) -> Result<Response, String> {
    let client = Client::connect(creds).await.map_err(|e| e.to_string())?;
    let r = client.call(req).await.map_err(|e| e.to_string());
    client.close().await;
    r
}

#[track_caller]
fn refused(answer: Result<Response, String>, code: ErrorCode, words: &str) {
    match answer {
        Ok(Response::Error(e)) => {
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(words), "{:?} lacks {words:?}", e.message);
        }
        other => panic!("expected {code:?} ({words}), got {other:?}"),
    }
}

fn get(kind: &str, ns: Option<&str>, name: &str) -> Request {
    Request::Get {
        kind: kind.into(),
        namespace: ns.map(str::to_string),
        name: name.into(),
    }
}

fn node_object(name: &str, labels: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}}))
    .unwrap()
}

/// Finding 1: a node's certificates can never serve as the controller, and no node may be
/// named like it.
#[test]
fn a_node_can_never_serve_as_the_controller() {
    let c = Cluster::start(1);
    let token = bootstrap_token(&c);
    rt().block_on(async {
        let (_, csr_pem) = shoal_transport::pki::node_key_and_csr("x").unwrap();
        for name in ["shoal-controller", "localhost", "127.0.0.1"] {
            let anon = Client::connect_with_token(&c.controller.addr, &token)
                .await
                .expect("anonymous connection");
            let answer = anon
                .call(&Request::Join {
                    secret: token.secret.clone(),
                    node_name: name.into(),
                    csr_pem: csr_pem.clone(),
                })
                .await
                .map_err(|e| e.to_string());
            refused(answer, ErrorCode::Invalid, "reserved");
        }

        // The certificate a node serves its peers with comes from the peer CA: a fake
        // controller holding one is refused by the admin's client.
        let node = stolen(&c.agents[0]);
        let (key_pem, csr_pem) = shoal_transport::pki::node_key_and_csr("node-1").unwrap();
        let (cert_pem, ca_pem, peer_ca_pem) = match ask(&node, &Request::PeerCert { csr_pem }).await
        {
            Ok(Response::Joined {
                cert_pem,
                ca_pem,
                peer_ca_pem,
            }) => (cert_pem, ca_pem, peer_ca_pem),
            other => panic!("{other:?}"),
        };
        assert_ne!(
            ca_pem, peer_ca_pem,
            "nodes' serving certificates have their own signer"
        );
        let issued = shoal_transport::pki::Issued { cert_pem, key_pem };
        let fake = shoal_transport::Server::bind_peer(
            "127.0.0.1:0".parse().unwrap(),
            &ca_pem,
            &peer_ca_pem,
            &issued,
        )
        .expect("fake controller");
        let mut admin = c.controller.credentials();
        admin.server = fake.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move {
            if let Some(incoming) = fake.accept().await {
                let _ = incoming.await;
            }
        });
        let err = Client::connect(&admin)
            .await
            .err()
            .expect("the admin's client must refuse a node's certificate as the controller");
        assert!(err.to_string().contains("certificate"), "{err}");
        accept.abort();
        // The real controller is still trusted.
        assert!(matches!(
            ask(&c.controller.credentials(), &Request::WhoAmI).await,
            Ok(Response::Identity(_))
        ));
    });
}

/// Finding 2: a name belongs to the first device that joined with it; tokens expire, are
/// used up, are deleted, and are never logged.
#[test]
fn names_are_bound_to_keys_and_tokens_expire_are_used_up_and_deleted() {
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    // Every Raspberry Pi boots as `raspberrypi`: the second one is told, not let in.
    let mut second = Agent::start(&c.controller, "node-1", &dir.path().join("thief"));
    second.wait_exit(Duration::from_secs(30)).expect("refused");
    assert!(
        second.log().contains("already taken by another device"),
        "{}",
        second.log()
    );

    let create = |args: &[&str]| {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        c.shoal(&all).ok().trim().to_string()
    };
    let once = create(&["--usages", "1", "--description", "one device"]);
    let brief = create(&["--ttl", "1s"]);
    let deleted = create(&[]);
    let id = &JoinToken::parse(&deleted).unwrap().secret[..8];
    c.shoal(&["token", "delete", id]).ok();

    // The one-use token goes in a file, as install.sh leaves it; the agent deletes it after
    // joining, and starts again without it.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &once).unwrap();
    let file_args = ["--token-file", token_file.to_str().unwrap()];
    let mut ok = Agent::with(&c.controller, "pi-a", &dir.path().join("a"))
        .token("")
        .args(&file_args)
        .start();
    c.wait_for("pi-a joined", Duration::from_secs(30), |_| {
        ok.dir.join("node.conf").exists()
    });
    c.wait_for("the token file removed", Duration::from_secs(10), |_| {
        !token_file.exists()
    });
    ok.kill9();
    let ok = Agent::with(&c.controller, "pi-a", &dir.path().join("a"))
        .token("")
        .args(&file_args)
        .start();
    c.wait_for(
        "pi-a Ready without its token",
        Duration::from_secs(30),
        |c| {
            c.shoal(&["get", "nodes"])
                .stdout()
                .lines()
                .any(|l| l.starts_with("pi-a ") && l.split_whitespace().nth(1) == Some("Ready"))
        },
    );
    drop(ok);
    std::thread::sleep(Duration::from_millis(1500)); // the 1s token's life runs out
    for (name, token, why) in [
        ("pi-b", &once, "used up (1 of 1 joins)"),
        ("pi-c", &brief, "expired"),
        ("pi-d", &deleted, "not valid for this cluster"),
    ] {
        let mut a = Agent::with(&c.controller, name, &dir.path().join(name))
            .token(token)
            .start();
        a.wait_exit(Duration::from_secs(30)).expect("refused");
        assert!(a.log().contains(why), "{name}: {}", a.log());
    }
    let list = c.shoal(&["token", "list"]).ok();
    assert!(
        list.contains("1/1") && list.contains("one device"),
        "{list}"
    );
    for token in [&once, &brief, &deleted] {
        assert!(
            !list.contains(token.as_str()),
            "a token's secret was listed"
        );
    }
    // The bootstrap token is in its file, not in the log.
    let bootstrap = bootstrap_token(&c).to_string();
    assert!(
        !c.controller.log().contains(&bootstrap),
        "the join token was logged"
    );
    assert!(!c.controller.log().contains(&bootstrap_token(&c).secret));
}

/// Finding 3: a node cannot claim another's hostname or an admin's label; labels an admin
/// sets persist across heartbeats.
#[test]
fn a_node_cannot_choose_labels_that_attract_other_nodes_pods() {
    let c = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let mut spoof = Agent::with(&c.controller, "node-3", &dir.path().join("node-3"))
        .token(bootstrap_token(&c).to_string().as_str())
        .args(&["--labels", "kubernetes.io/hostname=node-1"])
        .start();
    spoof.wait_exit(Duration::from_secs(30)).expect("refused");
    assert!(
        spoof.log().contains("kubernetes.io/hostname"),
        "{}",
        spoof.log()
    );

    let thief = stolen(&c.agents[1]);
    rt().block_on(async {
        for (labels, words) in [
            (
                serde_json::json!({"kubernetes.io/hostname": "node-1"}),
                "always the node's own name",
            ),
            (
                serde_json::json!({"node-restriction.shoal.dev/db": "yes"}),
                "may not set label",
            ),
            (
                serde_json::json!({"node-role.kubernetes.io/control-plane": "true"}),
                "may not set label",
            ),
        ] {
            let req = Request::PutNode {
                object: node_object("node-2", labels),
            };
            refused(ask(&thief, &req).await, ErrorCode::Forbidden, words);
        }
    });

    c.shoal(&[
        "label",
        "node",
        "node-1",
        "node-restriction.shoal.dev/db=yes",
        "zone=a",
    ])
    .ok();
    c.shoal(&["taint", "node", "node-2", "dedicated=db:NoSchedule"])
        .ok();
    // Two heartbeats later, the admin's labels and taint are still there.
    let beat = |n: &str| {
        field(
            &serde_json::from_str(&c.shoal(&["get", "node", n, "-o", "json"]).ok()).unwrap(),
            "status.conditions.0.lastHeartbeatTime",
        )
    };
    let first = beat("node-1");
    c.wait_for("two heartbeats", Duration::from_secs(60), |_| {
        beat("node-1") != first && beat("node-2") != first
    });
    let n1: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "node-1", "-o", "json"]).ok()).unwrap();
    assert_eq!(field(&n1, "metadata.labels.zone"), "a", "{n1}");
    assert_eq!(n1["metadata"]["labels"]["kubernetes.io/hostname"], "node-1");
    let n2: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "node-2", "-o", "json"]).ok()).unwrap();
    assert_eq!(field(&n2, "spec.taints.0.key"), "dedicated", "{n2}");
    c.shoal(&["taint", "node", "node-2", "dedicated-"]).ok();
    c.shoal(&["label", "node", "node-1", "zone-"]).ok();
    let n1 = c.shoal(&["get", "node", "node-1", "-o", "json"]).ok();
    assert!(!n1.contains("\"zone\""), "{n1}");
}

/// Finding 4: deleting a node revokes its certificate at once, on open connections too.
#[test]
fn a_deleted_nodes_certificate_is_refused_at_once() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: user}\nspec:\n  nodeName: node-2\n  runtimeClassName: wasm\n  containers:\n  - name: c\n    image: nothing:1\n    env: [{name: P, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n",
    );
    let thief = stolen(&c.agents[1]);
    rt().block_on(async {
        // Before: the node reads the Secret its pod uses.
        let secret = get("Secret", Some("default"), "db");
        assert!(matches!(
            ask(&thief, &secret).await,
            Ok(Response::Object(_))
        ));
        let open = Client::connect(&thief).await.expect("connect");
        c.shoal(&["delete", "node", "node-2"]).ok();
        // An open connection is closed, a new one refused, a request on either answered
        // with the reason.
        match open.call(&secret).await {
            Ok(Response::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Unauthenticated, "{}", e.message)
            }
            Ok(other) => panic!("a deleted node read {other:?}"),
            Err(_) => {}
        }
        match ask(&thief, &secret).await {
            Ok(Response::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Unauthenticated);
                assert!(e.message.contains("revoked"), "{}", e.message);
            }
            Ok(other) => panic!("a deleted node read {other:?}"),
            Err(e) => assert!(e.contains("revoked") || e.contains("closed"), "{e}"),
        }
    });
    // The node's own agent says so, and does not come back.
    c.wait_for(
        "the agent told it is revoked",
        Duration::from_secs(60),
        |c| c.agents[1].log().contains("revoked"),
    );
    let nodes = c.shoal(&["get", "nodes"]).ok();
    assert!(!nodes.contains("node-2"), "{nodes}");
}

/// Findings 5 and 6: tunnels reach pods, never a node's own services; a second session
/// with a node's certificate neither takes over nor disturbs the agent's link.
#[test]
fn tunnels_reach_only_pods_and_a_nodes_session_is_its_own() {
    let c = Cluster::start(2);
    c.push_probe_component();
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  runtimeClassName: wasm\n  nodeSelector: {kubernetes.io/hostname: node-2}\n  containers:\n  - name: web\n    image: probe:2\n    args: [serve, \"8080\", hello]\n    ports: [{containerPort: 8080}]\n    resources: {requests: {cpu: 10m, memory: 16Mi}}\n",
    );
    c.wait_for("the wasm pod serving", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "web"])
            .stdout()
            .contains("serving on 8080")
    });
    let pod_ip = field(&c.pod("web"), "status.podIP");
    // A service of node-2's own, on the address its wasm pod shares with it.
    let console = std::net::TcpListener::bind((pod_ip.as_str(), 0)).expect("console");
    let console_port = console.local_addr().unwrap().port();
    let thief = stolen(&c.agents[0]);
    rt().block_on(async {
        let client = Client::connect(&thief).await.expect("connect");
        let tunnel_from = |port: u16, from: &str| Request::Tunnel {
            node: "node-2".into(),
            ip: pod_ip.clone(),
            port,
            udp: false,
            from: from.into(),
        };
        let tunnel = |port: u16| tunnel_from(port, "127.0.0.1");
        // A node speaks only for its own pods: a client address in node-2's pod range, to
        // pass for one of its pods under a NetworkPolicy, is refused.
        let node2 = c.shoal(&["get", "node", "node-2", "-o", "json"]).ok();
        let range = field(&serde_json::from_str(&node2).expect("json"), "spec.podCIDR");
        let spoofed = range.replace(".0/", ".9/");
        let spoofed = spoofed.split('/').next().expect("address");
        assert!(!spoofed.is_empty(), "node-2 has a pod range: {node2}");
        let spoofing = tunnel_from(8080, spoofed);
        refused(
            client.call(&spoofing).await.map_err(|e| e.to_string()),
            ErrorCode::Forbidden,
            "an address of node \"node-2\"'s pods",
        );
        refused(
            client
                .call(&tunnel(console_port))
                .await
                .map_err(|e| e.to_string()),
            ErrorCode::Forbidden,
            "only declared container ports and Service endpoints",
        );
        // The pod's declared port is reachable, as the service proxy needs.
        let mut s = client.stream(&tunnel(8080)).await.expect("tunnel");
        assert_eq!(s.next().await.expect("answer"), Some(Response::Ok));

        // A second session with node-2's certificate is refused; `get` with it does not
        // take the controller's link to node-2 either.
        let twin = stolen(&c.agents[1]);
        assert!(matches!(
            ask(&twin, &get("Node", None, "node-2")).await,
            Ok(Response::Object(_))
        ));
        let req = Request::PutNode {
            object: node_object("node-2", serde_json::json!({})),
        };
        refused(
            ask(&twin, &req).await,
            ErrorCode::Conflict,
            "already has a session",
        );
        client.close().await;
    });
    drop(console);
    // The agent's link is undisturbed: logs are relayed from node-2 as before.
    let logs = c.shoal(&["logs", "web"]).ok();
    assert!(logs.contains("serving on 8080"), "{logs}");
}

/// An IPv4 header (all a relay reads) from `src` to `dst`.
fn packet(src: &str, dst: &str) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[9] = 17;
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().expect("src"), dst.parse().expect("dst"));
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

/// Waits (without holding up the connection, which this thread drives) until the
/// controller's log says `words`, for up to 10 s.
async fn said(controller: &Controller, words: &str) {
    for _ in 0..100 {
        if controller.log().contains(words) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the controller never said {words:?}:\n{}", controller.log());
}

/// The controller relays a node's pods' packets (QUIC datagrams on its session) only from
/// its own pod range: a thief holding node-1's data dir, as node-1's session, cannot pass
/// packets off as node-2's pods' (which a NetworkPolicy on node-2 would let in).
#[test]
fn the_packet_relay_carries_a_nodes_packets_only_from_its_own_pods() {
    let mut c = Cluster::start(2);
    c.agents[0].terminate();
    assert!(c.agents[0].wait_exit(Duration::from_secs(30)).is_some());
    let thief = stolen(&c.agents[0]);
    let range = |c: &Cluster, node: &str| {
        let n = c.shoal(&["get", "node", node, "-o", "json"]).ok();
        let r = field(&serde_json::from_str(&n).expect("json"), "spec.podCIDR");
        r.split('/').next().expect("address").to_string()
    };
    rt().block_on(async {
        let client = Client::connect(&thief).await.expect("connect");
        // node-1's session: its agent is gone, so the thief's connection takes it.
        let put = Request::PutNode {
            object: node_object("node-1", serde_json::json!({})),
        };
        let answer = client.call(&put).await.expect("put");
        assert!(!matches!(answer, Response::Error(_)), "{answer:?}");
        let (own, other) = (range(&c, "node-1"), range(&c, "node-2"));
        let at = |base: &str, last: &str| base.rsplit_once('.').map(|b| format!("{}.{last}", b.0));
        let (mine, theirs, target) = (at(&own, "9"), at(&other, "9"), at(&other, "3"));
        let (mine, theirs, target) = (mine.unwrap(), theirs.unwrap(), target.unwrap());
        let conn = client.connection();
        conn.send_datagram(packet(&theirs, &target).into())
            .expect("a datagram");
        said(
            &c.controller,
            "is not one of its pods: the packet is not relayed",
        )
        .await;
        assert!(
            !c.controller
                .log()
                .contains("relaying the node's pods' packets"),
            "{}",
            c.controller.log()
        );
        let log = c.controller.log();
        assert!(
            log.contains(&format!("node \"node-1\" sent a packet from {theirs}")),
            "{log}"
        );
        // Its own pods' packet is relayed to node-2.
        conn.send_datagram(packet(&mine, &target).into())
            .expect("a datagram");
        said(
            &c.controller,
            "relaying the node's pods' packets from=node-1 to=node-2",
        )
        .await;
        client.close().await;
    });
}

/// Finding 7: clients without a certificate cost the controller little, however many
/// connections and however large the frames they announce.
#[test]
fn an_anonymous_flood_leaves_the_controller_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&dir.path().join("controller"));
    let pid = ctl.pid().expect("pid");
    let token = JoinToken::parse(
        std::fs::read_to_string(ctl.dir.join("token"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    const CONNECTIONS: usize = 80;
    let before = kit::rss_kib(pid);
    let (opened, refused_conns) = rt().block_on(async {
        let mut clients = Vec::new();
        let (mut opened, mut refused_conns) = (0, 0);
        for _ in 0..CONNECTIONS {
            let Ok(client) = Client::connect_with_token(&ctl.addr, &token).await else {
                refused_conns += 1;
                continue;
            };
            for _ in 0..8 {
                let Ok(Ok((mut send, _recv))) =
                    tokio::time::timeout(Duration::from_millis(200), client.connection().open_bi())
                        .await
                else {
                    break;
                };
                opened += 1;
                let mut frame = (16u32 << 20).to_be_bytes().to_vec();
                frame.extend(vec![0xAB; 4 << 20]);
                let _ =
                    tokio::time::timeout(Duration::from_millis(300), send.write_all(&frame)).await;
            }
            clients.push(client);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let live = clients
            .iter()
            .filter(|c| c.connection().close_reason().is_none())
            .count();
        (opened, refused_conns + clients.len() - live)
    });
    let after = kit::rss_kib(pid);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "anonymous flood: {CONNECTIONS} connections tried, {refused_conns} refused or closed, {opened} streams opened, controller RSS {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)"
    );
    assert!(
        refused_conns >= CONNECTIONS - 64,
        "only 64 anonymous connections per address are kept: {refused_conns} refused"
    );
    assert!(
        grown_mib < 48.0,
        "the controller grew {grown_mib:.1} MiB under an anonymous flood (bound: 48 MiB)"
    );
    // It still serves.
    let who = ctl.shoal(&["get", "nodes"]);
    who.ok();
}

/// Finding 8: a node's Events are bounded in size and rate, and kept out of other namespaces.
#[test]
fn event_floods_are_capped() {
    let c = Cluster::start(1);
    let thief = stolen(&c.agents[0]);
    let started = std::time::Instant::now();
    let (ok, limited) = rt().block_on(async {
        let client = Client::connect(&thief).await.expect("connect");
        let about = |ns: &str| {
            serde_json::to_vec(&serde_json::json!({"kind": "Node", "name": "node-1",
                "namespace": ns}))
            .unwrap()
        };
        let (mut ok, mut limited) = (0, 0);
        for i in 0..500 {
            let req = Request::RecordEvent {
                about: about("shoal-system"),
                type_: "Warning".into(),
                reason: "Flood".into(),
                message: format!("{i} {}", "x".repeat(64 * 1024)),
            };
            match client.call(&req).await {
                Ok(Response::Ok) => ok += 1,
                Ok(Response::Error(e)) if e.code == ErrorCode::TooManyRequests => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        let huge_reason = Request::RecordEvent {
            about: about("default"),
            type_: "Warning".into(),
            reason: "R".repeat(4096),
            message: "m".into(),
        };
        refused(
            client.call(&huge_reason).await.map_err(|e| e.to_string()),
            ErrorCode::BadRequest,
            "at most 128 bytes",
        );
        // A message that would retitle the admin's terminal and clear its screen.
        let escape = Request::RecordEvent {
            about: about("default"),
            type_: "Warning".into(),
            reason: "Escape".into(),
            message: "look \x1b]0;pwned\x07\x1b[2J here".into(),
        };
        tokio::time::sleep(Duration::from_millis(400)).await; // a token for it
        assert_eq!(client.call(&escape).await.ok(), Some(Response::Ok));
        client.close().await;
        (ok, limited)
    });
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "event flood: 500 sent in {elapsed:.1}s, {ok} recorded, {limited} refused as too many"
    );
    // A burst of 300, then 5 a second.
    let most = 300 + (5.0 * elapsed).ceil() as usize + 1;
    assert!(
        ok <= most,
        "{ok} recorded in {elapsed:.1}s: more than the {most} allowed"
    );
    assert_eq!(ok + limited, 500);
    // Printed to a person, the escape sequence is shown, not obeyed.
    let described = c.shoal(&["describe", "node", "node-1"]).ok();
    assert!(described.contains("look \\u{1b}]0;pwned"), "{described}");
    assert!(!described.contains('\x1b') && !described.contains('\x07'));
    let table = c.shoal(&["get", "events"]).ok();
    assert!(!table.contains('\x1b'), "{table:?}");
    let system = c.shoal(&["get", "events", "-n", "shoal-system"]).ok();
    assert!(
        !system.contains("Flood"),
        "a node wrote into shoal-system: {system}"
    );
    let all = c.shoal(&["get", "events", "-A", "-o", "json"]).ok();
    let events: serde_json::Value = serde_json::from_str(&all).expect("events list");
    let flood: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["reason"] == "Flood").collect())
        .unwrap_or_default();
    assert!(!flood.is_empty());
    for e in flood {
        assert_eq!(e["metadata"]["namespace"], "default");
        let m = e["message"].as_str().unwrap_or("");
        assert!(
            m.len() <= 1024,
            "an event message of {} bytes was kept",
            m.len()
        );
    }
}

/// The honest path: an agent renews its short-lived certificate without disturbing its
/// pods and survives a controller restart with it; an admin issues a second credential,
/// uses it, rotates it and revokes it.
#[test]
fn agents_renew_their_certificates_and_admins_manage_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("controller");
    let ctl = Controller::start_with_args(&cdir, &["--node-cert-ttl", "12s"]);
    let token = std::fs::read_to_string(ctl.dir.join("token")).unwrap();
    let agent = Agent::with(&ctl, "node-1", &dir.path().join("agent-1"))
        .token(token.trim())
        .args(&["--node-status-update-frequency", "1"])
        .start();
    let mut c = Cluster::adopt(ctl, vec![agent]);
    c.wait_nodes_ready();
    let cert = || stolen(&c.agents[0]).client_certificate;
    let first = cert();
    c.wait_for("a renewed certificate", Duration::from_secs(30), |_| {
        cert() != first
    });
    assert!(c.agents[0].log().contains("renewed the node's certificate"));
    // Past the first certificate's life, a restarted controller takes the renewed one.
    std::thread::sleep(Duration::from_secs(2));
    let addr = c.controller.addr.clone();
    c.controller.kill9();
    // An admin credential near its end (a 5 s certificate for the same key) is renewed for a
    // year when the controller starts.
    let ca = shoal_transport::Ca::load_or_create(&cdir.join("tls")).unwrap();
    let mut admin = c.controller.credentials();
    let csr = shoal_transport::pki::csr_for(&admin.client_key, "admin").unwrap();
    admin.client_certificate = ca
        .sign_admin(&csr, "admin", Duration::from_secs(5))
        .unwrap();
    admin.save(&c.controller.config()).unwrap();
    c.controller = Controller::start_listening(&cdir, &addr, &["--node-cert-ttl", "12s"]);
    let admin = c.controller.credentials();
    let (until, _) = shoal_transport::pki::lifetime_of(&admin.client_certificate).unwrap();
    assert!(
        until > std::time::SystemTime::now() + Duration::from_secs(300 * 24 * 3600),
        "admin.conf was not renewed"
    );
    let ready = |c: &Cluster| {
        c.shoal(&["get", "nodes"])
            .stdout()
            .lines()
            .any(|l| l.starts_with("node-1 ") && l.split_whitespace().nth(1) == Some("Ready"))
    };
    std::thread::sleep(Duration::from_secs(13)); // every certificate of the first hour is gone
    c.wait_for("node-1 Ready again", Duration::from_secs(60), ready);

    // A second admin credential: used, rotated, revoked.
    let ops = dir.path().join("ops.conf");
    c.shoal(&[
        "credentials",
        "create",
        "ops",
        "--ttl",
        "1h",
        "-o",
        ops.to_str().unwrap(),
    ])
    .ok();
    let as_ops = |file: &std::path::Path, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", file.to_str().unwrap()]);
        c.shoal(&all)
    };
    assert!(as_ops(&ops, &["get", "nodes"]).ok().contains("node-1"));
    let listed = c.shoal(&["credentials", "list"]).ok();
    assert!(
        listed.contains("ops") && listed.contains("admin"),
        "{listed}"
    );
    let old = dir.path().join("ops-old.conf");
    std::fs::copy(&ops, &old).unwrap();
    as_ops(&ops, &["cert", "rotate"]).ok();
    let err = as_ops(&old, &["get", "nodes"]).fails();
    assert!(err.contains("revoked or rotated"), "{err}");
    as_ops(&ops, &["get", "nodes"]).ok();
    c.shoal(&["credentials", "delete", "ops"]).ok();
    let err = as_ops(&ops, &["get", "nodes"]).fails();
    assert!(err.contains("revoked"), "{err}");
    // The first admin credential works throughout.
    c.shoal(&["get", "nodes"]).ok();
}

/// Finding 10: data dirs are their owner's alone, and a Secret volume lives in memory, out of
/// other users' reach and never on the node's disk.
#[test]
fn secret_volumes_live_in_memory_and_data_dirs_are_private() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let value = "s3cr3t-value-0xC0FFEE";
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData: {{password: {value}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n  runtimeClassName: wasm\n  containers:\n  - name: c\n    image: {image}\n    args: [print, started, sleep, \"600000\"]\n    volumeMounts: [{{name: s, mountPath: /secret}}]\n    resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}\n  volumes: [{{name: s, secret: {{secretName: db}}}}]\n"
    ));
    // (The pod does not print it: its log is on disk, as the kubelet keeps logs.)
    c.wait_for(
        "the pod started with its secret",
        Duration::from_secs(60),
        |c| c.shoal(&["logs", "reader"]).stdout().contains("started"),
    );
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    let agent_dir = &c.agents[0].dir;
    assert_eq!(mode(agent_dir), 0o700, "the agent's data dir");
    assert_eq!(mode(&agent_dir.join("local.redb")), 0o600);
    assert_eq!(mode(&c.controller.dir), 0o700, "the controller's data dir");
    assert_eq!(mode(&c.controller.dir.join("state.redb")), 0o600);
    // The volume: a tmpfs of its own (as root), or a private directory in /dev/shm.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let in_memory: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("tmpfs"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(agent_dir.to_str().unwrap()) && m.ends_with("/volumes/s"))
        .collect();
    let volume = match in_memory.first() {
        Some(m) => std::path::PathBuf::from(m),
        None => {
            let shm = std::fs::read_dir("/dev/shm")
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("shoal-"));
            shm.expect("the secret volume is neither a tmpfs nor in /dev/shm")
                .path()
        }
    };
    let file = walk(&volume)
        .into_iter()
        .find(|f| f.ends_with("password"))
        .expect("the file");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), value);
    assert_eq!(mode(&volume) & 0o077, 0, "the volume is its owner's alone");
    // Another local user cannot read it.
    let other = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(&file)
        .output()
        .expect("setpriv (util-linux)");
    assert!(!other.status.success(), "another user read the secret");
    assert!(String::from_utf8_lossy(&other.stderr).contains("Permission denied"));
    // Nothing on the disk under the agent's data dir holds it in clear.
    for f in walk(agent_dir) {
        if in_memory.iter().any(|m| f.starts_with(m)) {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the secret in clear",
            f.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Finding 9: a module that grows a table (outside linear memory) is killed at its pod's
/// limit, and the agent that runs it stays small.
#[test]
fn a_table_growing_module_is_killed_at_its_limit() {
    let c = Cluster::start(1);
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1) (table 1 funcref)
          (func (export "_start")
            (loop $l (br_if $l (i32.ne (table.grow (ref.null func) (i32.const 65536)) (i32.const -1))))))"#,
    )
    .expect("wat");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table-hog.wasm");
    std::fs::write(&path, wasm).unwrap();
    c.shoal(&["push", path.to_str().unwrap(), "table-hog:1"])
        .ok();
    let pid = c.agents[0].pid().expect("agent pid");
    let before = kit::rss_kib(pid);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hog}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  containers:\n  - name: hog\n    image: table-hog:1\n    resources: {limits: {memory: 32Mi}}\n",
    );
    c.wait_for("the hog killed", Duration::from_secs(60), |c| {
        field(&c.pod("hog"), "status.phase") == "Failed"
    });
    let hog = c.pod("hog");
    assert_eq!(
        field(&hog, "status.containerStatuses.0.state.terminated.reason"),
        "OOMKilled",
        "{hog}"
    );
    let after = kit::rss_kib(pid);
    let grown = after.saturating_sub(before) / 1024;
    println!("table hog: agent RSS {before} KiB -> {after} KiB");
    assert!(grown < 64, "the agent grew {grown} MiB running a 32Mi pod");
}

/// Lists are bounded by nothing a peer controls: one larger than a frame (here 18 MiB of
/// ConfigMaps, once 160 MB of Events) is sent in parts and read whole.
#[test]
fn a_list_larger_than_a_frame_is_served_whole() {
    let c = Cluster::start(0);
    let blob = "x".repeat(900 * 1024);
    for batch in 0..2 {
        let docs: Vec<String> = (0..10)
            .map(|i| {
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big-{batch}-{i}}}\ndata: {{blob: {blob}}}\n")
            })
            .collect();
        c.apply(&docs.join("---\n"));
    }
    let names = c.shoal(&["get", "configmaps", "-o", "name"]).ok();
    assert_eq!(
        names.lines().filter(|l| l.contains("big-")).count(),
        20,
        "{names}"
    );
    let json = c.shoal(&["get", "configmaps", "-o", "json"]).ok();
    assert!(
        json.len() > 16 * 1024 * 1024,
        "{} bytes: more than a frame",
        json.len()
    );
}

/// Finding 11: the controller compiles only for a target the asking node reported; a
/// `subPath` that climbs out of its volume is refused at apply by field, in both validation
/// modes, never dropped (which would mount all of a hostPath). One that stays inside but has
/// become a symlink out is refused when its container starts (pod_fidelity).
#[test]
fn a_node_gets_code_only_for_its_own_target_and_subpath_is_never_dropped() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let node = stolen(&c.agents[0]);
    rt().block_on(async {
        let req = Request::FetchPrecompiled {
            reference: image.into(),
            target: shoal_api::WasmTarget {
                wasmtime: "48.0.8".into(),
                triple: "riscv64gc-unknown-linux-gnu".into(),
                features: vec![],
            },
            offset: 0,
        };
        refused(
            ask(&node, &req).await,
            ErrorCode::Forbidden,
            "which it did not report",
        );
    });
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: peek}\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n    volumeMounts: [{name: etc, mountPath: /x/shadow, subPath: ../etc/shadow}]\n  volumes: [{name: etc, hostPath: {path: /etc/ssl}}]\n";
    for validate in ["warn", "strict"] {
        let err = c
            .controller
            .shoal_stdin(
                &["apply", "--validate", validate, "-f", "-"],
                Some(manifest),
            )
            .fails();
        assert!(
            err.contains("volumeMounts[0].subPath") && err.contains("must not contain '..'"),
            "{err}"
        );
    }
    let pods = c.shoal(&["get", "pods"]).stdout();
    assert!(!pods.contains("peek"), "{pods}");
}

/// What a node uploads for the controller to compile (a module it pulled from a registry,
/// `Request::Compile`), as a thief would send it.
async fn upload(
    node: &Credentials,
    bytes: &[u8],
    digest: &str,
    target: &shoal_api::WasmTarget,
) -> Result<Response, String> {
    let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(file.path(), bytes).map_err(|e| e.to_string())?;
    let client = Client::connect(node).await.map_err(|e| e.to_string())?;
    let req = Request::Compile {
        digest: digest.into(),
        size: bytes.len() as u64,
        target: target.clone(),
    };
    let mut stream = client
        .upload(&req, file.path())
        .await
        .map_err(|e| e.to_string())?;
    let first = stream.next().await.map_err(|e| e.to_string())?;
    let mut code = 0;
    while let Ok(Some(Response::Chunk(c))) = stream.next().await {
        code += c.len();
    }
    client.close().await;
    match first {
        Some(Response::Artifact { size, .. }) => {
            assert_eq!(size as usize, code, "the code announced is the code sent");
            Ok(Response::Artifact {
                digest: String::new(),
                size,
            })
        }
        Some(other) => Ok(other),
        None => Err("no answer".into()),
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A node that cannot compile has the controller compile what it pulled from a registry. A
/// thief with its credentials gets compiling only within bounds: for the node's own target,
/// while a wasm pod with a registry image is bound to it, of a size and a digest that hold,
/// only for wasm, and at a bounded rate; the controller keeps nothing of what it was sent.
#[test]
fn a_stolen_node_has_modules_compiled_only_within_bounds() {
    let c = Cluster::start(1);
    let node = stolen(&c.agents[0]);
    let name = c.agents[0].name.clone();
    let reported: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", &name, "-o", "json"]).ok()).unwrap();
    let target: shoal_api::WasmTarget =
        serde_json::from_value(reported["status"]["runtimeHandlers"][0]["wasmTarget"].clone())
            .expect("the node reports its wasm target");
    let module = std::fs::read(kit::wasm_fixture("probe", "wasm32-wasip1")).unwrap();
    let digest = sha256(&module);
    rt().block_on(async {
        refused(
            upload(&node, &module, &digest, &target).await,
            ErrorCode::Forbidden,
            "runs no wasm pod whose image names a registry",
        );
    });
    // A wasm pod with a registry image, bound to the node (its pull fails: nothing listens).
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulls}}\nspec:\n  nodeName: {name}\n  runtimeClassName: wasm\n  containers:\n  - {{name: c, image: 127.0.0.1:9/probe:v1}}\n"
    ));
    let mut other = target.clone();
    other.triple = "riscv64gc-unknown-linux-gnu".into();
    rt().block_on(async {
        refused(
            upload(&node, &module, &digest, &other).await,
            ErrorCode::Forbidden,
            "which it did not report",
        );
        let huge = Client::connect(&node).await.unwrap();
        let req = Request::Compile {
            digest: digest.clone(),
            size: 1 << 40,
            target: target.clone(),
        };
        refused(
            huge.call(&req).await.map_err(|e| e.to_string()),
            ErrorCode::BadRequest,
            "more than the 67108864 a node may have compiled",
        );
        huge.close().await;
        refused(
            upload(&node, &module, &sha256(b"another module"), &target).await,
            ErrorCode::BadRequest,
            "digest mismatch",
        );
        let text = b"#!/bin/sh\necho not wasm\n";
        refused(
            upload(&node, text, &sha256(text), &target).await,
            ErrorCode::Invalid,
            "not a wasm module or component",
        );
        match upload(&node, &module, &digest, &target).await {
            Ok(Response::Artifact { size, .. }) => assert!(size > 0),
            other => panic!("the node's own module, compiled: {other:?}"),
        }
        // Each try counts, refused or not: 16 at once, then one a minute.
        let mut answers = Vec::new();
        for _ in 0..16 {
            let answer = upload(&node, &module, &sha256(b"again"), &target).await;
            let limited =
                matches!(&answer, Ok(Response::Error(e)) if e.code == ErrorCode::TooManyRequests);
            answers.push(answer);
            if limited {
                break;
            }
        }
        assert_eq!(answers.len(), 14, "3 compiles so far, 13 more: {answers:?}");
        refused(
            answers.pop().unwrap(),
            ErrorCode::TooManyRequests,
            "had 16 modules compiled lately",
        );
    });
    let uploads = c.controller.dir.join("artifacts/precompiled/uploads");
    let kept = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "nothing of a node's upload stays in {uploads:?}");
    let fetched = rt().block_on(ask(
        &node,
        &Request::Fetch {
            reference: digest.clone(),
            offset: 0,
        },
    ));
    refused(fetched, ErrorCode::NotFound, "");
}
