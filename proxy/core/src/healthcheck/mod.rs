//! Health-check node ports: for each `type: LoadBalancer` Service with
//! `externalTrafficPolicy: Local`, an HTTP server on its `healthCheckNodePort`
//! answering 200 while this node has local ready endpoints for it (and the
//! proxy is healthy), 503 otherwise (`pkg/proxy/healthcheck/service_health.go`).
//!
//! Cloud load balancers probe these ports to send `Local` traffic only to
//! nodes that can serve it, so the body, headers and status must be
//! kube-proxy's. [`ServiceHealthServers`] keeps one listener per Service and
//! opens or closes listeners only when the set of (Service, port) changes;
//! endpoint counts change in place. It is fed per address family, either
//! kube-proxy style ([`ServiceHealthServers::sync_services`] /
//! [`ServiceHealthServers::sync_endpoints`]) or from each sync
//! ([`ServiceHealthServers::sync_snapshot`], also as a [`SyncObserver`]),
//! re-examining only the Services a partial sync changed. With two families,
//! a Service's port is taken from either and its count is the larger of the
//! two (a dual-stack pod counts once).

mod listeners;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use sluice_model::service::{IpFamily, ServiceName};
use tokio::runtime::Handle;

use crate::changes::Changes;
use crate::health::{HealthSource, proxy_healthy};
use crate::runner::{SyncObserver, SyncReport};
use crate::snapshot::Snapshot;
use listeners::Listeners;
use view::FamilyView;

/// A health-check port that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open health check node port {port} of Service {service} on {ip}: {source}")]
pub struct HealthCheckError {
    /// The Service.
    pub service: ServiceName,
    /// Its `healthCheckNodePort`.
    pub port: u16,
    /// The address that failed.
    pub ip: IpAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Whether the proxy itself is healthy (`serviceProxyHealthy`).
pub type ProxyHealthy = Arc<dyn Fn() -> bool + Send + Sync>;

/// Local ready endpoint counts shared with the HTTP handlers.
pub(crate) type Counts = Arc<RwLock<BTreeMap<ServiceName, usize>>>;

/// The set of health-check node port servers.
pub struct ServiceHealthServers {
    state: Mutex<State>,
}

struct State {
    families: BTreeMap<IpFamily, FamilyView>,
    listeners: Listeners,
}

impl ServiceHealthServers {
    /// Servers bound on `bind_ips` (the node IPs selected by
    /// `nodePortAddresses`; `None`: every address, as for node ports), spawned on `runtime`.
    pub fn new(
        runtime: Handle,
        bind_ips: Option<Vec<IpAddr>>,
        proxy_healthy: ProxyHealthy,
    ) -> Self {
        let counts = Counts::default();
        Self {
            state: Mutex::new(State {
                families: BTreeMap::new(),
                listeners: Listeners::new(runtime, bind_ips, counts, proxy_healthy),
            }),
        }
    }

    /// `serviceProxyHealthy` from the proxy's health inputs (no late update).
    pub fn proxy_health(source: Arc<dyn HealthSource>) -> ProxyHealthy {
        Arc::new(move || proxy_healthy(&source.inputs(), SystemTime::now()))
    }

    /// kube-proxy's `SyncServices` for one family: the health-check port of
    /// every Service that needs one. Listeners open and close to match.
    pub fn sync_services(
        &self,
        family: IpFamily,
        ports: BTreeMap<ServiceName, u16>,
    ) -> Vec<HealthCheckError> {
        self.update(|state| state.families.entry(family).or_default().ports = ports)
    }

    /// kube-proxy's `SyncEndpoints` for one family: local ready endpoint
    /// counts; Services absent from the map count 0.
    pub fn sync_endpoints(&self, family: IpFamily, counts: BTreeMap<ServiceName, usize>) {
        let _ = self.update(|state| state.families.entry(family).or_default().counts = counts);
    }

    /// Both from one sync's snapshot: everything on a full sync, only the
    /// changed Services on a partial one.
    pub fn sync_snapshot(&self, snapshot: &Snapshot, changes: &Changes) -> Vec<HealthCheckError> {
        self.update(|state| {
            let view = state.families.entry(snapshot.family()).or_default();
            match changes.full {
                true => view.rebuild(snapshot),
                false => view.refresh(snapshot, &changes.services()),
            }
        })
    }

    /// The open listeners: Service → port.
    pub fn ports(&self) -> BTreeMap<ServiceName, u16> {
        match self.state.lock() {
            Ok(state) => state.listeners.ports(),
            Err(_) => BTreeMap::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) -> Vec<HealthCheckError> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        change(&mut state);
        let (ports, counts) = view::merge(state.families.values());
        state.listeners.set_counts(counts);
        state.listeners.reconcile(&ports)
    }
}

impl SyncObserver for ServiceHealthServers {
    fn on_sync(&self, report: &SyncReport<'_>) {
        if !report.record.ok {
            return;
        }
        for error in self.sync_snapshot(report.snapshot, report.changes) {
            tracing::warn!(%error, "health check node port");
        }
    }
}
