//! One request of a conformance packet, sent for real from inside a lab namespace, and what
//! came of it: who answered (and which source they saw, on which port), a refusal, silence,
//! or no route. TCP requests are HTTP GETs to the echo servers; UDP requests one datagram on
//! a connected socket, so an ICMP port unreachable shows up as a refusal.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use sluice_model::service::Protocol;
use socket2::{Domain, Socket, Type};

use crate::echo;

pub(crate) use sluice_conformance::judge::Seen;

/// How long a request may go unanswered before it counts as dropped.
pub(crate) const TIMEOUT: Duration = Duration::from_millis(800);

/// One request to `dst`, from `src` when given (else the kernel's choice), in the calling
/// thread's namespace.
pub(crate) fn send(proto: Protocol, src: Option<IpAddr>, dst: SocketAddr) -> Seen {
    let result = match proto {
        Protocol::Tcp => tcp(src, dst),
        Protocol::Udp => udp(src, dst),
        Protocol::Sctp => return Seen::Error("SCTP is not sent by the lab".into()),
    };
    match result {
        Ok(text) => match echo::parse_full(&text) {
            Ok((reply, local)) => Seen::Answer {
                by: reply.backend,
                seen: reply.seen_source,
                local,
            },
            Err(e) => Seen::Error(e.to_string()),
        },
        Err(e) => Seen::of_error(&e),
    }
}

fn tcp(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<String> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    if let Some(ip) = src {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&dst.into(), TIMEOUT)?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET / HTTP/1.0\r\nHost: {dst}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok(body)
}

fn udp(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<String> {
    let any: IpAddr = match dst {
        SocketAddr::V4(_) => [0, 0, 0, 0].into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(src.unwrap_or(any), 0))?;
    socket.connect(dst)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.send(b"ping")?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
