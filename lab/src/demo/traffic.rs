//! Requests for the demo's checks, sent from inside a lab namespace: one HTTP or UDP request,
//! a series counted per answering pod, and waiting for the proxy to program a Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_testbed::NetNs;
use sluice_testbed::traffic::{Reply, udp_request};

use crate::echo;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

/// TCP (HTTP) or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Http,
    Udp,
}

/// One request from inside `ns`.
pub(crate) fn one(ns: &NetNs, proto: Proto, to: SocketAddr) -> anyhow::Result<Reply> {
    // ebpf mode: pods and nodes send from their node's cgroup.
    let _cgroup = crate::cgroups::join(ns.name());
    match proto {
        Proto::Http => echo::http_from(ns, to, TIMEOUT),
        Proto::Udp => Ok(udp_request(ns, to, TIMEOUT)?),
    }
}

/// Answers of a series of requests.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) by_pod: BTreeMap<String, usize>,
    pub(crate) sources: BTreeSet<IpAddr>,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
}

impl Tally {
    pub(crate) fn pods(&self) -> Vec<&str> {
        self.by_pod.keys().map(String::as_str).collect()
    }

    /// `web-1 x10, web-2 x9`.
    pub(crate) fn summary(&self) -> String {
        let pods: Vec<String> = self
            .by_pod
            .iter()
            .map(|(p, n)| format!("{p} x{n}"))
            .collect();
        pods.join(", ")
    }

    /// Fails unless every request was answered.
    pub(crate) fn all_answered(&self, n: usize) -> anyhow::Result<()> {
        if self.failed > 0 {
            bail!(
                "{}/{n} failed ({}); answered: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("?"),
                self.summary()
            );
        }
        Ok(())
    }
}

/// `n` HTTP requests from inside `ns` (each a new connection from a new port).
pub(crate) fn tally(ns: &NetNs, to: SocketAddr, n: usize) -> anyhow::Result<Tally> {
    let _cgroup = crate::cgroups::join(ns.name());
    ns.run(|| {
        let mut t = Tally::default();
        for _ in 0..n {
            match echo::http_here(to, TIMEOUT) {
                Ok(r) => {
                    *t.by_pod.entry(r.backend).or_default() += 1;
                    t.sources.insert(r.seen_source.ip());
                }
                Err(e) => {
                    t.failed += 1;
                    t.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        t
    })
    .context("run in namespace")
}

/// Waits (bounded) until a request from `ns` to `to` is answered; returns how long it took.
pub(crate) fn until_answered(ns: &NetNs, proto: Proto, to: SocketAddr) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let err = match one(ns, proto, to) {
            Ok(_) => return Ok(start.elapsed()),
            Err(e) => e,
        };
        if start.elapsed() > Duration::from_secs(15) {
            return Err(err.context(format!("{to} not answered within 15 s")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
