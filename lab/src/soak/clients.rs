//! The soak's clients: threads inside the lab's client pods sending one HTTP request (a new TCP
//! connection) or one UDP datagram at a time to the stable Services, whose endpoints are kept
//! ready by the churn (a new endpoint is ready before an old one leaves). Every request that
//! gets no answer from a pod of the right group counts as a failure, with what went wrong.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_testbed::NetNs;
use sluice_testbed::traffic::Proto;

use crate::echo;

/// Per-request bound: generous, the machine is shared.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two requests of one thread.
const PAUSE: Duration = Duration::from_millis(10);
/// How many failures are kept with their reason.
const KEEP: usize = 20;

/// A stable Service as clients reach it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) service: String,
    pub(crate) ip: Ipv4Addr,
    /// The pod name prefix that may answer (`s-a-`).
    pub(crate) prefix: String,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) tcp: AtomicU64,
    pub(crate) udp: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) failures: Mutex<Vec<String>>,
}

impl Tally {
    pub(crate) fn requests(&self) -> u64 {
        self.tcp.load(Ordering::Relaxed) + self.udp.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kept) = self.failures.lock()
            && kept.len() < KEEP
        {
            kept.push(what);
        }
    }
}

/// Running client threads; [`Clients::stop`] ends them.
pub(crate) struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub(crate) tally: Arc<Tally>,
}

impl Clients {
    /// `per_pod` threads in each of `pods` (namespace, name), each cycling over `targets`.
    pub(crate) fn start(
        pods: &[(NetNs, String)],
        per_pod: usize,
        targets: &[Target],
        t0: Instant,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut threads = Vec::new();
        for (ns, name) in pods {
            for i in 0..per_pod {
                let (stop, tally, targets) = (stop.clone(), tally.clone(), targets.to_vec());
                let from = name.clone();
                let thread_name = format!("client-{name}-{i}");
                threads.push(ns.thread(&thread_name, move || {
                    run(&from, i, &targets, &stop, &tally, t0);
                })?);
            }
        }
        Ok(Self {
            stop,
            threads,
            tally,
        })
    }

    /// Ends every thread after its current request.
    pub(crate) fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.tally
    }
}

/// One client thread: TCP and UDP in turn, over every target. A failure is reported with the
/// time its request was sent (seconds since `t0`).
fn run(
    from: &str,
    index: usize,
    targets: &[Target],
    stop: &AtomicBool,
    tally: &Tally,
    t0: Instant,
) {
    let mut n = index;
    while !stop.load(Ordering::Relaxed) {
        let target = &targets[n % targets.len()];
        let proto = if (n / targets.len()).is_multiple_of(2) {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        n += 1;
        let at = t0.elapsed().as_secs_f64();
        let result = match proto {
            Proto::Udp => {
                tally.udp.fetch_add(1, Ordering::Relaxed);
                udp_request(SocketAddr::from((target.ip, 53)))
            }
            Proto::Tcp => {
                tally.tcp.fetch_add(1, Ordering::Relaxed);
                echo::http_here(SocketAddr::from((target.ip, 80)), TIMEOUT)
            }
        };
        match result {
            Ok(reply) if reply.backend.starts_with(&target.prefix) => {}
            Ok(reply) => tally.fail(format!(
                "{at:.1} s {from} -> {} {proto:?}: answered by {} (not {}*)",
                target.service, reply.backend, target.prefix
            )),
            Err(e) => tally.fail(format!(
                "{at:.1} s {from} -> {} {proto:?}: {e:#}",
                target.service
            )),
        }
        std::thread::sleep(PAUSE);
    }
}

/// One datagram from a fresh socket connected to `addr` (so only an answer from `addr` itself
/// counts) and its answer. A wait interrupted by a signal (the soak's own children exiting) is
/// resumed: that is this process, not the network.
fn udp_request(addr: SocketAddr) -> anyhow::Result<sluice_testbed::traffic::Reply> {
    use std::io::ErrorKind;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(addr)?;
    socket.send(b"ping")?;
    let local = socket.local_addr()?;
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("UDP {local} -> {addr}: no answer within {TIMEOUT:?}");
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) => return echo::parse(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                anyhow::bail!("UDP {local} -> {addr}: no answer within {TIMEOUT:?}")
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("UDP {addr}"))),
        }
    }
}
