//! Model and snapshot builders for the proxy's unit tests (this crate's and, with the
//! `testing` feature, the backend crates'), in upstream's address plan (ClusterIPs
//! 172.30.0.0/16, endpoints 10.180.0.0/16, node IPs 192.168.0.0/24).

use std::collections::BTreeMap;
use std::net::IpAddr;

use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePort, ServicePortName, ServiceType,
    SliceEndpoints, TrafficPolicy,
};

use crate::config::{NodeTopology, TrackerConfig};
use crate::snapshot::Snapshot;
use crate::state::ProxyState;

/// `ns/<name>:p80` over TCP.
pub fn port_name(name: &str) -> ServicePortName {
    ServicePortName::new(&ServiceName::new("ns", name), "p80", Protocol::Tcp)
}

/// Port `p80`/TCP of `ns/<name>` on cluster IP `cip`:80, ClusterIP type.
pub fn svc(name: &str, cip: &str) -> ServicePort {
    ServicePort::plain(port_name(name), vec![cip.parse().unwrap()], 80)
}

/// The IPv4 slice `<name>-1` of `ns/<name>` with one ready endpoint `ip`:8080.
pub fn slice(name: &str, ip: &str) -> SliceEndpoints {
    let ip: IpAddr = ip.parse().unwrap();
    SliceEndpoints {
        service: ServiceName::new("ns", name),
        slice_name: format!("{name}-1"),
        family: IpFamily::V4,
        ports: [(port_name(name), vec![Endpoint::new(ip, 8080)])].into(),
        warnings: vec![],
    }
}

/// `svc` as a LoadBalancer with node port 3001, LB IP `lb`, ETP=Local and
/// health-check node port `hc`.
pub fn lb_local(name: &str, cip: &str, lb: &str, hc: u16) -> ServicePort {
    ServicePort {
        service_type: ServiceType::LoadBalancer,
        node_port: Some(3001),
        load_balancer_vips: vec![lb.parse().unwrap()],
        external_traffic_policy: TrafficPolicy::Local,
        health_check_node_port: Some(hc),
        ..svc(name, cip)
    }
}

/// A ready endpoint `ip`:80 on `node`.
pub fn ep(ip: &str, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::new(ip.parse::<IpAddr>().unwrap(), 80)
    }
}

/// A snapshot on node `node` (zone `zone`) of IPv4 `services` with their
/// endpoints.
pub fn snapshot(
    node: &str,
    zone: Option<&str>,
    services: Vec<(ServicePort, Vec<Endpoint>)>,
) -> Snapshot {
    snapshot_in(IpFamily::V4, node, zone, services)
}

/// A snapshot of `family` on node `node` (zone `zone`) of `services` with their endpoints
/// (of that family: each Service's one slice is of `family`).
pub fn snapshot_in(
    family: IpFamily,
    node: &str,
    zone: Option<&str>,
    services: Vec<(ServicePort, Vec<Endpoint>)>,
) -> Snapshot {
    let mut state = state_in(family, node, zone);
    apply_in(&mut state, family, services);
    state.sync().0
}

/// An empty state on `node` (zone `zone`).
pub fn state(node: &str, zone: Option<&str>) -> ProxyState {
    state_in(IpFamily::V4, node, zone)
}

/// An empty state of `family` on `node` (zone `zone`).
pub fn state_in(family: IpFamily, node: &str, zone: Option<&str>) -> ProxyState {
    let mut state = ProxyState::new(TrackerConfig::new(family, node));
    state.set_node(NodeTopology {
        name: node.to_owned(),
        zone: zone.map(str::to_owned),
        ..NodeTopology::default()
    });
    state
}

/// Records `services` (replacing each named Service and its one slice).
pub fn apply(state: &mut ProxyState, services: Vec<(ServicePort, Vec<Endpoint>)>) {
    apply_in(state, IpFamily::V4, services);
}

/// Applies `n` single-port Services `ns/s<i>` (ClusterIP `172.30.1.<i>`, `i` < 256) with two
/// endpoints each on `node-b` (`10.180.1.<i>`, `10.180.2.<i>`).
pub fn apply_many(state: &mut ProxyState, n: u8) {
    let services = (0..n)
        .map(|i| {
            let eps = vec![
                ep(&format!("10.180.1.{i}"), "node-b"),
                ep(&format!("10.180.2.{i}"), "node-b"),
            ];
            (svc(&format!("s{i}"), &format!("172.30.1.{i}")), eps)
        })
        .collect();
    apply(state, services);
}

/// As [`apply`], with slices of `family`.
pub fn apply_in(
    state: &mut ProxyState,
    family: IpFamily,
    services: Vec<(ServicePort, Vec<Endpoint>)>,
) {
    let mut by_service: BTreeMap<ServiceName, Vec<(ServicePort, Vec<Endpoint>)>> = BTreeMap::new();
    for (port, eps) in services {
        by_service
            .entry(port.name.service())
            .or_default()
            .push((port, eps));
    }
    for (service, ports) in by_service {
        let defs: Vec<ServicePort> = ports.iter().map(|(p, _)| p.clone()).collect();
        state.update_service(&service, &defs);
        let slice = SliceEndpoints {
            service: service.clone(),
            slice_name: format!("{}-1", service.name),
            family,
            ports: ports.into_iter().map(|(p, eps)| (p.name, eps)).collect(),
            warnings: vec![],
        };
        state.update_slice(slice);
    }
}

/// Small mutators of a [`ServicePort`].
pub struct Svc;

impl Svc {
    /// `internalTrafficPolicy: Local`.
    pub fn itp_local(port: ServicePort) -> ServicePort {
        ServicePort {
            internal_traffic_policy: TrafficPolicy::Local,
            ..port
        }
    }
}
