//! `sluice-proxy explain` as an operator runs it, on a `--manifests-dir`: the model's answer
//! and the nftables backend check (the tracer over the rules this proxy would program) agree.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");

const MANIFESTS: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.0.10, type: NodePort, externalTrafficPolicy: Local, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [\"10.244.1.2\"]
  conditions: {ready: true}
  nodeName: node-1
- addresses: [\"10.244.2.2\"]
  conditions: {ready: true}
  nodeName: node-2
";

fn explain(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    explain_with(dir, &[], args)
}

fn explain_with(dir: &std::path::Path, flags: &[&str], args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["--manifests-dir"])
        .arg(dir)
        .args([
            "--hostname-override",
            "node-1",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .args(flags)
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn explain_answers_and_the_nftables_rules_agree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), MANIFESTS).unwrap();
    let (ok, text) = explain(
        dir.path(),
        &["--src", "10.244.1.9", "--dst", "10.96.0.10:80"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("verdict:  DNAT to one of 10.244.1.2:8080, 10.244.2.2:8080"),
        "{text}"
    );
    assert!(
        text.contains("nftables rules: DNAT to one of 10.244.1.2:8080, 10.244.2.2:8080 (agrees)"),
        "{text}"
    );
    // An address no Service holds, as JSON: the proxy leaves it alone.
    let (ok, json) = explain(
        dir.path(),
        &[
            "--src",
            "198.51.100.7",
            "--dst",
            "10.96.0.99:1",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["verdict"]["action"], "no-service");
    assert_eq!(v["backendCheck"]["agrees"], true);
    let (ok, text) = explain(
        dir.path(),
        &["--src", "10.244.1.9", "--dst", "10.96.0.10:81"],
    );
    assert!(
        ok && text.contains("nftables rules: REJECT (agrees)"),
        "{text}"
    );
    // The same address inside --service-cidr is an unallocated ClusterIP: dropped, and the
    // rules agree (without the flag they would let it through).
    let (ok, text) = explain_with(
        dir.path(),
        &["--service-cidr", "10.96.0.0/12"],
        &["--src", "10.244.1.9", "--dst", "10.96.0.99:1"],
    );
    assert!(
        ok && text.contains("nftables rules: DROP (agrees)"),
        "{text}"
    );
}
