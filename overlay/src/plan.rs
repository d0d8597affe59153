//! The difference between what the kernel holds and what is desired, as an ordered plan.
//!
//! Order matters to the kernel: a route via the overlay must come after its neighbour and
//! FDB entries (else the kernel ARPs for the gateway), and must go before them. Replaces are
//! expressed as sets, never as delete-then-add, so traffic to a peer whose entry merely
//! changed never sees a gap.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::desired::{Desired, NextHop};
use crate::mac::Mac;

/// Kernel changes, in the order they must be applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to delete (first).
    pub del_routes: Vec<IpNet>,
    /// Neighbour entries to delete.
    pub del_neighbors: Vec<(String, IpAddr)>,
    /// FDB entries to delete (e.g. a peer's old VTEP MAC).
    pub del_fdb: Vec<(String, Mac)>,
    /// Neighbour entries to add or replace.
    pub set_neighbors: Vec<((String, IpAddr), Mac)>,
    /// FDB entries to add or replace.
    pub set_fdb: Vec<((String, Mac), IpAddr)>,
    /// Routes to add or replace (last).
    pub set_routes: Vec<(IpNet, NextHop)>,
}

impl Plan {
    /// The plan that turns `current` into `desired`.
    pub fn between(current: &Desired, desired: &Desired) -> Self {
        Self {
            del_routes: removed(&current.routes, &desired.routes),
            del_neighbors: removed(&current.neighbors, &desired.neighbors),
            del_fdb: removed(&current.fdb, &desired.fdb),
            set_neighbors: changed(&current.neighbors, &desired.neighbors),
            set_fdb: changed(&current.fdb, &desired.fdb),
            set_routes: changed(&current.routes, &desired.routes),
        }
    }

    /// True when nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.del_routes.is_empty()
            && self.del_neighbors.is_empty()
            && self.del_fdb.is_empty()
            && self.set_neighbors.is_empty()
            && self.set_fdb.is_empty()
            && self.set_routes.is_empty()
    }

    /// Number of kernel operations in the plan.
    pub fn len(&self) -> usize {
        self.del_routes.len()
            + self.del_neighbors.len()
            + self.del_fdb.len()
            + self.set_neighbors.len()
            + self.set_fdb.len()
            + self.set_routes.len()
    }

    /// Applies the plan to a model of the kernel state (what a fake kernel does).
    pub fn apply_to(&self, state: &mut Desired) {
        for k in &self.del_routes {
            state.routes.remove(k);
        }
        for k in &self.del_neighbors {
            state.neighbors.remove(k);
        }
        for k in &self.del_fdb {
            state.fdb.remove(k);
        }
        state.neighbors.extend(self.set_neighbors.iter().cloned());
        state.fdb.extend(self.set_fdb.iter().cloned());
        state.routes.extend(self.set_routes.iter().cloned());
    }
}

fn removed<K: Ord + Clone, V>(current: &BTreeMap<K, V>, desired: &BTreeMap<K, V>) -> Vec<K> {
    current
        .keys()
        .filter(|k| !desired.contains_key(k))
        .cloned()
        .collect()
}

fn changed<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Vec<(K, V)> {
    desired
        .iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
