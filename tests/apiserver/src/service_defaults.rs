//! Service defaults the real API server applies, and keeping allocations across updates.
//!
//! Split from the allocation bookkeeping in `services` so each stays readable.

use serde_json::{Value, json};

/// `spec.type`, defaulting to `ClusterIP`.
pub(crate) fn svc_type(obj: &Value) -> &str {
    obj.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// Whether the type gets NodePorts.
pub(crate) fn wants_node_ports(obj: &Value) -> bool {
    matches!(svc_type(obj), "NodePort" | "LoadBalancer")
}

/// `spec.ports`, or none.
pub(crate) fn ports_of(obj: &Value) -> Vec<Value> {
    obj.pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn set_default(spec: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    spec.entry(key.to_owned()).or_insert(value);
}

/// Fills the defaults the real API server applies (type, affinity, policies, port protocol).
pub(crate) fn apply_defaults(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let node_ports = wants_node_ports(obj);
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if node_ports {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
}

/// On update, a Service that omits its ClusterIP or NodePorts keeps the allocated ones.
pub(crate) fn carry_over(old: &Value, new: &mut Value) {
    let missing_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if missing_ip
        && let Some(ip) = old.pointer("/spec/clusterIP")
        && new.get("spec").is_some_and(Value::is_object)
    {
        new["spec"]["clusterIP"] = ip.clone();
        if let Some(ips) = old.pointer("/spec/clusterIPs") {
            new["spec"]["clusterIPs"] = ips.clone();
        }
    }
    let old_ports = ports_of(old);
    let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") else {
        return;
    };
    for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
        let same = |o: &&Value| {
            o.get("port") == p.get("port")
                && o.get("protocol").or(Some(&json!("TCP")))
                    == p.get("protocol").or(Some(&json!("TCP")))
        };
        if let Some(n) = old_ports.iter().find(same).and_then(|o| o.get("nodePort")) {
            p["nodePort"] = n.clone();
        }
    }
}
