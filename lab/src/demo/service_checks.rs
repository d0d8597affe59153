//! The demo's Service checks: each Service created from YAML, checked with real traffic
//! through the rules `sluice-proxy` programmed from the API server.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::checks::Ctx;
use super::services::Allocated;
use super::traffic::{self, Proto, tally, until_answered};
use crate::up::network::{CLIENT_IP, node_ip};
use crate::up::{eventually, set_ready};

pub(crate) type Services = BTreeMap<&'static str, Allocated>;

fn vip(s: &Services, name: &str) -> anyhow::Result<SocketAddr> {
    let a = s.get(name).with_context(|| format!("no service {name}"))?;
    Ok(SocketAddr::from((a.cluster_ip, a.port)))
}

fn node_port(s: &Services, name: &str, node: u8) -> anyhow::Result<SocketAddr> {
    let a = s.get(name).with_context(|| format!("no service {name}"))?;
    let np = a
        .node_port
        .with_context(|| format!("{name} has no nodePort"))?;
    Ok(SocketAddr::from((node_ip(node), np)))
}

/// ClusterIP from web-1: every pod on both nodes answers.
pub(crate) fn cluster_ip(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("web-1")?, vip(s, "web")?);
    until_answered(&ns, Proto::Http, to)?;
    let took = c.created.get().map(|t| t.elapsed()).unwrap_or_default();
    let t = tally(&ns, to, 40)?;
    t.all_answered(40)?;
    ensure!(
        t.by_pod.len() == c.lab.state.pods.len(),
        "only {}",
        t.summary()
    );
    Ok(format!(
        "{to}: served {:.0} ms after kubectl create; 40/40: {}",
        took.as_secs_f64() * 1e3,
        t.summary()
    ))
}

/// UDP ClusterIP from a pod on node 2.
pub(crate) fn udp(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("web-3")?, vip(s, "dns")?);
    until_answered(&ns, Proto::Udp, to)?;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(traffic::one(&ns, Proto::Udp, to)?.backend);
    }
    ensure!(seen.len() > 1, "only {seen:?} answered 20 datagrams");
    Ok(format!(
        "{to}/UDP: 20/20 datagrams answered by {}",
        seen.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// NodePort on node 1 from the external client: answered by pods on both nodes, the source
/// masqueraded to node 1's address on the way out (`cni0`'s to its own pods, `flannel.1`'s
/// over VXLAN) — never the client's.
pub(crate) fn nodeport(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("client")?, node_port(s, "web-np", 1)?);
    until_answered(&ns, Proto::Http, to)?;
    let t = tally(&ns, to, 20)?;
    t.all_answered(20)?;
    let node1 = c.ns("node1")?.ip(["-4", "-o", "addr", "show"])?;
    let on_node1 = |ip: &IpAddr| node1.contains(&format!(" {ip}/"));
    ensure!(
        t.sources.iter().all(on_node1),
        "sources seen {:?}",
        t.sources
    );
    ensure!(t.by_pod.len() > 1, "only {}", t.summary());
    let seen: Vec<String> = t.sources.iter().map(ToString::to_string).collect();
    Ok(format!(
        "client -> {to}: 20/20 ({}); pods saw node1's {} (SNAT)",
        t.summary(),
        seen.join(", ")
    ))
}

/// eTP=Local NodePort on node 2: node 2's pods only, the client's address kept.
pub(crate) fn local(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("client")?, node_port(s, "web-local", 2)?);
    until_answered(&ns, Proto::Http, to)?;
    let t = tally(&ns, to, 20)?;
    t.all_answered(20)?;
    let on_node2 = |p: &str| c.lab.state.pod(p).is_some_and(|r| r.node == "node2");
    ensure!(
        t.pods().iter().all(|p| on_node2(p)),
        "answered: {}",
        t.summary()
    );
    ensure!(
        t.sources.iter().all(|ip| *ip == IpAddr::from(CLIENT_IP)),
        "sources seen {:?}",
        t.sources
    );
    Ok(format!(
        "client -> {to}: only node2's {}; source {CLIENT_IP} kept",
        t.summary()
    ))
}

/// sessionAffinity: ClientIP: 20 connections from one pod land on one pod.
pub(crate) fn affinity(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("web-2")?, vip(s, "sticky")?);
    until_answered(&ns, Proto::Http, to)?;
    let t = tally(&ns, to, 20)?;
    t.all_answered(20)?;
    ensure!(t.by_pod.len() == 1, "spread over {}", t.summary());
    Ok(format!("web-2 -> {to}: 20/20 to {}", t.summary()))
}

/// No endpoints: the connection is refused at once (REJECT), not left to time out.
pub(crate) fn reject(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("web-1")?, vip(s, "nothing")?);
    let start = Instant::now();
    let err = eventually("refused", Duration::from_secs(10), || {
        match traffic::one(&ns, Proto::Http, to) {
            Ok(r) => anyhow::bail!("answered by {}", r.backend),
            Err(e) => {
                let text = format!("{e:#}");
                Ok(text.to_lowercase().contains("refused").then_some(text))
            }
        }
    })?;
    let took = start.elapsed();
    let refused = err.rsplit(": ").next().unwrap_or(&err).to_owned();
    Ok(format!(
        "web-1 -> {to}: {refused} after {:.1} ms",
        took.as_secs_f64() * 1e3
    ))
}

/// web-4 becomes not ready: the controller drops it, the proxy stops sending to it.
pub(crate) fn not_ready(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let (ns, to) = (c.ns("web-1")?, vip(s, "web")?);
    let start = Instant::now();
    set_ready(c.lab, "web-4", false)?;
    // 60 answers none of which is web-4's: were it still one of 4 endpoints, that happens
    // with probability (3/4)^60 ≈ 3e-8 (12 answers, tried first, misread 3 % of runs).
    eventually("web-4 out of rotation", Duration::from_secs(10), || {
        let t = tally(&ns, to, 60)?;
        Ok((t.failed == 0 && !t.by_pod.contains_key("web-4")).then_some(()))
    })?;
    let took = start.elapsed();
    let t = tally(&ns, to, 30)?;
    t.all_answered(30)?;
    ensure!(!t.by_pod.contains_key("web-4"), "web-4 still answers");
    // kubectl shows it as a user would see it in a cluster.
    let row = super::services::kubectl(c.lab.dir.root(), &["get", "pod", "web-4", "--no-headers"])?;
    let ready = row.split_whitespace().nth(1).unwrap_or_default().to_owned();
    ensure!(ready == "0/1", "kubectl get pod web-4 says READY {ready:?}");
    set_ready(c.lab, "web-4", true)?;
    Ok(format!(
        "out of rotation after {:.0} ms (kubectl: READY 0/1); 30/30: {}",
        took.as_secs_f64() * 1e3,
        t.summary()
    ))
}

/// Cluster DNS: a Service created now with kubectl's protobuf generator resolves from a pod
/// (timed from `kubectl create`), and `curl http://web/` from web-2 — the name through its
/// search path, the query through the proxy to kube-dns, the request to a pod — is answered.
pub(crate) fn by_name(c: &Ctx<'_>, s: &Services) -> anyhow::Result<String> {
    let netns = c.pod("web-2")?.netns.clone();
    let out = super::services::kubectl(
        c.lab.dir.root(),
        &[
            "create",
            "service",
            "clusterip",
            "fresh",
            "--tcp=80:8080",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    )?;
    let fresh = out.trim().to_owned();
    let created = Instant::now();
    eventually("fresh resolves", Duration::from_secs(5), || {
        Ok(crate::up::dns::resolve(&netns, "fresh")?.filter(|a| *a == fresh))
    })?;
    let resolved = created.elapsed();
    let web = vip(s, "web")?.ip().to_string();
    let got = crate::up::dns::resolve(&netns, "web")?;
    ensure!(
        got.as_deref() == Some(web.as_str()),
        "web resolved to {got:?}, not {web}"
    );
    let body = eventually("curl http://web/", Duration::from_secs(5), || {
        let out = crate::exec::in_pod(&netns, "curl")
            .args(["-sS", "--max-time", "2", "http://web/"])
            .output()?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((out.status.success() && body.starts_with("sluice-echo ")).then_some(body))
    })?;
    let backend = body.split_whitespace().nth(1).unwrap_or("?").to_owned();
    Ok(format!(
        "new Service fresh resolved {:.0} ms after kubectl create; curl http://web/ -> {backend}",
        resolved.as_secs_f64() * 1e3
    ))
}
