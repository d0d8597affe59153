//! The cluster DNS step: a pod `kube-dns` in `kube-system` on node 1 (a namespace wired by
//! the CNI plugin like every pod) running `sluice-lab dns-serve`, its Pod object (label
//! `k8s-app: kube-dns`, ports `dns`/UDP and `dns-tcp`/TCP 53) and the Service
//! `kube-system/kube-dns` at [`CLUSTER_IP`] selecting it — so the lab's EndpointSlice
//! controller gives it an endpoint and every node's proxy serves it like any Service. Done
//! when a pod resolves the Service's own name through it (so through the proxy).

use anyhow::Context;
use serde_json::{Value, json};

use super::Lab;
use super::network::node_ip;
use crate::dns::{CLUSTER_IP, PORT};
use crate::labdir::PodRecord;

/// The DNS pod's name (and its namespace's role).
pub(crate) const POD: &str = "kube-dns";
/// The name every pod can resolve once DNS works.
pub(crate) const SELF_NAME: &str = "kube-dns.kube-system.svc.cluster.local";

impl Lab {
    pub(crate) fn dns(&mut self) -> anyhow::Result<String> {
        let node = "node1";
        let ns = self.namespace(POD)?;
        let ip = self
            .node_cni(node)
            .add(ns.name(), ns.name())
            .context("kube-dns pod")?;
        let api = self.state.node_url.clone().context("no API server")?;
        let mut cmd = std::process::Command::new(self.bins.lab());
        cmd.arg("--lab-dir").arg(self.dir.root());
        cmd.args([
            "dns-serve",
            "--api",
            &api,
            "--listen",
            &format!("0.0.0.0:{PORT}"),
        ]);
        let pid = self.start(Some(ns.name()), &cmd, "pod-kube-dns")?;
        if crate::cgroups::ebpf(&self.state) {
            crate::cgroups::add(&self.dir, &self.state, node, pid)?;
        }
        self.state.dns = Some(PodRecord {
            name: POD.into(),
            node: node.into(),
            netns: ns.name().to_owned(),
            ip,
        });
        self.dir.save(&self.state)?;
        let api = self.api()?;
        api.create("/api/v1/namespaces/kube-system/pods", &pod_object(ip))?;
        api.create("/api/v1/namespaces/kube-system/services", &service_object())?;
        crate::cgroups::register(&self.dir, &self.state);
        let from = self
            .state
            .pods
            .first()
            .context("no pod to resolve from")?
            .netns
            .clone();
        self.wait_for("a pod resolves kube-dns by name", || {
            Ok(resolve(&from, SELF_NAME)?.filter(|a| a == &CLUSTER_IP.to_string()))
        })?;
        Ok(format!(
            "pod kube-dns {ip} (node1), Service kube-system/kube-dns {CLUSTER_IP}:{PORT} UDP+TCP; \
             pods resolve {SELF_NAME}"
        ))
    }
}

/// The first address `getent hosts NAME` prints inside namespace `netns` (its resolver, its
/// `resolv.conf`), or `None` when the name does not resolve. The resolver waits 1 s for an
/// answer instead of its default 5 s (`RES_OPTIONS`), so a query sent before the proxy serves
/// kube-dns is retried soon.
pub(crate) fn resolve(netns: &str, name: &str) -> anyhow::Result<Option<String>> {
    let out = crate::exec::in_pod(netns, "getent")
        .env("RES_OPTIONS", "timeout:1 attempts:1")
        .args(["hosts", name])
        .output()
        .context("run getent")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().map(str::to_owned))
}

fn pod_object(ip: std::net::Ipv4Addr) -> Value {
    let now = crate::api::now();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"nodeName": "node1", "dnsPolicy": "Default", "containers": [{
            "name": "dns", "image": "sluice-lab",
            "ports": [{"name": "dns", "containerPort": PORT, "protocol": "UDP"},
                      {"name": "dns-tcp", "containerPort": PORT, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                   "hostIP": node_ip(1).to_string(), "startTime": now,
                   "conditions": [{"type": "Ready", "status": "True"},
                                  {"type": "ContainersReady", "status": "True"}],
                   "containerStatuses": [{"name": "dns", "image": "sluice-lab", "imageID": "",
                       "ready": true, "started": true, "restartCount": 0,
                       "state": {"running": {"startedAt": now}}}]},
    })
}

fn service_object() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": CLUSTER_IP.to_string(), "selector": {"k8s-app": "kube-dns"},
                 "ports": [{"name": "dns", "port": PORT, "protocol": "UDP", "targetPort": PORT},
                           {"name": "dns-tcp", "port": PORT, "protocol": "TCP",
                            "targetPort": PORT}]},
    })
}
