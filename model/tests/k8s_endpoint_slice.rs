//! EndpointSlice → SliceEndpoints conversion and the multi-slice merge.
#![cfg(feature = "k8s")]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_model::k8s::slice_endpoints;
use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePortName, SliceEndpoints, endpoints_for,
    merge_slices,
};

fn load(name: &str) -> SliceEndpoints {
    slice_endpoints(&common::fixture::<EndpointSlice>(name))
        .unwrap()
        .unwrap()
}

fn port(ns: &str, svc: &str, name: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName::new(&ServiceName::new(ns, svc), name, protocol)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn endpoints_are_keyed_by_port_name_and_protocol() {
    let slice = load("eps-dual-stack-v4.yaml");
    assert_eq!(slice.service.to_string(), "shop/web");
    assert_eq!(slice.slice_name, "web-v4-abcde");
    assert_eq!(slice.family, IpFamily::V4);
    assert!(slice.warnings.is_empty(), "{:?}", slice.warnings);
    let http = &slice.ports[&port("shop", "web", "http", Protocol::Tcp)];
    let dns = &slice.ports[&port("shop", "web", "dns", Protocol::Udp)];
    let texts = |eps: &[Endpoint]| eps.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        texts(http),
        ["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"]
    );
    assert_eq!(
        texts(dns),
        ["10.244.1.5:5353", "10.244.2.7:5353", "10.244.3.9:5353"]
    );
}

#[test]
fn conditions_hints_and_topology() {
    let slice = load("eps-dual-stack-v4.yaml");
    let http = &slice.ports[&port("shop", "web", "http", Protocol::Tcp)];
    let [ready, terminating, defaulted] = http.as_slice() else {
        panic!("expected three endpoints")
    };
    assert_eq!(*ready.zone_hints(), set(&["zone-a"]));
    assert_eq!(*ready.node_hints(), set(&["node-a"]));
    assert_eq!(ready.zone.as_deref(), Some("zone-a"));
    assert!(ready.is_ready(false) && ready.is_local("node-a") && !ready.is_local("node-b"));

    // Only addresses[0] is used.
    assert_eq!(terminating.ip, ip("10.244.2.7"));
    assert!((terminating.serving, terminating.terminating) == (true, true));
    assert!(!terminating.is_ready(false));
    assert!(terminating.is_ready(true), "publishNotReadyAddresses");
    assert!(terminating.is_serving_terminating());
    assert_eq!(*terminating.zone_hints(), set(&["zone-b", "zone-c"]));
    assert!(terminating.node_hints().is_empty());

    // No conditions: ready and serving default to true, terminating to false.
    assert!(defaulted.ready && defaulted.serving && !defaulted.terminating);
    assert!(defaulted.zone_hints().is_empty() && defaulted.zone.is_none());
}

#[test]
fn fqdn_slices_are_skipped() {
    let slice: EndpointSlice = common::fixture("eps-fqdn.yaml");
    assert_eq!(slice_endpoints(&slice).unwrap(), None);
}

#[test]
fn bad_entries_are_skipped_with_warnings() {
    let slice = load("eps-messy.yaml");
    let unnamed = &slice.ports[&port("edge", "front", "", Protocol::Tcp)];
    assert_eq!(slice.ports.len(), 1, "{:?}", slice.ports);
    let [not_ready, sloppy] = unnamed.as_slice() else {
        panic!("expected two endpoints: {unnamed:?}")
    };
    assert!(
        !not_ready.ready && !not_ready.serving,
        "serving defaults to ready"
    );
    assert_eq!(
        sloppy.ip,
        ip("10.244.1.11"),
        "leading zeros read as decimal"
    );
    assert!(sloppy.terminating && sloppy.serving);
    let expected = [
        "endpointslice edge/front-messy: ports[1].name: unset, skipped",
        "endpointslice edge/front-messy: ports[2].port: out of range \"0\", skipped",
        "endpointslice edge/front-messy: ports[3].port: out of range \"70000\", skipped",
        "endpointslice edge/front-messy: endpoints[1].addresses[0]: not an ip address \"not-an-ip\", skipped",
        "endpointslice edge/front-messy: endpoints[2].addresses[0]: not an IPv4 address \"fd00::1\", skipped",
        "endpointslice edge/front-messy: endpoints[3].addresses[0]: no address, skipped",
    ];
    assert_eq!(slice.warnings, expected);
}

#[test]
fn missing_service_label_is_an_error() {
    let mut slice: EndpointSlice = common::fixture("eps-dual-stack-v6.yaml");
    slice.metadata.labels = None;
    let err = slice_endpoints(&slice).unwrap_err();
    assert_eq!(
        err.to_string(),
        "endpointslice shop/web-v6-fghij: missing metadata.labels[\"kubernetes.io/service-name\"]"
    );
}

#[test]
fn unknown_address_type_is_an_error() {
    let mut slice: EndpointSlice = common::fixture("eps-dual-stack-v6.yaml");
    slice.address_type = "IPX".into();
    let err = slice_endpoints(&slice).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("endpointslice shop/web-v6-fghij: addressType:")
    );
}

#[test]
fn merge_dedupes_by_ip_and_port_and_keeps_families_apart() {
    let v4 = load("eps-dual-stack-v4.yaml");
    let v6 = load("eps-dual-stack-v6.yaml");
    let http = port("shop", "web", "http", Protocol::Tcp);
    // The same endpoints seen again in a second slice (moving between slices).
    let copy = |node: &str, terminating: bool| {
        let mut slice = v4.clone();
        slice.slice_name = format!("web-v4-{node}");
        for eps in slice.ports.values_mut() {
            for ep in eps.iter_mut() {
                ep.node_name = Some(node.into());
                ep.terminating = terminating;
            }
        }
        slice
    };
    let slices = [v4.clone(), v6, copy("node-t", true)];
    let merged = merge_slices(&slices, IpFamily::V4);
    assert_eq!(merged.len(), 2);
    let nodes = |eps: &[Endpoint]| -> Vec<Option<std::sync::Arc<str>>> {
        eps.iter().map(|ep| ep.node_name.clone()).collect()
    };
    let original = nodes(&v4.ports[&http]);
    assert_eq!(
        nodes(&merged[&http]),
        original,
        "a terminating copy never replaces"
    );

    let slices = [v4.clone(), copy("node-n", false)];
    let later = endpoints_for(&slices, &http, IpFamily::V4);
    assert_eq!(later.len(), 3);
    assert!(
        later
            .iter()
            .all(|ep| ep.node_name.as_deref() == Some("node-n"))
    );

    let v6_eps = endpoints_for(&[load("eps-dual-stack-v6.yaml")], &http, IpFamily::V6);
    let texts: Vec<String> = v6_eps.iter().map(ToString::to_string).collect();
    assert_eq!(texts, ["[fd00:10:244:1::5]:8080"]);
}

#[test]
fn merged_lists_are_sorted_by_text() {
    let mut slice = load("eps-dual-stack-v4.yaml");
    let http = port("shop", "web", "http", Protocol::Tcp);
    slice.ports.get_mut(&http).unwrap().reverse();
    let merged = endpoints_for([&slice], &http, IpFamily::V4);
    let texts: Vec<String> = merged.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        ["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"]
    );
}

/// Loopback or link-local endpoints are skipped (the API server refuses them); a slice name
/// or service-name label the API server refuses, or more than 1000 endpoints, makes the
/// slice unusable.
#[test]
fn what_the_api_server_refuses_is_refused() {
    let base = common::fixture::<EndpointSlice>("eps-messy.yaml");
    let mut slice = base.clone();
    slice.endpoints[0].addresses = vec!["127.0.0.1".into()];
    let out = slice_endpoints(&slice).unwrap().unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("endpoints[0]") && w.contains("loopback"))
    );
    let mut slice = base.clone();
    slice.metadata.name = Some("X".repeat(300));
    assert!(
        slice_endpoints(&slice)
            .unwrap_err()
            .to_string()
            .contains("metadata.name")
    );
    let mut slice = base.clone();
    slice.endpoints = vec![slice.endpoints[0].clone(); 1001];
    assert!(
        slice_endpoints(&slice)
            .unwrap_err()
            .to_string()
            .contains("at most 1000")
    );
    let mut slice = base;
    (slice.metadata.labels.as_mut().unwrap())
        .insert("kubernetes.io/service-name".into(), "y".repeat(64));
    assert!(
        slice_endpoints(&slice)
            .unwrap_err()
            .to_string()
            .contains("no more than 63")
    );
}
