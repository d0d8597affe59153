//! One Service port's piece of the table: its map elements, its chains (service, local,
//! external, firewall) and its session-affinity sets — kube-proxy's nftables layout, except
//! load balancing. kube-proxy's per-service anonymous `numgen … vmap { … }` loads
//! quadratically on this kernel (machine.md), and so does one shared bucket map (43 s cold
//! at 10k Services); per-service named maps are found by name in a list (9.8 s cold). And
//! every commit that adds a rule with a jump, goto or dnat makes nf_tables re-walk the whole
//! table graph, so a one-Service change costs in proportion to the graph. Hence no
//! per-endpoint chains: endpoint i of n is the rule `numgen random mod (n - i) == 0 dnat to
//! …` in the service chain itself (with its affinity update), and hairpin masquerading is one
//! set lookup in postrouting. Measured with nft at 10k Services × 3: load 0.84 s instead of
//! 1.86 s, one-Service commit 8–10 ms instead of 21–27 ms. Nor does a service chain start
//! with kube-proxy's `ip daddr <ClusterIP> … ip saddr != <pods> jump mark-for-masquerade`:
//! one rule in the `services` dispatch chain marks ClusterIP traffic from outside the pod
//! network (`base.rs`), which saves a fifth of a cold sync's expressions — the kernel looks
//! each one's type up by name in a list, its largest cost.
//!
//! Most Services go further and have no chain at all: a port reached only at its ClusterIPs,
//! without session affinity and with at most `MAX_PICK` endpoints is map elements (its
//! endpoint count and its endpoints by bucket), picked by static chains (`base.rs`). Every
//! commit walks every chain in the namespace, and a rule with a `dnat` makes it re-validate
//! the whole table, so only a change made of elements costs the same at any size: 0.06 ms
//! for one endpoint at 10,000 Services as at 100 (bench/README.md, issue 14's sixth pass).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use sluice_model::service::{Endpoint, Protocol, ServicePort, TrafficPolicy};
use sluice_nft::{
    Element, ElementData, Field, KeyType, KeyValue, Proto, Rule, SetDef, Stmt, Verdict,
};

use super::base::names::*;
use super::base::{MAX_PICK, count_addr};
use super::ctx::NftConfig;
use super::desired::Desired;
use super::names::{endpoint_base, port_base};
use sluice_proxy_core::backend::LocalDetect;
use sluice_proxy_core::topology::{Categorized, Verdict as TrafficVerdict};

/// The nft protocol of a Service port.
pub fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp => Proto::Sctp,
    }
}

/// Chain names of one port.
struct Chains {
    cluster: String,
    local: String,
    external: String,
    firewall: String,
}

impl Chains {
    fn of(port: &ServicePort) -> Self {
        let base = port_base(&port.name);
        Self {
            cluster: format!("service-{base}"),
            local: format!("local-{base}"),
            external: format!("external-{base}"),
            firewall: format!("firewall-{base}"),
        }
    }
}

/// Renders one Service port.
pub(crate) fn render_port(cfg: &NftConfig, port: &ServicePort, cat: &Categorized<'_>) -> Desired {
    let mut d = Desired::default();
    let ctx = PortCtx {
        cfg,
        port,
        p: proto(port.name.protocol),
    };
    for ep in &cat.all_reachable {
        ctx.hairpin(&mut d, ep);
    }
    let internal = cat.internal();
    if elements_only(port, &internal) {
        for cip in &port.cluster_ips {
            match &internal {
                TrafficVerdict::Forward(eps) => ctx.counted_endpoints(&mut d, *cip, eps),
                // No chain is named: a refusing verdict goes to the no-endpoint map.
                refuse => ctx.dispatch(&mut d, *cip, refuse, REJECT_CHAIN),
            }
        }
        return d;
    }
    let chains = Chains::of(port);
    let internal_chain = match port.internal_traffic_policy {
        TrafficPolicy::Local => &chains.local,
        TrafficPolicy::Cluster => &chains.cluster,
    };
    let cluster_eps = cat.cluster.as_deref().unwrap_or_default();
    let local_eps = cat.local.as_deref().unwrap_or_default();
    if !cluster_eps.is_empty() {
        ctx.lb_chain(&mut d, &chains.cluster, cluster_eps);
    }
    if !local_eps.is_empty() {
        ctx.lb_chain(&mut d, &chains.local, local_eps);
    }
    for cip in &port.cluster_ips {
        ctx.dispatch(&mut d, *cip, &internal, internal_chain);
    }
    if port.externally_accessible() {
        ctx.external(&mut d, cat, &chains);
    }
    d
}

/// Whether the port is map elements only: reached only at its ClusterIPs, without session
/// affinity and with at most [`MAX_PICK`] endpoints (its endpoint count and its endpoints,
/// or its no-endpoint element; see [`MAX_PICK`]).
fn elements_only(port: &ServicePort, internal: &TrafficVerdict<'_, '_>) -> bool {
    let fits = match internal {
        TrafficVerdict::Forward(eps) => eps.len() <= MAX_PICK as usize,
        _ => true,
    };
    fits && !port.externally_accessible() && port.session_affinity.is_none()
}

struct PortCtx<'a> {
    cfg: &'a NftConfig,
    port: &'a ServicePort,
    p: Proto,
}

impl PortCtx<'_> {
    fn comment(&self) -> String {
        let n = &self.port.name;
        format!("{}/{}:{}", n.namespace, n.name, n.port)
    }

    /// A load-balancing chain over `eps`: affinity first, then one random bucket.
    fn lb_chain(&self, d: &mut Desired, name: &str, eps: &[&Endpoint]) {
        let mut rules = Vec::new();
        if self.port.session_affinity.is_some() {
            rules.extend(eps.iter().map(|ep| {
                let set = self.affinity_set(d, ep);
                // The hit refreshes the entry, so stickiness lasts `timeout` after the last
                // connection, not the first (kube-proxy's endpoint chain does the same).
                let mut stmts = vec![
                    Stmt::InSet {
                        field: Field::Saddr,
                        set: set.clone(),
                        negate: false,
                    },
                    Stmt::UpdateSaddr(set),
                ];
                stmts.extend(self.dnat(ep));
                Rule::new(stmts).with_comment(self.comment())
            }));
        }
        // Endpoint i of n is taken with probability 1/(n-i) if none before it was: uniform.
        let n = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            let mut stmts = Vec::new();
            if i + 1 < n {
                stmts.push(Stmt::Numgen {
                    modulus: (n - i) as u32,
                });
            }
            if self.port.session_affinity.is_some() {
                stmts.push(Stmt::UpdateSaddr(self.affinity_set(d, ep)));
            }
            stmts.extend(self.dnat(ep));
            rules.push(Rule::new(stmts).with_comment(self.comment()));
        }
        d.regular(name, rules);
    }

    /// The count and the endpoints by bucket, for `service-select` (see [`MAX_PICK`]).
    fn counted_endpoints(&self, d: &mut Desired, ip: IpAddr, eps: &[&Endpoint]) {
        let count = count_addr(self.cfg.family, eps.len() as u32);
        let e = Element::data(self.tuple(ip), ElementData::Addr(count));
        d.element(SERVICE_COUNTS, self.commented(e));
        for (bucket, ep) in eps.iter().enumerate() {
            let mut key = self.tuple(ip);
            key.push(KeyValue::Bucket(bucket as u32));
            let e = Element::data(key, ElementData::AddrPort(ep.ip, ep.port));
            d.element(SERVICE_ENDPOINTS, e);
        }
    }

    /// `meta l4proto <p> dnat to <ep>`.
    fn dnat(&self, ep: &Endpoint) -> [Stmt; 2] {
        [
            Stmt::L4Proto(self.p),
            Stmt::Dnat {
                addr: ep.ip,
                port: ep.port,
            },
        ]
    }

    /// The endpoint's session-affinity set (declared in `d`). The timeout is part of the
    /// name: a set's timeout cannot be changed in place, so a new timeout is a new set (and
    /// the old one goes once no rule refers to it).
    fn affinity_set(&self, d: &mut Desired, ep: &Endpoint) -> String {
        let timeout = self.port.session_affinity.map_or(0, |a| a.timeout_seconds);
        let set = format!("affinity-{timeout}-{}", endpoint_base(&self.port.name, ep));
        d.set(SetDef {
            timeout: Some(Duration::from_secs(u64::from(timeout))),
            ..SetDef::set(&set, vec![KeyType::Addr])
        });
        set
    }

    /// Hairpin: an endpoint reaching itself through the Service is masqueraded (so the
    /// reply comes back through the node); `ip saddr . ip daddr . th dport @hairpin` in
    /// postrouting finds it after DNAT.
    fn hairpin(&self, d: &mut Desired, ep: &Endpoint) {
        d.element(
            HAIRPIN,
            Element::key(vec![
                KeyValue::Addr(ep.ip),
                KeyValue::Addr(ep.ip),
                KeyValue::Port(ep.port),
            ]),
        );
    }

    /// External IPs, LB IPs and the node port, as kube-proxy writes them: whenever the
    /// Service has endpoints anywhere they go to the external chain (whose short-circuit
    /// rules pods and the node itself need even without local endpoints); when none serve
    /// external traffic here, the no-endpoint maps (checked after DNAT, in the filter hooks)
    /// reject or drop what the external chain did not send on.
    fn external(&self, d: &mut Desired, cat: &Categorized<'_>, chains: &Chains) {
        let external = cat.external();
        let forwards = matches!(external, TrafficVerdict::Forward(_));
        if cat.has_any_endpoints {
            let has_cluster = cat.cluster.as_deref().is_some_and(|c| !c.is_empty());
            self.external_chain(d, chains, has_cluster, forwards);
        }
        let node_port =
            (self.port.node_port).map(|np| vec![KeyValue::Proto(self.p), KeyValue::Port(np)]);
        let vips = self
            .port
            .external_ips
            .iter()
            .chain(&self.port.load_balancer_vips);
        let keys = vips
            .map(|ip| (SERVICE_IPS, NO_ENDPOINT_SERVICES, self.tuple(*ip)))
            .chain(node_port.map(|k| (SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS, k)));
        for (forward_map, refuse_map, key) in keys {
            if cat.has_any_endpoints {
                let e = Element::map(key.clone(), Verdict::Goto(chains.external.clone()));
                d.element(forward_map, self.commented(e));
            }
            if !forwards {
                self.element_for(d, forward_map, refuse_map, key, &external, &chains.external);
            }
        }
        self.firewall(d, &chains.firewall);
    }

    fn commented(&self, mut e: Element) -> Element {
        e.comment = Some(self.comment());
        e
    }

    /// Traffic to node ports, external IPs and LB IPs. With eTP=Local, pods and the node
    /// itself short-circuit to the cluster set (their source is kept or masqueraded as
    /// needed); everyone else keeps their source address and reaches local endpoints only,
    /// if there are any.
    fn external_chain(&self, d: &mut Desired, chains: &Chains, has_cluster: bool, local: bool) {
        let goto_cluster = || Stmt::Verdict(Verdict::Goto(chains.cluster.clone()));
        let mut rules = Vec::new();
        if self.port.external_traffic_policy == TrafficPolicy::Cluster {
            rules.push(Rule::new(vec![Stmt::Verdict(Verdict::Jump(
                MARK_FOR_MASQUERADE.into(),
            ))]));
            rules.push(Rule::new(vec![goto_cluster()]));
        } else {
            if has_cluster {
                if let Some(pods) = local_match(self.cfg, false) {
                    rules.push(
                        Rule::new(vec![pods, goto_cluster()])
                            .with_comment("short-circuit pod traffic"),
                    );
                }
                rules.push(
                    Rule::new(vec![
                        Stmt::FibLocal(Field::Saddr),
                        Stmt::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into())),
                    ])
                    .with_comment("masquerade local traffic"),
                );
                rules.push(
                    Rule::new(vec![Stmt::FibLocal(Field::Saddr), goto_cluster()])
                        .with_comment("short-circuit local traffic"),
                );
            }
            if local {
                rules.push(Rule::new(vec![Stmt::Verdict(Verdict::Goto(
                    chains.local.clone(),
                ))]));
            }
        }
        d.regular(&chains.external, rules);
    }

    /// `loadBalancerSourceRanges`: LB traffic from other sources is dropped before DNAT.
    fn firewall(&self, d: &mut Desired, chain: &str) {
        if self.port.load_balancer_source_ranges.is_empty()
            || self.port.load_balancer_vips.is_empty()
        {
            return;
        }
        // kube-proxy: a VIP-like load balancer's address is often local on the node, so the
        // node reaching it loops back with the VIP as its source; when the node's own IP is
        // inside the ranges, such traffic is allowed too.
        let ranges = &self.port.load_balancer_source_ranges;
        let from_node = (self.cfg.node_ips.iter()).any(|ip| ranges.iter().any(|n| n.contains(ip)));
        let lb_hosts = (self.port.load_balancer_vips.iter())
            .filter(|_| from_node)
            .map(|ip| IpNet::from(*ip));
        let mut rules: Vec<Rule> = (ranges.iter().copied())
            .chain(lb_hosts)
            .map(|net| {
                Rule::new(vec![
                    Stmt::Prefix {
                        field: Field::Saddr,
                        net,
                        negate: false,
                    },
                    Stmt::Verdict(Verdict::Return),
                ])
            })
            .collect();
        rules.push(
            Rule::new(vec![Stmt::Verdict(Verdict::Drop)])
                .with_comment(format!("{} source ranges", self.comment())),
        );
        d.regular(chain, rules);
        for vip in &self.port.load_balancer_vips {
            d.element(
                FIREWALL_IPS,
                Element::map(self.tuple(*vip), Verdict::Goto(chain.to_owned())),
            );
        }
    }

    fn tuple(&self, ip: IpAddr) -> Vec<KeyValue> {
        vec![
            KeyValue::Addr(ip),
            KeyValue::Proto(self.p),
            KeyValue::Port(self.port.port),
        ]
    }

    /// `ip . proto . port`: to `chain` when forwarding, else reject or drop.
    fn dispatch(&self, d: &mut Desired, ip: IpAddr, verdict: &TrafficVerdict<'_, '_>, chain: &str) {
        self.element_for(
            d,
            SERVICE_IPS,
            NO_ENDPOINT_SERVICES,
            self.tuple(ip),
            verdict,
            chain,
        );
    }

    fn element_for(
        &self,
        d: &mut Desired,
        forward_map: &str,
        refuse_map: &str,
        key: Vec<KeyValue>,
        verdict: &TrafficVerdict<'_, '_>,
        chain: &str,
    ) {
        let (map, v) = match verdict {
            TrafficVerdict::Forward(_) => (forward_map, Verdict::Goto(chain.to_owned())),
            TrafficVerdict::Reject => (refuse_map, Verdict::Goto(REJECT_CHAIN.into())),
            TrafficVerdict::Drop => (refuse_map, Verdict::Drop),
        };
        let mut e = Element::map(key, v);
        e.comment = Some(self.comment());
        d.element(map, e);
    }
}

/// "The source is a pod" (`negate`: is not), by the configured detector; `None` when pods
/// cannot be told apart.
pub(crate) fn local_match(cfg: &NftConfig, negate: bool) -> Option<Stmt> {
    match &cfg.local {
        LocalDetect::Cidrs(c) if c.is_empty() => None,
        LocalDetect::Cidrs(_) => Some(Stmt::InSet {
            field: Field::Saddr,
            set: LOCAL_CIDRS.into(),
            negate,
        }),
        LocalDetect::Bridge(name) => Some(Stmt::IifName {
            name: name.clone(),
            prefix: false,
            negate,
        }),
        LocalDetect::InterfacePrefix(name) => Some(Stmt::IifName {
            name: name.clone(),
            prefix: true,
            negate,
        }),
    }
}

/// The cluster-ips elements of a Service (shared by its ports, so owned by the Service).
pub(crate) fn render_cluster_ips(cluster_ips: &[IpAddr]) -> Desired {
    let mut d = Desired::default();
    for ip in cluster_ips {
        d.element(CLUSTER_IPS, Element::key(vec![KeyValue::Addr(*ip)]));
    }
    d
}
