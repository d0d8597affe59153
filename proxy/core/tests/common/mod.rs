//! Builders for API objects in the shape of upstream's `makeTestService` /
//! `makeTestEndpointSlice`, written as JSON so a test reads like a manifest.

#![allow(dead_code, reason = "each test binary uses a subset of the builders")]

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use sluice_model::service::{IpFamily, Protocol, ServiceName, ServicePortName};
use sluice_proxy_core::{ProxyState, TrackerConfig};

pub(crate) const NODE: &str = "node-a";

/// A v4 (or v6) state on [`NODE`] with default settings.
pub(crate) fn state(family: IpFamily) -> ProxyState {
    ProxyState::new(TrackerConfig::new(family, NODE))
}

/// `ns/<name>:<port>` over TCP.
pub(crate) fn port_name(name: &str, port: &str) -> ServicePortName {
    ServicePortName::new(&ServiceName::new("ns", name), port, Protocol::Tcp)
}

/// A Service `ns/<name>` with `spec` merged over a ClusterIP default with
/// one TCP port `p80`.
pub(crate) fn service(name: &str, spec: Value) -> Service {
    service_with(name, json!({}), spec, json!({}))
}

/// A Service with explicit labels and status.
pub(crate) fn service_with(name: &str, labels: Value, spec: Value, status: Value) -> Service {
    let mut full = json!({
        "clusterIP": "172.30.0.41",
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
    });
    merge(&mut full, spec);
    from(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "ns", "name": name, "labels": labels},
        "spec": full,
        "status": status,
    }))
}

/// An IPv4 EndpointSlice `<service>-<suffix>` with port `p80` → 80 and
/// `endpoints` (each a JSON endpoint; `ep(...)` builds the common ones).
pub(crate) fn slice(service: &str, suffix: &str, endpoints: Vec<Value>) -> EndpointSlice {
    slice_with(service, suffix, json!({}), "IPv4", endpoints)
}

/// An EndpointSlice with extra labels and an explicit address type.
pub(crate) fn slice_with(
    service: &str,
    suffix: &str,
    labels: Value,
    address_type: &str,
    endpoints: Vec<Value>,
) -> EndpointSlice {
    let mut all = json!({"kubernetes.io/service-name": service});
    merge(&mut all, labels);
    from(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": format!("{service}-{suffix}"), "labels": all},
        "addressType": address_type,
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
}

/// A ready endpoint on `node`.
pub(crate) fn ep(ip: &str, node: &str) -> Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}})
}

/// A Node named [`NODE`] in `zone`.
pub(crate) fn node(zone: &str) -> Node {
    from(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": zone}},
    }))
}

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Shallow merge of `extra`'s keys into `base`.
fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}
