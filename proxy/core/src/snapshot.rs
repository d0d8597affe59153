//! The immutable view one sync programs: every Service port of the proxier's
//! family with its merged endpoints, plus this node's topology.
//!
//! A backend renders from a [`Snapshot`] without holding any lock, while event
//! handlers keep feeding the trackers for the next sync. The maps are shared
//! (`Arc`) with the tracker and copied on write: a sync costs work proportional
//! to the change as long as the backend drops the previous snapshot before the
//! next sync; keeping it alive makes that sync copy the map once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use sluice_model::service::{Endpoint, IpFamily, ServiceName, ServicePort, ServicePortName};

use crate::config::NodeTopology;
use crate::endpoints::EndpointsMap;
use crate::services::ServicePortMap;
use crate::topology::{Categorized, categorize};

/// Everything one sync programs, for one address family.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) family: IpFamily,
    pub(crate) node: Arc<NodeTopology>,
    pub(crate) prefer_same_node: bool,
    pub(crate) services: Arc<ServicePortMap>,
    pub(crate) endpoints: Arc<EndpointsMap>,
}

impl Snapshot {
    /// The address family of every address in this snapshot.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// This node's name and zone.
    pub fn node(&self) -> &NodeTopology {
        &self.node
    }

    /// Every proxied Service port, sorted by name.
    pub fn service_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.services.values().map(|port| &**port)
    }

    /// The same view without the ports of `services` (the runner's isolation of Services the
    /// backend refuses). Copies the maps when anything is left out.
    pub fn without(&self, services: &BTreeSet<ServiceName>) -> Snapshot {
        let mut copy = self.clone();
        if services.is_empty() {
            return copy;
        }
        let keep = |name: &ServicePortName| !services.contains(&name.service());
        Arc::make_mut(&mut copy.services).retain(|name, _| keep(name));
        Arc::make_mut(&mut copy.endpoints).retain(|name, _| keep(name));
        copy
    }

    /// The number of proxied Service ports.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no Service port is proxied.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// One Service port, if it is proxied.
    pub fn service_port(&self, name: &ServicePortName) -> Option<&ServicePort> {
        self.services.get(name).map(|port| &**port)
    }

    /// The proxied ports of one Service.
    pub fn ports_of<'s>(
        &'s self,
        service: &'s ServiceName,
    ) -> impl Iterator<Item = &'s ServicePort> {
        // The least name of a port of `service`: unnamed, and TCP sorts first of the protocols
        // (tests/snapshot.rs checks an unnamed UDP or SCTP port is still found).
        let from = ServicePortName::new(service, "", sluice_model::service::Protocol::Tcp);
        (self.services.range(from..))
            .take_while(move |(name, _)| {
                name.namespace == service.namespace && name.name == service.name
            })
            .map(|(_, port)| &**port)
    }

    /// The merged endpoints of one Service port, sorted by `ip:port`; empty
    /// when there are none.
    pub fn endpoints(&self, name: &ServicePortName) -> &[Endpoint] {
        self.endpoints.get(name).map_or(&[], |eps| eps)
    }

    /// kube-proxy's endpoint categorisation of one proxied Service port on
    /// this node; `None` when the port is not proxied.
    pub fn categorize(&self, name: &ServicePortName) -> Option<Categorized<'_>> {
        Some(self.categorize_port(self.service_port(name)?))
    }

    /// [`Self::categorize`] of `port`, one of [`Self::service_ports`] (a full sync walking
    /// them in order does not look each up again).
    pub fn categorize_port<'s>(&'s self, port: &'s ServicePort) -> Categorized<'s> {
        let endpoints = self.endpoints(&port.name);
        categorize(endpoints, port, &self.node, self.prefer_same_node)
    }

    /// Health-check node ports of Services that need one (LoadBalancer with
    /// `externalTrafficPolicy: Local`), for the service health servers.
    pub fn health_check_node_ports(&self) -> BTreeMap<ServiceName, u16> {
        (self.services.values())
            .filter_map(|port| Some((port.name.service(), port.health_check_node_port?)))
            .collect()
    }

    /// Per Service, the number of distinct IPs of local ready endpoints (over
    /// all its ports): the health-check node port's count. Services with none
    /// are absent (count 0).
    pub fn local_ready_endpoints(&self) -> BTreeMap<ServiceName, usize> {
        let mut ips: BTreeMap<ServiceName, BTreeSet<IpAddr>> = BTreeMap::new();
        for (name, endpoints) in self.endpoints.iter() {
            let publish = (self.services.get(name)).is_some_and(|p| p.publish_not_ready_addresses);
            let local_ready = (endpoints.iter())
                .filter(|ep| ep.is_local(&self.node.name) && ep.is_ready(publish));
            for ep in local_ready {
                ips.entry(name.service()).or_default().insert(ep.ip);
            }
        }
        ips.into_iter().map(|(svc, set)| (svc, set.len())).collect()
    }
}
