//! A test fixture: does what its arguments say, so one module exercises every part of WASI the
//! tests check. Steps run in order: `print TEXT`, `eprint TEXT`, `args`, `env NAME`,
//! `cat PATH`, `write PATH TEXT`, `alloc MIB`, `sleep MS`, `spin`, `exit CODE`,
//! `listen PORT` (says whether a TCP listener on the port may be had), and `serve PORT TEXT`
//! (an HTTP server answering TEXT on every request, forever; WASI p2 sockets), and
//! `udp-echo PORT` (answers each datagram with `echo: ` and its bytes, forever), and
//! `resolve NAME` (prints the addresses the name resolves to, or why it does not), and
//! `connect ADDR:PORT` (says whether a TCP connection there may be had).

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut it = args.iter().skip(1);
    let mut keep: Vec<Vec<u8>> = Vec::new();
    while let Some(step) = it.next() {
        let mut next = || it.next().cloned().unwrap_or_default();
        match step.as_str() {
            "print" => println!("{}", next()),
            "eprint" => eprintln!("{}", next()),
            "args" => println!("args: {}", args.join(" ")),
            "env" => {
                let name = next();
                println!("{name}={}", std::env::var(&name).unwrap_or_else(|_| "<unset>".into()));
            }
            "cat" => {
                let path = next();
                match std::fs::read_to_string(&path) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        eprintln!("cat {path}: {e}");
                        std::process::exit(2);
                    }
                }
            }
            "write" => {
                let (path, text) = (next(), next());
                if let Err(e) = std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes())) {
                    eprintln!("write {path}: {e}");
                    std::process::exit(2);
                }
            }
            "alloc" => {
                let mib: usize = next().parse().unwrap_or(1);
                for _ in 0..mib {
                    keep.push(vec![1u8; 1 << 20]);
                }
                println!("allocated {mib} MiB");
            }
            "sleep" => std::thread::sleep(std::time::Duration::from_millis(next().parse().unwrap_or(0))),
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "exit" => std::process::exit(next().parse().unwrap_or(0)),
            "listen" => {
                let port = next();
                match std::net::TcpListener::bind(format!("0.0.0.0:{port}")) {
                    Ok(_) => println!("listening on {port}"),
                    Err(e) => println!("cannot listen on {port}: {e}"),
                }
            }
            "resolve" => {
                let name = next();
                match std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 80)) {
                    Ok(addrs) => {
                        let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                        println!("{name} is {}", ips.join(" "));
                    }
                    Err(e) => println!("{name} does not resolve: {e}"),
                }
            }
            "connect" => {
                let addr = next();
                match std::net::TcpStream::connect(addr.as_str()) {
                    Ok(_) => println!("connected to {addr}"),
                    Err(e) => println!("cannot connect to {addr}: {e}"),
                }
            }
            "udp-echo" => {
                let port = next();
                let sock = match std::net::UdpSocket::bind(format!("0.0.0.0:{port}")) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("cannot bind udp {port}: {e}");
                        std::process::exit(2);
                    }
                };
                println!("echoing on udp {port}");
                let _ = std::io::stdout().flush();
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                    let mut answer = b"echo: ".to_vec();
                    answer.extend_from_slice(&buf[..n]);
                    let _ = sock.send_to(&answer, from);
                }
            }
            "serve" => {
                let (port, text) = (next(), next());
                let listener = match std::net::TcpListener::bind(format!("0.0.0.0:{port}")) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("cannot listen on {port}: {e}");
                        std::process::exit(2);
                    }
                };
                println!("serving on {port}");
                let _ = std::io::stdout().flush();
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let mut buf = [0u8; 1024];
                    let _ = std::io::Read::read(&mut conn, &mut buf);
                    let answer = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = conn.write_all(answer.as_bytes());
                }
            }
            other => {
                eprintln!("unknown step {other:?}");
                std::process::exit(64);
            }
        }
        let _ = std::io::stdout().flush();
    }
}
