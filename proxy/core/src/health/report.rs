//! kube-proxy's health semantics as a pure function of [`HealthInputs`]
//! (`pkg/proxy/healthcheck/proxy_health.go`, `Health()` and the two handlers).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sluice_model::service::IpFamily;

use crate::runner::SyncStatus;

/// One family's queue, as the runner reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyHealth {
    /// Oldest change queued and not yet applied (kube-proxy's `QueuedUpdate`).
    pub queued_since: Option<SystemTime>,
    /// Last successful sync (kube-proxy's `Updated`).
    pub last_updated: Option<SystemTime>,
}

/// Everything `/healthz` and `/livez` depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthInputs {
    /// Per address family the proxy serves.
    pub families: BTreeMap<IpFamily, FamilyHealth>,
    /// The Node exists and is not being deleted (no `deletionTimestamp`, no
    /// `ToBeDeletedByClusterAutoscaler` taint); `true` when there is no Node
    /// source.
    pub node_eligible: bool,
    /// A queued update older than this makes the proxy unhealthy:
    /// 2 × `--sync-period` ([`crate::config_file::ProxyConfig::health_timeout`]).
    pub timeout: Duration,
}

impl HealthInputs {
    /// The inputs the runner's [`SyncStatus`] carries.
    pub fn from_status(status: &SyncStatus, timeout: Duration) -> Self {
        let families = (status.families.iter())
            .map(|(family, f)| {
                let health = FamilyHealth {
                    queued_since: f.queued_since,
                    last_updated: f.last_synced,
                };
                (*family, health)
            })
            .collect();
        Self {
            families,
            node_eligible: status.node.eligible(),
            timeout,
        }
    }
}

/// One family in the JSON body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyReport {
    /// RFC 3339; Go's zero time when never updated.
    pub last_updated: String,
    /// Whether this family has no late update.
    pub healthy: bool,
}

/// The JSON body of `/healthz` and `/livez`, field for field upstream's
/// `ProxyHealth`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The most recent family update; *now* when healthy (compatibility
    /// with older kube-proxies, whose value meant "the sync loop is alive").
    pub last_updated: String,
    /// The time of the answer.
    pub current_time: String,
    /// `/healthz` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_eligible: Option<bool>,
    /// Every family healthy (and, for `/healthz`, the node eligible).
    pub healthy: bool,
    /// Per family (`IPv4`, `IPv6`); omitted when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, FamilyReport>,
}

/// Which endpoint is answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: proxy health and node eligibility (for load balancers).
    Healthz,
    /// `/livez`: proxy health only (for the kubelet's liveness probe).
    Livez,
}

/// Go's zero `time.Time` in JSON.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Evaluates `inputs` at `now` for `probe`.
pub fn evaluate(inputs: &HealthInputs, probe: Probe, now: SystemTime) -> HealthReport {
    let mut status = BTreeMap::new();
    let mut proxy_healthy = true;
    for (family, f) in &inputs.families {
        let late = f
            .queued_since
            .is_some_and(|since| now.duration_since(since).unwrap_or_default() >= inputs.timeout);
        proxy_healthy &= !late;
        let report = FamilyReport {
            last_updated: f.last_updated.map_or(ZERO_TIME.to_owned(), rfc3339),
            healthy: !late,
        };
        status.insert(family.to_string(), report);
    }
    let last = (inputs.families.values())
        .filter_map(|f| f.last_updated)
        .max();
    let node_eligible = (probe == Probe::Healthz).then_some(inputs.node_eligible);
    let healthy = proxy_healthy && node_eligible.unwrap_or(true);
    let last_updated = match healthy {
        true => rfc3339(now),
        false => last.map_or(ZERO_TIME.to_owned(), rfc3339),
    };
    HealthReport {
        last_updated,
        current_time: rfc3339(now),
        node_eligible,
        healthy,
        status,
    }
}

/// Whether the proxy itself is healthy (no late update), ignoring the node:
/// what the service health-check servers report as `serviceProxyHealthy`.
pub fn proxy_healthy(inputs: &HealthInputs, now: SystemTime) -> bool {
    evaluate(inputs, Probe::Livez, now).healthy
}

/// RFC 3339 with nanoseconds, UTC, like Go's `time.Time` JSON.
pub fn rfc3339(time: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(time)
        .map_or_else(|_| ZERO_TIME.to_owned(), |t| t.to_string())
}
