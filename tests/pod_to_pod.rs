//! Pods reach pods on other nodes by their addresses, with no NAT between them (root and
//! runc): each agent runs in a network namespace of its own ("host") on a bridge of the
//! test's own, with no default route. The packets travel as QUIC datagrams between the nodes
//! (the node's TUN device in, the far node's out), directly while the hosts reach each other,
//! through the controller once they are cut apart, and on after the far host's address
//! changes; the far pod sees the near pod's own address as the source, over TCP and UDP. The
//! device and its routes go with the agent.

mod kit;

use kit::{field, Hosts};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TAG: u8 = 59;

/// The server pod on node-2: busybox httpd whose CGI script answers with the client's
/// address as the server saw it.
const SERVER: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: server}\nspec:\n  nodeSelector: {kubernetes.io/hostname: node-2}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:1\n    command: [sh, -c, \"mkdir -p /www/cgi-bin && printf '#!/bin/sh\\\\necho Content-Type: text/plain\\\\necho\\\\necho from $REMOTE_ADDR\\\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www\"]\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n";

/// The client pod on node-1.
const CLIENT: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  nodeSelector: {kubernetes.io/hostname: node-1}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1, command: [sleep, \"600\"]}\n";

/// What the client pod gets from the server's CGI script at `ip` (`from ADDRESS`), or what
/// went wrong; it gives up after 3 s.
fn ask(c: &kit::Cluster, ip: &str) -> String {
    let run = c.shoal(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        &format!("timeout 3 wget -qO- http://{ip}:8080/cgi-bin/ip"),
    ]);
    let said = run.stdout();
    if said.starts_with("from ") {
        // httpd listens on IPv6 too, so it gives an IPv4 client as `[::ffff:A.B.C.D]`.
        let bare = said.trim().replace("[::ffff:", "").replace(']', "");
        bare.to_string()
    } else {
        format!("no answer: {said} {}", run.stderr())
    }
}

/// Asks until the answer comes (the path may be changing), for up to `within`.
fn ask_until_answered(c: &kit::Cluster, ip: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let said = ask(c, ip);
        if said.starts_with("from ") || Instant::now() > deadline {
            return said;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Python `script` run in the network namespace of the pod with `uid`.
fn in_pod(uid: &str, script: &str) -> Command {
    let mut c = Command::new("ip");
    let netns = format!("shoal-{uid}");
    c.args(["netns", "exec", &netns, "python3", "-c", script]);
    c
}

/// A UDP server in the server pod's own network namespace (what the pod sees): prints each
/// sender's address and answers `pong`. (Python on both ends: busybox's `nc -u` cannot say
/// where a datagram came from.)
fn udp_server(uid: &str) -> std::process::Child {
    let script = "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 9000))\n\
         print('listening', flush=True)\n\
         while True:\n\
         \x20   d, a = s.recvfrom(2048)\n\
         \x20   print(a[0], d.decode().strip(), flush=True)\n\
         \x20   s.sendto(b'pong\\n', a)\n";
    in_pod(uid, script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in the server pod's namespace")
}

/// Sends `ping` from the client pod's network namespace to the UDP server at `server`:
/// the answer, or what went wrong.
fn udp_ping(uid: &str, server: &str) -> String {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(3)\n\
         s.sendto(b'ping\\n', ('{server}', 9000))\n\
         print(s.recvfrom(2048)[0].decode().strip())\n"
    );
    let out = in_pod(uid, &script)
        .output()
        .expect("python3 in the client pod's namespace");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn ip_in(hosts: &Hosts, i: usize, args: &[&str]) {
    let out = hosts.exec(i, &[&["ip"], args].concat());
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runc_pods_reach_pods_on_another_node_by_address_directly_through_the_relay_and_after_an_address_change(
) {
    let test = "runc_pods_reach_pods_on_another_node_by_address";
    if kit::runc_missing(test) {
        return;
    }
    let hosts = Hosts::create(TAG, 2);
    let (c, _leftovers) = kit::hosts_cluster(&hosts, TAG, &["edge", "edge"]);
    c.apply(SERVER);
    c.apply(CLIENT);
    c.wait_for("both pods running", Duration::from_secs(60), |c| {
        field(&c.pod("server"), "status.phase") == "Running"
            && field(&c.pod("client"), "status.phase") == "Running"
    });
    let server_ip = field(&c.pod("server"), "status.podIP");
    let client_ip = field(&c.pod("client"), "status.podIP");
    let pods = format!("10.{}.", TAG + 1);
    assert!(server_ip.starts_with(&pods) && client_ip.starts_with(&pods));
    assert_ne!(
        server_ip.rsplit_once('.').map(|p| p.0),
        client_ip.rsplit_once('.').map(|p| p.0)
    );

    // Node-1 routes node-2's pod range into its TUN device.
    let routes = String::from_utf8_lossy(&hosts.exec(0, &["ip", "route"]).stdout).to_string();
    assert!(routes.contains("dev shoal0-tun"), "{routes}");

    // TCP, directly between the nodes: the server sees the client pod's own address.
    let expected = format!("from {client_ip}");
    assert_eq!(
        ask_until_answered(&c, &server_ip, Duration::from_secs(20)),
        expected
    );
    assert!(
        c.agents[0].log().contains("reaching the node directly"),
        "{}",
        c.agents[0].log()
    );

    // UDP: the server (in the server pod's namespace) sees the client pod's address and
    // its answer comes back.
    let uid = field(&c.pod("server"), "metadata.uid");
    let mut udp = udp_server(&uid);
    let (lines, heard) = std::sync::mpsc::channel();
    let out = udp.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next = || heard.recv_timeout(Duration::from_secs(10));
    assert_eq!(next().as_deref(), Ok("listening"));
    let client_uid = field(&c.pod("client"), "metadata.uid");
    let pinged = udp_ping(&client_uid, &server_ip);
    let said = next();
    let _ = udp.kill();
    let _ = udp.wait();
    assert_eq!(
        said,
        Ok(format!("{client_ip} ping")),
        "{}",
        c.agents[1].log()
    );
    assert_eq!(pinged, "pong");

    // Cut the hosts apart (each still reaches the controller): the packets go through the
    // controller's relay, the source still the client pod's.
    for (i, other) in [(0, 1), (1, 0)] {
        ip_in(
            &hosts,
            i,
            &[
                "route",
                "add",
                "blackhole",
                &format!("{}/32", hosts.addresses[other]),
            ],
        );
    }
    let relayed = ask_until_answered(&c, &server_ip, Duration::from_secs(30));
    assert_eq!(relayed, expected);
    assert!(
        c.controller
            .log()
            .contains("relaying the node's pods' packets"),
        "{}",
        c.controller.log()
    );

    // Joined again, then node-2's host gets a new address (its old one gone): the pods
    // still reach each other.
    for (i, other) in [(0, 1), (1, 0)] {
        ip_in(
            &hosts,
            i,
            &[
                "route",
                "delete",
                "blackhole",
                &format!("{}/32", hosts.addresses[other]),
            ],
        );
    }
    let moved = format!("10.{TAG}.0.50");
    // The new address stays when the old one (the primary) goes.
    let promote = hosts.exec(
        1,
        &["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
    );
    assert!(promote.status.success());
    ip_in(
        &hosts,
        1,
        &["addr", "add", &format!("{moved}/24"), "dev", "eth0"],
    );
    ip_in(
        &hosts,
        1,
        &[
            "addr",
            "del",
            &format!("{}/24", hosts.addresses[1]),
            "dev",
            "eth0",
        ],
    );
    let logs = |c: &kit::Cluster| {
        format!(
            "node-1:\n{}\nnode-2:\n{}\ncontroller:\n{}",
            c.agents[0].log(),
            c.agents[1].log(),
            c.controller.log()
        )
    };
    let moved_on = ask_until_answered(&c, &server_ip, Duration::from_secs(30));
    assert_eq!(moved_on, expected, "{}", logs(&c));
    assert_eq!(ask(&c, &server_ip), expected, "and it stays so");
    // QUIC moved node-2's session to its new address: it never lost the controller.
    assert!(
        !c.agents[1].log().contains("lost the controller"),
        "{}",
        logs(&c)
    );

    // The TUN device and its routes go with the agent's process.
    let mut c = c;
    c.agents[0].terminate();
    assert!(c.agents[0].wait_exit(Duration::from_secs(30)).is_some());
    let routes = String::from_utf8_lossy(&hosts.exec(0, &["ip", "route"]).stdout).to_string();
    assert!(!routes.contains("shoal0-tun"), "{routes}");
    let links = String::from_utf8_lossy(&hosts.exec(0, &["ip", "-o", "link"]).stdout).to_string();
    assert!(!links.contains("shoal0-tun"), "{links}");
}
