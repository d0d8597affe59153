//! A backend that programs nothing and remembers everything, so tests can
//! check that the sync loop hands a backend exactly the changed Service ports
//! (and that a failed apply is followed by a full one).
//!
//! It still does a real backend's per-port work — [`Snapshot::categorize`] of
//! every port it (re)programs — so benchmarks over it measure the model and
//! the render cost that every backend shares, not an empty function.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_model::service::{IpFamily, ServiceName, ServicePortName};

use super::{Backend, BackendError, Outcome, ProxyMode, Tick};
use crate::{Changes, Snapshot};

/// One apply the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The snapshot's family.
    pub family: IpFamily,
    /// A full apply.
    pub full: bool,
    /// The Service ports the apply (re)programmed or removed: every port of
    /// the snapshot for a full apply, `changes.ports` for a partial one.
    pub ports: BTreeSet<ServicePortName>,
    /// The endpoints of those ports in the snapshot, summed.
    pub endpoints: usize,
    /// The ports named in `changes.replaced`: what the apply (and its conntrack
    /// reconciliation) was told had been taken away.
    pub replaced: BTreeSet<ServicePortName>,
    /// Whether the fake reported success.
    pub ok: bool,
}

/// What the fake "programmed" for one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgrammedPort {
    /// The cluster IP of the snapshot's family.
    pub cluster_ip: Option<IpAddr>,
    /// The Service port number.
    pub port: u16,
    /// Every merged endpoint, sorted.
    pub endpoints: Vec<SocketAddr>,
    /// The endpoints traffic can reach (kube-proxy's `allReachableEndpoints`).
    pub reachable: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct Inner {
    applies: Vec<Applied>,
    programmed: BTreeMap<IpFamily, BTreeMap<ServicePortName, ProgrammedPort>>,
    fail_next: usize,
    /// Services whose ports make every apply carrying them fail (as a kernel refuses an
    /// object it cannot hold).
    refused: BTreeSet<ServiceName>,
    cleanups: usize,
    ticks: usize,
    /// The next tick asks for a full sync.
    want_full: bool,
}

/// A shared view of a [`FakeBackend`]'s record, kept by tests while the
/// runner owns the backend.
#[derive(Clone, Debug, Default)]
pub struct FakeLog(Arc<Mutex<Inner>>);

impl FakeLog {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every apply so far, oldest first.
    pub fn applies(&self) -> Vec<Applied> {
        self.lock().applies.clone()
    }

    /// The applies so far, clearing the record.
    pub fn take_applies(&self) -> Vec<Applied> {
        std::mem::take(&mut self.lock().applies)
    }

    /// How many applies so far.
    pub fn apply_count(&self) -> usize {
        self.lock().applies.len()
    }

    /// The current programmed state of one family.
    pub fn programmed(&self, family: IpFamily) -> BTreeMap<ServicePortName, ProgrammedPort> {
        self.lock()
            .programmed
            .get(&family)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes the next `n` applies fail (they are still recorded, `ok: false`).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Makes every apply that programs a port of `service` fail, until [`Self::accept`].
    pub fn refuse(&self, service: ServiceName) {
        self.lock().refused.insert(service);
    }

    /// Stops refusing `service`.
    pub fn accept(&self, service: &ServiceName) {
        self.lock().refused.remove(service);
    }

    /// How many times [`Backend::cleanup`] ran.
    pub fn cleanups(&self) -> usize {
        self.lock().cleanups
    }

    /// How many times [`Backend::tick`] ran.
    pub fn ticks(&self) -> usize {
        self.lock().ticks
    }

    /// Makes the next tick ask for a full sync (as a missing canary would).
    pub fn want_full_sync(&self) {
        self.lock().want_full = true;
    }
}

/// The recording fake backend.
#[derive(Debug, Default)]
pub struct FakeBackend {
    log: FakeLog,
    tick_period: Option<Duration>,
}

impl FakeBackend {
    /// A fake with an empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake whose periodic task runs every `period`.
    pub fn ticking(period: Duration) -> Self {
        Self {
            tick_period: Some(period),
            ..Self::default()
        }
    }

    /// A handle on the record that stays valid after the backend moves.
    pub fn log(&self) -> FakeLog {
        self.log.clone()
    }

    fn record<'p>(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
        full: bool,
        ports: impl Iterator<Item = &'p ServicePortName>,
    ) -> Result<(), BackendError> {
        let ports: BTreeSet<ServicePortName> = ports.cloned().collect();
        let replaced = changes.replaced.iter().map(|p| p.name.clone()).collect();
        let endpoints = ports.iter().map(|p| snapshot.endpoints(p).len()).sum();
        let mut inner = self.log.lock();
        let refused = (ports.iter())
            .any(|p| snapshot.service_port(p).is_some() && inner.refused.contains(&p.service()));
        let ok = inner.fail_next == 0 && !refused;
        inner.fail_next = inner.fail_next.saturating_sub(1);
        if ok {
            let family = inner.programmed.entry(snapshot.family()).or_default();
            if full {
                family.clear();
            }
            for name in &ports {
                match render_port(snapshot, name) {
                    Some(port) => family.insert(name.clone(), port),
                    None => family.remove(name),
                };
            }
        }
        inner.applies.push(Applied {
            family: snapshot.family(),
            full,
            ports,
            endpoints,
            replaced,
            ok,
        });
        match ok {
            true => Ok(()),
            false => Err(BackendError::apply(
                ProxyMode::Fake,
                Outcome::Refused,
                "injected failure",
            )),
        }
    }
}

/// The fake's "rules" for one port; `None` when the port is not proxied.
fn render_port(snapshot: &Snapshot, name: &ServicePortName) -> Option<ProgrammedPort> {
    let port = snapshot.service_port(name)?;
    let categorized = snapshot.categorize(name)?;
    Some(ProgrammedPort {
        cluster_ip: port.cluster_ip(snapshot.family()),
        port: port.port,
        endpoints: (snapshot.endpoints(name).iter())
            .map(|ep| ep.addr())
            .collect(),
        reachable: (categorized.all_reachable.iter())
            .map(|ep| ep.addr())
            .collect(),
    })
}

impl Backend for FakeBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Fake
    }

    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError> {
        let mut out = String::new();
        for port in snapshot.service_ports() {
            if let Some(p) = render_port(snapshot, &port.name) {
                let _ = writeln!(
                    out,
                    "{} {:?}:{} -> {:?}",
                    port.name, p.cluster_ip, p.port, p.reachable
                );
            }
        }
        Ok(out)
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        self.record(snapshot, changes, false, changes.ports.iter())
    }

    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        let ports = snapshot.service_ports().map(|p| &p.name);
        self.record(snapshot, changes, true, ports)
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        let mut inner = self.log.lock();
        inner.programmed.clear();
        inner.cleanups += 1;
        Ok(())
    }

    fn tick_period(&self) -> Option<Duration> {
        self.tick_period
    }

    fn tick(&mut self) -> Result<Tick, BackendError> {
        let mut inner = self.log.lock();
        inner.ticks += 1;
        Ok(Tick {
            full_sync: std::mem::take(&mut inner.want_full),
        })
    }
}
