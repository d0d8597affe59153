//! kube-proxy's `ServiceChangeTracker`: remembers, per Service, what the last
//! sync applied and what the Service looks like now, so a sync touches only
//! Services that really changed.
//!
//! Coalescing falls out of comparing against the applied state instead of
//! queueing events: an add followed by a delete, or an update that changes
//! nothing this proxier programs (a label, an IPv6 field in the IPv4 tracker),
//! leaves no pending entry at all.
//!
//! A cluster has one such map per Service, almost always with one or two
//! ports, so they are [`VecMap`]s sharing their ports (`Arc`) with the
//! snapshot: a `BTreeMap` node per Service cost about 1 KB.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sluice_model::service::{IpFamily, ServiceName, ServicePort, ServicePortName, VecMap};

/// Every proxied Service port of one family, as a snapshot holds them.
pub type ServicePortMap = BTreeMap<ServicePortName, Arc<ServicePort>>;

/// The proxied ports of one Service, already filtered to the tracker's family.
pub type ServicePorts = VecMap<ServicePortName, Arc<ServicePort>>;

/// One Service's change between two syncs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceChange {
    pub(crate) service: ServiceName,
    pub(crate) previous: ServicePorts,
    pub(crate) current: ServicePorts,
}

/// Pending Service changes of one address family.
#[derive(Debug)]
pub struct ServiceChangeTracker {
    family: IpFamily,
    /// What the last sync applied; Services with no proxied port are absent.
    applied: HashMap<ServiceName, ServicePorts>,
    /// The current state of Services that differ from `applied` (an empty
    /// map: deleted or no longer proxied).
    pending: HashMap<ServiceName, ServicePorts>,
}

impl ServiceChangeTracker {
    /// An empty tracker for `family`.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            applied: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Records the current ports of `service` (all families; an empty list
    /// means the Service is gone, skipped or not proxied). Returns whether the
    /// pending state changed, i.e. whether a sync is worth scheduling.
    pub fn update(&mut self, service: &ServiceName, ports: &[ServicePort]) -> bool {
        let current = self.port_map(ports);
        let applied = self.applied.get(service);
        if applied.map_or(current.is_empty(), |a| *a == current) {
            return self.pending.remove(service).is_some();
        }
        if self.pending.get(service) == Some(&current) {
            return false;
        }
        self.pending.insert(service.clone(), current);
        true
    }

    /// Records the deletion of `service`; see [`Self::update`].
    pub fn delete(&mut self, service: &ServiceName) -> bool {
        self.update(service, &[])
    }

    /// The number of Services with pending changes
    /// (`kubeproxy_sync_proxy_rules_service_changes_pending`).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The family-filtered view kube-proxy's `serviceToServiceMap` builds: no
    /// entry for a port without a cluster IP of this family.
    fn port_map(&self, ports: &[ServicePort]) -> ServicePorts {
        (ports.iter())
            .filter_map(|port| port.for_family(self.family))
            .map(|port| (port.name.clone(), Arc::new(port)))
            .collect()
    }

    /// Hands out the pending changes and marks them applied.
    pub(crate) fn checkout(&mut self) -> Vec<ServiceChange> {
        let mut changes = Vec::with_capacity(self.pending.len());
        // `take`, not `drain`: draining walks every bucket of a map that
        // grew to the cluster's size during the initial list, which made
        // each small sync cost O(Services).
        for (service, current) in std::mem::take(&mut self.pending) {
            let previous = match current.is_empty() {
                true => self.applied.remove(&service),
                false => self.applied.insert(service.clone(), current.clone()),
            };
            changes.push(ServiceChange {
                service,
                previous: previous.unwrap_or_default(),
                current,
            });
        }
        changes
    }
}

#[cfg(test)]
mod tests;
