//! Echo servers bound and served on a thread inside a namespace; stopped and joined on drop.
//!
//! The serving thread waits with `poll` (50 ms) so it notices the stop flag without a wake-up
//! connection, and answers immediately when a request arrives.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Proto, Reply};
use crate::error::{Error, Result};
use crate::netns::NetNs;

/// How long one `poll` waits before looking at the stop flag again.
const POLL_MS: u16 = 50;
/// Bound on binding and on writing one answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP or UDP echo server inside a namespace.
#[derive(Debug)]
pub struct EchoServer {
    proto: Proto,
    backend: String,
    local_addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    ns: NetNs,
}

/// State shared with the serving thread.
struct Shared {
    backend: String,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    /// Starts a TCP echo server named `backend` on `addr` inside `ns`.
    pub fn tcp(ns: &NetNs, backend: &str, addr: SocketAddr) -> Result<Self> {
        Self::start(ns, Proto::Tcp, backend, addr)
    }

    /// Starts a UDP echo server named `backend` on `addr` inside `ns`.
    pub fn udp(ns: &NetNs, backend: &str, addr: SocketAddr) -> Result<Self> {
        Self::start(ns, Proto::Udp, backend, addr)
    }

    /// Starts a server; returns once it is bound (port 0 picks a free port).
    pub fn start(ns: &NetNs, proto: Proto, backend: &str, addr: SocketAddr) -> Result<Self> {
        let op = format!("start {proto:?} echo {backend} on {addr} in {}", ns.name());
        if backend.is_empty() || backend.contains(char::is_whitespace) {
            return Err(Error::invalid(
                op,
                "backend name must be one non-empty word",
            ));
        }
        let shared = Shared {
            backend: backend.to_owned(),
            served: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (served, stop) = (shared.served.clone(), shared.stop.clone());
        let (tx, rx) = mpsc::channel();
        let handle = ns.thread(&format!("echo-{backend}"), move || {
            serve(proto, addr, &shared, &tx);
        })?;
        let local_addr = match rx.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(local)) => local,
            Ok(Err(e)) => return Err(Error::io(op, e)),
            Err(_) => return Err(Error::protocol(op, "server thread did not report")),
        };
        Ok(Self {
            proto,
            backend: backend.to_owned(),
            local_addr,
            served,
            stop,
            handle: Some(handle),
            ns: ns.clone(),
        })
    }

    /// The address it is bound to (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Its backend name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Its protocol.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The namespace it serves in.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// How many requests it answered.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops serving and joins the thread (within about one poll interval). Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::warn!("echo server {} panicked", self.backend);
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The serving thread: bind, report, serve until stopped.
fn serve(
    proto: Proto,
    addr: SocketAddr,
    shared: &Shared,
    tx: &mpsc::Sender<std::io::Result<SocketAddr>>,
) {
    match proto {
        Proto::Tcp => match TcpListener::bind(addr).and_then(|l| l.local_addr().map(|a| (l, a))) {
            Ok((listener, local)) => {
                let _ = tx.send(Ok(local));
                serve_tcp(&listener, shared);
            }
            Err(e) => drop(tx.send(Err(e))),
        },
        Proto::Udp => match UdpSocket::bind(addr).and_then(|s| s.local_addr().map(|a| (s, a))) {
            Ok((socket, local)) => {
                let _ = tx.send(Ok(local));
                serve_udp(&socket, shared);
            }
            Err(e) => drop(tx.send(Err(e))),
        },
    }
}

/// Waits until `fd` is readable or one poll interval passed; true when readable.
fn readable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(POLL_MS)), Ok(n) if n > 0)
}

fn serve_tcp(listener: &TcpListener, shared: &Shared) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("echo {}: set nonblocking: {e}", shared.backend);
        return;
    }
    while !shared.stop.load(Ordering::Relaxed) {
        if !readable(listener) {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => answer_tcp(stream, peer, shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!("echo {}: accept: {e}", shared.backend),
        }
    }
}

fn answer_tcp(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let reply = Reply::encode(&shared.backend, peer);
    let sent = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.write_all(reply.as_bytes()));
    match sent {
        Ok(()) => drop(shared.served.fetch_add(1, Ordering::Relaxed)),
        Err(e) => tracing::warn!("echo {}: answer {peer}: {e}", shared.backend),
    }
}

fn serve_udp(socket: &UdpSocket, shared: &Shared) {
    if let Err(e) = socket.set_nonblocking(true) {
        tracing::warn!("echo {}: set nonblocking: {e}", shared.backend);
        return;
    }
    let mut buf = [0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        if !readable(socket) {
            continue;
        }
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let reply = Reply::encode(&shared.backend, peer);
                match socket.send_to(reply.as_bytes(), peer) {
                    Ok(_) => drop(shared.served.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => tracing::warn!("echo {}: answer {peer}: {e}", shared.backend),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!("echo {}: recv: {e}", shared.backend),
        }
    }
}
