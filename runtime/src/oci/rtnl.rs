//! A small rtnetlink client for what a pod's network needs: a veth pair with one end in the
//! pod's namespace, links up, an IPv4 address and a default route, asked of the kernel from
//! the agent's own process. Two `ip -batch` processes did the same in 7-11 ms a pod on two
//! cores; these few messages take well under one. (The netlink-packet-route crates cover all
//! of rtnetlink, at several hundred KiB of the agent's binary, for these six requests.)
//!
//! The messages are laid out as `linux/netlink.h` and `linux/rtnetlink.h` say, in the host's
//! byte order; every request asks for an acknowledgement, whose error is returned.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
/// `struct nlmsghdr`: length, type, flags, sequence, port.
const HEADER: usize = 16;

/// One request being laid out: the header, the fixed part, then attributes, each padded to
/// four bytes; a nested attribute is opened with [`Msg::nest`] and closed with [`Msg::end`].
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut b = vec![0u8; HEADER];
        b[4..6].copy_from_slice(&kind.to_ne_bytes());
        b[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Msg(b)
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Msg {
        self.0.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.put(data)
    }

    /// An interface name, NUL-terminated as the kernel copies it.
    fn name(&mut self, name: &str) -> &mut Msg {
        let mut z = name.as_bytes().to_vec();
        z.push(0);
        self.attr(IFLA_IFNAME, &z)
    }

    fn nest(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.attr(kind, &[]);
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// `struct ifinfomsg`: family, type, index, flags and which flags to change.
fn ifinfo(index: i32, up: bool) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = AF_UNSPEC;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    if up {
        b[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        b[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
    }
    b
}

/// A route netlink socket, in the network namespace of the thread that opened it (it stays
/// there whichever thread uses it).
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

/// How long a request waits for the kernel's answer.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        // The kernel answers a route request within the sending call; a bound on the wait
        // keeps a pod's start from hanging on a kernel that does not.
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_WITHIN),
        )?;
        Ok(Rtnl { fd, seq: 0 })
    }

    /// Sends `msg` and reads until its acknowledgement; returns the replies before it (a
    /// `GET`'s answer), or the kernel's error.
    fn call(&mut self, mut msg: Msg) -> io::Result<Vec<Vec<u8>>> {
        use rustix::net::{recv, send, RecvFlags, SendFlags};
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = msg.0.len() as u32;
        msg.0[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        send(&self.fd, &msg.0, SendFlags::empty())?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let (got, _) = match recv(&self.fd, &mut buf[..], RecvFlags::empty()) {
                Err(rustix::io::Errno::AGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the kernel did not answer within {ANSWER_WITHIN:?}"),
                    ))
                }
                other => other?,
            };
            let mut at = 0;
            while at + HEADER <= got {
                let word =
                    |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let mlen = word(at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if mlen < HEADER || at + mlen > got {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a truncated netlink reply",
                    ));
                }
                if word(at + 8) == seq {
                    match kind {
                        NLMSG_ERROR if mlen >= HEADER + 4 => {
                            let code = word(at + HEADER) as i32;
                            return match code {
                                0 => Ok(replies),
                                e => Err(io::Error::from_raw_os_error(-e)),
                            };
                        }
                        NLMSG_DONE => return Ok(replies),
                        _ => replies.push(buf[at + HEADER..at + mlen].to_vec()),
                    }
                }
                at += (mlen + 3) & !3;
            }
        }
    }

    /// The index of the interface `name`.
    pub fn index(&mut self, name: &str) -> io::Result<u32> {
        let mut m = Msg::new(RTM_GETLINK, 0);
        m.put(&ifinfo(0, false)).name(name);
        let replies = self.call(m)?;
        // The answer is an `ifinfomsg`, whose index is at 4.
        (replies.first())
            .and_then(|r| r.get(4..8))
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no link in the reply"))
    }

    /// Brings the interface `name` up.
    pub fn up(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.put(&ifinfo(0, true)).name(name);
        self.call(m).map(drop)
    }

    /// Makes a veth pair: `name` here, up, on the bridge `master`; `peer` in the network
    /// namespace `peer_ns`, down (the kernel refuses to bring up an end it is moving,
    /// ENOTCONN; it is brought up from inside).
    pub fn add_veth(
        &mut self,
        name: &str,
        master: u32,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.put(&ifinfo(0, true)).name(name);
        m.attr(IFLA_MASTER, &master.to_ne_bytes());
        let info = m.nest(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        let data = m.nest(IFLA_INFO_DATA);
        let other = m.nest(VETH_INFO_PEER);
        m.put(&ifinfo(0, false)).name(peer);
        m.attr(IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes());
        m.end(other);
        m.end(data);
        m.end(info);
        self.call(m).map(drop)
    }

    /// Removes the interface `name` (a veth takes its peer with it).
    pub fn delete(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, 0);
        m.put(&ifinfo(0, false)).name(name);
        self.call(m).map(drop)
    }

    /// Puts `addr/prefix` on the interface `index`.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        // `struct ifaddrmsg`: family, prefix length, flags, scope, index.
        let mut head = [0u8; 8];
        head[0] = AF_INET;
        head[1] = prefix;
        head[3] = RT_SCOPE_UNIVERSE;
        head[4..8].copy_from_slice(&index.to_ne_bytes());
        m.put(&head);
        m.attr(IFA_LOCAL, &addr.octets());
        m.attr(IFA_ADDRESS, &addr.octets());
        self.call(m).map(drop)
    }

    /// Adds the default route via `gateway` to the main table.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // `struct rtmsg`: family, destination and source lengths, tos, table, protocol,
        // scope, type, flags.
        let head = [
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        m.put(&head);
        m.attr(RTA_GATEWAY, &gateway.octets());
        self.call(m).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_request_is_laid_out_as_the_kernel_reads_it() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE);
        m.put(&ifinfo(0, true)).name("ab");
        let info = m.nest(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        m.end(info);
        let b = &m.0;
        // Header (16) + ifinfomsg (16) + name (4 + "ab\0" padded to 4) + linkinfo (4 + 8).
        assert_eq!(b.len(), 16 + 16 + 8 + 12);
        assert_eq!(
            u16::from_ne_bytes([b[6], b[7]]),
            NLM_F_CREATE | NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(
            u16::from_ne_bytes([b[32], b[33]]),
            7,
            "the name's length, unpadded"
        );
        assert_eq!(&b[36..39], b"ab\0");
        assert_eq!(
            u16::from_ne_bytes([b[40], b[41]]),
            12,
            "the nest holds its kind"
        );
        assert_eq!(u16::from_ne_bytes([b[42], b[43]]), IFLA_LINKINFO);
        assert_eq!(u16::from_ne_bytes([b[44], b[45]]), 8);
        assert_eq!(&b[48..52], b"veth");
    }

    #[test]
    fn the_kernel_answers_a_query_and_names_its_error() {
        // Reading links needs no privilege: loopback is in every namespace.
        let mut nl = Rtnl::open().expect("a route netlink socket");
        assert!(nl.index("lo").expect("lo") > 0);
        let err = nl.index("shoal-nosuch0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(19), "ENODEV: {err}");
    }
}
