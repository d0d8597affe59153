//! Pods: for each node the CNI plugin and conflist are installed with `sluice install`, then
//! every pod gets a namespace, a CNI ADD (the plugin makes `cni0`, the veth, the address and
//! routes), its echo server (this binary, re-executed inside the pod) and a Pod object with
//! its IP, node, labels and `Ready` condition — what the EndpointSlice controller reads.

use std::net::{Ipv4Addr, SocketAddr};
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
            let cni = self.node_cni(&node);
            if self.image.is_none() {
                // With --image the DaemonSet's init container installed plugin and conflist.
                cni.install(&self.bins.cni(), &self.subnet_file(&node))?;
            }
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

    /// Node `node`'s CNI plugin and configuration (where `pods` installed them).
    pub(crate) fn node_cni(&self, node: &str) -> NodeCni {
        match &self.image {
            Some(_) => {
                let host = self.node_host(node);
                NodeCni {
                    netns: host.netns.clone(),
                    dir: self.node_dir(node),
                    bin_dir: host.host_path("/opt/cni/bin".as_ref()),
                    conf_dir: host.host_path("/etc/cni/net.d".as_ref()),
                }
            }
            None => NodeCni::in_dir(self.state.ns(node), self.node_dir(node)),
        }
    }

    /// One pod on `node` (index `i`).
    fn pod(&mut self, cni: &NodeCni, name: &str, node: &str, i: u8) -> anyhow::Result<()> {
        let ns = self.namespace(name)?;
        crate::resolv::write(ns.name(), "default")?;
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
/// (and the same on the other [`PORTS`], which Services reach by number). Its status is what
/// a kubelet posts — phase, IPs, the conditions and one container status — so `kubectl get
/// pods -o wide` reads as in a real cluster.
fn pod_object(name: &str, node: &str, i: u8, ip: Ipv4Addr) -> Value {
    let now = crate::api::now();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "echo", "image": "sluice-lab",
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                      {"name": "udp", "containerPort": PORT, "protocol": "UDP"}]}]},
        "status": status(ip, node_ip(i), &now),
    })
}

/// A running, ready pod's status at `ip` on the node at `host` (started `now`).
pub(crate) fn status(ip: Ipv4Addr, host: Ipv4Addr, now: &str) -> Value {
    json!({"phase": "Running", "podIP": ip.to_string(),
           "podIPs": [{"ip": ip.to_string()}], "hostIP": host.to_string(),
           "hostIPs": [{"ip": host.to_string()}], "startTime": now,
           "qosClass": "BestEffort",
           "conditions": conditions(true, now),
           "containerStatuses": [container_status(true, now)]})
}

/// The pod conditions a kubelet posts, `Ready` and `ContainersReady` as `ready` says.
fn conditions(ready: bool, now: &str) -> Value {
    let status = if ready { "True" } else { "False" };
    let cond = |kind: &str, status: &str| {
        json!({"type": kind, "status": status, "lastProbeTime": null,
               "lastTransitionTime": now})
    };
    json!([
        cond("PodReadyToStartContainers", "True"),
        cond("Initialized", "True"),
        cond("Ready", status),
        cond("ContainersReady", status),
        cond("PodScheduled", "True"),
    ])
}

/// The echo container's status: running since `started`, `ready` as the lab says.
fn container_status(ready: bool, started: &str) -> Value {
    json!({"name": "echo", "image": "sluice-lab", "imageID": "", "ready": ready,
           "started": true, "restartCount": 0,
           "state": {"running": {"startedAt": started}}})
}

/// Sets a pod's readiness through the API (`/status`): the `Ready` and `ContainersReady`
/// conditions and the container's `ready`, as a kubelet does when a readiness probe flips.
pub(crate) fn set_ready(lab: &Lab, pod: &str, ready: bool) -> anyhow::Result<()> {
    let api = lab.api()?;
    let path = format!("/api/v1/namespaces/default/pods/{pod}");
    let mut obj = api.get(&path)?;
    let now = crate::api::now();
    let started = obj["status"]["startTime"]
        .as_str()
        .unwrap_or(&now)
        .to_owned();
    obj["status"]["conditions"] = conditions(ready, &now);
    obj["status"]["containerStatuses"] = json!([container_status(ready, &started)]);
    api.put(&format!("{path}/status"), &obj)?;
    Ok(())
}
