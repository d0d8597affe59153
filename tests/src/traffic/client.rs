//! Clients for the echo servers, run inside a namespace on a dedicated thread.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::{Proto, Reply};
use crate::error::{Error, Result};
use crate::netns::NetNs;

/// One TCP request from inside `ns` to `addr`, bounded by `timeout`.
pub fn tcp_request(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Result<Reply> {
    request(ns, Proto::Tcp, addr, timeout)
}

/// One TCP request from inside `ns` to `addr` from a chosen source address and port (to
/// reuse a flow's tuple on purpose), bounded by `timeout`.
pub fn tcp_request_from(
    ns: &NetNs,
    source: SocketAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Reply> {
    let op = format!("Tcp request from {source} to {addr}");
    ns.run(|| {
        let deadline = Instant::now() + timeout;
        let text = tcp_exchange_from(source, addr, timeout, deadline)
            .map_err(|e| timeout_or_io(&op, timeout, e))?;
        Reply::parse(&op, &text)
    })?
}

/// One UDP request from inside `ns` to `addr`, bounded by `timeout`.
pub fn udp_request(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Result<Reply> {
    request(ns, Proto::Udp, addr, timeout)
}

/// One request from inside `ns`.
pub fn request(ns: &NetNs, proto: Proto, addr: SocketAddr, timeout: Duration) -> Result<Reply> {
    ns.run(|| request_here(proto, addr, timeout))?
}

/// One request from the calling thread's namespace (for code already inside
/// [`NetNs::run`]).
pub fn request_here(proto: Proto, addr: SocketAddr, timeout: Duration) -> Result<Reply> {
    let op = format!("{proto:?} request to {addr}");
    let deadline = Instant::now() + timeout;
    let text = match proto {
        Proto::Tcp => tcp_exchange(addr, timeout, deadline),
        Proto::Udp => udp_exchange(addr, deadline),
    }
    .map_err(|e| timeout_or_io(&op, timeout, e))?;
    Reply::parse(&op, &text)
}

/// Maps a timed-out socket operation to [`Error::Timeout`], anything else to [`Error::Io`].
fn timeout_or_io(op: &str, timeout: Duration, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout {
            op: op.to_owned(),
            after_ms: timeout.as_millis(),
        },
        _ => Error::io(op, e),
    }
}

/// Time left until `deadline`, at least 1 ms (a zero socket timeout would mean "forever").
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn tcp_exchange(addr: SocketAddr, timeout: Duration, deadline: Instant) -> std::io::Result<String> {
    read_answer(TcpStream::connect_timeout(&addr, timeout)?, deadline)
}

fn tcp_exchange_from(
    source: SocketAddr,
    addr: SocketAddr,
    timeout: Duration,
    deadline: Instant,
) -> std::io::Result<String> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&source.into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    read_answer(socket.into(), deadline)
}

/// Everything the server writes before it closes, by `deadline`.
fn read_answer(mut stream: TcpStream, deadline: Instant) -> std::io::Result<String> {
    stream.set_read_timeout(Some(left(deadline)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

fn udp_exchange(addr: SocketAddr, deadline: Instant) -> std::io::Result<String> {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let socket = UdpSocket::bind(any)?;
    // Connected: only an answer from `addr` itself counts (a missing reverse NAT shows up).
    socket.connect(addr)?;
    socket.send(b"ping")?;
    socket.set_read_timeout(Some(left(deadline)))?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Answers counted per backend over a series of requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answers per backend name.
    pub counts: BTreeMap<String, usize>,
    /// Every source address the backends saw (IP only).
    pub sources: BTreeSet<IpAddr>,
    /// Requests that got no (valid) answer.
    pub failures: usize,
    /// The first failure's message, for assertions that explain themselves.
    pub first_error: Option<String>,
}

impl Tally {
    /// Number of answered requests.
    pub fn answered(&self) -> usize {
        self.counts.values().sum()
    }

    /// Answers from `backend`.
    pub fn count(&self, backend: &str) -> usize {
        self.counts.get(backend).copied().unwrap_or(0)
    }

    /// Backends that answered at least once.
    pub fn backends(&self) -> Vec<&str> {
        self.counts.keys().map(String::as_str).collect()
    }

    /// Adds one request's outcome.
    fn record(&mut self, outcome: Result<Reply>) {
        match outcome {
            Ok(reply) => {
                *self.counts.entry(reply.backend).or_default() += 1;
                self.sources.insert(reply.seen_source.ip());
            }
            Err(e) => {
                self.failures += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Sends `n` requests from inside `ns` to `addr` (each with its own `timeout`, each from a
/// fresh source port) and counts the answers per backend. Failures are counted, not raised.
pub fn tally(
    ns: &NetNs,
    proto: Proto,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Result<Tally> {
    ns.run(|| {
        let mut tally = Tally::default();
        for _ in 0..n {
            tally.record(request_here(proto, addr, timeout));
        }
        tally
    })
}
