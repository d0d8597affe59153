//! `sluice-proxy explain` as an operator runs it, on a `--manifests-dir`: the model's answer
//! and the nftables backend check (the tracer over the rules this proxy would program) agree,
//! for this node, for another node by its Node object, and for `--node-ip` what-ifs.

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
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 192.168.0.12}, {type: Hostname, address: node-2}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-3}
status: {addresses: [{type: InternalIP, address: 192.168.0.13}]}
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
        text.contains("verdict:  DNAT to one of 10.244.1.2:8080, 10.244.2.2:8080, source kept"),
        "{text}"
    );
    assert!(
        text.contains(
            "nftables rules (rendered): DNAT to one of 10.244.1.2:8080, 10.244.2.2:8080 (agrees)"
        ),
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
        ok && text.contains("verdict:  REJECT: no Service serves this port of the ClusterIP"),
        "{text}"
    );
    assert!(
        text.contains("nftables rules (rendered): REJECT (agrees)"),
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
        ok && text.contains("nftables rules (rendered): DROP (agrees)"),
        "{text}"
    );
}

#[test]
fn loopback_is_no_node_port_address_in_nftables_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), MANIFESTS).unwrap();
    // The model used to take every local address for a NodePort address and disagreed.
    let (ok, text) = explain(
        dir.path(),
        &["--src", "127.0.0.1", "--dst", "127.0.0.1:30080"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("service:  none"), "{text}");
    assert!(
        text.contains("nftables rules (rendered): not a Service (untouched) (agrees)"),
        "{text}"
    );
}

#[test]
fn another_node_is_answered_from_its_node_object_and_what_ifs_from_node_ips() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), MANIFESTS).unwrap();
    // node-2 holds an endpoint: a client from outside reaches it, source kept (eTP Local).
    let (ok, text) = explain(
        dir.path(),
        &[
            "--from-node",
            "node-2",
            "--src",
            "198.51.100.7",
            "--dst",
            "192.168.0.12:30080",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("on node node-2"), "{text}");
    assert!(
        text.contains("verdict:  DNAT to one of 10.244.2.2:8080, source kept"),
        "{text}"
    );
    assert!(text.contains("(agrees)"), "{text}");
    // node-3 holds none: outsiders are dropped, a pod there short-circuits to all of them.
    let on_node3 = |src: &str| {
        let args = [
            "--from-node",
            "node-3",
            "--src",
            src,
            "--dst",
            "192.168.0.13:30080",
        ];
        explain(dir.path(), &args)
    };
    let (ok, text) = on_node3("198.51.100.7");
    assert!(
        ok && text.contains("verdict:  DROP: no usable endpoint"),
        "{text}"
    );
    let (ok, text) = on_node3("10.244.3.5");
    assert!(ok, "{text}");
    assert!(
        text.contains("verdict:  DNAT to one of 10.244.1.2:8080, 10.244.2.2:8080, source kept"),
        "{text}"
    );
    assert!(text.contains("(agrees)"), "{text}");
    // A node without a Node object needs --node-ip.
    let (ok, _) = explain(
        dir.path(),
        &[
            "--from-node",
            "node-9",
            "--src",
            "1.1.1.1",
            "--dst",
            "10.96.0.10:80",
        ],
    );
    assert!(!ok);
    let (ok, json) = explain(
        dir.path(),
        &[
            "--from-node",
            "node-9",
            "--node-ip",
            "192.168.0.19",
            "--src",
            "192.168.0.19",
            "--dst",
            "192.168.0.19:30080",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["destination"], "NodePort");
    assert_eq!(
        v["verdict"]["masquerade"], true,
        "node traffic short-circuits, masqueraded"
    );
    assert_eq!(v["backendCheck"]["agrees"], true);
}
