//! The proxy's outside inputs: `--manifests-dir` files (YAML/JSON documents), the API
//! server's Service, EndpointSlice and Node objects, and the kernel's answers to a read-back
//! of the nftables table. Whatever comes in, the conversions never panic and hand the
//! dataplane only what the API server would accept: valid names, no special cluster IPs,
//! no loopback or link-local endpoints.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use sluice_model::k8s::validate::{cluster_ip, dns1035_label, dns1123_label, non_special_ip};
use sluice_model::k8s::{service_ports, slice_endpoints};
use sluice_nft::Family;

/// At most this many documents per input (each is converted; keeps runs quick).
const MAX_DOCUMENTS: usize = 64;

/// A manifest file: every YAML document that is a Service or an EndpointSlice is converted
/// as `--manifests-dir` converts it.
pub fn manifests(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let documents = serde_yaml::Deserializer::from_str(text).take(MAX_DOCUMENTS);
    for document in documents {
        let Ok(value) = <Value as serde::Deserialize>::deserialize(document) else {
            return; // the file is bad from here on, as the source reports it
        };
        object(value);
    }
}

/// One API object as JSON (a watch event's `object`): Service, EndpointSlice or Node by its
/// `kind`, or all three when it has none.
pub fn api_objects(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match value.get("kind").and_then(Value::as_str) {
        Some(_) => object(value),
        None => {
            service(serde_json::from_value(value.clone()).ok());
            slice(serde_json::from_value(value.clone()).ok());
            let _ = serde_json::from_value::<Node>(value);
        }
    }
}

/// A datagram of nf_tables dump messages, decoded as the read-back decodes them, for both
/// families.
pub fn nft_dump(data: &[u8]) {
    for family in [Family::Ip, Family::Ip6] {
        if let Some(table) = sluice_nft::netlink::decode_dump(family, "sluice", data) {
            assert_eq!(table.name, "sluice");
        }
    }
}

fn object(value: Value) {
    match value.get("kind").and_then(Value::as_str) {
        Some("Service") => service(serde_json::from_value(value).ok()),
        Some("EndpointSlice") => slice(serde_json::from_value(value).ok()),
        Some("Node") => {
            let _ = serde_json::from_value::<Node>(value);
        }
        Some("List") => {
            let items = value.get("items").and_then(Value::as_array);
            for item in items.into_iter().flatten().take(MAX_DOCUMENTS) {
                object(item.clone());
            }
        }
        _ => {}
    }
}

/// A Service that converts is one the API server would accept in what the proxy programs.
fn service(svc: Option<Service>) {
    let Some(svc) = svc else {
        return;
    };
    let Ok(out) = service_ports(&svc) else {
        return;
    };
    assert!(dns1035_label(&out.service.name).is_ok(), "{}", out.service);
    assert!(
        dns1123_label(&out.service.namespace).is_ok(),
        "{}",
        out.service
    );
    for port in &out.ports {
        assert!(port.port != 0, "{}", port.name);
        assert!(port.name.port.is_empty() || dns1123_label(&port.name.port).is_ok());
        for ip in &port.cluster_ips {
            assert!(cluster_ip(*ip).is_ok(), "{}: cluster IP {ip}", port.name);
        }
        for ip in port.external_ips.iter().chain(&port.load_balancer_vips) {
            assert!(non_special_ip(*ip).is_ok(), "{}: {ip}", port.name);
        }
    }
}

/// A slice that converts has only endpoints the API server would accept.
fn slice(slice: Option<EndpointSlice>) {
    let Some(slice) = slice else {
        return;
    };
    let Ok(Some(out)) = slice_endpoints(&slice) else {
        return;
    };
    for (name, endpoints) in out.ports.iter() {
        for ep in endpoints {
            assert!(non_special_ip(ep.ip).is_ok(), "{name}: {}", ep.ip);
            assert!(out.family.contains(&ep.ip), "{name}: {}", ep.ip);
            assert!(ep.port != 0, "{name}");
        }
    }
}
