//! kube-proxy's `EndpointsChangeTracker` and `EndpointSliceCache` in one: the
//! EndpointSlices of every Service, as applied by the last sync and as pending
//! for the next, merged per Service port only for Services that changed.
//!
//! Slices are tracked one by one because endpoints move between slices of a
//! Service: merging all of a Service's slices (deduplicated by `ip:port`, see
//! [`merge_slices`]) is the only way to tell a move from a removal. As for
//! Services, a slice that returns to its applied state leaves nothing pending,
//! so an add followed by a delete costs no sync work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sluice_model::service::{
    Endpoint, IpFamily, ServiceName, ServicePortName, SliceEndpoints, merge_slices,
};

/// Merged endpoints per Service port, sorted by `ip:port`.
pub type EndpointsMap = BTreeMap<ServicePortName, Arc<[Endpoint]>>;

/// One Service's merged endpoints before and after a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointsChange {
    pub(crate) service: ServiceName,
    pub(crate) previous: EndpointsMap,
    pub(crate) current: EndpointsMap,
}

/// An EndpointSlice's identity: slice names are unique per namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SliceKey {
    namespace: String,
    name: String,
}

/// The slices of one Service.
#[derive(Debug, Default)]
struct ServiceSlices {
    applied: BTreeMap<String, Arc<SliceEndpoints>>,
    /// `None`: the slice is to be removed.
    pending: BTreeMap<String, Option<Arc<SliceEndpoints>>>,
    /// `merge_slices(applied)`, kept so a sync only merges changed Services.
    merged: EndpointsMap,
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
        let key = SliceKey {
            namespace: slice.service.namespace.clone(),
            name: slice.slice_name.clone(),
        };
        let mut changed = false;
        if let Some(old) = self.owners.insert(key, slice.service.clone())
            && old != slice.service
        {
            changed |= self.set(&old, &slice.slice_name, None);
        }
        let service = slice.service.clone();
        let name = slice.slice_name.clone();
        changed | self.set(&service, &name, Some(Arc::new(slice)))
    }

    /// Records the deletion of slice `namespace/name`. Returns whether the
    /// pending state changed.
    pub fn delete(&mut self, namespace: &str, name: &str) -> bool {
        let key = SliceKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        match self.owners.remove(&key) {
            Some(service) => self.set(&service, name, None),
            None => false,
        }
    }

    /// The Service a known slice belongs to.
    pub(crate) fn owner(&self, namespace: &str, name: &str) -> Option<&ServiceName> {
        let key = SliceKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.owners.get(&key)
    }

    /// The number of Services with pending endpoint changes
    /// (`kubeproxy_sync_proxy_rules_endpoint_changes_pending`).
    pub fn pending_len(&self) -> usize {
        self.dirty.len()
    }

    fn set(
        &mut self,
        service: &ServiceName,
        name: &str,
        value: Option<Arc<SliceEndpoints>>,
    ) -> bool {
        let slices = self.services.entry(service.clone()).or_default();
        let changed = if slices.applied.get(name) == value.as_ref() {
            slices.pending.remove(name).is_some()
        } else if slices.pending.get(name) == Some(&value) {
            false
        } else {
            slices.pending.insert(name.to_owned(), value);
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

fn merge<'a>(
    slices: impl Iterator<Item = &'a Arc<SliceEndpoints>>,
    family: IpFamily,
) -> EndpointsMap {
    (merge_slices(slices.map(|s| &**s), family).into_iter())
        .map(|(port, endpoints)| (port, Arc::from(endpoints)))
        .collect()
}

#[cfg(test)]
mod tests;
