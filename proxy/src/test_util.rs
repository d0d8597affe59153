//! Model builders shared by the unit tests of the backend and runner modules.

use std::net::IpAddr;

use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePort, ServicePortName, SliceEndpoints,
};

/// `ns/<name>:p80` over TCP.
pub(crate) fn port_name(name: &str) -> ServicePortName {
    ServicePortName::new(&ServiceName::new("ns", name), "p80", Protocol::Tcp)
}

/// A ClusterIP Service port `ns/<name>:p80` on `ip`:80.
pub(crate) fn port(name: &str, ip: &str) -> ServicePort {
    ServicePort::plain(port_name(name), vec![ip.parse().unwrap()], 80)
}

/// The IPv4 slice `<name>-1` of `ns/<name>` with one ready endpoint `ip`:8080.
pub(crate) fn slice(name: &str, ip: &str) -> SliceEndpoints {
    let ip: IpAddr = ip.parse().unwrap();
    SliceEndpoints {
        service: ServiceName::new("ns", name),
        slice_name: format!("{name}-1"),
        family: IpFamily::V4,
        ports: [(port_name(name), vec![Endpoint::new(ip, 8080)])].into(),
        warnings: vec![],
    }
}
