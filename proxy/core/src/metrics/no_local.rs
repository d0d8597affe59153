//! `kubeproxy_sync_proxy_rules_no_local_endpoints_total`, kept per Service
//! port so a partial sync re-examines only the ports it changed.
//!
//! kube-proxy counts, while writing rules, the Service ports whose traffic of
//! a class is dropped because the policy is `Local` and this node has no
//! usable endpoint (while others exist: with none anywhere it is a REJECT,
//! not counted).

use std::collections::{BTreeSet, HashMap};

use sluice_model::service::{IpFamily, ServicePortName, TrafficPolicy};

use crate::changes::Changes;
use crate::snapshot::Snapshot;
use crate::topology::Verdict;

/// Per family, the ports currently counted.
#[derive(Debug, Default)]
pub(super) struct NoLocal {
    families: HashMap<IpFamily, Counted>,
}

#[derive(Debug, Default)]
struct Counted {
    internal: BTreeSet<ServicePortName>,
    external: BTreeSet<ServicePortName>,
}

impl NoLocal {
    /// Applies one successful sync; returns the (internal, external) counts.
    pub(super) fn update(
        &mut self,
        family: IpFamily,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> (usize, usize) {
        let counted = self.families.entry(family).or_default();
        if changes.full {
            *counted = Counted::default();
            for port in snapshot.service_ports() {
                counted.examine(snapshot, &port.name);
            }
        } else {
            for name in &changes.ports {
                counted.examine(snapshot, name);
            }
        }
        (counted.internal.len(), counted.external.len())
    }
}

impl Counted {
    fn examine(&mut self, snapshot: &Snapshot, name: &ServicePortName) {
        self.internal.remove(name);
        self.external.remove(name);
        let (Some(port), Some(cat)) = (snapshot.service_port(name), snapshot.categorize(name))
        else {
            return;
        };
        if port.internal_traffic_policy == TrafficPolicy::Local && cat.internal() == Verdict::Drop {
            self.internal.insert(name.clone());
        }
        if port.external_traffic_policy == TrafficPolicy::Local && cat.external() == Verdict::Drop {
            self.external.insert(name.clone());
        }
    }
}
