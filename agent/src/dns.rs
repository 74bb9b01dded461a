//! The cluster's names, served by every agent for its pods (CoreDNS's job in K3s): a DNS
//! server on the cluster DNS Service's address (`shoal-dns` in `shoal-system`) that answers
//! `NAME.NAMESPACE.svc.cluster.local` (and `NAME.NAMESPACE`) with the Service's cluster IP
//! (for a headless Service, `clusterIP: None`, the addresses of its ready pods, and each pod's
//! own name `10-42-1-5.NAME.NAMESPACE.svc.cluster.local`, as CoreDNS has them) and forwards
//! any other name to the node's own resolvers. Pods' resolv.conf names it, with
//! the search path that makes `NAME` and `NAME.NAMESPACE` work too.
//!
//! The message handling is pure ([`parse_query`], [`reply`]); the server is a thin loop.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The cluster's DNS Service, which the controller creates.
pub const SERVICE_NAMESPACE: &str = "shoal-system";
pub const SERVICE_NAME: &str = "shoal-dns";
/// The cluster domain, as the kubelet's --cluster-domain default.
pub const DOMAIN: &str = "cluster.local";

const TYPE_A: u16 = 1;
#[cfg(test)]
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// Seconds an answer may be cached (CoreDNS's kubernetes plugin default is 5).
const TTL: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The header's flags as sent (opcode, recursion desired).
    pub flags: u16,
    /// Lowercase, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section's bytes, echoed in the reply.
    question: Vec<u8>,
}

/// Reads the one question of a standard query; `Err` says what is wrong with the message.
pub fn parse_query(msg: &[u8]) -> Result<Query, String> {
    if msg.len() < 12 {
        return Err(format!("{} bytes is shorter than a DNS header", msg.len()));
    }
    let be = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (id, flags, qdcount) = (be(0), be(2), be(4));
    if flags & 0x8000 != 0 {
        return Err("a response, not a query".into());
    }
    if qdcount != 1 {
        return Err(format!("{qdcount} questions; one is supported"));
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(i).ok_or("the name runs past the message")?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Err("compressed or oversized label in a question".into());
        }
        let label = msg
            .get(i..i + len)
            .ok_or("the name runs past the message")?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let rest = msg.get(i..i + 4).ok_or("the question is cut short")?;
    Ok(Query {
        id,
        flags,
        name: labels.join("."),
        qtype: u16::from_be_bytes([rest[0], rest[1]]),
        qclass: u16::from_be_bytes([rest[2], rest[3]]),
        question: msg[12..i + 4].to_vec(),
    })
}

/// What the cluster says about a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A Service's cluster IP, or the addresses of a headless Service's ready pods (none
    /// while it has none), or one of those pods.
    Addresses(Vec<Ipv4Addr>),
    /// A name in the cluster domain (or `NAME.NAMESPACE` of a namespace with Services) that
    /// does not exist.
    NoSuchName,
    /// Not the cluster's: ask the node's resolvers.
    Elsewhere,
}

/// What the cluster knows, as its DNS server asks it.
pub trait Names {
    /// The addresses Service `svc` in `ns` resolves to: its cluster IP, or for a headless
    /// Service its ready endpoints' addresses; `None` when there is no such Service.
    fn service(&self, ns: &str, svc: &str) -> Option<Vec<Ipv4Addr>>;
    /// The ready endpoint of headless Service `svc` in `ns` that `host` names (its address
    /// with dashes, `10-42-1-5`).
    fn endpoint(&self, ns: &str, svc: &str, host: &str) -> Option<Ipv4Addr>;
    /// Whether any Service is in `ns` (so `web.prod` is the cluster's while `example.com` is
    /// not).
    fn namespace_known(&self, ns: &str) -> bool;
}

/// Looks `name` up in what `cluster` knows.
pub fn lookup(name: &str, cluster: &impl Names) -> Lookup {
    let found = |a: Option<Vec<Ipv4Addr>>| a.map_or(Lookup::NoSuchName, Lookup::Addresses);
    let suffix = format!(".svc.{DOMAIN}");
    if let Some(rest) = name.strip_suffix(&suffix) {
        return match rest.split('.').collect::<Vec<_>>()[..] {
            [svc, ns] => found(cluster.service(ns, svc)),
            [host, svc, ns] => found(cluster.endpoint(ns, svc, host).map(|ip| vec![ip])),
            _ => Lookup::NoSuchName,
        };
    }
    if name == DOMAIN || name.ends_with(&format!(".{DOMAIN}")) {
        return Lookup::NoSuchName;
    }
    match name.split('.').collect::<Vec<_>>()[..] {
        [svc, ns] if cluster.namespace_known(ns) => found(cluster.service(ns, svc)),
        _ => Lookup::Elsewhere,
    }
}

/// The most answers a reply over UDP carries: with the header and a question it stays within
/// DNS's 512 bytes; past it the reply says it was truncated (and the client asks over TCP).
pub const UDP_ANSWERS: usize = 24;

/// The most answers a reply over TCP carries: what fits in a message of 64 KiB.
pub const TCP_ANSWERS: usize = 4000;

/// The answer to `q`: its addresses for an A question (at most [`UDP_ANSWERS`], the rest
/// left with the truncated flag set), none for other types of a name that exists (so
/// resolvers do not wait for AAAA), NXDOMAIN for one that does not.
pub fn reply(q: &Query, found: &Lookup) -> Vec<u8> {
    reply_within(q, found, UDP_ANSWERS)
}

/// [`reply`] with at most `most` answers (over TCP, [`TCP_ANSWERS`]).
pub fn reply_within(q: &Query, found: &Lookup, most: usize) -> Vec<u8> {
    let (rcode, answers): (u16, &[Ipv4Addr]) = match found {
        Lookup::Addresses(ips) if q.qtype == TYPE_A && q.qclass == CLASS_IN => (0, ips),
        Lookup::Addresses(_) => (0, &[]),
        Lookup::NoSuchName => (3, &[]),
        // Not ours and no resolver to ask: SERVFAIL.
        Lookup::Elsewhere => (2, &[]),
    };
    let truncated = answers.len() > most;
    let answers = &answers[..answers.len().min(most)];
    // QR, the query's opcode and RD, AA, RA, TC when cut, and the code.
    let tc = if truncated { 0x0200 } else { 0 };
    let flags = 0x8000 | (q.flags & 0x7900) | 0x0400 | 0x0080 | tc | rcode;
    let mut out = Vec::with_capacity(12 + q.question.len() + 16 * answers.len());
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&q.question);
    for ip in answers {
        out.extend_from_slice(&[0xc0, 0x0c]); // the name: a pointer to the question's
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// The resolvers of the node itself (its /etc/resolv.conf), for names that are not the
/// cluster's; never the cluster DNS address itself.
pub fn upstreams(resolv_conf: &str, cluster_dns: Ipv4Addr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| *ip != std::net::IpAddr::V4(cluster_dns))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A pod's resolv.conf: the cluster DNS, then the search path of its namespace.
pub fn resolv_conf(cluster_dns: Ipv4Addr, namespace: &str) -> String {
    format!(
        "nameserver {cluster_dns}\nsearch {namespace}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\noptions ndots:5\n"
    )
}

/// Sends a query the cluster cannot answer to the node's resolvers, the first that answers.
pub async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let any: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(any).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    /// `web` with a cluster IP and headless `db` with two ready pods, in `default`.
    struct Cluster;

    const DB: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 42, 1, 5), Ipv4Addr::new(10, 42, 2, 9)];

    impl Names for Cluster {
        fn service(&self, ns: &str, svc: &str) -> Option<Vec<Ipv4Addr>> {
            match (ns, svc) {
                ("default", "web") => Some(vec![Ipv4Addr::new(10, 43, 0, 7)]),
                ("default", "db") => Some(DB.to_vec()),
                _ => None,
            }
        }
        fn endpoint(&self, ns: &str, svc: &str, host: &str) -> Option<Ipv4Addr> {
            (ns == "default" && svc == "db").then(|| {
                DB.into_iter()
                    .find(|ip| ip.to_string().replace('.', "-") == host)
            })?
        }
        fn namespace_known(&self, ns: &str) -> bool {
            ns == "default"
        }
    }

    #[test]
    fn service_names_resolve_in_every_form_and_the_rest_goes_elsewhere() {
        let ip = Lookup::Addresses(vec![Ipv4Addr::new(10, 43, 0, 7)]);
        assert_eq!(lookup("web.default.svc.cluster.local", &Cluster), ip);
        assert_eq!(lookup("web.default", &Cluster), ip);
        assert_eq!(
            lookup("cache.default.svc.cluster.local", &Cluster),
            Lookup::NoSuchName
        );
        assert_eq!(lookup("cache.default", &Cluster), Lookup::NoSuchName);
        assert_eq!(
            lookup("web.default.cluster.local", &Cluster),
            Lookup::NoSuchName
        );
        assert_eq!(lookup("example.com", &Cluster), Lookup::Elsewhere);
        assert_eq!(lookup("web", &Cluster), Lookup::Elsewhere);
        // Headless: the ready pods, and each by its own name.
        assert_eq!(
            lookup("db.default.svc.cluster.local", &Cluster),
            Lookup::Addresses(DB.to_vec())
        );
        assert_eq!(
            lookup("10-42-2-9.db.default.svc.cluster.local", &Cluster),
            Lookup::Addresses(vec![DB[1]])
        );
        assert_eq!(
            lookup("10-42-3-1.db.default.svc.cluster.local", &Cluster),
            Lookup::NoSuchName
        );
    }

    #[test]
    fn replies_carry_the_address_or_the_right_code() {
        let q = parse_query(&query("Web.Default.svc.cluster.local", TYPE_A)).expect("query");
        assert_eq!(q.name, "web.default.svc.cluster.local");
        assert_eq!((q.id, q.qtype), (0x1234, TYPE_A));
        let r = reply(&q, &Lookup::Addresses(vec![Ipv4Addr::new(10, 43, 0, 7)]));
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 43, 0, 7]);
        assert_eq!(r[2] & 0x01, 0x01, "recursion desired is echoed");
        let aaaa = parse_query(&query("web.default.svc.cluster.local", TYPE_AAAA)).expect("q");
        let r = reply(&aaaa, &Lookup::Addresses(vec![Ipv4Addr::new(10, 43, 0, 7)]));
        assert_eq!((r[3] & 0x0f, r[7]), (0, 0), "no AAAA, no error");
        // A headless Service's pods, each an answer; past what fits in 512 bytes, cut.
        let r = reply(&q, &Lookup::Addresses(DB.to_vec()));
        assert_eq!(&r[6..8], &[0, 2], "two answers");
        assert_eq!(&r[r.len() - 4..], &[10, 42, 2, 9]);
        let many: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(10, 42, 1, i)).collect();
        let r = reply(&q, &Lookup::Addresses(many));
        assert!(r.len() <= 512, "{}", r.len());
        assert_eq!(r[2] & 0x02, 0x02, "truncated");
        assert_eq!(usize::from(r[7]), UDP_ANSWERS);
        let r = reply_within(
            &q,
            &Lookup::Addresses((1..=40).map(|i| Ipv4Addr::new(10, 42, 1, i)).collect()),
            TCP_ANSWERS,
        );
        assert_eq!((r[2] & 0x02, r[7]), (0, 40), "all of them over TCP");
        let r = reply(&q, &Lookup::NoSuchName);
        assert_eq!(r[3] & 0x0f, 3, "NXDOMAIN");
        // Broken messages are refused with the reason.
        assert!(parse_query(&[0; 5])
            .unwrap_err()
            .contains("shorter than a DNS header"));
        let mut cut = query("web.default", TYPE_A);
        cut.truncate(cut.len() - 3);
        assert!(parse_query(&cut).is_err());
    }

    #[test]
    fn pods_search_their_namespace_and_the_node_resolvers_are_upstream() {
        let dns = Ipv4Addr::new(10, 43, 0, 10);
        assert_eq!(
            resolv_conf(dns, "shop"),
            "nameserver 10.43.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let up = upstreams(
            "# x\nnameserver 10.43.0.10\nnameserver 192.0.2.53\nsearch lan\n",
            dns,
        );
        assert_eq!(
            up,
            vec!["192.0.2.53:53".parse::<SocketAddr>().expect("addr")]
        );
    }
}
