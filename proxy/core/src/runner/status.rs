//! What the sync loop tells the rest of the daemon: `/healthz`, `/livez`,
//! `/metrics` and the health-check node port servers all read from here
//! instead of reaching into the runner.
//!
//! Two channels, because they serve two kinds of reader:
//! - [`SyncStatus`], a plain struct published on a `tokio::sync::watch`
//!   channel ([`super::Feed::status`]): the *latest* state, for readers that
//!   sample (health answers, gauges). Cloning it is cheap (no per-Service
//!   data).
//! - [`SyncObserver`], called synchronously after every sync with a
//!   [`SyncReport`]: for readers that must see *every* sync (histograms,
//!   counters, the network-programming latency, the health-check node port
//!   servers that need the [`Snapshot`]). A watch channel would drop
//!   intermediate values.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sluice_model::service::{IpFamily, ServiceName};

use crate::backend::BackendError;
use crate::{Changes, Snapshot};

/// The latest state of the sync loop and its sources, per address family.
///
/// Health as kube-proxy computes it (`pkg/proxy/healthcheck/proxy_health.go`):
/// a family is unhealthy iff `queued_since` is set and older than the health
/// timeout (2 × `--sync-period`); `/healthz` additionally needs
/// [`NodeStatus::eligible`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Both initial lists (Services and EndpointSlices) are complete. No sync
    /// runs before, so nothing is programmed from a partial view.
    pub initialized: bool,
    /// One entry per family the proxy serves.
    pub families: BTreeMap<IpFamily, FamilyStatus>,
    /// When a change was last queued, any family
    /// (`kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`).
    pub last_queued: Option<SystemTime>,
    /// When a sync last succeeded, any family
    /// (`kubeproxy_sync_proxy_rules_last_timestamp_seconds`).
    pub last_synced: Option<SystemTime>,
    /// The most recent sync attempt, successful or not.
    pub last_sync: Option<SyncRecord>,
    /// Syncs attempted (one per family with work to do).
    pub syncs_total: u64,
    /// Syncs whose apply failed.
    pub failed_syncs_total: u64,
    /// Service changes applied so far
    /// (`kubeproxy_sync_proxy_rules_service_changes_total`).
    pub service_changes_total: u64,
    /// Endpoint changes applied so far
    /// (`kubeproxy_sync_proxy_rules_endpoint_changes_total`).
    pub endpoint_changes_total: u64,
    /// This node's Node object, as the source last saw it.
    pub node: NodeStatus,
    /// Objects refused by validation so far, by kind (`service`, `endpointslice`), whichever
    /// source sent them (`kubeproxy_sluice_objects_rejected_total`).
    pub rejected_objects: BTreeMap<&'static str, u64>,
    /// Services left out of the dataplane because the backend refused them, per family
    /// (`kubeproxy_sluice_services_unprogrammable`): see the runner's isolation.
    pub unprogrammable: BTreeMap<IpFamily, Vec<ServiceName>>,
}

impl SyncStatus {
    /// Whether any family has a queued update not yet applied.
    pub fn update_pending(&self) -> bool {
        self.families.values().any(|f| f.queued_since.is_some())
    }

    /// kube-proxy's per-family health: no update queued for longer than
    /// `timeout` (2 × `--sync-period`) as of `now`. Starting up with nothing
    /// queued counts as healthy.
    pub fn family_healthy(&self, family: IpFamily, now: SystemTime, timeout: Duration) -> bool {
        let Some(status) = self.families.get(&family) else {
            return true;
        };
        status
            .queued_since
            .is_none_or(|since| now.duration_since(since).unwrap_or_default() <= timeout)
    }

    /// Every family healthy (`/livez`; `/healthz` also needs the node).
    pub fn healthy(&self, now: SystemTime, timeout: Duration) -> bool {
        (self.families.keys()).all(|f| self.family_healthy(*f, now, timeout))
    }
}

/// One address family's queue and last success.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyStatus {
    /// The time of the oldest change queued and not yet applied successfully
    /// (kube-proxy's `QueuedUpdate`); `None` when everything is applied.
    pub queued_since: Option<SystemTime>,
    /// When this family's last successful sync ended (kube-proxy's
    /// `Updated`, the `lastUpdated` of the health JSON).
    pub last_synced: Option<SystemTime>,
    /// Services with pending definition changes
    /// (`kubeproxy_sync_proxy_rules_service_changes_pending`).
    pub service_changes_pending: usize,
    /// Services with pending endpoint changes
    /// (`kubeproxy_sync_proxy_rules_endpoint_changes_pending`).
    pub endpoint_changes_pending: usize,
}

/// One sync of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRecord {
    /// The family synced.
    pub family: IpFamily,
    /// When the sync ended.
    pub at: SystemTime,
    /// How long the model sync and the backend apply took together
    /// (`kubeproxy_sync_proxy_rules_duration_seconds`).
    pub duration: Duration,
    /// A full apply (`..._full_...` vs `..._partial_...` duration metrics).
    pub full: bool,
    /// Whether the backend applied it.
    pub ok: bool,
    /// Service ports (re)programmed or removed (every port when full).
    pub ports: usize,
    /// Services with a definition change.
    pub service_changes: usize,
    /// Services with an endpoints change.
    pub endpoint_changes: usize,
}

/// What the proxy knows about its own Node object, for `/healthz`'s
/// `nodeEligible`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodeStatus {
    /// Not seen yet (or no Node source, as with `--manifests-dir`): eligible.
    #[default]
    Unknown,
    /// Present; `deleting` when it has a `deletionTimestamp` or the
    /// `ToBeDeletedByClusterAutoscaler` taint.
    Present {
        /// Being deleted (kube-proxy then reports `nodeEligible: false`).
        deleting: bool,
    },
    /// Deleted.
    Absent,
}

impl NodeStatus {
    /// kube-proxy's `nodeEligible`.
    pub fn eligible(&self) -> bool {
        matches!(self, Self::Unknown | Self::Present { deleting: false })
    }
}

/// Everything about one sync, handed to every [`SyncObserver`] before the
/// snapshot is dropped.
#[derive(Debug)]
pub struct SyncReport<'a> {
    /// The summary also published in [`SyncStatus::last_sync`].
    pub record: &'a SyncRecord,
    /// The state just programmed (or that failed to program).
    pub snapshot: &'a Snapshot,
    /// What changed; `trigger_times` feed
    /// `kubeproxy_network_programming_duration_seconds`.
    pub changes: &'a Changes,
    /// The backend's error when `record.ok` is false.
    pub error: Option<&'a BackendError>,
}

/// Called synchronously by the runner after every sync; keep it quick (the
/// next sync waits) and do not keep the snapshot.
pub trait SyncObserver: Send + Sync {
    /// One sync of one family finished.
    fn on_sync(&self, report: &SyncReport<'_>);
}
