//! `meta.k8s.io/v1` Table responses for kubectl's human-readable output.
//!
//! kubectl's `get` asks for `as=Table` and prints the server's columns verbatim; without a Table
//! it falls back to NAME only. Columns per kind are a small table here; unknown kinds get Name
//! and Age.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::meta::{dotted, meta_str, parse_rfc3339};
use crate::resources::Resource;

type Cell = fn(&Value) -> Value;

/// Whether the `Accept` header asks for a Table.
#[must_use]
pub(crate) fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A column: its header, whether only `-o wide` shows it (priority 1), and its cell.
type Column = (&'static str, bool, Cell);

/// The columns of `kind`, as the real server's printers have them (`-o wide` adds the
/// priority-1 ones).
fn columns(kind: &str) -> Vec<Column> {
    let name: Column = ("Name", false, |o| json!(meta_str(o, "name")));
    let age: Column = ("Age", false, age);
    match kind {
        "Service" => vec![
            name,
            ("Type", false, |o| field(o, "spec.type")),
            ("Cluster-IP", false, |o| field(o, "spec.clusterIP")),
            ("External-IP", false, external_ip),
            ("Port(s)", false, service_ports),
            age,
            ("Selector", true, selector),
        ],
        "Node" => vec![
            name,
            ("Status", false, |o| {
                json!(condition(o, "Ready", "Ready", "NotReady"))
            }),
            ("Roles", false, |_| json!("<none>")),
            age,
            ("Version", false, |o| {
                field(o, "status.nodeInfo.kubeletVersion")
            }),
            ("Internal-IP", true, |o| node_address(o, "InternalIP")),
            ("External-IP", true, |o| node_address(o, "ExternalIP")),
            ("OS-Image", true, |o| field(o, "status.nodeInfo.osImage")),
            ("Kernel-Version", true, |o| {
                field(o, "status.nodeInfo.kernelVersion")
            }),
            ("Container-Runtime", true, |o| {
                field(o, "status.nodeInfo.containerRuntimeVersion")
            }),
        ],
        "Pod" => vec![
            name,
            ("Ready", false, pod_ready),
            ("Status", false, |o| field(o, "status.phase")),
            ("Restarts", false, pod_restarts),
            age,
            ("IP", true, |o| field(o, "status.podIP")),
            ("Node", true, |o| field(o, "spec.nodeName")),
            ("Nominated Node", true, |o| {
                field(o, "status.nominatedNodeName")
            }),
            ("Readiness Gates", true, |_| json!("<none>")),
        ],
        "EndpointSlice" => vec![
            name,
            ("AddressType", false, |o| field(o, "addressType")),
            ("Ports", false, slice_ports),
            ("Endpoints", false, slice_endpoints),
            age,
        ],
        "Namespace" => vec![name, ("Status", false, |o| field(o, "status.phase")), age],
        _ => vec![name, age],
    }
}

/// A Table of `objects`.
#[must_use]
pub(crate) fn table(res: &Resource, objects: &[Value], rv: u64) -> Value {
    let cols = columns(res.kind);
    let defs: Vec<Value> = cols
        .iter()
        .map(|(name, wide, _)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({ "name": name, "type": "string", "format": format, "description": "",
                    "priority": i32::from(*wide) })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(
            |o| json!({ "cells": cols.iter().map(|(_, _, f)| f(o)).collect::<Vec<_>>(), "object": o }),
        )
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv.to_string() },
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn field(o: &Value, path: &str) -> Value {
    match dotted(o, path) {
        Some(Value::String(s)) if !s.is_empty() => json!(s),
        _ => json!("<none>"),
    }
}

fn condition(o: &Value, kind: &str, yes: &str, no: &str) -> String {
    let conds = o.pointer("/status/conditions").and_then(Value::as_array);
    let status = conds
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str());
    match status {
        Some("True") => yes.to_owned(),
        Some(_) => no.to_owned(),
        None => "Unknown".to_owned(),
    }
}

/// `READY` of a pod: ready containers / containers, from `status.containerStatuses`.
fn pod_ready(o: &Value) -> Value {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
    json!(format!("{ready}/{total}"))
}

fn pod_restarts(o: &Value) -> Value {
    let restarts: u64 = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |s| {
            s.iter().filter_map(|c| c["restartCount"].as_u64()).sum()
        });
    json!(restarts.to_string())
}

fn node_address(o: &Value, kind: &str) -> Value {
    let found = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == kind))
        .and_then(|a| a["address"].as_str());
    json!(found.unwrap_or("<none>"))
}

fn selector(o: &Value) -> Value {
    match o.pointer("/spec/selector").and_then(Value::as_object) {
        Some(sel) if !sel.is_empty() => {
            let parts: Vec<String> = sel
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            json!(parts.join(","))
        }
        _ => json!("<none>"),
    }
}

fn external_ip(o: &Value) -> Value {
    let mut ips: Vec<String> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ing) = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
    {
        ips.extend(ing.iter().filter_map(|i| {
            i["ip"]
                .as_str()
                .or(i["hostname"].as_str())
                .map(str::to_owned)
        }));
    }
    match (
        ips.is_empty(),
        o.pointer("/spec/type").and_then(Value::as_str),
    ) {
        (false, _) => json!(ips.join(",")),
        (true, Some("LoadBalancer")) => json!("<pending>"),
        (true, Some("ExternalName")) => field(o, "spec.externalName"),
        (true, _) => json!("<none>"),
    }
}

fn port_list(o: &Value, ptr: &str, show: fn(&Value) -> String) -> Value {
    let ports: Vec<String> = o
        .pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().map(show).collect())
        .unwrap_or_default();
    if ports.is_empty() {
        json!("<none>")
    } else {
        json!(ports.join(","))
    }
}

fn service_ports(o: &Value) -> Value {
    port_list(o, "/spec/ports", |p| {
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        match p["nodePort"].as_u64() {
            Some(n) => format!("{}:{n}/{proto}", p["port"]),
            None => format!("{}/{proto}", p["port"]),
        }
    })
}

fn slice_ports(o: &Value) -> Value {
    port_list(o, "/ports", |p| {
        p["port"]
            .as_u64()
            .map_or_else(|| "<unset>".to_owned(), |n| n.to_string())
    })
}

fn slice_endpoints(o: &Value) -> Value {
    let addrs: Vec<String> = o
        .pointer("/endpoints")
        .and_then(Value::as_array)
        .map(|eps| {
            eps.iter()
                .filter_map(|e| e["addresses"].as_array())
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if addrs.is_empty() {
        json!("<unset>")
    } else {
        json!(addrs.join(","))
    }
}

fn age(o: &Value) -> Value {
    let Some(created) = parse_rfc3339(meta_str(o, "creationTimestamp")) else {
        return json!("<unknown>");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(created);
    json!(match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resource;

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.2",
                "ports": [{"port": 80, "nodePort": 30000, "protocol": "TCP"}]}});
        let t = table(Resource::by_plural("services").unwrap(), &[svc], 7);
        assert_eq!(t["columnDefinitions"][3]["name"], "External-IP");
        assert_eq!(t["columnDefinitions"][6]["name"], "Selector");
        assert_eq!(t["columnDefinitions"][6]["priority"], 1, "-o wide only");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "NodePort",
                "10.96.0.2",
                "<none>",
                "80:30000/TCP",
                t["rows"][0]["cells"][5],
                "<none>"
            ])
        );
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }
}
