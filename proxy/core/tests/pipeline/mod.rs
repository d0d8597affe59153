//! The proxy pipeline with the fake backend, for the source integration
//! tests: a [`Feed`] for node `node-a` (IPv4), a fast [`Runner`], and helpers
//! to wait for and read what the fake programmed.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use sluice_model::service::{IpFamily, Protocol, ServiceName, ServicePortName};
use sluice_proxy_core::TrackerConfig;
use sluice_proxy_core::backend::{Applied, FakeBackend, FakeLog};
use sluice_proxy_core::runner::{Feed, Runner, RunnerConfig};
use tokio::sync::oneshot;

pub const NODE: &str = "node-a";

/// A running runner over the fake backend.
pub struct Pipeline {
    pub feed: Feed,
    pub log: FakeLog,
    stop: Option<oneshot::Sender<()>>,
}

impl Pipeline {
    /// Starts the runner (20 ms min sync period, no periodic full sync
    /// within a test's lifetime, 50 ms retry).
    pub fn start() -> Self {
        let feed = Feed::new([TrackerConfig::new(IpFamily::V4, NODE)]);
        let backend = FakeBackend::new();
        let log = backend.log();
        let config = RunnerConfig {
            min_sync_period: Duration::from_millis(20),
            sync_period: Duration::from_secs(600),
            retry_backoff: Duration::from_millis(50),
        };
        let runner = Runner::new(feed.clone(), backend, config);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        Self {
            feed,
            log,
            stop: Some(stop),
        }
    }

    /// Current programmed ports with their endpoints, as `ns/name:port` →
    /// sorted `ip:port` strings.
    pub fn programmed(&self) -> Vec<(String, Vec<String>)> {
        (self.log.programmed(IpFamily::V4).into_iter())
            .map(|(name, port)| {
                let eps = port.endpoints.iter().map(ToString::to_string).collect();
                (name.to_string(), eps)
            })
            .collect()
    }

    /// Waits until the fake's programmed state satisfies `check`.
    pub async fn until(&self, what: &str, check: impl Fn(&[(String, Vec<String>)]) -> bool) {
        eventually(what, || check(&self.programmed())).await;
    }

    /// Waits until the queued updates are all applied, then returns (and
    /// clears) the applies recorded so far.
    pub async fn settled(&self) -> Vec<Applied> {
        let status = self.feed.status();
        eventually("no queued update", || !status.borrow().update_pending()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log.take_applies()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The union of the ports of partial applies; panics on a full or failed one.
pub fn partial_ports(applies: &[Applied]) -> BTreeSet<String> {
    let mut ports = BTreeSet::new();
    for applied in applies {
        assert!(applied.ok && !applied.full, "unexpected apply {applied:?}");
        ports.extend(applied.ports.iter().map(ToString::to_string));
    }
    ports
}

/// `ns/<svc>:<port>` over TCP.
pub fn port_name(ns: &str, svc: &str, port: &str) -> ServicePortName {
    ServicePortName::new(&ServiceName::new(ns, svc), port, Protocol::Tcp)
}

/// Polls `check` every 20 ms for up to ten seconds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Runs `f` with a ten-second limit.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("within 10 s")
}
