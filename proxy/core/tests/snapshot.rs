//! Snapshot contents from API objects: which Services and addresses a
//! single-family proxier programs (upstream's `TestServiceToServiceMap`,
//! `TestBuildServiceMapServiceTypeExternalName`, `TestServiceMapUpdateHeadless`
//! and the label-selector rules).

mod common;

use std::net::IpAddr;

use common::*;
use serde_json::json;
use sluice_model::service::{IpFamily, ServiceType, SessionAffinity, TrafficPolicy};
use sluice_proxy_core::{ProxyState, Snapshot, TrackerConfig};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn synced(state: &mut ProxyState) -> Snapshot {
    state.sync().0
}

#[test]
fn skipped_services() {
    let mut state = state(IpFamily::V4);
    let other_proxy = json!({"service.kubernetes.io/service-proxy-name": "other"});
    let headless_label = json!({"service.kubernetes.io/headless": ""});
    let skipped = [
        service(
            "external-name",
            json!({"type": "ExternalName", "externalName": "x.example", "clusterIP": null}),
        ),
        service("headless", json!({"clusterIP": "None"})),
        service("no-cluster-ip", json!({"clusterIP": ""})),
        service(
            "v6-only",
            json!({"clusterIP": "fd00::1", "clusterIPs": ["fd00::1"]}),
        ),
        service_with("other-proxy", other_proxy, json!({}), json!({})),
        service_with("headless-label", headless_label, json!({}), json!({})),
    ];
    for svc in &skipped {
        let recorded = state.on_service(svc).unwrap();
        assert!(!recorded.changed, "{:?}", svc.metadata.name);
    }
    let snapshot = synced(&mut state);
    assert!(
        snapshot.is_empty(),
        "{:?}",
        snapshot.service_ports().collect::<Vec<_>>()
    );
}

#[test]
fn service_proxy_name_selects_labelled_services_only() {
    let mut config = TrackerConfig::new(IpFamily::V4, NODE);
    config.proxy_name = Some("sluice".to_owned());
    let mut state = ProxyState::new(config);
    let ours = json!({"service.kubernetes.io/service-proxy-name": "sluice"});
    state
        .on_service(&service_with("ours", ours, json!({}), json!({})))
        .unwrap();
    state.on_service(&service("unlabelled", json!({}))).unwrap();
    let snapshot = synced(&mut state);
    let names: Vec<String> = snapshot
        .service_ports()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, ["ns/ours:p80"]);
}

#[test]
fn addresses_and_policies_of_one_family() {
    let spec = json!({
        "type": "LoadBalancer",
        "clusterIP": "172.30.0.42",
        "clusterIPs": ["172.30.0.42", "fd00::42"],
        "externalIPs": ["192.168.99.22", "2001:db8::22"],
        "loadBalancerSourceRanges": [" 203.0.113.0/25 ", "2001:db8:1::/48"],
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 30000,
        "sessionAffinity": "ClientIP",
        "ports": [{"name": "p80", "port": 80, "nodePort": 3001, "protocol": "TCP"}],
    });
    let status = json!({"loadBalancer": {"ingress": [
        {"ip": "1.2.3.4"},
        {"ip": "1.2.3.5", "ipMode": "VIP"},
        {"ip": "1.2.3.6", "ipMode": "Proxy"},
        {"ip": "2001:db8::4"},
    ]}});
    let svc = service_with("svc2", json!({}), spec, status);
    let (mut v4, mut v6) = (state(IpFamily::V4), state(IpFamily::V6));
    v4.on_service(&svc).unwrap();
    v6.on_service(&svc).unwrap();
    let (v4, v6) = (synced(&mut v4), synced(&mut v6));
    let name = port_name("svc2", "p80");
    let port = v4.service_port(&name).unwrap();
    assert_eq!(port.service_type, ServiceType::LoadBalancer);
    assert_eq!(port.cluster_ips, [ip("172.30.0.42")]);
    assert_eq!((port.port, port.node_port), (80, Some(3001)));
    assert_eq!(port.external_ips, [ip("192.168.99.22")]);
    assert_eq!(port.load_balancer_vips, [ip("1.2.3.4"), ip("1.2.3.5")]);
    let ranges: Vec<String> = port
        .load_balancer_source_ranges
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(ranges, ["203.0.113.0/25"]);
    assert_eq!(port.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(port.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(port.health_check_node_port, Some(30000));
    assert_eq!(
        port.session_affinity,
        Some(SessionAffinity {
            timeout_seconds: 10_800
        })
    );
    let port6 = v6.service_port(&name).unwrap();
    assert_eq!(port6.cluster_ips, [ip("fd00::42")]);
    assert_eq!(port6.external_ips, [ip("2001:db8::22")]);
    assert_eq!(port6.load_balancer_vips, [ip("2001:db8::4")]);
    assert_eq!(port6.load_balancer_source_ranges.len(), 1);
    assert_eq!(
        v4.health_check_node_ports()
            .into_values()
            .collect::<Vec<_>>(),
        [30000]
    );
}

#[test]
fn health_check_node_port_only_when_needed() {
    let mut state = state(IpFamily::V4);
    let spec = json!({
        "type": "NodePort",
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 30000,
        "ports": [{"name": "p80", "port": 80, "nodePort": 3001}],
    });
    state.on_service(&service("np", spec)).unwrap();
    let snapshot = synced(&mut state);
    assert!(snapshot.health_check_node_ports().is_empty());
}

#[test]
fn endpoints_merge_across_slices_of_the_family() {
    let mut state = state(IpFamily::V4);
    state.on_service(&service("svc", json!({}))).unwrap();
    state
        .on_slice(&slice(
            "svc",
            "1",
            vec![ep("10.180.0.2", "n"), ep("10.180.0.1", "n")],
        ))
        .unwrap();
    state
        .on_slice(&slice(
            "svc",
            "2",
            vec![ep("10.180.0.2", "n"), ep("10.180.0.3", NODE)],
        ))
        .unwrap();
    let v6 = slice_with("svc", "3", json!({}), "IPv6", vec![ep("fd00::5", NODE)]);
    assert!(!state.on_slice(&v6).unwrap().changed);
    let fqdn = slice_with("svc", "4", json!({}), "FQDN", vec![ep("db.example", NODE)]);
    assert!(!state.on_slice(&fqdn).unwrap().changed);
    let headless = json!({"service.kubernetes.io/headless": ""});
    let skipped = slice_with("svc", "5", headless, "IPv4", vec![ep("10.180.0.9", NODE)]);
    assert!(!state.on_slice(&skipped).unwrap().changed);
    let snapshot = synced(&mut state);
    let name = port_name("svc", "p80");
    let eps: Vec<String> = snapshot
        .endpoints(&name)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(eps, ["10.180.0.1:80", "10.180.0.2:80", "10.180.0.3:80"]);
    let categorized = snapshot.categorize(&name).unwrap();
    assert!(categorized.has_any_endpoints);
    assert_eq!(categorized.all_reachable.len(), 3);
}

#[test]
fn local_ready_endpoints_count_distinct_ips() {
    let mut state = state(IpFamily::V4);
    let spec = json!({"ports": [
        {"name": "p80", "port": 80},
        {"name": "p443", "port": 443},
    ]});
    state.on_service(&service("svc", spec)).unwrap();
    let mut two_ports = slice(
        "svc",
        "1",
        vec![
            ep("10.180.0.1", NODE),
            ep("10.180.0.2", "elsewhere"),
            json!({"addresses": ["10.180.0.3"], "nodeName": NODE, "conditions": {"ready": false}}),
        ],
    );
    let p443 =
        serde_json::from_value(json!({"name": "p443", "port": 443, "protocol": "TCP"})).unwrap();
    two_ports.ports.as_mut().unwrap().push(p443);
    state.on_slice(&two_ports).unwrap();
    let snapshot = synced(&mut state);
    let counts: Vec<(String, usize)> = (snapshot.local_ready_endpoints().into_iter())
        .map(|(svc, n)| (svc.to_string(), n))
        .collect();
    assert_eq!(counts, [("ns/svc".to_owned(), 1)]);
    let ports: Vec<String> = (snapshot.ports_of(&port_name("svc", "").service()))
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(ports, ["ns/svc:p443", "ns/svc:p80"]);
}

#[test]
fn ports_of_finds_an_unnamed_port_of_any_protocol() {
    // ports_of starts its range at the least port name of a Service (unnamed, TCP): an
    // unnamed UDP or SCTP port must not sort before it.
    let mut state = state(IpFamily::V4);
    for (name, protocol) in [("dns", "UDP"), ("sig", "SCTP")] {
        let spec = json!({"ports": [{"port": 53, "protocol": protocol}]});
        state.on_service(&service(name, spec)).unwrap();
    }
    let snapshot = synced(&mut state);
    for name in ["dns", "sig"] {
        let service = port_name(name, "").service();
        let ports: Vec<String> = (snapshot.ports_of(&service))
            .map(|p| format!("{}/{:?}", p.name, p.name.protocol))
            .collect();
        assert_eq!(ports.len(), 1, "{name}: {ports:?}");
    }
}
