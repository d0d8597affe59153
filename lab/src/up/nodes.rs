//! The Node objects `up` registers, as a kubelet would: addresses, `podCIDR(s)` (kube subnet
//! manager), capacity and `nodeInfo` from this machine, so `kubectl get nodes -o wide` reads
//! as in a real cluster. Their `Ready` condition is the lab daemon's (see `labd::nodes`).

use serde_json::{Value, json};

use super::network::node_ip;

/// What `kubeletVersion` says: the API version the lab serves, marked as the lab's.
pub(crate) const KUBELET_VERSION: &str = "v1.34.0-sluice-lab";

/// Node `i` (`node{i}`); `kube`: the kube subnet manager, which reads `podCIDR`.
pub(crate) fn node_object(i: u8, kube: bool, runtime: &str) -> Value {
    let name = format!("node{i}");
    let zone = format!("zone-{}", char::from(b'a' + (i - 1) % 26));
    let capacity = json!({
        "cpu": std::thread::available_parallelism().map_or(1, usize::from).to_string(),
        "memory": mem_total().unwrap_or_else(|| "0".into()),
        "pods": "110", "ephemeral-storage": "0",
    });
    let mut node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch(),
            "topology.kubernetes.io/zone": zone}},
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i).to_string()},
                {"type": "Hostname", "address": name}],
            "capacity": capacity, "allocatable": capacity,
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                "osImage": os_image(), "kernelVersion": kernel(),
                "operatingSystem": "linux", "architecture": arch(),
                "containerRuntimeVersion": runtime,
                "machineID": "", "systemUUID": "", "bootID": ""},
        },
    });
    if kube {
        let cidr = format!("10.244.{i}.0/24");
        node["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    node
}

/// Go's name for this architecture, as `kubernetes.io/arch` has it.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// `PRETTY_NAME` of `/etc/os-release`.
fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "Linux".into(), |v| v.trim_matches('"').to_owned())
}

/// `MemTotal` of `/proc/meminfo` as a quantity (`16318420Ki`).
fn mem_total() -> Option<String> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?;
    Some(format!("{kb}Ki"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_has_what_kubectl_prints() {
        let n = node_object(2, true, "sluice-lab://netns");
        assert_eq!(n["status"]["addresses"][0]["address"], "192.168.0.12");
        assert_eq!(n["status"]["addresses"][1]["type"], "Hostname");
        assert_eq!(n["spec"]["podCIDRs"][0], "10.244.2.0/24");
        assert!(
            n["status"]["capacity"]["memory"]
                .as_str()
                .unwrap()
                .ends_with("Ki")
        );
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_ne!(n["status"]["nodeInfo"]["kernelVersion"], "");
        assert_eq!(node_object(1, false, "x")["spec"], json!({}));
    }
}
