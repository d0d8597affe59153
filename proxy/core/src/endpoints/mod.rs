//! kube-proxy's `EndpointsChangeTracker` and `EndpointSliceCache` in one: the
//! EndpointSlices of every Service, as applied by the last sync and as pending
//! for the next, merged per Service port only for Services that changed.
//!
//! Slices are tracked one by one because endpoints move between slices of a
//! Service: merging all of a Service's slices (deduplicated by `ip:port`, see
//! [`merge_slices`]) is the only way to tell a move from a removal. As for
//! Services, a slice that returns to its applied state leaves nothing pending,
//! so an add followed by a delete costs no sync work.
//!
//! Per-Service maps are [`VecMap`]s (a Service has a few slices and ports; a
//! `BTreeMap` node per Service cost about 1 KB), and the merged lists are
//! shared (`Arc`) with the snapshot rather than copied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sluice_model::service::{
    Endpoint, IpFamily, ServiceName, ServicePortName, SliceEndpoints, VecMap, merge_slices,
};

/// Merged endpoints per Service port, sorted by `ip:port`, as a snapshot
/// holds them.
pub type EndpointsMap = BTreeMap<ServicePortName, Arc<[Endpoint]>>;

/// The merged endpoints of one Service, per port.
pub type ServiceEndpoints = VecMap<ServicePortName, Arc<[Endpoint]>>;

/// One Service's merged endpoints before and after a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointsChange {
    pub(crate) service: ServiceName,
    pub(crate) previous: ServiceEndpoints,
    pub(crate) current: ServiceEndpoints,
}

/// An EndpointSlice's identity: slice names are unique per namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SliceKey {
    namespace: Arc<str>,
    name: Arc<str>,
}

/// The slices of one Service, by slice name (shared with [`SliceKey`]).
#[derive(Debug, Default)]
struct ServiceSlices {
    applied: VecMap<Arc<str>, Arc<SliceEndpoints>>,
    /// `None`: the slice is to be removed.
    pending: VecMap<Arc<str>, Option<Arc<SliceEndpoints>>>,
    /// `merge_slices(applied)`, kept so a sync only merges changed Services.
    merged: ServiceEndpoints,
}

/// Pending EndpointSlice changes of one address family.
#[derive(Debug)]
pub struct EndpointsChangeTracker {
    family: IpFamily,
    services: HashMap<ServiceName, ServiceSlices>,
    /// The Service each known slice belongs to, so a delete needs only the
    /// slice's name and a slice whose service-name label changes leaves its
    /// old Service.
    owners: HashMap<SliceKey, ServiceName>,
    /// Services with a non-empty `pending`.
    dirty: HashSet<ServiceName>,
}

impl EndpointsChangeTracker {
    /// An empty tracker for `family`.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            services: HashMap::new(),
            owners: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// Records the current content of a slice. Slices of the other family are
    /// ignored. Returns whether the pending state changed.
    pub fn update(&mut self, mut slice: SliceEndpoints) -> bool {
        if slice.family != self.family {
            return false;
        }
        slice.warnings = Vec::new();
        let name: Arc<str> = Arc::from(slice.slice_name.as_str());
        let key = SliceKey {
            namespace: Arc::clone(&slice.service.namespace),
            name: Arc::clone(&name),
        };
        let mut changed = false;
        if let Some(old) = self.owners.insert(key, slice.service.clone())
            && old != slice.service
        {
            changed |= self.set(&old, name.clone(), None);
        }
        let service = slice.service.clone();
        changed | self.set(&service, name, Some(Arc::new(slice)))
    }

    /// Records the deletion of slice `namespace/name`. Returns whether the
    /// pending state changed.
    pub fn delete(&mut self, namespace: &str, name: &str) -> bool {
        match self.owners.remove_entry(&SliceKey::new(namespace, name)) {
            Some((key, service)) => self.set(&service, key.name, None),
            None => false,
        }
    }

    /// The Service a known slice belongs to.
    pub(crate) fn owner(&self, namespace: &str, name: &str) -> Option<&ServiceName> {
        self.owners.get(&SliceKey::new(namespace, name))
    }

    /// The number of Services with pending endpoint changes
    /// (`kubeproxy_sync_proxy_rules_endpoint_changes_pending`).
    pub fn pending_len(&self) -> usize {
        self.dirty.len()
    }

    fn set(
        &mut self,
        service: &ServiceName,
        name: Arc<str>,
        value: Option<Arc<SliceEndpoints>>,
    ) -> bool {
        let slices = self.services.entry(service.clone()).or_default();
        let changed = if slices.applied.get(&name) == value.as_ref() {
            slices.pending.remove(&name).is_some()
        } else if slices.pending.get(&name) == Some(&value) {
            false
        } else {
            slices.pending.insert(name, value);
            true
        };
        if slices.pending.is_empty() {
            self.dirty.remove(service);
            if slices.applied.is_empty() {
                self.services.remove(service);
            }
        } else {
            self.dirty.insert(service.clone());
        }
        changed
    }

    /// Hands out the merged endpoints of every Service with pending slices
    /// and marks the slices applied. Services whose merged endpoints end up
    /// unchanged (an endpoint moved between slices) are left out.
    pub(crate) fn checkout(&mut self) -> Vec<EndpointsChange> {
        let mut changes = Vec::with_capacity(self.dirty.len());
        for service in std::mem::take(&mut self.dirty) {
            let Some(slices) = self.services.get_mut(&service) else {
                continue;
            };
            for (name, value) in std::mem::take(&mut slices.pending) {
                match value {
                    Some(slice) => slices.applied.insert(name, slice),
                    None => slices.applied.remove(&name),
                };
            }
            let current = merge(slices.applied.values(), self.family);
            let previous = std::mem::replace(&mut slices.merged, current.clone());
            if slices.applied.is_empty() {
                self.services.remove(&service);
            }
            if previous != current {
                changes.push(EndpointsChange {
                    service,
                    previous,
                    current,
                });
            }
        }
        changes
    }
}

impl SliceKey {
    fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: Arc::from(namespace),
            name: Arc::from(name),
        }
    }
}

fn merge<'a>(
    slices: impl Iterator<Item = &'a Arc<SliceEndpoints>>,
    family: IpFamily,
) -> ServiceEndpoints {
    (merge_slices(slices.map(|s| &**s), family).into_iter())
        .map(|(port, endpoints)| (port, Arc::from(endpoints)))
        .collect()
}

#[cfg(test)]
mod tests;
