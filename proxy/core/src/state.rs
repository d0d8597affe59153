//! [`ProxyState`]: the two change trackers, the applied Service-port and
//! endpoint maps, and the sync step that turns pending changes into a
//! [`Snapshot`] plus the [`Changes`] since the previous sync.
//!
//! One `ProxyState` serves one address family, like one kube-proxy proxier;
//! a dual-stack node runs two. Event handlers and the sync loop share it behind
//! a mutex: handlers only record, and a sync does work proportional to what
//! changed, so neither holds the lock for long.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_model::service::{
    Endpoint, ServiceName, ServicePort, ServicePortName, SliceEndpoints, VecMap,
};

use crate::changes::Changes;
use crate::config::{NodeTopology, TrackerConfig};
use crate::endpoints::{EndpointsChangeTracker, EndpointsMap};
use crate::services::{ServiceChangeTracker, ServicePortMap};
use crate::snapshot::Snapshot;

/// Tracked Services and EndpointSlices of one family, and what was last synced.
#[derive(Debug)]
pub struct ProxyState {
    pub(crate) config: TrackerConfig,
    services: ServiceChangeTracker,
    endpoints: EndpointsChangeTracker,
    node: Arc<NodeTopology>,
    applied_services: Arc<ServicePortMap>,
    applied_endpoints: Arc<EndpointsMap>,
    full_sync_pending: bool,
    /// The period asked for a full sync ([`Changes::periodic`] when nothing else does).
    periodic_pending: bool,
    /// What failed syncs took away ([`Changes::replaced`]), carried into the next sync: its
    /// conntrack reconciliation must still delete the flows of destinations that are gone.
    replaced_pending: Vec<Arc<ServicePort>>,
    /// `endpoints.kubernetes.io/last-change-trigger-time` of pending slice
    /// changes, per Service.
    trigger_times: HashMap<ServiceName, Vec<SystemTime>>,
}

impl ProxyState {
    /// An empty state; the first sync is a full one.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            services: ServiceChangeTracker::new(config.family),
            endpoints: EndpointsChangeTracker::new(config.family),
            node: Arc::new(NodeTopology {
                name: config.node_name.clone(),
                ..NodeTopology::default()
            }),
            applied_services: Arc::default(),
            applied_endpoints: Arc::default(),
            full_sync_pending: true,
            periodic_pending: false,
            replaced_pending: Vec::new(),
            trigger_times: HashMap::new(),
            config,
        }
    }

    /// The tracker's settings.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Records the current ports of a Service (all families; empty when it is
    /// deleted, skipped or not proxied). Returns whether a sync is needed.
    pub fn update_service(&mut self, service: &ServiceName, ports: &[ServicePort]) -> bool {
        self.services.update(service, ports)
    }

    /// Records the deletion of a Service. Returns whether a sync is needed.
    pub fn delete_service(&mut self, service: &ServiceName) -> bool {
        self.services.delete(service)
    }

    /// Records the current content of an EndpointSlice. Returns whether a
    /// sync is needed.
    pub fn update_slice(&mut self, slice: SliceEndpoints) -> bool {
        self.update_slice_triggered(slice, None)
    }

    /// [`Self::update_slice`] with the slice's last-change trigger time, the
    /// start of the network-programming latency reported by the next sync.
    pub fn update_slice_triggered(
        &mut self,
        slice: SliceEndpoints,
        trigger: Option<SystemTime>,
    ) -> bool {
        let service = slice.service.clone();
        let changed = self.endpoints.update(slice);
        if let Some(time) = trigger.filter(|_| changed) {
            self.trigger_times.entry(service).or_default().push(time);
        }
        changed
    }

    /// Records the deletion of EndpointSlice `namespace/name`. Returns whether
    /// a sync is needed.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) -> bool {
        // A deleted slice's trigger time is that of its last update, not of
        // the deletion, so the Service's pending times mean nothing any more
        // (kube-proxy drops them too).
        if let Some(service) = self.endpoints.owner(namespace, name) {
            self.trigger_times.remove(service);
        }
        self.endpoints.delete(namespace, name)
    }

    /// Records this node's topology. A change of zone changes which endpoints
    /// topology hints select everywhere, so it forces a full sync (kube-proxy's
    /// `OnTopologyChange`). Returns whether a sync is needed.
    pub fn set_node(&mut self, node: NodeTopology) -> bool {
        if *self.node == node {
            return false;
        }
        self.node = Arc::new(node);
        self.full_sync_pending = true;
        true
    }

    /// Makes the next sync a full one (after a failed apply, or periodically).
    pub fn request_full_sync(&mut self) {
        self.full_sync_pending = true;
    }

    /// Makes the next sync a full one because the sync period came ([`Changes::periodic`]
    /// unless something else also asks for a full sync).
    pub fn request_periodic_sync(&mut self) {
        self.periodic_pending = true;
    }

    /// After a failed apply of `changes`: the next sync is a full one and still undoes what
    /// `changes` took away (a full sync alone only knows what is there now, so the flows of a
    /// Service deleted in the failed sync would be left to time out).
    pub fn retry_after_failure(&mut self, changes: &Changes) {
        self.full_sync_pending = true;
        self.replaced_pending
            .extend(changes.replaced.iter().cloned());
    }

    /// Whether the next sync has anything to do.
    pub fn has_pending(&self) -> bool {
        self.full_sync_pending
            || self.periodic_pending
            || self.services.pending_len() > 0
            || self.endpoints.pending_len() > 0
    }

    /// Services with pending definition changes (for the `_pending` metric).
    pub fn service_changes_pending(&self) -> usize {
        self.services.pending_len()
    }

    /// Services with pending endpoint changes (for the `_pending` metric).
    pub fn endpoint_changes_pending(&self) -> usize {
        self.endpoints.pending_len()
    }

    /// The state as of the last sync, without applying pending changes.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            family: self.config.family,
            node: Arc::clone(&self.node),
            prefer_same_node: self.config.prefer_same_node,
            services: Arc::clone(&self.applied_services),
            endpoints: Arc::clone(&self.applied_endpoints),
        }
    }

    /// Applies every pending change and returns the new snapshot with what
    /// changed since the previous sync. The changes are consumed: if the
    /// backend fails to apply them, call [`Self::request_full_sync`].
    pub fn sync(&mut self) -> (Snapshot, Changes) {
        let required = std::mem::take(&mut self.full_sync_pending);
        let periodic = std::mem::take(&mut self.periodic_pending);
        let mut changes = Changes {
            full: required || periodic,
            periodic: periodic && !required,
            replaced: std::mem::take(&mut self.replaced_pending),
            ..Changes::default()
        };
        let service_changes = self.services.checkout();
        changes.service_changes = service_changes.len();
        if !service_changes.is_empty() {
            let map = Arc::make_mut(&mut self.applied_services);
            for change in service_changes {
                changes.replaced.extend(
                    (change.previous.iter())
                        .filter(|(name, old)| change.current.get(name) != Some(*old))
                        .map(|(_, old)| Arc::clone(old)),
                );
                changes.at_risk.extend(
                    (change.current.keys())
                        .filter(|name| !change.previous.contains_key(name))
                        .cloned(),
                );
                apply_diff(map, change.previous, change.current, &mut changes.ports);
            }
        }
        changes.trigger_times = std::mem::take(&mut self.trigger_times)
            .into_values()
            .flatten()
            .collect();
        changes.trigger_times.sort();
        let endpoint_changes = self.endpoints.checkout();
        changes.endpoint_changes = endpoint_changes.len();
        if !endpoint_changes.is_empty() {
            let map = Arc::make_mut(&mut self.applied_endpoints);
            for change in endpoint_changes {
                changes.at_risk.extend(
                    (change.previous.iter())
                        .filter(|(name, old)| lost_one(old, change.current.get(name)))
                        .map(|(name, _)| name.clone()),
                );
                apply_diff(map, change.previous, change.current, &mut changes.ports);
            }
        }
        (self.snapshot(), changes)
    }
}

/// Replaces one Service's `previous` entries in `map` by `current`, noting
/// every key whose value differs.
/// Whether an endpoint that could answer (ready or serving) in `old` no longer can in `new`.
fn lost_one(old: &[Endpoint], new: Option<&Arc<[Endpoint]>>) -> bool {
    let answers = |e: &Endpoint| e.ready || e.serving;
    let now: BTreeSet<IpAddr> = (new.into_iter().flat_map(|n| n.iter()))
        .filter(|e| answers(e))
        .map(|e| e.ip)
        .collect();
    old.iter().any(|e| answers(e) && !now.contains(&e.ip))
}

fn apply_diff<V: PartialEq>(
    map: &mut std::collections::BTreeMap<ServicePortName, V>,
    previous: VecMap<ServicePortName, V>,
    current: VecMap<ServicePortName, V>,
    changed: &mut BTreeSet<ServicePortName>,
) {
    for key in previous.keys() {
        if !current.contains_key(key) {
            map.remove(key);
            changed.insert(key.clone());
        }
    }
    for (key, value) in current {
        if previous.get(&key) != Some(&value) {
            changed.insert(key.clone());
        }
        map.insert(key, value);
    }
}
