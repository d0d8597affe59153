//! What runs in each lab pod, and how the lab talks to it. The pod's process is `sluice-lab`
//! itself, re-executed inside the pod's namespace (`sluice-lab pod-serve`), so the lab needs
//! no other binaries: an HTTP server on TCP and an echo server on UDP, both on one port, both
//! answering `sluice-echo <pod> <peer-ip:port>` — who answered and whom it saw, which is what
//! every check needs (load balancing, affinity, source NAT). The UDP answer is the test bed's
//! format, so its UDP client works unchanged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_testbed::NetNs;
use sluice_testbed::traffic::Reply;

use sluice_testbed::http;

/// The port every pod serves on (TCP and UDP).
pub(crate) const PORT: u16 = 8080;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer line.
pub(crate) fn line(pod: &str, peer: SocketAddr) -> String {
    format!("sluice-echo {pod} {peer}\n")
}

/// Serves until killed (the lab removes the pod's namespace, and this process with it).
pub(crate) fn serve(pod: &str, port: u16) -> anyhow::Result<()> {
    let any = SocketAddr::from(([0, 0, 0, 0], port));
    let tcp = TcpListener::bind(any).with_context(|| format!("bind TCP {any}"))?;
    let udp = UdpSocket::bind(any).with_context(|| format!("bind UDP {any}"))?;
    let name = pod.to_owned();
    std::thread::spawn(move || serve_udp(&udp, &name));
    println!("{pod}: HTTP and UDP echo on port {port}");
    for conn in tcp.incoming() {
        match conn {
            Ok(stream) => {
                let name = pod.to_owned();
                std::thread::spawn(move || answer_http(stream, &name));
            }
            Err(e) => eprintln!("{pod}: accept: {e}"),
        }
    }
    Ok(())
}

fn serve_udp(socket: &UdpSocket, pod: &str) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                if let Err(e) = socket.send_to(line(pod, peer).as_bytes(), peer) {
                    eprintln!("{pod}: UDP answer to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("{pod}: UDP recv: {e}"),
        }
    }
}

/// Reads the request head (bounded) and answers with the echo line as the body.
fn answer_http(mut stream: TcpStream, pod: &str) {
    let Ok(peer) = stream.peer_addr() else { return };
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
    let body = line(pod, peer);
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
    let mut words = text.split_whitespace();
    let (Some("sluice-echo"), Some(backend), Some(peer), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        bail!("not an echo answer: {text:?}");
    };
    Ok(Reply {
        backend: backend.to_owned(),
        seen_source: peer.parse().with_context(|| format!("peer in {text:?}"))?,
    })
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
        let reply = parse(&line("web-1", peer)).unwrap();
        assert_eq!((reply.backend.as_str(), reply.seen_source), ("web-1", peer));
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
