//! The pure Service model: names print like kube-proxy's, the traffic-policy
//! predicates follow `serviceport.go`, endpoints follow `endpoint.go`.

use std::net::IpAddr;

use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePort, ServicePortName, TrafficDistribution,
    TrafficPolicy,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn cluster_ip_port() -> ServicePort {
    let name = ServicePortName::new(&ServiceName::new("ns1", "svc1"), "p80", Protocol::Tcp);
    ServicePort::plain(name, vec![ip("172.30.0.41")], 80)
}

#[test]
fn names_print_like_kube_proxy() {
    let svc = ServiceName::new("ns1", "svc1");
    assert_eq!(svc.to_string(), "ns1/svc1");
    let named = ServicePortName::new(&svc, "p80", Protocol::Tcp);
    assert_eq!(named.to_string(), "ns1/svc1:p80");
    assert_eq!(
        ServicePortName::new(&svc, "", Protocol::Udp).to_string(),
        "ns1/svc1"
    );
    assert_eq!(named.service(), svc);
    assert_eq!(Protocol::from_api("SCTP"), Some(Protocol::Sctp));
    assert_eq!(
        Protocol::from_api("tcp"),
        None,
        "the API spelling is upper-case"
    );
    assert_eq!(Protocol::Udp.as_lower_str(), "udp");
    assert_eq!(IpFamily::of(&ip("::1")), IpFamily::V6);
}

#[test]
fn policy_predicates() {
    // (ITP local, ETP local, node port) → (externally accessible, cluster, local)
    let cases = [
        (false, false, false, (false, true, false)),
        (true, false, false, (false, false, true)),
        (false, true, false, (false, true, false)),
        (false, true, true, (true, true, true)),
        (true, false, true, (true, true, true)),
        (false, false, true, (true, true, false)),
    ];
    let policy = |local: bool| match local {
        true => TrafficPolicy::Local,
        false => TrafficPolicy::Cluster,
    };
    for (itp, etp, node_port, expected) in cases {
        let port = ServicePort {
            internal_traffic_policy: policy(itp),
            external_traffic_policy: policy(etp),
            node_port: node_port.then_some(30080),
            ..cluster_ip_port()
        };
        let got = (
            port.externally_accessible(),
            port.uses_cluster_endpoints(),
            port.uses_local_endpoints(),
        );
        assert_eq!(got, expected, "itp={itp} etp={etp} node_port={node_port}");
    }
    let with_vip = ServicePort {
        load_balancer_vips: vec![ip("1.2.3.4")],
        ..cluster_ip_port()
    };
    assert!(with_vip.externally_accessible());
    let with_ext = ServicePort {
        external_ips: vec![ip("192.168.99.22")],
        ..cluster_ip_port()
    };
    assert!(with_ext.externally_accessible());
}

#[test]
fn family_view_of_single_stack_service() {
    let port = cluster_ip_port();
    assert_eq!(port.for_family(IpFamily::V6), None);
    assert_eq!(port.for_family(IpFamily::V4), Some(port.clone()));
    assert_eq!(port.cluster_ip(IpFamily::V4), Some(ip("172.30.0.41")));
}

#[test]
fn endpoint_readiness_and_display() {
    let ep = Endpoint::new(ip("10.180.0.1"), 80);
    assert_eq!(ep.to_string(), "10.180.0.1:80");
    assert!(ep.is_ready(false) && !ep.is_serving_terminating());
    let terminating = Endpoint {
        ready: false,
        terminating: true,
        ..ep.clone()
    };
    assert!(!terminating.is_ready(false) && terminating.is_ready(true));
    assert!(terminating.is_serving_terminating());
    // Ready but terminating is not ready (kube-proxy checks both).
    let odd = Endpoint {
        terminating: true,
        ..ep.clone()
    };
    assert!(!odd.is_ready(false));
    assert!(!ep.is_local(""), "an empty node name is never local");
    assert_eq!(Endpoint::new(ip("fd00::5"), 53).to_string(), "[fd00::5]:53");
}

#[test]
fn traffic_distribution_values() {
    assert_eq!(
        TrafficDistribution::from_api("PreferClose"),
        Some(TrafficDistribution::PreferSameZone)
    );
    assert_eq!(
        TrafficDistribution::from_api("PreferSameZone"),
        Some(TrafficDistribution::PreferSameZone)
    );
    assert_eq!(
        TrafficDistribution::from_api("PreferSameNode"),
        Some(TrafficDistribution::PreferSameNode)
    );
    assert_eq!(TrafficDistribution::from_api("Nearest"), None);
}
