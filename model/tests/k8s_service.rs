//! Service → ServicePort conversion against YAML fixtures.
#![cfg(feature = "k8s")]

mod common;

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use sluice_model::k8s::{ConvertError, service_ports};
use sluice_model::service::{
    IpFamily, Protocol, ServicePortName, ServiceType, SessionAffinity, TrafficDistribution,
    TrafficPolicy,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn load(name: &str) -> sluice_model::k8s::ServicePorts {
    service_ports(&common::fixture::<Service>(name)).unwrap()
}

#[test]
fn dual_stack_named_ports() {
    let svc = load("svc-dual-stack.yaml");
    assert_eq!(svc.service.to_string(), "shop/web");
    assert!(svc.warnings.is_empty(), "{:?}", svc.warnings);
    let [http, dns] = svc.ports.as_slice() else {
        panic!("expected two ports: {:?}", svc.ports)
    };
    assert_eq!(http.name.to_string(), "shop/web:http");
    assert_eq!(http.name.protocol, Protocol::Tcp);
    assert_eq!((&*dns.name.port, dns.name.protocol), ("dns", Protocol::Udp));
    assert_eq!((http.port, dns.port), (80, 53));
    assert_eq!(
        http.cluster_ips,
        vec![ip("fd00:10:96::a"), ip("10.96.0.10")]
    );
    assert_eq!(http.service_type, ServiceType::ClusterIp);
    assert_eq!(http.session_affinity, None);
    assert!(!http.externally_accessible());
    assert!(http.uses_cluster_endpoints());
    assert!(!http.uses_local_endpoints());
    assert_eq!(http.cluster_ip(IpFamily::V4), Some(ip("10.96.0.10")));
    let v4 = http.for_family(IpFamily::V4).unwrap();
    assert_eq!(v4.cluster_ips, vec![ip("10.96.0.10")]);
    let v6 = http.for_family(IpFamily::V6).unwrap();
    assert_eq!(v6.cluster_ips, vec![ip("fd00:10:96::a")]);
}

#[test]
fn load_balancer_with_local_policy() {
    let svc = load("svc-lb-local.yaml");
    let [port] = svc.ports.as_slice() else {
        panic!("expected one port")
    };
    assert_eq!(port.name.to_string(), "edge/front");
    assert_eq!(port.service_type, ServiceType::LoadBalancer);
    assert_eq!(port.node_port, Some(30443));
    // ipMode Proxy and hostname-only ingress entries are not VIPs.
    let vips = vec![ip("198.51.100.1"), ip("198.51.100.3"), ip("2001:db8::99")];
    assert_eq!(port.load_balancer_vips, vips);
    assert_eq!(
        port.external_ips,
        vec![ip("192.0.2.10"), ip("2001:db8::10")]
    );
    let ranges: Vec<String> = (port.load_balancer_source_ranges.iter())
        .map(ToString::to_string)
        .collect();
    assert_eq!(ranges, ["203.0.113.0/25", "2001:db8:1::/48"]);
    assert_eq!(port.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(port.health_check_node_port, Some(32000));
    assert_eq!(
        port.session_affinity,
        Some(SessionAffinity {
            timeout_seconds: 10_800
        })
    );
    assert_eq!(
        port.traffic_distribution,
        Some(TrafficDistribution::PreferSameZone)
    );
    assert!(port.publish_not_ready_addresses);
    assert!(port.externally_accessible());
    assert!(port.uses_cluster_endpoints());
    assert!(port.uses_local_endpoints());
    let [warning] = svc.warnings.as_slice() else {
        panic!("expected one warning: {:?}", svc.warnings)
    };
    assert!(warning.contains("service edge/front"), "{warning}");
    assert!(
        warning.contains("spec.loadBalancerSourceRanges[2]"),
        "{warning}"
    );
}

#[test]
fn load_balancer_single_stack_view_filters_every_list() {
    let svc = load("svc-lb-local.yaml");
    let v4 = svc.ports[0].for_family(IpFamily::V4).unwrap();
    assert_eq!(
        v4.load_balancer_vips,
        vec![ip("198.51.100.1"), ip("198.51.100.3")]
    );
    assert_eq!(v4.external_ips, vec![ip("192.0.2.10")]);
    assert_eq!(v4.load_balancer_source_ranges.len(), 1);
    // No IPv6 cluster IP: the IPv6 proxier ignores the Service.
    assert_eq!(svc.ports[0].for_family(IpFamily::V6), None);
}

#[test]
fn node_port_with_explicit_affinity_and_internal_local() {
    let svc = load("svc-nodeport-affinity.yaml");
    let [port] = svc.ports.as_slice() else {
        panic!("expected the ICMP port to be skipped: {:?}", svc.ports)
    };
    assert_eq!(port.name.to_string(), "default/api:grpc");
    assert_eq!(
        port.session_affinity,
        Some(SessionAffinity {
            timeout_seconds: 600
        })
    );
    assert_eq!(port.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(port.health_check_node_port, None);
    assert_eq!(
        port.traffic_distribution,
        Some(TrafficDistribution::PreferSameNode)
    );
    assert!(port.uses_cluster_endpoints(), "externally accessible");
    assert!(port.uses_local_endpoints(), "ITP=Local");
    let [warning] = svc.warnings.as_slice() else {
        panic!("expected one warning: {:?}", svc.warnings)
    };
    assert!(warning.contains("spec.ports[1].protocol"), "{warning}");
    assert!(warning.contains("\"ICMP\""), "{warning}");
}

#[test]
fn cluster_ip_ignores_external_policy_and_health_check() {
    let svc = load("svc-clusterip-etp-local.yaml");
    let port = &svc.ports[0];
    assert_eq!(port.name.to_string(), "default/internal");
    assert_eq!(port.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(port.health_check_node_port, None);
    assert_eq!(
        port.traffic_distribution, None,
        "unknown values are ignored"
    );
    assert!(!port.uses_local_endpoints());
}

#[test]
fn external_name_and_headless_are_skipped() {
    for name in ["svc-externalname.yaml", "svc-headless.yaml"] {
        let svc = load(name);
        assert!(svc.ports.is_empty(), "{name}: {:?}", svc.ports);
    }
}

#[test]
fn bad_cluster_ip_is_an_error_naming_object_and_field() {
    let mut svc: Service = common::fixture("svc-dual-stack.yaml");
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ips = Some(vec!["fd00:10:96::a".into(), "10.96.0.300".into()]);
    let err = service_ports(&svc).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service shop/web: spec.clusterIPs[1]: invalid value \"10.96.0.300\": not an ip address"
    );
}

#[test]
fn bad_single_cluster_ip_names_the_singular_field() {
    let mut svc: Service = common::fixture("svc-nodeport-affinity.yaml");
    svc.spec.as_mut().unwrap().cluster_ip = Some("10.96.7".into());
    let err = service_ports(&svc).unwrap_err().to_string();
    assert_eq!(
        err,
        "service default/api: spec.clusterIP: invalid value \"10.96.7\": not an ip address"
    );
}

#[test]
fn missing_namespace_is_an_error() {
    let mut svc: Service = common::fixture("svc-headless.yaml");
    svc.metadata.namespace = None;
    let err = service_ports(&svc).unwrap_err();
    assert!(matches!(err, ConvertError::Missing { .. }));
    assert_eq!(
        err.to_string(),
        "service <no namespace>/db: missing metadata.namespace"
    );
}

#[test]
fn out_of_range_port_is_skipped_with_a_warning() {
    let mut svc: Service = common::fixture("svc-dual-stack.yaml");
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 70_000;
    let out = service_ports(&svc).unwrap();
    let names: Vec<&ServicePortName> = out.ports.iter().map(|p| &p.name).collect();
    assert_eq!(names.len(), 1);
    assert_eq!(&*names[0].port, "dns");
    assert_eq!(
        out.warnings,
        ["service shop/web: spec.ports[0].port: out of range \"70000\", port skipped"]
    );
}

/// Issue 15 bugs 3 and 4: what the API server refuses is refused here too, naming the field —
/// a name too long for a DNS label (it ended up in a 255-byte nftables chain name), a
/// loopback, unspecified or broadcast cluster IP (REJECT rules then refused the node's own
/// loopback traffic), port names that are missing or duplicated.
#[test]
fn what_the_api_server_refuses_is_an_error() {
    let base: Service = common::fixture("svc-dual-stack.yaml");
    let err = |f: &dyn Fn(&mut Service)| {
        let mut svc = base.clone();
        f(&mut svc);
        service_ports(&svc).unwrap_err().to_string()
    };
    let e = err(&|s| s.metadata.name = Some("x".repeat(64)));
    assert!(
        e.contains("metadata.name") && e.contains("no more than 63"),
        "{e}"
    );
    let e = err(&|s| s.metadata.name = Some("Web_1".into()));
    assert!(e.contains("DNS-1035"), "{e}");
    let e = err(&|s| s.metadata.namespace = Some("a.b".into()));
    assert!(e.contains("metadata.namespace"), "{e}");
    for ip in [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "169.254.0.1",
        "224.0.0.5",
    ] {
        let e = err(&|s| {
            let spec = s.spec.as_mut().unwrap();
            spec.cluster_ips = Some(vec![ip.into()]);
        });
        assert!(e.contains("spec.clusterIPs[0]"), "{ip}: {e}");
    }
    let e = err(&|s| {
        let spec = s.spec.as_mut().unwrap();
        spec.cluster_ips = Some(vec!["10.96.0.1".into(), "10.96.0.2".into()]);
    });
    assert!(e.contains("one of each IP family"), "{e}");
    let e = err(&|s| s.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].name = None);
    assert!(
        e.contains("spec.ports[1].name") && e.contains("required"),
        "{e}"
    );
    let e = err(&|s| {
        let ports = s.spec.as_mut().unwrap().ports.as_mut().unwrap();
        ports[1].name = ports[0].name.clone();
    });
    assert!(e.contains("Duplicate value"), "{e}");
}

#[test]
fn special_external_and_load_balancer_ips_are_skipped() {
    let mut svc: Service = common::fixture("svc-dual-stack.yaml");
    svc.spec.as_mut().unwrap().external_ips = Some(vec!["127.0.0.1".into(), "192.0.2.1".into()]);
    let out = service_ports(&svc).unwrap();
    assert_eq!(out.ports[0].external_ips, vec![ip("192.0.2.1")]);
    assert!(out.warnings[0].contains("loopback"), "{:?}", out.warnings);
}
