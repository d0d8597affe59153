//! The EndpointSlices a Service with a selector should have, computed from the pods — what
//! kube-controller-manager's EndpointSlice controller does, reduced to what the lab needs: one
//! IPv4 slice per Service, an endpoint per running pod with an IP that matches the selector
//! (serving from its `Ready` condition, terminating while it has a `deletionTimestamp`, ready
//! when serving and not terminating — upstream's rule; `nodeName` from the pod), ports resolved
//! from `targetPort` (numbers, or names looked up in the pods' container ports). Pure, so it is
//! tested without a server.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Label naming a slice's Service.
pub(crate) const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label saying who manages a slice.
pub(crate) const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY`] (the real controller's is `endpointslice-controller.k8s.io`).
pub(crate) const CONTROLLER: &str = "sluice-lab";

/// `(namespace, name)` of an object.
pub(crate) fn key(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&m["namespace"]), s(&m["name"]))
}

/// The slices every selector Service should have, keyed by `(namespace, slice name)`.
pub(crate) fn desired(services: &[Value], pods: &[Value]) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for svc in services {
        let Some(selector) = svc["spec"]["selector"]
            .as_object()
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        if svc["spec"]["type"] == "ExternalName" {
            continue;
        }
        let (ns, name) = key(svc);
        let mut members: Vec<&Value> = pods
            .iter()
            .filter(|p| key(p).0 == ns && selects(selector, p) && running(p))
            .collect();
        members.sort_by_key(|p| key(p).1);
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-lab"),
                "namespace": ns,
                "labels": {SERVICE_NAME: name, MANAGED_BY: CONTROLLER},
            },
            "addressType": "IPv4",
            "endpoints": members.iter().map(|p| endpoint(p)).collect::<Vec<_>>(),
            "ports": ports(svc, &members),
        });
        out.insert((ns, format!("{name}-lab")), slice);
    }
    out
}

/// True when every selector label is on the pod.
fn selects(selector: &serde_json::Map<String, Value>, pod: &Value) -> bool {
    let labels = &pod["metadata"]["labels"];
    selector.iter().all(|(k, v)| &labels[k] == v)
}

/// Has an IP and is not finished (a pod being deleted stays, as a terminating endpoint, until
/// it is gone).
fn running(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    pod["status"]["podIP"].is_string() && !matches!(phase, "Succeeded" | "Failed")
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn endpoint(pod: &Value) -> Value {
    let (ns, name) = key(pod);
    let serving = ready(pod);
    let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
    let mut ep = json!({
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": serving && !terminating, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": ns, "name": name},
    });
    if let Some(node) = pod["spec"]["nodeName"].as_str() {
        ep["nodeName"] = json!(node);
    }
    if let Some(uid) = pod["metadata"]["uid"].as_str() {
        ep["targetRef"]["uid"] = json!(uid);
    }
    ep
}

/// The slice's ports: one per Service port, `targetPort` resolved.
fn ports(svc: &Value, members: &[&Value]) -> Vec<Value> {
    let list = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    list.iter()
        .filter_map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let port = target_port(p, proto, members)?;
            Some(json!({
                "name": p["name"].as_str().unwrap_or(""),
                "port": port,
                "protocol": proto,
            }))
        })
        .collect()
}

/// A number as is; a name looked up in the first member pod that has it; absent: `port`.
fn target_port(port: &Value, proto: &str, members: &[&Value]) -> Option<u64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_u64(),
        Value::String(name) => members.iter().find_map(|pod| named(pod, name, proto)),
        _ => port["port"].as_u64(),
    }
}

fn named(pod: &Value, name: &str, proto: &str) -> Option<u64> {
    let containers = pod["spec"]["containers"].as_array()?;
    containers
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name && p["protocol"].as_str().unwrap_or("TCP") == proto)
        .and_then(|p| p["containerPort"].as_u64())
}

/// True when a stored slice already says what `want` says.
pub(crate) fn same(have: &Value, want: &Value) -> bool {
    ["addressType", "endpoints", "ports"]
        .iter()
        .all(|k| have[k] == want[k])
        && have["metadata"]["labels"] == want["metadata"]["labels"]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, app: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
               "spec": {"nodeName": node, "containers": [{"name": "echo",
                   "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
               "status": {"phase": "Running", "podIP": format!("10.244.1.{}", name.len()),
                   "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn svc(name: &str, selector: Value, target: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"},
               "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": target}]}})
    }

    #[test]
    fn selected_pods_become_endpoints_with_readiness_and_node() {
        let pods = [
            pod("b", "node2", "web", false),
            pod("a", "node1", "web", true),
            pod("c", "node1", "db", true),
        ];
        let services = [
            svc("web", json!({"app": "web"}), json!("http")),
            svc("none", json!({"app": "x"}), json!(9)),
            json!({"metadata": {"name": "manual", "namespace": "default"}, "spec": {"ports": []}}),
        ];
        let d = desired(&services, &pods);
        assert_eq!(d.len(), 2, "no slice for a Service without a selector");
        let web = &d[&("default".into(), "web-lab".into())];
        let eps = web["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0]["targetRef"]["name"], "a");
        assert_eq!(eps[0]["nodeName"], "node1");
        assert_eq!(eps[1]["conditions"]["ready"], false);
        assert_eq!(web["ports"][0]["port"], 8080, "named targetPort resolved");
        assert_eq!(web["metadata"]["labels"][SERVICE_NAME], "web");
        let none = &d[&("default".into(), "none-lab".into())];
        assert_eq!(none["endpoints"], json!([]));
        assert_eq!(none["ports"][0]["port"], 9);
        assert!(same(web, &web.clone()));
        assert!(!same(web, none));
    }

    #[test]
    fn pods_without_ip_or_finished_are_left_out() {
        let mut pending = pod("p", "node1", "web", false);
        pending["status"]["podIP"] = Value::Null;
        let mut done = pod("d", "node1", "web", true);
        done["status"]["phase"] = json!("Succeeded");
        let d = desired(
            &[svc("web", json!({"app": "web"}), Value::Null)],
            &[pending, done],
        );
        let web = &d[&("default".into(), "web-lab".into())];
        assert_eq!(web["endpoints"], json!([]));
        assert_eq!(web["ports"][0]["port"], 80, "no targetPort: the port");
    }

    #[test]
    fn a_pod_being_deleted_is_a_terminating_endpoint_serving_while_ready() {
        let mut going = pod("g", "node1", "web", true);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let d = desired(&[svc("web", json!({"app": "web"}), json!(8080))], &[going]);
        let web = &d[&("default".into(), "web-lab".into())];
        assert_eq!(
            web["endpoints"][0]["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
    }
}
