//! Pods: for each node the CNI plugin and conflist are installed with `sluice install`, then
//! every pod gets a namespace, a CNI ADD (the plugin makes `cni0`, the veth, the address and
//! routes), its echo server (this binary, re-executed inside the pod) and a Pod object with
//! its IP, node, labels and `Ready` condition — what the EndpointSlice controller reads.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use sluice_testbed::NetNs;

use super::Lab;
use super::network::node_ip;
use crate::cni::NodeCni;
use crate::echo::{self, PORT, PORTS};
use crate::labdir::PodRecord;

impl Lab {
    pub(crate) fn pods(&mut self) -> anyhow::Result<String> {
        let mut n = 0;
        for (i, node) in self.node_names().into_iter().enumerate() {
            let cni = match &self.image {
                // The DaemonSet's init container installed the plugin and the conflist.
                Some(_) => {
                    let host = self.node_host(&node);
                    NodeCni {
                        netns: host.netns.clone(),
                        dir: self.node_dir(&node),
                        bin_dir: host.host_path("/opt/cni/bin".as_ref()),
                        conf_dir: host.host_path("/etc/cni/net.d".as_ref()),
                    }
                }
                None => {
                    let cni = NodeCni::in_dir(self.state.ns(&node), self.node_dir(&node));
                    cni.install(&self.bins.cni(), &self.subnet_file(&node))?;
                    cni
                }
            };
            for _ in 0..self.opts.pods_per_node {
                n += 1;
                let index = u8::try_from(i + 1)?;
                self.pod(&cni, &format!("web-{n}"), &node, index)?;
            }
        }
        for pod in &self.state.pods {
            let node = NetNs::open(&self.state.ns(&pod.node))?;
            let addr = SocketAddr::from((pod.ip, PORT));
            self.wait_for(&format!("{} serving", pod.name), || {
                Ok(Some(echo::http_from(&node, addr, Duration::from_secs(1))?))
            })?;
        }
        crate::cgroups::register(&self.dir, &self.state);
        let list: Vec<String> = self
            .state
            .pods
            .iter()
            .map(|p| format!("{}={}", p.name, p.ip))
            .collect();
        Ok(list.join(" "))
    }

    /// One pod on `node` (index `i`).
    fn pod(&mut self, cni: &NodeCni, name: &str, node: &str, i: u8) -> anyhow::Result<()> {
        let ns = self.namespace(name)?;
        let ip = cni
            .add(ns.name(), ns.name())
            .with_context(|| format!("pod {name}"))?;
        let mut cmd = Command::new(self.bins.lab());
        cmd.arg("--lab-dir")
            .arg(self.dir.root())
            .args(["pod-serve", "--name", name]);
        for port in PORTS {
            cmd.args(["--port", &port.to_string()]);
        }
        let pid = self.start(Some(ns.name()), &cmd, &format!("pod-{name}"))?;
        if crate::cgroups::ebpf(&self.state) {
            crate::cgroups::add(&self.dir, &self.state, node, pid)?;
        }
        self.api()?.create(
            "/api/v1/namespaces/default/pods",
            &pod_object(name, node, i, ip),
        )?;
        self.state.pods.push(PodRecord {
            name: name.to_owned(),
            node: node.to_owned(),
            netns: ns.name().to_owned(),
            ip,
        });
        self.dir.save(&self.state)?;
        Ok(())
    }
}

/// The Pod object of a lab pod: running and ready, serving `http` (TCP) and `udp` on [`PORT`]
/// (and the same on the other [`PORTS`], which Services reach by number).
fn pod_object(name: &str, node: &str, i: u8, ip: std::net::Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "echo", "image": "sluice-lab",
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                      {"name": "udp", "containerPort": PORT, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "podIP": ip.to_string(),
                   "podIPs": [{"ip": ip.to_string()}], "hostIP": node_ip(i).to_string(),
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// Sets a pod's `Ready` condition through the API (`/status`).
pub(crate) fn set_ready(lab: &Lab, pod: &str, ready: bool) -> anyhow::Result<()> {
    let api = lab.api()?;
    let path = format!("/api/v1/namespaces/default/pods/{pod}");
    let mut obj = api.get(&path)?;
    obj["status"]["conditions"] = json!([{"type": "Ready",
        "status": if ready { "True" } else { "False" }}]);
    api.put(&format!("{path}/status"), &obj)?;
    Ok(())
}
