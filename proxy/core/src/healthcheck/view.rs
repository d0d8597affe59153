//! What one family's snapshots say about health-check ports and local
//! endpoint counts, and the merge of the families.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sluice_model::service::ServiceName;

use crate::snapshot::Snapshot;

/// One family's view.
#[derive(Debug, Default)]
pub(super) struct FamilyView {
    pub(super) ports: BTreeMap<ServiceName, u16>,
    pub(super) counts: BTreeMap<ServiceName, usize>,
}

impl FamilyView {
    /// Recomputes everything (full sync).
    pub(super) fn rebuild(&mut self, snapshot: &Snapshot) {
        self.ports = snapshot.health_check_node_ports();
        let mut counts = snapshot.local_ready_endpoints();
        counts.retain(|service, _| self.ports.contains_key(service));
        self.counts = counts;
    }

    /// Recomputes `services` only (partial sync).
    pub(super) fn refresh(&mut self, snapshot: &Snapshot, services: &BTreeSet<ServiceName>) {
        for service in services {
            let port = (snapshot.ports_of(service)).find_map(|p| p.health_check_node_port);
            match port {
                Some(port) => self.ports.insert(service.clone(), port),
                None => self.ports.remove(service),
            };
            let count = local_ready(snapshot, service);
            match (port, count) {
                (Some(_), n) if n > 0 => self.counts.insert(service.clone(), n),
                _ => self.counts.remove(service),
            };
        }
    }
}

/// Distinct IPs of local ready endpoints over all ports of `service`.
fn local_ready(snapshot: &Snapshot, service: &ServiceName) -> usize {
    let node = &snapshot.node().name;
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    for port in snapshot.ports_of(service) {
        let publish = port.publish_not_ready_addresses;
        let local = (snapshot.endpoints(&port.name).iter())
            .filter(|ep| ep.is_local(node) && ep.is_ready(publish));
        ips.extend(local.map(|ep| ep.ip));
    }
    ips.len()
}

/// Ports from any family (the first family's wins a conflict), counts the
/// largest of any family.
pub(super) fn merge<'a>(
    views: impl Iterator<Item = &'a FamilyView>,
) -> (BTreeMap<ServiceName, u16>, BTreeMap<ServiceName, usize>) {
    let mut ports = BTreeMap::new();
    let mut counts: BTreeMap<ServiceName, usize> = BTreeMap::new();
    for view in views {
        for (service, port) in &view.ports {
            ports.entry(service.clone()).or_insert(*port);
        }
        for (service, count) in &view.counts {
            let entry = counts.entry(service.clone()).or_default();
            *entry = (*entry).max(*count);
        }
    }
    (ports, counts)
}
