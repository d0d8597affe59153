//! The soak's clients: threads inside the lab's client pods sending one HTTP request (a new TCP
//! connection) or one UDP datagram at a time to the stable Services, whose endpoints are kept
//! ready by the churn (a new endpoint is ready before an old one leaves). Every request that
//! gets no answer from a pod of the right group counts as a failure, with what went wrong.
//!
//! A UDP request is sent again from the same socket when no answer came within
//! [`RETRANSMIT`], as every UDP client that must get an answer does (a resolver retransmits
//! after its `timeout:`). That is not leniency for the proxy: when an endpoint stops serving,
//! kube-proxy's rule (which Sluice follows) deletes the conntrack flows it answers, and a
//! datagram that a reused client port sent along such a flow a moment before is answered
//! after its flow is gone, so the answer is not translated back and never reaches the
//! client. No conntrack-based dataplane can avoid that race; the retransmission, which
//! follows the Service's rules to a serving endpoint, recovers from it. The soak counts the
//! retransmissions, lists them with the time their request was sent, and fails if more than
//! one UDP request in [`RETRANSMITS_PER`] needed one; an unanswered retransmission, a refusal
//! or an answer from the wrong pod is a failure as before.

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
/// A UDP request unanswered this long is sent again (once) from the same socket.
const RETRANSMIT: Duration = Duration::from_secs(1);
/// At most one UDP request in this many may need its retransmission.
pub(crate) const RETRANSMITS_PER: u64 = 1_000;
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
    /// UDP requests answered only after their retransmission.
    pub(crate) retransmitted: AtomicU64,
    pub(crate) retransmissions: Mutex<Vec<String>>,
}

impl Tally {
    pub(crate) fn requests(&self) -> u64 {
        self.tcp.load(Ordering::Relaxed) + self.udp.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the retransmissions stayed within [`RETRANSMITS_PER`].
    pub(crate) fn retransmissions_ok(&self) -> bool {
        let udp = self.udp.load(Ordering::Relaxed);
        self.retransmitted.load(Ordering::Relaxed) * RETRANSMITS_PER <= udp
    }

    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        keep(&self.failures, what);
    }

    fn retransmitted(&self, what: String) {
        self.retransmitted.fetch_add(1, Ordering::Relaxed);
        keep(&self.retransmissions, what);
    }
}

fn keep(kept: &Mutex<Vec<String>>, what: String) {
    if let Ok(mut kept) = kept.lock()
        && kept.len() < KEEP
    {
        kept.push(what);
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
                echo::http_here(SocketAddr::from((target.ip, 80)), TIMEOUT).map(|r| (r, None))
            }
        };
        if let Ok((reply, Some(local))) = &result {
            tally.retransmitted(format!(
                "{at:.1} s {from} -> {} Udp from {local}: answered by {} after the retransmission",
                target.service, reply.backend
            ));
        }
        match result.map(|(reply, _)| reply) {
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
/// counts), sent again once after [`RETRANSMIT`] without an answer; the answer, and the local
/// address when it took the retransmission. A wait interrupted by a signal (the soak's own
/// children exiting) is resumed: that is this process, not the network.
fn udp_request(
    addr: SocketAddr,
) -> anyhow::Result<(sluice_testbed::traffic::Reply, Option<SocketAddr>)> {
    use std::io::ErrorKind;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(addr)?;
    socket.send(b"ping")?;
    let local = socket.local_addr()?;
    let sent = Instant::now();
    let mut retransmitted = false;
    let mut buf = [0u8; 2048];
    loop {
        let wait = if retransmitted { TIMEOUT } else { RETRANSMIT };
        let left = (sent + wait).saturating_duration_since(Instant::now());
        if left.is_zero() {
            if retransmitted {
                anyhow::bail!(
                    "UDP {local} -> {addr}: no answer within {TIMEOUT:?} (retransmitted after {RETRANSMIT:?})"
                );
            }
            socket.send(b"ping")?;
            retransmitted = true;
            continue;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let reply = echo::parse(&String::from_utf8_lossy(&buf[..n]))?;
                return Ok((reply, retransmitted.then_some(local)));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(anyhow::Error::from(e).context(format!("UDP {addr}"))),
        }
    }
}
