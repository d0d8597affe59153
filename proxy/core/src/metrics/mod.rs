//! `/metrics` on `--metrics-bind-address`: kube-proxy's metric names, types,
//! buckets and labels (`pkg/proxy/metrics/metrics.go`), in the Prometheus
//! text (OpenMetrics) format via `prometheus-client`.
//!
//! Dashboards and alerts written for kube-proxy (sync latency, "last sync
//! long ago", network-programming SLO) must keep working when Sluice
//! replaces it, so names are upstream's exactly, including the oddity that
//! `..._no_local_endpoints_total` is a gauge. [`Metrics`] is a cheap handle
//! (an `Arc`); the runner feeds it as a [`SyncObserver`] after every sync and
//! through [`Metrics::update_from_status`], and the health server counts its
//! answers with it. Everything it does per sync is proportional to the
//! change: the no-local-endpoints gauges are kept per Service port and only
//! changed ports are re-examined on a partial sync.

mod no_local;
mod server;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;
use sluice_model::service::IpFamily;

use crate::runner::{SyncObserver, SyncReport, SyncStatus};
use no_local::NoLocal;

pub use server::{CONTENT_TYPE, router};

/// Labels of `kubeproxy_proxy_{healthz,livez}_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// Labels of `kubeproxy_sluice_objects_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Labels of `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLocalLabels {
    traffic_policy: String,
    ip_family: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

struct Inner {
    registry: Registry,
    sync_duration: Histogram,
    full_duration: Histogram,
    partial_duration: Histogram,
    last_timestamp: FloatGauge,
    last_queued: FloatGauge,
    network_programming: Histogram,
    endpoint_pending: Gauge,
    endpoint_total: Counter,
    service_pending: Gauge,
    service_total: Counter,
    no_local_endpoints: Family<NoLocalLabels, Gauge>,
    healthz: Family<CodeLabels, Counter>,
    livez: Family<CodeLabels, Counter>,
    rejected: Family<KindLabels, Counter>,
    unprogrammable: Gauge,
    started: SystemTime,
    no_local: Mutex<NoLocal>,
}

/// kube-proxy's metrics, registered and ready to encode.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// `ExponentialBuckets(0.001, 2, 15)`: 1 ms … 16.384 s.
fn sync_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

/// 0.25 s, 0.5 s, 1 … 59 s, 60 … 115 s by 5, 120 … 300 s by 30.
fn network_programming_buckets() -> impl Iterator<Item = f64> {
    (linear_buckets(0.25, 0.25, 2))
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
}

impl Metrics {
    /// Registers every shared metric. `started` is the process start: network-programming
    /// latency is only observed for changes made after it, as kube-proxy does.
    pub fn new(started: SystemTime) -> Self {
        Self::with_mode(started, |_| {})
    }

    /// [`Self::new`], plus the metrics of the proxy mode (`Backend::register_metrics`: its
    /// sync-failure counter and the like, which only that mode has).
    pub fn with_mode(started: SystemTime, mode: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("kubeproxy");
        let inner = Inner {
            sync_duration: Histogram::new(sync_buckets()),
            full_duration: Histogram::new(sync_buckets()),
            partial_duration: Histogram::new(sync_buckets()),
            last_timestamp: FloatGauge::default(),
            last_queued: FloatGauge::default(),
            network_programming: Histogram::new(network_programming_buckets()),
            endpoint_pending: Gauge::default(),
            endpoint_total: Counter::default(),
            service_pending: Gauge::default(),
            service_total: Counter::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            rejected: Family::default(),
            unprogrammable: Gauge::default(),
            started,
            no_local: Mutex::default(),
            registry: Registry::default(),
        };
        register(&mut registry, &inner);
        mode(&mut registry);
        Self {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// One sync took `duration` (`full` or partial).
    pub fn observe_sync(&self, full: bool, duration: Duration) {
        let seconds = duration.as_secs_f64();
        self.inner.sync_duration.observe(seconds);
        match full {
            true => self.inner.full_duration.observe(seconds),
            false => self.inner.partial_duration.observe(seconds),
        }
    }

    /// A sync succeeded at `at`.
    pub fn set_last_sync(&self, at: SystemTime) {
        self.inner.last_timestamp.set(unix_seconds(at));
    }

    /// A change was queued at `at`.
    pub fn set_last_queued(&self, at: SystemTime) {
        self.inner.last_queued.set(unix_seconds(at));
    }

    /// Changes triggered at `trigger_times` are now programmed (`now`);
    /// times from before the proxy started are skipped.
    pub fn observe_network_programming(&self, now: SystemTime, trigger_times: &[SystemTime]) {
        for time in trigger_times.iter().filter(|t| **t >= self.inner.started) {
            let latency = now.duration_since(*time).unwrap_or_default();
            self.inner
                .network_programming
                .observe(latency.as_secs_f64());
        }
    }

    /// Services with pending definition and endpoint changes.
    pub fn set_pending(&self, services: usize, endpoints: usize) {
        self.inner.service_pending.set(gauge_value(services));
        self.inner.endpoint_pending.set(gauge_value(endpoints));
    }

    /// Service and endpoint changes processed by a sync.
    pub fn add_changes(&self, services: usize, endpoints: usize) {
        self.inner.service_total.inc_by(services as u64);
        self.inner.endpoint_total.inc_by(endpoints as u64);
    }

    /// `/healthz` answered `code`.
    pub fn inc_healthz(&self, code: u16) {
        let labels = CodeLabels {
            code: code.to_string(),
        };
        self.inner.healthz.get_or_create(&labels).inc();
    }

    /// `/livez` answered `code`.
    pub fn inc_livez(&self, code: u16) {
        let labels = CodeLabels {
            code: code.to_string(),
        };
        self.inner.livez.get_or_create(&labels).inc();
    }

    /// Samples the runner's status: pending changes (summed over families)
    /// and the last-queued time.
    pub fn update_from_status(&self, status: &SyncStatus) {
        let services = status
            .families
            .values()
            .map(|f| f.service_changes_pending)
            .sum();
        let endpoints = status
            .families
            .values()
            .map(|f| f.endpoint_changes_pending)
            .sum();
        self.set_pending(services, endpoints);
        if let Some(at) = status.last_queued {
            self.set_last_queued(at);
        }
        for (kind, total) in &status.rejected_objects {
            let labels = KindLabels {
                kind: (*kind).to_owned(),
            };
            let counter = self.inner.rejected.get_or_create(&labels);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let unprogrammable = status.unprogrammable.values().map(Vec::len).sum();
        self.inner.unprogrammable.set(gauge_value(unprogrammable));
    }

    /// The whole registry in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    fn set_no_local(&self, family: IpFamily, internal: usize, external: usize) {
        for (policy, count) in [("internal", internal), ("external", external)] {
            let labels = NoLocalLabels {
                traffic_policy: policy.to_owned(),
                ip_family: family.to_string(),
            };
            self.inner
                .no_local_endpoints
                .get_or_create(&labels)
                .set(gauge_value(count));
        }
    }
}

impl SyncObserver for Metrics {
    fn on_sync(&self, report: &SyncReport<'_>) {
        let record = report.record;
        self.observe_sync(record.full, record.duration);
        self.add_changes(record.service_changes, record.endpoint_changes);
        if !record.ok {
            // The mode's own failure counter (nftables_sync_failures, iptables_restore_failures)
            // is the backend's.
            return;
        }
        self.set_last_sync(record.at);
        self.observe_network_programming(record.at, &report.changes.trigger_times);
        let counts = match self.inner.no_local.lock() {
            Ok(mut no_local) => no_local.update(record.family, report.snapshot, report.changes),
            Err(_) => return,
        };
        self.set_no_local(record.family, counts.0, counts.1);
    }
}

fn register(registry: &mut Registry, m: &Inner) {
    let sync = "sync_proxy_rules";
    registry.register(
        format!("{sync}_duration_seconds"),
        "SyncProxyRules latency in seconds",
        m.sync_duration.clone(),
    );
    registry.register(
        "sync_full_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds for full resyncs",
        m.full_duration.clone(),
    );
    registry.register(
        "sync_partial_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds for partial resyncs",
        m.partial_duration.clone(),
    );
    registry.register(
        format!("{sync}_last_timestamp_seconds"),
        "The last time proxy rules were successfully synced",
        m.last_timestamp.clone(),
    );
    registry.register(
        format!("{sync}_last_queued_timestamp_seconds"),
        "The last time a sync of proxy rules was queued",
        m.last_queued.clone(),
    );
    registry.register(
        "network_programming_duration_seconds",
        "In Cluster Network Programming Latency in seconds",
        m.network_programming.clone(),
    );
    registry.register(
        format!("{sync}_endpoint_changes_pending"),
        "Pending proxy rules Endpoint changes",
        m.endpoint_pending.clone(),
    );
    // prometheus-client appends `_total` to counters.
    registry.register(
        format!("{sync}_endpoint_changes"),
        "Cumulative proxy rules Endpoint changes",
        m.endpoint_total.clone(),
    );
    registry.register(
        format!("{sync}_service_changes_pending"),
        "Pending proxy rules Service changes",
        m.service_pending.clone(),
    );
    registry.register(
        format!("{sync}_service_changes"),
        "Cumulative proxy rules Service changes",
        m.service_total.clone(),
    );
    registry.register(
        format!("{sync}_no_local_endpoints_total"),
        "Number of services with a Local traffic policy and no endpoints",
        m.no_local_endpoints.clone(),
    );
    registry.register(
        "proxy_healthz",
        "Cumulative proxy healthz HTTP status",
        m.healthz.clone(),
    );
    registry.register(
        "proxy_livez",
        "Cumulative proxy livez HTTP status",
        m.livez.clone(),
    );
    // Sluice's own, under the same prefix so one scrape config finds them.
    registry.register(
        "sluice_objects_rejected",
        "Services and EndpointSlices refused by validation (as the API server would refuse them)",
        m.rejected.clone(),
    );
    registry.register(
        "sluice_services_unprogrammable",
        "Services left out of the dataplane because the kernel refused them",
        m.unprogrammable.clone(),
    );
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
