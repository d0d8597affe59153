//! The deploy manifests an operator applies: every document is a well-formed Kubernetes object
//! (a typed round trip through k8s-openapi drops any misspelled field, so it must be lossless),
//! kubectl creates them against the test API server, and they carry what the daemons need.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_testbed::apiserver::TestApiServer;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sluice.yaml")
}

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(manifest()).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect()
}

/// Typed round trip: equal only if every field is one the API type knows.
fn lossless<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(path) = first_difference(doc, &back, String::new()) {
        panic!(
            "{}: {path} is not a field of the API type (misspelled?)",
            doc["kind"]
        );
    }
    typed
}

/// The JSON path of the first value in `a` that `b` lacks or holds differently.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| match y.get(k) {
            Some(w) => first_difference(v, w, format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        _ => (a != b).then_some(path),
    }
}

#[test]
fn every_document_is_a_lossless_kubernetes_object() {
    let docs = documents();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    lossless::<ServiceAccount>(&docs[0]);
    let role: ClusterRole = lossless(&docs[1]);
    lossless::<ClusterRoleBinding>(&docs[2]);
    let cm: ConfigMap = lossless(&docs[3]);
    let ds: DaemonSet = lossless(&docs[4]);

    // RBAC: exactly what the daemons call.
    let rules = role.rules.unwrap();
    let allows = |res: &str, verb: &str| {
        rules.iter().any(|r| {
            r.resources.iter().flatten().any(|x| x == res) && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (res, verb) in [
        ("services", "watch"),
        ("endpointslices", "watch"),
        ("nodes", "watch"),
        ("nodes/status", "patch"),
        ("pods", "get"),
    ] {
        assert!(allows(res, verb), "{res} {verb}");
    }
    assert!(
        !allows("nodes", "patch") && !allows("services", "create"),
        "least privilege"
    );

    // The configuration files parse with the same code the daemons use.
    let data = cm.data.unwrap();
    let conf = sluice_model::net_conf::NetConf::parse(&data["net-conf.json"]).unwrap();
    conf.check().unwrap();
    let cni: Value = serde_json::from_str(&data["cni-conf.json"]).unwrap();
    assert_eq!(cni["plugins"][0]["type"], "sluice");
    let kp: Value = serde_yaml::from_str(&data["kube-proxy.yaml"]).unwrap();
    assert_eq!(kp["kind"], "KubeProxyConfiguration");

    // The DaemonSet: host network, every node, node name from the downward API, the mounts.
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert!(
        pod.tolerations
            .unwrap()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );
    for c in &pod.containers {
        let env = c.env.as_ref().unwrap();
        let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
        let field = node
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field.field_path, "spec.nodeName", "{}", c.name);
        assert!(
            c.liveness_probe.is_some() && c.readiness_probe.is_some(),
            "{}",
            c.name
        );
    }
    let paths: Vec<String> = pod
        .volumes
        .unwrap()
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    for want in [
        "/run/flannel",
        "/etc/cni/net.d",
        "/opt/cni/bin",
        "/lib/modules",
        "/run/xtables.lock",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
    }
    assert_eq!(pod.init_containers.unwrap()[0].name, "install-cni");
}

#[test]
fn kubectl_creates_the_manifests_on_the_api_server() {
    let server = TestApiServer::start();
    let home = tempfile::tempdir().unwrap();
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg(format!("--server={}", server.url()))
            .args(args)
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("none"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let created = kubectl(&[
        "create",
        "--validate=false",
        "-f",
        manifest().to_str().unwrap(),
    ]);
    for name in [
        "serviceaccount/sluice",
        "clusterrole.rbac.authorization.k8s.io/sluice",
        "configmap/sluice-config",
        "daemonset.apps/sluice",
    ] {
        assert!(created.contains(&format!("{name} created")), "{created}");
    }
    let listed = kubectl(&["get", "daemonsets", "-n", "kube-system", "-o", "name"]);
    assert_eq!(listed.trim(), "daemonset.apps/sluice");
    let stored = server.get("daemonsets", "kube-system", "sluice").unwrap();
    assert_eq!(stored["spec"]["template"]["spec"]["hostNetwork"], true);
}
