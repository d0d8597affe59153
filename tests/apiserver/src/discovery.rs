//! API discovery documents, generated from the resource table.
//!
//! kubectl maps `svc`, `no` or `endpointslices` to URLs only through discovery, and asks for the
//! aggregated (`apidiscovery.k8s.io/v2`) form first; answering with the legacy documents as plain
//! `application/json` makes it fall back to `/api`, `/apis` and the per-version lists below.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::resources::{RESOURCES, groups};

/// `/version`.
#[must_use]
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-sluice-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
#[must_use]
pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let gv = |v: &&str| json!({ "groupVersion": format!("{name}/{v}"), "version": v });
    json!({
        "name": name,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(gv),
    })
}

/// `/apis`.
#[must_use]
pub(crate) fn group_list() -> Value {
    let groups: Vec<Value> = groups().iter().map(|(g, v)| group_doc(g, v)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`, if served.
#[must_use]
pub(crate) fn group(name: &str) -> Option<Value> {
    let (g, versions) = groups().into_iter().find(|(g, _)| *g == name)?;
    let mut doc = group_doc(g, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
#[must_use]
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_come_from_the_table() {
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"services") && names.contains(&"services/status"));
        let svc = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "services")
            .unwrap();
        assert_eq!(svc["shortNames"], json!(["svc"]));
        assert_eq!(group_list()["groups"][0]["name"], "discovery.k8s.io");
        assert!(group("discovery.k8s.io").is_some() && group("apps").is_some());
        assert!(group("batch").is_none());
        assert!(resource_list("discovery.k8s.io", "v1").is_some());
        assert!(resource_list("apps", "v1").is_some());
        assert!(resource_list("batch", "v1").is_none());
    }
}
