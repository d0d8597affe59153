//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed generators send (`kubectl create service|namespace|configmap|serviceaccount …`):
//! the `k8s\0` magic, then a `runtime.Unknown` envelope naming the kind, whose `raw` bytes
//! are the object. Decoding uses the `k8s-pb` crate's generated types; this module only maps
//! the decoded object to the JSON the store holds. Kinds outside [`KINDS`] are refused with
//! 415, as before. Responses stay JSON: kubectl accepts `application/json` next to protobuf.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The prefix of every protobuf-encoded object.
const MAGIC: &[u8] = b"k8s\0";
/// The kinds whose protobuf bodies are decoded.
pub(crate) const KINDS: &[&str] = &["Service", "Namespace", "ConfigMap", "ServiceAccount"];

/// Decodes a protobuf body into the object's JSON form.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |what: String| ApiError::BadRequest(format!("protobuf body: {what}"));
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("no k8s\\0 prefix".into()))?;
    let unknown = Unknown::decode(rest).map_err(|e| bad(e.to_string()))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut obj = match kind.as_str() {
        "Service" => service(core::Service::decode(&raw[..]).map_err(|e| bad(e.to_string()))?),
        "Namespace" => {
            let ns = core::Namespace::decode(&raw[..]).map_err(|e| bad(e.to_string()))?;
            json!({"metadata": meta(ns.metadata.unwrap_or_default()), "spec": {}})
        }
        "ConfigMap" => {
            let cm = core::ConfigMap::decode(&raw[..]).map_err(|e| bad(e.to_string()))?;
            let mut o = json!({"metadata": meta(cm.metadata.unwrap_or_default()),
                               "data": cm.data});
            put(&mut o, "immutable", cm.immutable.map(Value::from));
            o
        }
        "ServiceAccount" => {
            let sa = core::ServiceAccount::decode(&raw[..]).map_err(|e| bad(e.to_string()))?;
            let mut o = json!({"metadata": meta(sa.metadata.unwrap_or_default())});
            put(
                &mut o,
                "automountServiceAccountToken",
                sa.automount_service_account_token.map(Value::from),
            );
            o
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "protobuf bodies are decoded for {} only (got {other:?}); send JSON",
                KINDS.join(", ")
            )));
        }
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// Sets `obj[key]` when `value` is present.
fn put(obj: &mut Value, key: &str, value: Option<Value>) {
    if let (Some(v), Some(map)) = (value, obj.as_object_mut()) {
        map.insert(key.to_owned(), v);
    }
}

fn non_empty<T: Into<Value>>(v: Vec<T>) -> Option<Value> {
    (!v.is_empty()).then(|| Value::Array(v.into_iter().map(Into::into).collect()))
}

fn string(s: Option<String>) -> Option<Value> {
    s.filter(|s| !s.is_empty()).map(Value::from)
}

/// What a client may set in metadata (the server fills the rest).
fn meta(m: ObjectMeta) -> Value {
    let mut o = json!({});
    put(&mut o, "name", string(m.name));
    put(&mut o, "generateName", string(m.generate_name));
    put(&mut o, "namespace", string(m.namespace));
    put(&mut o, "resourceVersion", string(m.resource_version));
    if !m.labels.is_empty() {
        put(&mut o, "labels", Some(json!(m.labels)));
    }
    if !m.annotations.is_empty() {
        put(&mut o, "annotations", Some(json!(m.annotations)));
    }
    o
}

fn int_or_string(v: IntOrString) -> Value {
    match (v.r#type, v.int_val, v.str_val) {
        (Some(1), _, Some(s)) => json!(s),
        (_, Some(i), _) => json!(i),
        (_, None, Some(s)) => json!(s),
        _ => json!(0),
    }
}

fn service(svc: core::Service) -> Value {
    let s = svc.spec.unwrap_or_default();
    let ports: Vec<Value> = s
        .ports
        .into_iter()
        .map(|p| {
            let mut o = json!({});
            put(&mut o, "name", string(p.name));
            put(&mut o, "protocol", string(p.protocol));
            put(&mut o, "appProtocol", string(p.app_protocol));
            put(&mut o, "port", p.port.map(Value::from));
            put(&mut o, "targetPort", p.target_port.map(int_or_string));
            put(
                &mut o,
                "nodePort",
                p.node_port.filter(|n| *n != 0).map(Value::from),
            );
            o
        })
        .collect();
    let mut spec = Value::Object(Map::new());
    put(&mut spec, "ports", non_empty(ports));
    if !s.selector.is_empty() {
        put(&mut spec, "selector", Some(json!(s.selector)));
    }
    put(&mut spec, "clusterIP", string(s.cluster_ip));
    put(&mut spec, "clusterIPs", non_empty(s.cluster_ips));
    put(&mut spec, "type", string(s.r#type));
    put(&mut spec, "externalIPs", non_empty(s.external_ips));
    put(&mut spec, "sessionAffinity", string(s.session_affinity));
    put(&mut spec, "loadBalancerIP", string(s.load_balancer_ip));
    put(
        &mut spec,
        "loadBalancerSourceRanges",
        non_empty(s.load_balancer_source_ranges),
    );
    put(&mut spec, "externalName", string(s.external_name));
    put(
        &mut spec,
        "externalTrafficPolicy",
        string(s.external_traffic_policy),
    );
    put(
        &mut spec,
        "healthCheckNodePort",
        s.health_check_node_port
            .filter(|n| *n != 0)
            .map(Value::from),
    );
    put(
        &mut spec,
        "publishNotReadyAddresses",
        s.publish_not_ready_addresses.map(Value::from),
    );
    let timeout = s
        .session_affinity_config
        .and_then(|c| c.client_ip)
        .and_then(|c| c.timeout_seconds);
    put(
        &mut spec,
        "sessionAffinityConfig",
        timeout.map(|t| json!({"clientIP": {"timeoutSeconds": t}})),
    );
    put(&mut spec, "ipFamilies", non_empty(s.ip_families));
    put(&mut spec, "ipFamilyPolicy", string(s.ip_family_policy));
    put(
        &mut spec,
        "allocateLoadBalancerNodePorts",
        s.allocate_load_balancer_node_ports.map(Value::from),
    );
    put(
        &mut spec,
        "loadBalancerClass",
        string(s.load_balancer_class),
    );
    put(
        &mut spec,
        "internalTrafficPolicy",
        string(s.internal_traffic_policy),
    );
    put(
        &mut spec,
        "trafficDistribution",
        string(s.traffic_distribution),
    );
    json!({"metadata": meta(svc.metadata.unwrap_or_default()), "spec": spec})
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    #[test]
    fn a_service_as_kubectl_create_service_sends_it() {
        let svc = core::Service {
            metadata: Some(ObjectMeta {
                name: Some("web".into()),
                labels: BTreeMap::from([("app".into(), "web".into())]),
                ..Default::default()
            }),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    name: Some("80-8080".into()),
                    protocol: Some("TCP".into()),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: Some(String::new()),
                    }),
                    node_port: Some(0),
                    ..Default::default()
                }],
                selector: BTreeMap::from([("app".into(), "web".into())]),
                r#type: Some("ClusterIP".into()),
                cluster_ip: Some(String::new()),
                ..Default::default()
            }),
            status: None,
        };
        let obj = decode(&envelope("Service", svc.encode_to_vec())).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80,
                                    "targetPort": 8080}],
                         "selector": {"app": "web"}, "type": "ClusterIP"}})
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        let err = decode(&envelope("Pod", Vec::new())).unwrap_err();
        assert_eq!(err.code(), 415);
        assert_eq!(decode(b"not protobuf").unwrap_err().code(), 400);
        let ns = core::Namespace {
            metadata: Some(ObjectMeta {
                name: Some("team".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let obj = decode(&envelope("Namespace", ns.encode_to_vec())).unwrap();
        assert_eq!(obj["metadata"]["name"], "team");
    }
}
