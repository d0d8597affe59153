//! `sluice-proxy explain` in ebpf mode on the node: it reads the maps pinned in
//! `--ebpf-pin-dir` back (nothing loaded or attached), traces them, and says whether they
//! agree with the model; an entry missing from the maps is a disagreement (exit 1). Needs
//! root (a private bpffs); skipped when the eBPF programs are not built in.

use std::net::SocketAddrV4;
use std::process::Command;

use sluice_ebpf_common::{Backend, ServiceKey, ServiceValue, SlotKey, proto, scope};
use sluice_proxy_ebpf::MapSet;
use sluice_proxy_ebpf::diff::{Op, diff};
use sluice_proxy_ebpf::kernel::{KernelMaps, apply_ops};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");

const MANIFESTS: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
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

/// A bpffs on a temporary directory, unmounted on drop.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount bpffs");
        Self(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// What the proxy programs for the manifests (ClusterIP entries for pods and the node, the
/// tc path's, and the wildcard that rejects other ports).
fn programmed() -> MapSet {
    let vip = SocketAddrV4::new([10, 96, 0, 10].into(), 80);
    let value = ServiceValue {
        service_id: 1,
        backend_count: 2,
        flags: 0,
        affinity_timeout: 0,
    };
    let mut set = MapSet::default();
    set.services
        .insert(ServiceKey::new(vip, proto::TCP, scope::SOCKET), value);
    set.services.insert(
        ServiceKey::new(vip, proto::TCP, scope::EXTERNAL),
        ServiceValue {
            flags: sluice_ebpf_common::service_flags::SNAT,
            ..value
        },
    );
    set.services.insert(
        ServiceKey::new(vip, proto::TCP, scope::SOCKET).wildcard(),
        ServiceValue {
            service_id: 0,
            backend_count: 0,
            flags: sluice_ebpf_common::service_flags::REJECT,
            affinity_timeout: 0,
        },
    );
    for (slot, ip) in [(1, [10, 244, 1, 2]), (2, [10, 244, 2, 2])] {
        set.slots.insert(
            SlotKey {
                service_id: 1,
                slot,
            },
            Backend::new(SocketAddrV4::new(ip.into(), 8080), proto::TCP),
        );
    }
    set
}

fn explain(manifests: &std::path::Path, pins: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["--proxy-mode", "ebpf", "--manifests-dir"])
        .arg(manifests)
        .args([
            "--hostname-override",
            "node-1",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--ebpf-pin-dir",
        ])
        .arg(pins)
        .args(["explain", "--src", "10.244.1.9", "--dst", "10.96.0.10:80"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn explain_traces_the_pinned_maps_and_sees_a_missing_entry() {
    sluice_testbed::require_root();
    if !KernelMaps::built_for_tests() {
        return;
    }
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(manifests.path().join("web.yaml"), MANIFESTS).unwrap();
    let bpffs = Bpffs::new();
    let pins = bpffs.0.path().join("sluice");
    let mut ebpf = KernelMaps::load_object(&pins).unwrap();
    apply_ops(&mut ebpf, &diff(&programmed(), &MapSet::default())).unwrap();

    let (ok, text) = explain(manifests.path(), &pins);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "ebpf rules (programmed, pinned maps): DNAT to one of 10.244.1.2:8080, \
             10.244.2.2:8080 (agrees)"
        ),
        "{text}"
    );
    // Someone deletes the pods' entry: only the wildcard is left, which rejects.
    let key = ServiceKey::new(
        SocketAddrV4::new([10, 96, 0, 10].into(), 80),
        proto::TCP,
        scope::SOCKET,
    );
    apply_ops(&mut ebpf, &[Op::DeleteService(key)]).unwrap();
    let (ok, text) = explain(manifests.path(), &pins);
    assert!(!ok, "{text}");
    assert!(
        text.contains("ebpf rules (programmed, pinned maps): REJECT (DISAGREES with the model)"),
        "{text}"
    );
}
