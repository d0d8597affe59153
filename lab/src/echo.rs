//! What runs in each lab pod, and how the lab talks to it. The pod's process is `sluice-lab`
//! itself, re-executed inside the pod's namespace (`sluice-lab pod-serve`), so the lab needs
//! no other binaries: an HTTP server on TCP and an echo server on UDP, on each of its ports,
//! answering `sluice-echo <pod> <peer-ip:port> <local-ip:port>` — who answered, whom it saw
//! and where the traffic arrived, which is what every check needs (load balancing, affinity,
//! source NAT, target ports). The first three words are the test bed's UDP format, so its UDP
//! client works unchanged. The conformance runner serves the same answers from the underlay
//! and the nodes ([`spawn_in`]) to see where untouched traffic goes.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
    sockopt,
};

use anyhow::{Context, bail};
use sluice_testbed::NetNs;
use sluice_testbed::traffic::Reply;

use sluice_testbed::http;

/// The port every pod serves on (TCP and UDP), the demo's.
pub(crate) const PORT: u16 = 8080;
/// Every port a pod serves on (TCP and UDP): the conformance plan's.
pub(crate) const PORTS: [u16; 2] = sluice_conformance::plan::POD_PORTS;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer line.
pub(crate) fn line(pod: &str, peer: SocketAddr, local: Option<SocketAddr>) -> String {
    match local {
        Some(local) => format!("sluice-echo {pod} {peer} {local}\n"),
        None => format!("sluice-echo {pod} {peer}\n"),
    }
}

/// Serves on `ports` until killed (the lab removes the pod's namespace, and this process with
/// it).
pub(crate) fn serve(pod: &str, ports: &[u16]) -> anyhow::Result<()> {
    let mut threads = Vec::new();
    for &port in ports {
        let (tcp, udp) = bind(port)?;
        threads.extend(serve_sockets(pod, tcp, udp));
    }
    println!("{pod}: HTTP and UDP echo on ports {ports:?}");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// The TCP listener and UDP socket of `port`, on every address.
fn bind(port: u16) -> anyhow::Result<(TcpListener, UdpSocket)> {
    let any = SocketAddr::from(([0, 0, 0, 0], port));
    let tcp = TcpListener::bind(any).with_context(|| format!("bind TCP {any}"))?;
    let udp = UdpSocket::bind(any).with_context(|| format!("bind UDP {any}"))?;
    Ok((tcp, udp))
}

/// Threads answering on `tcp` and `udp` as `name`.
fn serve_sockets(name: &str, tcp: TcpListener, udp: UdpSocket) -> [std::thread::JoinHandle<()>; 2] {
    let udp_name = name.to_owned();
    let tcp_name = name.to_owned();
    [
        std::thread::spawn(move || serve_udp(&udp, &udp_name)),
        std::thread::spawn(move || {
            for conn in tcp.incoming() {
                match conn {
                    Ok(stream) => {
                        let name = tcp_name.clone();
                        std::thread::spawn(move || answer_http(stream, &name));
                    }
                    Err(e) => eprintln!("{tcp_name}: accept: {e}"),
                }
            }
        }),
    ]
}

/// Serves as `name` on `ports` inside `ns`, from this process, until it exits; a port that
/// cannot be bound there (taken by a daemon) is skipped and returned.
pub(crate) fn spawn_in(ns: &NetNs, name: &str, ports: &[u16]) -> anyhow::Result<Vec<u16>> {
    let mut skipped = Vec::new();
    for &port in ports {
        match ns.run(|| bind(port))? {
            Ok((tcp, udp)) => drop(serve_sockets(name, tcp, udp)),
            Err(_) => skipped.push(port),
        }
    }
    Ok(skipped)
}

/// Answers every datagram from the address it was sent to (`IP_PKTINFO`): a socket bound to
/// 0.0.0.0 would otherwise answer from its primary address, and a client's connected socket
/// drops such an answer (a sink owning a whole range through a `local` route needs this).
fn serve_udp(socket: &UdpSocket, pod: &str) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let port = socket.local_addr().map_or(0, |a| a.port());
    if let Err(e) = setsockopt(socket, sockopt::Ipv4PacketInfo, &true) {
        eprintln!("{pod}: IP_PKTINFO: {e}");
    }
    let mut buf = [0u8; 2048];
    loop {
        let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (peer, info) =
            match recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
                Ok(msg) => {
                    let info = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::Ipv4PacketInfo(i) => Some(i),
                            _ => None,
                        })
                    });
                    match msg.address {
                        Some(a) => (SocketAddr::from((a.ip(), a.port())), info),
                        None => continue,
                    }
                }
                Err(e) => {
                    eprintln!("{pod}: UDP recv: {e}");
                    continue;
                }
            };
        let dst = info.map(|i| Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr)));
        let local = dst.map(|ip| SocketAddr::from((ip, port)));
        let text = line(pod, peer, local);
        let reply = [IoSlice::new(text.as_bytes())];
        let to = SockaddrIn::from(match peer {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => continue,
        });
        let sent = match info {
            Some(mut i) => {
                // Answer from the address asked (ipi_spec_dst), out of any interface.
                i.ipi_spec_dst = i.ipi_addr;
                i.ipi_ifindex = 0;
                let cmsgs = [ControlMessage::Ipv4PacketInfo(&i)];
                sendmsg(fd, &reply, &cmsgs, MsgFlags::empty(), Some(&to))
            }
            None => sendmsg(fd, &reply, &[], MsgFlags::empty(), Some(&to)),
        };
        if let Err(e) = sent {
            eprintln!("{pod}: UDP answer to {peer}: {e}");
        }
    }
}

/// Reads the request head (bounded) and answers with the echo line as the body.
fn answer_http(mut stream: TcpStream, pod: &str) {
    let Ok(peer) = stream.peer_addr() else { return };
    let local = stream.local_addr().ok();
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = line(pod, peer, local);
    let resp = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(resp.as_bytes()) {
        eprintln!("{pod}: answer {peer}: {e}");
    }
}

/// Parses an echo line.
pub(crate) fn parse(text: &str) -> anyhow::Result<Reply> {
    parse_full(text).map(|(reply, _)| reply)
}

/// Parses an echo line with the local port the answer came from, when given.
pub(crate) fn parse_full(text: &str) -> anyhow::Result<(Reply, Option<SocketAddr>)> {
    let mut words = text.split_whitespace();
    let (Some("sluice-echo"), Some(backend), Some(peer), local, None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        bail!("not an echo answer: {text:?}");
    };
    let local = match local {
        Some(l) => Some(l.parse().with_context(|| format!("local in {text:?}"))?),
        None => None,
    };
    let reply = Reply {
        backend: backend.to_owned(),
        seen_source: peer.parse().with_context(|| format!("peer in {text:?}"))?,
    };
    Ok((reply, local))
}

/// One HTTP GET from the calling thread's namespace.
pub(crate) fn http_here(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Reply> {
    let resp = http::request(addr, "GET", "/", None, timeout)?;
    if resp.status != 200 {
        bail!("GET http://{addr}/: status {}", resp.status);
    }
    parse(&resp.body)
}

/// One HTTP GET from inside `ns`.
pub(crate) fn http_from(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> anyhow::Result<Reply> {
    ns.run(|| http_here(addr, timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_back() {
        let peer: SocketAddr = "10.244.1.2:40000".parse().unwrap();
        let reply = parse(&line("web-1", peer, None)).unwrap();
        assert_eq!((reply.backend.as_str(), reply.seen_source), ("web-1", peer));
        let local: SocketAddr = "10.244.2.2:8081".parse().unwrap();
        let (reply, got) = parse_full(&line("web-3", peer, Some(local))).unwrap();
        assert_eq!((reply.backend.as_str(), got), ("web-3", Some(local)));
        assert!(parse("sluice-echo web-1").is_err());
        assert!(parse("hello web-1 1.2.3.4:5").is_err());
    }

    #[test]
    fn serves_http_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            answer_http(s, "pod-a");
        });
        let reply = http_here(addr, IO_TIMEOUT).unwrap();
        assert_eq!(reply.backend, "pod-a");
        assert!(reply.seen_source.ip().is_loopback());
    }
}
