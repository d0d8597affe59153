//! One sync's `iptables-restore` input, line for line what kube-proxy's `syncProxyRules`
//! writes for the same Services, EndpointSlices and settings (same chains, rule order, match
//! order, comments and targets), so `iptables-save` on a Sluice node reads like on a
//! kube-proxy node.
//!
//! As in kube-proxy, the top-level chains (filter: KUBE-SERVICES, KUBE-EXTERNAL-SERVICES,
//! KUBE-FORWARD, KUBE-NODEPORTS, KUBE-PROXY-FIREWALL[, KUBE-FIREWALL]; nat: KUBE-SERVICES,
//! KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ) are rewritten on every sync, and only
//! the per-Service chains (KUBE-SVC/SVL/EXT/FW/SEP) of Services that changed are written on a
//! partial one; a chain line `:X - [0:0]` flushes the chain under `--noflush`. Stale chains
//! are flushed (chain line) and deleted (`-X`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use sluice_model::service::{Endpoint, IpFamily, ServiceName, ServicePort};
use sluice_proxy_core::Snapshot;

use crate::config::{IptConfig, NFACCT_INVALID, NFACCT_LOCALHOST};
use crate::names::*;

/// Endpoints above which per-endpoint comments are dropped (kube-proxy's large-cluster
/// mode: the ruleset shrinks by 40 %).
pub(crate) const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Which Services' own chains a sync writes.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every Service (a full sync).
    All,
    /// Only these (a partial sync: the Services whose definition or endpoints changed).
    Only(&'a BTreeSet<ServiceName>),
}

impl Scope<'_> {
    fn writes(&self, service: &ServiceName) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(service),
        }
    }
}

/// One table's chains as a sync writes them: each declared chain (a chain line flushes it
/// under `--noflush`) with its rules, in order. Indexed by name, and the chain written last
/// is found without a lookup (a Service's rules come chain by chain): a full sync adds
/// 110,000 rules at 10,000 Services. A chain's rules are kept as one text, not a string
/// per rule (freeing a rendering of 10,000 Services took 45 ms that way, 25 ms this way).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableOut {
    /// Each declared chain with its rules, in declaration order.
    pub(crate) chains: Vec<ChainOut>,
    /// (A fast hash, seeded per map: the names are mostly sha256 digests, and hashing them
    /// was a tenth of the rendering with the default one.)
    index: foldhash::HashMap<String, usize>,
}

/// A declared chain and its rules (`-A …` lines, each ending in a newline).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChainOut {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) rules: usize,
}

impl TableOut {
    /// The position of `chain`, declaring it.
    pub(crate) fn declare(&mut self, chain: &str) -> usize {
        if let Some(last) = self.chains.last()
            && last.name == chain
        {
            return self.chains.len() - 1;
        }
        if let Some(&i) = self.index.get(chain) {
            return i;
        }
        self.chains.push(ChainOut {
            name: chain.to_owned(),
            ..ChainOut::default()
        });
        self.index.insert(chain.to_owned(), self.chains.len() - 1);
        self.chains.len() - 1
    }

    /// Appends an `-A CHAIN …` line to its chain (declaring it).
    fn add(&mut self, line: String) {
        let chain = line
            .strip_prefix("-A ")
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let i = self.declare(chain);
        let c = &mut self.chains[i];
        c.text.push_str(&line);
        c.text.push('\n');
        c.rules += 1;
    }

    /// The declared chains' names, in order.
    pub fn order(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.name.as_str())
    }

    /// Appends `other`'s chains: rules of a chain both have go after this one's.
    pub(crate) fn append(&mut self, other: TableOut) {
        for c in other.chains {
            let i = self.declare(&c.name);
            self.chains[i].text.push_str(&c.text);
            self.chains[i].rules += c.rules;
        }
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.chains.iter().map(|c| c.rules).sum()
    }

    /// No chain declared.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Every rule, chain by chain, as the restore input holds them.
    pub(crate) fn write_rules(&self, out: &mut String) {
        for c in &self.chains {
            out.push_str(&c.text);
        }
    }
}

/// One sync's rules and what they amount to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The filter table's chains (all of them are kube-proxy's top-level chains).
    pub filter: TableOut,
    /// The nat table's chains: the top-level ones and those of the Services written.
    pub nat: TableOut,
    /// Stale per-Service chains to flush and delete.
    pub stale: Vec<String>,
    /// nat rules of unchanged Services, programmed and not rewritten.
    pub skipped_nat_rules: usize,
    /// Every per-Service chain in use after this sync, by Service (written or not).
    pub active: BTreeMap<ServiceName, BTreeSet<String>>,
    /// Whether the sync ran in large-cluster mode.
    pub large_cluster: bool,
}

impl Rendered {
    /// The `iptables-restore --noflush` input: every chain rendered, then the stale chains'
    /// deletions.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(64 * (self.filter.len() + self.nat.len()) + 64);
        for (table, t) in [("filter", &self.filter), ("nat", &self.nat)] {
            let _ = writeln!(out, "*{table}");
            for c in t.order() {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
            if table == "nat" {
                for c in &self.stale {
                    let _ = writeln!(out, ":{c} - [0:0]");
                }
            }
            t.write_rules(&mut out);
            if table == "nat" {
                for c in &self.stale {
                    let _ = writeln!(out, "-X {c}");
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// The two tables being written.
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) filter: TableOut,
    pub(crate) nat: TableOut,
    pub(crate) n_skipped: usize,
}

/// Where one Service port's nat chains and rules go: the nat table, or (a partial sync of an
/// unchanged Service) nowhere, only counted.
struct Nat<'b> {
    bufs: &'b mut Buffers,
    write: bool,
}

impl Nat<'_> {
    fn chain(&mut self, name: &str) {
        if self.write {
            self.bufs.nat.declare(name);
        }
    }

    fn rule(&mut self, line: String) {
        match self.write {
            true => self.bufs.nat.add(line),
            false => self.bufs.n_skipped += 1,
        }
    }
}

impl Buffers {
    fn filter(&mut self, line: String) {
        self.filter.add(line);
    }

    fn nat(&mut self, line: String) {
        self.nat.add(line);
    }
}

/// Renders one sync of `snap` with `cfg`: the Services in `scope` get their chains written,
/// `stale` chains are flushed and deleted.
pub fn render(cfg: &IptConfig, snap: &Snapshot, scope: Scope<'_>, stale: &[String]) -> Rendered {
    render_split(cfg, snap, scope, stale, PARALLEL_PORTS)
}

/// [`render`] on one thread whatever the size: what the two-thread rendering must equal.
pub fn render_one_pass(
    cfg: &IptConfig,
    snap: &Snapshot,
    scope: Scope<'_>,
    stale: &[String],
) -> Rendered {
    render_split(cfg, snap, scope, stale, usize::MAX)
}

fn render_split(
    cfg: &IptConfig,
    snap: &Snapshot,
    scope: Scope<'_>,
    stale: &[String],
    parallel_from: usize,
) -> Rendered {
    let mut b = Buffers::default();
    top_level(cfg, &mut b);
    let large = large_cluster(snap);
    let ports: Vec<&ServicePort> = snap.service_ports().collect();
    let half = ports.len() / 2;
    let mut active = Vec::new();
    if half < parallel_from {
        render_ports(cfg, snap, scope, large, &ports, &mut b, &mut active);
    } else {
        // Two halves on two threads, the second appended to the first: the same lines in
        // the same order as one pass (every chain but the top-level ones belongs to one
        // port), in about half the time.
        let (first, second) = ports.split_at(half);
        let (mut b2, active2) = std::thread::scope(|s| {
            let other = s.spawn(|| {
                let (mut b2, mut active2) = (Buffers::default(), Vec::new());
                render_ports(cfg, snap, scope, large, second, &mut b2, &mut active2);
                (b2, active2)
            });
            render_ports(cfg, snap, scope, large, first, &mut b, &mut active);
            other.join().expect("the render thread does not panic")
        });
        b.filter.append(std::mem::take(&mut b2.filter));
        b.nat.append(std::mem::take(&mut b2.nat));
        b.n_skipped += b2.n_skipped;
        active.extend(active2);
    }
    tail(cfg, &mut b);
    Rendered {
        filter: b.filter,
        nat: b.nat,
        stale: stale.to_vec(),
        skipped_nat_rules: b.n_skipped,
        active: by_service(active),
        large_cluster: large,
    }
}

/// kube-proxy's large-cluster mode: more endpoints than [`LARGE_CLUSTER_ENDPOINTS`].
pub(crate) fn large_cluster(snap: &Snapshot) -> bool {
    let total: usize = snap
        .service_ports()
        .map(|p| snap.endpoints(&p.name).len())
        .sum();
    total > LARGE_CLUSTER_ENDPOINTS
}

/// Service ports per render thread below which one thread renders them all.
const PARALLEL_PORTS: usize = 1000;

/// Each Service's chains, collected in the order the ports come and made a map at the end
/// (no map lookup per port).
pub(crate) type Active = Vec<(ServiceName, BTreeSet<String>)>;

/// Renders `ports` into `b`, recording each Service's chains in `active` (a Service's ports
/// are consecutive in a snapshot; [`by_service`] merges any that are not).
pub(crate) fn render_ports(
    cfg: &IptConfig,
    snap: &Snapshot,
    scope: Scope<'_>,
    large: bool,
    ports: &[&ServicePort],
    b: &mut Buffers,
    active: &mut Active,
) {
    for port in ports {
        let service = port.name.service();
        let write = scope.writes(&service);
        if active.last().is_none_or(|(last, _)| *last != service) {
            active.push((service, BTreeSet::new()));
        }
        let chains = &mut active.last_mut().expect("pushed above").1;
        let ctx = PortRender {
            cfg,
            snap,
            port,
            chains: PortChains::of(&port.name),
            proto: port.name.protocol.as_lower_str(),
            large,
        };
        ctx.render(b, write, chains);
    }
}

/// `active` as a map: sorted (already, but for Services whose ports were not consecutive),
/// merged, then built in bulk.
pub(crate) fn by_service(mut active: Active) -> BTreeMap<ServiceName, BTreeSet<String>> {
    active.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Active = Vec::with_capacity(active.len());
    for (service, chains) in active {
        match merged.last_mut() {
            Some((last, all)) if *last == service => all.extend(chains),
            _ => merged.push((service, chains)),
        }
    }
    merged.into_iter().collect()
}

/// The chain lines of the top-level chains, KUBE-POSTROUTING, KUBE-MARK-MASQ and (IPv4 with
/// localhost NodePorts) KUBE-FIREWALL.
pub(crate) fn top_level(cfg: &IptConfig, b: &mut Buffers) {
    for chain in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        b.filter.declare(chain);
    }
    for chain in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        b.nat.declare(chain);
    }
    let m = &cfg.masquerade_mark;
    let post = KUBE_POSTROUTING;
    b.nat(format!("-A {post} -m mark ! --mark {m}/{m} -j RETURN"));
    b.nat(format!("-A {post} -j MARK --xor-mark {m}"));
    let random = if cfg.random_fully {
        " --random-fully"
    } else {
        ""
    };
    b.nat(format!(
        "-A {post} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j \
             MASQUERADE{random}"
    ));
    b.nat(format!("-A {KUBE_MARK_MASQ} -j MARK --or-mark {m}"));
    if cfg.family == IpFamily::V4 && cfg.localhost_nodeports {
        b.filter(format!(
            "-A {KUBELET_FIREWALL} -m comment --comment \"block incoming localnet connections\" \
             -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
             -j DROP"
        ));
    }
}

/// The nodeports tail rule(s) of nat KUBE-SERVICES and the KUBE-FORWARD rules.
pub(crate) fn tail(cfg: &IptConfig, b: &mut Buffers) {
    let comment = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the \
                   last rule in this chain\"";
    match &cfg.nodeport_addresses {
        None => {
            let mut dest = "-m addrtype --dst-type LOCAL".to_owned();
            if cfg.family == IpFamily::V6 {
                dest.push_str(" ! -d ::1/128");
            } else if !cfg.localhost_nodeports {
                dest.push_str(" ! -d 127.0.0.0/8");
            }
            b.nat(format!(
                "-A {KUBE_SERVICES} {comment} {dest} -j {KUBE_NODEPORTS}"
            ));
        }
        Some(ips) => {
            for ip in ips {
                let served = !ip.is_loopback() || (ip.is_ipv4() && cfg.localhost_nodeports);
                if served {
                    b.nat(format!(
                        "-A {KUBE_SERVICES} {comment} -d {ip} -j {KUBE_NODEPORTS}"
                    ));
                }
            }
        }
    }
    if !cfg.tcp_be_liberal {
        let nfacct = match cfg.nfacct {
            true => format!(" -m nfacct --nfacct-name {NFACCT_INVALID}"),
            false => String::new(),
        };
        b.filter(format!(
            "-A {KUBE_FORWARD} -m conntrack --ctstate INVALID{nfacct} -j DROP"
        ));
    }
    let m = &cfg.masquerade_mark;
    b.filter(format!(
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark \
         {m}/{m} -j ACCEPT"
    ));
    b.filter(format!(
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m \
         conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    ));
}

/// One Service port's rules.
struct PortRender<'a> {
    cfg: &'a IptConfig,
    snap: &'a Snapshot,
    port: &'a ServicePort,
    chains: PortChains,
    proto: &'static str,
    large: bool,
}

impl PortRender<'_> {
    fn render(&self, b: &mut Buffers, write: bool, active: &mut BTreeSet<String>) {
        let Some(cat) = self.snap.categorize(&self.port.name) else {
            return;
        };
        let port = self.port;
        let name = &self.chains.name;
        let cluster_eps = cat.cluster.as_deref().unwrap_or_default();
        let local_eps = cat.local.as_deref().unwrap_or_default();
        let has_endpoints = cat.has_any_endpoints;
        let uses_cluster = !cluster_eps.is_empty() && port.uses_cluster_endpoints();
        let uses_local = !local_eps.is_empty() && port.uses_local_endpoints();
        let internal_local =
            port.internal_traffic_policy == sluice_model::service::TrafficPolicy::Local;
        let external_local =
            port.external_traffic_policy == sluice_model::service::TrafficPolicy::Local;
        let internal_chain = if internal_local {
            &self.chains.local
        } else {
            &self.chains.cluster
        };
        let has_internal = has_endpoints && !(internal_local && local_eps.is_empty());
        let external_policy = if external_local {
            &self.chains.local
        } else {
            &self.chains.cluster
        };
        let has_external = has_endpoints && !(external_local && local_eps.is_empty());
        let uses_external = has_endpoints && port.externally_accessible();
        let uses_fw = has_endpoints
            && !port.load_balancer_vips.is_empty()
            && !port.load_balancer_source_ranges.is_empty();
        let lb_chain = if uses_fw {
            &self.chains.firewall
        } else {
            &self.chains.external
        };
        let (internal_target, internal_comment, external_target, external_comment) =
            match has_endpoints {
                false => (
                    "REJECT",
                    format!("\"{name} has no endpoints\""),
                    "REJECT",
                    format!("\"{name} has no endpoints\""),
                ),
                true => (
                    "DROP",
                    format!("\"{name} has no local endpoints\""),
                    "DROP",
                    format!("\"{name} has no local endpoints\""),
                ),
            };
        let p = self.proto;
        let svc_port = port.port;
        let Some(cip) = port.cluster_ips.first() else {
            return;
        };
        // Capture the clusterIP.
        let vip = |ip: &IpAddr| format!("-m {p} -p {p} -d {ip} --dport {svc_port}");
        if has_internal {
            b.nat(format!(
                "-A {KUBE_SERVICES} -m comment --comment \"{name} cluster IP\" {} -j {internal_chain}",
                vip(cip)
            ));
        } else {
            b.filter(format!(
                "-A {KUBE_SERVICES} -m comment --comment {internal_comment} {} -j {internal_target}",
                vip(cip)
            ));
        }
        // Capture externalIPs.
        for ip in &port.external_ips {
            if has_endpoints {
                b.nat(format!(
                    "-A {KUBE_SERVICES} -m comment --comment \"{name} external IP\" {} -j {}",
                    vip(ip),
                    self.chains.external
                ));
            }
            if !has_external {
                b.filter(format!(
                    "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {} -j \
                     {external_target}",
                    vip(ip)
                ));
            }
        }
        // Capture load-balancer ingress.
        for ip in &port.load_balancer_vips {
            if has_endpoints {
                b.nat(format!(
                    "-A {KUBE_SERVICES} -m comment --comment \"{name} loadbalancer IP\" {} -j {lb_chain}",
                    vip(ip)
                ));
            }
            if uses_fw {
                b.filter(format!(
                    "-A {KUBE_PROXY_FIREWALL} -m comment --comment \"{name} traffic not accepted \
                     by {}\" {} -j DROP",
                    self.chains.firewall,
                    vip(ip)
                ));
            }
        }
        if !has_external {
            for ip in &port.load_balancer_vips {
                b.filter(format!(
                    "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {} -j \
                     {external_target}",
                    vip(ip)
                ));
            }
        }
        // Capture nodeports.
        if let Some(np) = port.node_port {
            if has_endpoints {
                if self.cfg.localhost_nodeports
                    && self.cfg.family == IpFamily::V4
                    && self.cfg.nfacct
                {
                    b.nat(format!(
                        "-A {KUBE_NODEPORTS} -m comment --comment {name} -m {p} -p {p} -d \
                         127.0.0.0/8 --dport {np} -m nfacct --nfacct-name {NFACCT_LOCALHOST} -j {}",
                        self.chains.external
                    ));
                }
                b.nat(format!(
                    "-A {KUBE_NODEPORTS} -m comment --comment {name} -m {p} -p {p} --dport {np} -j {}",
                    self.chains.external
                ));
            }
            if !has_external {
                b.filter(format!(
                    "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} -m \
                     addrtype --dst-type LOCAL -m {p} -p {p} --dport {np} -j {external_target}"
                ));
            }
        }
        // Capture healthCheckNodePorts.
        if let Some(hc) = port.health_check_node_port {
            b.filter(format!(
                "-A {KUBE_NODEPORTS} -m comment --comment \"{name} health check node port\" -m \
                 tcp -p tcp --dport {hc} -j ACCEPT"
            ));
        }
        let mut nat = Nat { bufs: b, write };
        // Internal traffic handling: masquerade off-cluster (or all) traffic to the VIP.
        if has_internal {
            let masq = match self.cfg.masquerade_all {
                true => Some(String::new()),
                false => self.cfg.if_not_local().map(|m| format!(" {m}")),
            };
            if let Some(m) = masq {
                nat.rule(format!(
                    "-A {internal_chain} -m comment --comment \"{name} cluster IP\" {}{m} -j \
                     {KUBE_MARK_MASQ}",
                    vip(cip)
                ));
            }
        }
        if uses_external {
            self.external_chain(
                &mut nat,
                active,
                external_local,
                has_external,
                external_policy,
            );
        }
        if uses_fw {
            self.firewall_chain(&mut nat, active);
        }
        let seps = Seps::of(self, &cat.all_reachable);
        if uses_cluster {
            self.service_chain(&mut nat, active, &self.chains.cluster, cluster_eps, &seps);
        }
        if uses_local {
            self.service_chain(&mut nat, active, &self.chains.local, local_eps, &seps);
        }
        let head_comment = self.comment(name);
        for named in &seps.0 {
            self.endpoint_chain(&mut nat, active, named, &head_comment);
        }
    }

    fn external_chain(
        &self,
        nat: &mut Nat<'_>,
        active: &mut BTreeSet<String>,
        external_local: bool,
        has_external: bool,
        external_policy: &str,
    ) {
        let ext = &self.chains.external;
        let name = &self.chains.name;
        nat.chain(ext);
        active.insert(ext.clone());
        if !external_local {
            nat.rule(format!(
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external \
                 destinations\" -j {KUBE_MARK_MASQ}"
            ));
        } else {
            let cluster = &self.chains.cluster;
            if let Some(local) = self.cfg.if_local() {
                nat.rule(format!(
                    "-A {ext} -m comment --comment \"pod traffic for {name} external \
                     destinations\" {local} -j {cluster}"
                ));
            }
            nat.rule(format!(
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external \
                 destinations\" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            ));
            nat.rule(format!(
                "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external \
                 destinations\" -m addrtype --src-type LOCAL -j {cluster}"
            ));
        }
        if has_external {
            nat.rule(format!("-A {ext} -j {external_policy}"));
        }
    }

    fn firewall_chain(&self, nat: &mut Nat<'_>, active: &mut BTreeSet<String>) {
        let (fw, ext, name) = (
            &self.chains.firewall,
            &self.chains.external,
            &self.chains.name,
        );
        nat.chain(fw);
        active.insert(fw.clone());
        let head = format!("-A {fw} -m comment --comment \"{name} loadbalancer IP\"");
        let mut from_node = false;
        for net in &self.port.load_balancer_source_ranges {
            nat.rule(format!("{head} -s {net} -j {ext}"));
            from_node |= self.cfg.node_ip.is_some_and(|ip| net.contains(&ip));
        }
        if from_node {
            for ip in &self.port.load_balancer_vips {
                nat.rule(format!("{head} -s {ip} -j {ext}"));
            }
        }
        nat.rule(format!(
            "-A {fw} -m comment --comment \"other traffic to {name} will be dropped by \
             {KUBE_PROXY_FIREWALL}\""
        ));
    }

    /// A KUBE-SVC / KUBE-SVL chain: affinity checks first, then one probability rule per
    /// endpoint (the last one unconditional).
    fn service_chain(
        &self,
        nat: &mut Nat<'_>,
        active: &mut BTreeSet<String>,
        chain: &str,
        eps: &[&Endpoint],
        seps: &Seps<'_>,
    ) {
        nat.chain(chain);
        active.insert(chain.to_owned());
        if let Some(affinity) = self.port.session_affinity {
            for ep in eps {
                let named = seps.of_endpoint(self, ep);
                let (sep, comment) = (&named.sep, &named.comment);
                nat.rule(format!(
                    "-A {chain}{comment} -m recent --name {sep} --rcheck --seconds {} --reap -j \
                     {sep}",
                    affinity.timeout_seconds
                ));
            }
        }
        let n = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            let named = seps.of_endpoint(self, ep);
            let (sep, comment) = (&named.sep, &named.comment);
            nat.rule(match i + 1 < n {
                true => format!(
                    "-A {chain}{comment} -m statistic --mode random --probability {} -j {sep}",
                    probability(n - i)
                ),
                false => format!("-A {chain}{comment} -j {sep}"),
            });
        }
    }

    /// A KUBE-SEP chain; `comment` is the port's ([`Self::comment`]).
    fn endpoint_chain(
        &self,
        nat: &mut Nat<'_>,
        active: &mut BTreeSet<String>,
        named: &NamedEndpoint<'_>,
        comment: &str,
    ) {
        let (ep, sep) = (named.ep, &named.sep);
        nat.chain(sep);
        active.insert(sep.clone());
        let head = format!("-A {sep}{comment}");
        nat.rule(format!("{head} -s {} -j {KUBE_MARK_MASQ}", ep.ip));
        let recent = match self.port.session_affinity {
            Some(_) => format!(" -m recent --name {sep} --set"),
            None => String::new(),
        };
        let p = self.proto;
        nat.rule(format!(
            "{head}{recent} -m {p} -p {p} -j DNAT --to-destination {ep}"
        ));
    }

    /// ` -m comment --comment C`, or nothing in large-cluster mode.
    fn comment(&self, c: &str) -> String {
        match self.large {
            true => String::new(),
            false => format!(" -m comment --comment {c}"),
        }
    }
}

/// A port's reachable endpoints with what its chains write of each, made once although
/// the service chains and the endpoint chain all name them: the `KUBE-SEP-` name (a
/// sha256) and the comment (two address formats).
struct Seps<'e>(Vec<NamedEndpoint<'e>>);

#[derive(Clone)]
struct NamedEndpoint<'e> {
    ep: &'e Endpoint,
    sep: String,
    /// ` -m comment --comment "ns/svc:port -> ip:port"`, or nothing in large-cluster mode.
    comment: String,
}

impl<'e> NamedEndpoint<'e> {
    fn of(render: &PortRender<'_>, ep: &'e Endpoint) -> Self {
        let name = &render.chains.name;
        Self {
            ep,
            sep: render.chains.endpoint(&render.port.name, ep),
            comment: render.comment(&format!("\"{name} -> {ep}\"")),
        }
    }
}

impl<'e> Seps<'e> {
    fn of(render: &PortRender<'_>, reachable: &[&'e Endpoint]) -> Self {
        Self(
            (reachable.iter())
                .map(|ep| NamedEndpoint::of(render, ep))
                .collect(),
        )
    }

    /// What is written of `ep` (every endpoint a chain uses is reachable; made here if not).
    fn of_endpoint<'s>(
        &'s self,
        render: &PortRender<'_>,
        ep: &'e Endpoint,
    ) -> Cow<'s, NamedEndpoint<'e>> {
        match self.0.iter().find(|n| std::ptr::eq(n.ep, ep) || n.ep == ep) {
            Some(named) => Cow::Borrowed(named),
            None => Cow::Owned(NamedEndpoint::of(render, ep)),
        }
    }
}

/// `%0.10f` of `1/n`.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}
