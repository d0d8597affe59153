//! Side by side with Debian's reference plugins (package containernetworking-plugins): the
//! same on-disk address store as `host-local` in both directions, and a result that `portmap`
//! accepts as its `prevResult` in a chain (checklist #40).

mod common;

use std::path::Path;

use common::Node;
use serde_json::{Value, json};
use sluice_testbed::NetNs;

const REFERENCE: &str = "/usr/lib/cni";

fn host_local(node: &Node, command: &str, id: &str, pod: &NetNs) -> common::Out {
    let conf = json!({
        "cniVersion": "0.4.0",
        "name": "cbr0",
        "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": node.ipam_dir()},
    });
    reference(node, "host-local", command, id, pod, &conf)
}

fn reference(
    node: &Node,
    plugin: &str,
    command: &str,
    id: &str,
    pod: &NetNs,
    conf: &Value,
) -> common::Out {
    let netns = pod.path().display().to_string();
    node.exec_bin(
        &Path::new(REFERENCE).join(plugin),
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", REFERENCE),
        ],
        conf,
    )
}

/// host-local's reservations are respected, ours are respected by host-local, and host-local
/// checks and releases our reservations by its own rules.
#[test]
fn shares_the_address_store_with_host_local() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let (p1, p2, p3) = (
        NetNs::new("cni-pod").unwrap(),
        NetNs::new("cni-pod").unwrap(),
        NetNs::new("cni-pod").unwrap(),
    );
    let hl = host_local(&node, "ADD", "hl1", &p1);
    assert!(hl.ok, "{}", hl.stdout);
    assert_eq!(hl.json["ips"][0]["address"], "10.244.1.2/24");
    let ours = node.cmd("ADD", "c1", "eth0", &p2.path(), &conf);
    assert!(ours.ok, "{}", ours.stdout);
    assert_eq!(
        ours.json["ips"][0]["address"], "10.244.1.3/24",
        "no double allocation"
    );
    let hl2 = host_local(&node, "ADD", "hl2", &p3);
    assert_eq!(
        hl2.json["ips"][0]["address"], "10.244.1.4/24",
        "{}",
        hl2.stdout
    );

    assert!(
        host_local(&node, "CHECK", "c1", &p2).ok,
        "host-local CHECK of our reservation"
    );
    assert!(host_local(&node, "DEL", "c1", &p2).ok);
    assert!(
        !node.reservations().iter().any(|(ip, _)| ip == "10.244.1.3"),
        "host-local released ours"
    );
    assert!(node.cmd("DEL", "c1", "eth0", &p2.path(), &conf).ok);
    // And we release host-local's.
    assert!(node.cmd("DEL", "hl1", "eth0", &p1.path(), &conf).ok);
    assert_eq!(
        node.reservations(),
        vec![("10.244.1.4".into(), "hl2\r\neth0".into())]
    );
}

/// #40: `portmap` chained after Sluice takes our result as its `prevResult`.
#[test]
fn portmap_chains_after_sluice() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf("1.0.0", json!({}));
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    let portmap = json!({
        "cniVersion": "1.0.0", "name": "cbr0", "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": add.json,
    });
    let out = reference(&node, "portmap", "ADD", "c1", &pod, &portmap);
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(out.json["ips"], add.json["ips"]);
    let rules = node.ns.exec(["iptables-save", "-t", "nat"]).unwrap();
    assert!(rules.contains("10.244.1.2:80"), "{rules}");
    assert!(reference(&node, "portmap", "DEL", "c1", &pod, &portmap).ok);
    assert!(node.cmd("DEL", "c1", "eth0", &pod.path(), &conf).ok);
}
