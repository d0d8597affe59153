//! Soak pods, made and unmade the way a kubelet does: a namespace, CNI ADD, the pod's process,
//! and only once it serves a Pod object that says Ready; on the way out the Pod object first
//! (its endpoint leaves the slices), then CNI DEL (address released, veth gone), then the
//! namespace with the process in it. Every namespace is recorded before it is made and
//! forgotten after it is gone, so `down` cleans up a soak that died half-way.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use sluice_testbed::NetNs;

use crate::cni::NodeCni;
use crate::echo::{self, PORT};
use crate::up::{Lab, eventually, set_ready};

/// A pod the soak made.
pub(crate) struct SoakPod {
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) netns: String,
    pub(crate) ip: Ipv4Addr,
    child: Child,
}

/// The label whose value groups soak pods (`a`, `b`: stable Services; `churn`).
pub(crate) const GROUP: &str = "soak";

/// Makes pod `name` on `node` in `group`, serving and Ready.
pub(crate) fn add(
    lab: &mut Lab,
    cni: &NodeCni,
    name: &str,
    node: &str,
    group: &str,
) -> anyhow::Result<SoakPod> {
    let ns = lab.namespace(name)?;
    let netns = ns.name().to_owned();
    crate::resolv::write(&netns, "default")?;
    let ip = cni
        .add(&netns, &netns)
        .with_context(|| format!("CNI ADD {name}"))?;
    let mut cmd = Command::new(lab.bins().lab());
    cmd.arg("--lab-dir").arg(lab.dir.root()).args([
        "pod-serve",
        "--name",
        name,
        "--port",
        &PORT.to_string(),
    ]);
    let child = crate::spawn::detached(Some(&netns), &cmd, &lab.dir.log(&format!("pod-{name}")))?;
    let pod = SoakPod {
        name: name.to_owned(),
        node: node.to_owned(),
        netns,
        ip,
        child,
    };
    let node_ns = NetNs::open(&lab.state.ns(node))?;
    let addr = SocketAddr::from((ip, PORT));
    eventually(&format!("{name} serving"), Duration::from_secs(10), || {
        Ok(echo::http_from(&node_ns, addr, Duration::from_secs(1)).ok())
    })?;
    lab.api()?
        .create("/api/v1/namespaces/default/pods", &object(&pod, group))?;
    Ok(pod)
}

/// Starts deleting the pod as the API server does with a grace period: it gets a
/// `deletionTimestamp` and keeps running (and passing readiness), so its endpoint becomes
/// terminating (`ready: false, serving: true`) — out of rotation while Services have ready
/// endpoints, with its flows kept.
pub(crate) fn terminate(lab: &Lab, pod: &SoakPod) -> anyhow::Result<()> {
    let api = lab.api()?;
    let path = format!("/api/v1/namespaces/default/pods/{}", pod.name);
    let mut obj = api.get(&path)?;
    obj["metadata"]["deletionTimestamp"] = json!(crate::api::now());
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    api.put(&path, &obj)?;
    Ok(())
}

/// The terminating pod stops passing readiness (what a pod's preStop and failing probe do
/// before its process exits): its endpoint is no longer serving, and the proxies delete the
/// UDP flows still pointing at it.
pub(crate) fn stop_serving(lab: &Lab, pod: &SoakPod) -> anyhow::Result<()> {
    set_ready(lab, &pod.name, false)
}

/// Unmakes `pod`: Pod object, CNI DEL, namespace and process.
pub(crate) fn remove(lab: &mut Lab, cni: &NodeCni, mut pod: SoakPod) -> anyhow::Result<()> {
    let path = format!("/api/v1/namespaces/default/pods/{}", pod.name);
    lab.api()?
        .delete(&path)
        .with_context(|| format!("delete Pod {}", pod.name))?;
    cni.del(&pod.netns, &pod.netns)
        .with_context(|| format!("CNI DEL {}", pod.name))?;
    NetNs::remove(&pod.netns)?;
    crate::resolv::remove(&pod.netns)?;
    let _ = pod.child.kill();
    let _ = pod.child.wait();
    lab.forget_namespace(&pod.netns)
}

/// The Pod object: running, Ready, serving HTTP and UDP on [`PORT`].
fn object(pod: &SoakPod, group: &str) -> Value {
    let index = pod.node.trim_start_matches("node").parse().unwrap_or(1);
    let host = crate::up::network::node_ip(index);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": "default", "labels": {GROUP: group}},
        "spec": {"nodeName": pod.node, "containers": [{
            "name": "echo", "image": "sluice-lab",
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                      {"name": "udp", "containerPort": PORT, "protocol": "UDP"}]}]},
        "status": crate::up::pod_status(pod.ip, host, &crate::api::now()),
    })
}
