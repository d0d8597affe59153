//! What changes during the soak, one step at a time:
//! - a **rolling update** of a stable Service, as a Deployment does it: a new pod is made and
//!   is Ready before anything else happens, and programmed on every node; only then does the
//!   oldest pod start terminating (a `deletionTimestamp`, still running and passing
//!   readiness: its endpoint is `ready: false, serving: true, terminating: true`), and only
//!   once no node sends new connections to it (its address is gone from every node's rules)
//!   and a grace second has passed for requests in flight does it stop serving (readiness
//!   fails, as after a preStop hook), and only once no node keeps a UDP flow answered by it is
//!   it deleted — so a client of a stable Service always has a ready endpoint. (Deleting it
//!   while still serving loses the UDP requests whose source port matches a flow still
//!   pointing at it, until the proxies hear of the deletion: kube-proxy's rule, which Sluice
//!   follows, keeps the flows of serving endpoints — the soak saw about one such loss per
//!   3,000 UDP requests before it waited.) (Flipping the old pod's readiness off instead
//!   makes it not serving, and kube-proxy's rule — which Sluice follows — deletes its UDP
//!   flows at once, losing the datagrams in flight: that is what readiness failing means,
//!   not what a rolling update does.)
//! - **churn pods** added and removed abruptly (no readiness dance) behind the churn Services;
//! - **churn Services** created (each checked once with a request) and deleted.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sluice_testbed::NetNs;

use super::pods::{self, SoakPod};
use crate::cni::NodeCni;
use crate::echo;
use crate::up::{Lab, eventually};

/// How long a change may take to reach every node's rules.
const PROGRAMMED: Duration = Duration::from_secs(20);
/// In-flight requests to an endpoint that left the rules finish within this.
const GRACE: Duration = Duration::from_secs(1);
/// Churn pods and churn Services kept at once.
const CHURN_PODS: usize = 3;
const CHURN_SERVICES: usize = 2;

/// Counts of what the churn did.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) rolls: u64,
    pub(crate) pods_added: u64,
    pub(crate) pods_removed: u64,
    pub(crate) services_created: u64,
    pub(crate) services_deleted: u64,
    pub(crate) services_reached: u64,
    pub(crate) services_unreached: Vec<String>,
    /// UDP flows to a stable Service still answered by a pod that stopped serving, left by the
    /// proxies: what kube-proxy's conntrack rule exists to delete.
    pub(crate) stale_udp: Vec<String>,
}

/// The churn's state.
pub(crate) struct Churn {
    cnis: BTreeMap<String, NodeCni>,
    nodes: Vec<String>,
    /// Pods behind each stable group, oldest first.
    stable: BTreeMap<String, VecDeque<SoakPod>>,
    /// Each stable group's ClusterIP.
    vips: BTreeMap<String, Ipv4Addr>,
    churn_pods: VecDeque<SoakPod>,
    churn_services: VecDeque<(String, Ipv4Addr)>,
    /// The namespace requests to churn Services are sent from.
    prober: NetNs,
    next: u64,
    pub(crate) stats: Stats,
    /// Addresses of every pod removed, ClusterIPs of every Service deleted.
    pub(crate) removed_ips: Vec<Ipv4Addr>,
    pub(crate) deleted_vips: Vec<Ipv4Addr>,
    /// What happened when (seconds since `t0`), to line failures up with.
    pub(crate) events: Vec<(f64, String)>,
    t0: Instant,
}

impl Churn {
    pub(crate) fn new(lab: &Lab, prober: NetNs, t0: Instant) -> Self {
        let nodes = lab.node_names();
        let cnis = (nodes.iter())
            .map(|n| {
                let cni = NodeCni::in_dir(lab.state.ns(n), lab.node_dir(n));
                (n.clone(), cni)
            })
            .collect();
        Self {
            cnis,
            nodes,
            stable: BTreeMap::new(),
            vips: BTreeMap::new(),
            churn_pods: VecDeque::new(),
            churn_services: VecDeque::new(),
            prober,
            next: 0,
            stats: Stats::default(),
            removed_ips: Vec::new(),
            deleted_vips: Vec::new(),
            events: Vec::new(),
            t0,
        }
    }

    fn event(&mut self, what: String) {
        self.events.push((self.t0.elapsed().as_secs_f64(), what));
    }

    /// A new pod in `group` on the next node.
    fn add_pod(&mut self, lab: &mut Lab, group: &str) -> anyhow::Result<SoakPod> {
        self.next += 1;
        let node = self.nodes[(self.next as usize) % self.nodes.len()].clone();
        let name = format!("s-{group}-{}", self.next);
        let cni = self.cnis.get(&node).context("no CNI for node")?;
        let pod = pods::add(lab, cni, &name, &node, group)?;
        self.stats.pods_added += 1;
        self.event(format!("{name} {} ready on {node}", pod.ip));
        Ok(pod)
    }

    fn remove_pod(&mut self, lab: &mut Lab, pod: SoakPod) -> anyhow::Result<()> {
        let cni = self.cnis.get(&pod.node).context("no CNI for node")?;
        let ip = pod.ip;
        let name = pod.name.clone();
        pods::remove(lab, cni, pod)?;
        self.event(format!("{name} {ip} removed"));
        self.removed_ips.push(ip);
        self.stats.pods_removed += 1;
        Ok(())
    }

    /// Stable Service `soak-<group>` with `pods` ready pods, programmed everywhere; its
    /// ClusterIP.
    pub(crate) fn stable_service(
        &mut self,
        lab: &mut Lab,
        group: &str,
        pods: usize,
    ) -> anyhow::Result<Ipv4Addr> {
        let vip = create_service(lab, &format!("soak-{group}"), group, true)?;
        self.vips.insert(group.to_owned(), vip);
        for _ in 0..pods {
            let pod = self.add_pod(lab, group)?;
            wait_programmed(lab, pod.ip, true)?;
            self.stable
                .entry(group.to_owned())
                .or_default()
                .push_back(pod);
        }
        Ok(vip)
    }

    /// One rolling step of `group` (see the module documentation).
    pub(crate) fn roll(&mut self, lab: &mut Lab, group: &str) -> anyhow::Result<()> {
        let new = self.add_pod(lab, group)?;
        wait_programmed(lab, new.ip, true).context("the new endpoint")?;
        self.event(format!("{} programmed on every node", new.name));
        let list = self.stable.entry(group.to_owned()).or_default();
        list.push_back(new);
        let old = list.pop_front().context("no pod to roll")?;
        pods::terminate(lab, &old)?;
        self.event(format!("{} terminating", old.name));
        wait_programmed(lab, old.ip, false).context("the terminating endpoint")?;
        self.event(format!("{} out of every node's rules", old.name));
        std::thread::sleep(GRACE);
        // Before its process ends, the pod stops serving; the proxies must then delete the UDP
        // flows still answered by it (a client whose source port matches one would otherwise
        // keep reaching it, and lose its requests once it is gone).
        pods::stop_serving(lab, &old)?;
        self.event(format!("{} not serving", old.name));
        let vip = self.vips.get(group).copied().context("no ClusterIP")?;
        if let Err(e) = eventually("stale UDP flows deleted", PROGRAMMED, || {
            let flows = stale_udp(lab, vip, old.ip)?;
            Ok(flows.is_empty().then_some(()))
        }) {
            let flows = stale_udp(lab, vip, old.ip).unwrap_or_default();
            self.stats
                .stale_udp
                .push(format!("{e:#}: {}", flows.join("; ")));
        }
        self.remove_pod(lab, old)?;
        self.stats.rolls += 1;
        Ok(())
    }

    /// Adds a churn pod; removes the oldest, as is, beyond [`CHURN_PODS`].
    pub(crate) fn churn_pod(&mut self, lab: &mut Lab) -> anyhow::Result<()> {
        let pod = self.add_pod(lab, "churn")?;
        self.churn_pods.push_back(pod);
        while self.churn_pods.len() > CHURN_PODS {
            let Some(old) = self.churn_pods.pop_front() else {
                break;
            };
            self.remove_pod(lab, old)?;
        }
        Ok(())
    }

    /// Creates a churn Service, checks it answers once; deletes the oldest beyond
    /// [`CHURN_SERVICES`].
    pub(crate) fn churn_service(&mut self, lab: &mut Lab) -> anyhow::Result<()> {
        self.next += 1;
        let name = format!("soak-c-{}", self.next);
        let vip = create_service(lab, &name, "churn", false)?;
        self.stats.services_created += 1;
        self.event(format!("Service {name} {vip} created"));
        let addr = SocketAddr::from((vip, 80));
        let reached = eventually(&name, PROGRAMMED, || {
            let reply = echo::http_from(&self.prober, addr, Duration::from_secs(2));
            Ok(reply.ok().filter(|r| r.backend.starts_with("s-churn-")))
        });
        match reached {
            Ok(_) => self.stats.services_reached += 1,
            Err(e) => self.stats.services_unreached.push(format!("{e:#}")),
        }
        self.churn_services.push_back((name, vip));
        while self.churn_services.len() > CHURN_SERVICES {
            let Some((old, vip)) = self.churn_services.pop_front() else {
                break;
            };
            delete_service(lab, &old)?;
            self.event(format!("Service {old} {vip} deleted"));
            self.deleted_vips.push(vip);
            self.stats.services_deleted += 1;
        }
        Ok(())
    }

    /// Removes every soak pod and Service (the clients must be stopped).
    pub(crate) fn clean_up(&mut self, lab: &mut Lab) -> anyhow::Result<()> {
        while let Some((name, vip)) = self.churn_services.pop_front() {
            delete_service(lab, &name)?;
            self.deleted_vips.push(vip);
            self.stats.services_deleted += 1;
        }
        let groups: Vec<String> = self.stable.keys().cloned().collect();
        for group in groups {
            let name = format!("soak-{group}");
            let vip = service_ip(lab, &name)?;
            delete_service(lab, &name)?;
            self.deleted_vips.push(vip);
            let pods = self.stable.remove(&group).unwrap_or_default();
            for pod in pods {
                self.remove_pod(lab, pod)?;
            }
        }
        while let Some(pod) = self.churn_pods.pop_front() {
            self.remove_pod(lab, pod)?;
        }
        Ok(())
    }
}

/// Creates Service `name` selecting `soak=<group>`: TCP 80 and (for stable ones) UDP 53, both
/// to the pods' 8080; its ClusterIP.
fn create_service(lab: &Lab, name: &str, group: &str, udp: bool) -> anyhow::Result<Ipv4Addr> {
    let mut ports =
        vec![json!({"name": "http", "port": 80, "targetPort": echo::PORT, "protocol": "TCP"})];
    if udp {
        ports.push(json!({"name": "dns", "port": 53, "targetPort": echo::PORT, "protocol": "UDP"}));
    }
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {pods::GROUP: group}, "ports": ports}});
    let created = lab
        .api()?
        .create("/api/v1/namespaces/default/services", &svc)?;
    created["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("Service {name} without a ClusterIP"))
}

fn service_ip(lab: &Lab, name: &str) -> anyhow::Result<Ipv4Addr> {
    let svc = lab
        .api()?
        .get(&format!("/api/v1/namespaces/default/services/{name}"))?;
    svc["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("Service {name} without a ClusterIP"))
}

fn delete_service(lab: &Lab, name: &str) -> anyhow::Result<()> {
    lab.api()?
        .delete(&format!("/api/v1/namespaces/default/services/{name}"))?;
    Ok(())
}

/// Waits until every node's rules send traffic to `ip` (`present`) or none do.
fn wait_programmed(lab: &Lab, ip: Ipv4Addr, present: bool) -> anyhow::Result<()> {
    let nodes: Vec<NetNs> = (lab.node_names().iter())
        .map(|n| NetNs::open(&lab.state.ns(n)))
        .collect::<Result<_, _>>()?;
    let mode = lab.state.proxy_mode.clone();
    let what = format!(
        "{ip} {} every node's rules",
        if present { "in" } else { "out of" }
    );
    eventually(&what, PROGRAMMED, || {
        let all = nodes
            .iter()
            .map(|ns| rules(ns, &mode).map(|r| sends_to(&r, ip) == present))
            .collect::<anyhow::Result<Vec<bool>>>()?;
        Ok(all.iter().all(|ok| *ok).then_some(()))
    })
}

/// UDP flows in any node sent to `vip` and answered by `endpoint`.
fn stale_udp(lab: &Lab, vip: Ipv4Addr, endpoint: Ipv4Addr) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for node in lab.node_names() {
        let ns = NetNs::open(&lab.state.ns(&node))?;
        let vip = vip.to_string();
        let flows = ns
            .exec(["conntrack", "-L", "-p", "udp", "--orig-dst", &vip])
            .unwrap_or_default();
        let reply = format!("src={endpoint} ");
        out.extend(
            (flows.lines())
                .filter(|l| {
                    l.split(" src=")
                        .nth(2)
                        .is_some_and(|r| format!("src={r}").starts_with(&reply))
                })
                .map(|l| format!("{node}: {l}")),
        );
    }
    Ok(out)
}

/// The node's Service rules as text: the `ip sluice` table, or iptables' nat table.
/// The rules DNAT to `ip`: a rule's target (`dnat to ip:port`, `--to-destination ip:port`),
/// or a map element's value (`… : ip . port`, the nftables layout of Services reached only
/// at their ClusterIP).
fn sends_to(rules: &str, ip: Ipv4Addr) -> bool {
    rules.contains(&format!("{ip}:")) || rules.contains(&format!(": {ip} . "))
}

pub(crate) fn rules(ns: &NetNs, mode: &str) -> anyhow::Result<String> {
    let out = match mode {
        "iptables" => ns.exec(["iptables-save", "-t", "nat"])?,
        _ => ns.exec(["nft", "list", "table", "ip", "sluice"])?,
    };
    Ok(out)
}
