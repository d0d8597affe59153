//! The fixed part of the table: maps and sets, base chains at kube-proxy's hooks and
//! priorities, and the dispatch chains. Service ports only add map elements and their own
//! chains, so a packet costs a handful of hash lookups whatever the number of Services.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_nft::{
    BaseChain, ChainDef, ChainType, Element, Family, Field, Hook, KeyType, KeyValue, MapData,
    Proto, Rule, SetDef, Stmt, Verdict,
};

use super::ctx::NftConfig;
use super::desired::Desired;
use super::port::local_match;

/// Set and map names (kube-proxy's).
pub(crate) mod names {
    /// ClusterIPs in use (reject traffic to their other ports).
    pub(crate) const CLUSTER_IPS: &str = "cluster-ips";
    /// Addresses accepting NodePorts (when not all local addresses do).
    pub(crate) const NODEPORT_IPS: &str = "nodeport-ips";
    /// `addr . proto . port : verdict` for ClusterIPs, external IPs and LB IPs.
    pub(crate) const SERVICE_IPS: &str = "service-ips";
    /// `proto . port : verdict` for NodePorts.
    pub(crate) const SERVICE_NODEPORTS: &str = "service-nodeports";
    /// LB destinations with source ranges.
    pub(crate) const FIREWALL_IPS: &str = "firewall-ips";
    /// Destinations of Services without usable endpoints: reject or drop.
    pub(crate) const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
    /// NodePorts of Services without usable endpoints.
    pub(crate) const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
    /// Source prefixes counted as pods (`--cluster-cidr` / node pod CIDRs).
    pub(crate) const LOCAL_CIDRS: &str = "local-cidrs";
    /// Sets the masquerade mark.
    pub(crate) const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
    /// `endpoint . endpoint . port`: an endpoint that reached itself through its Service.
    pub(crate) const HAIRPIN: &str = "hairpin";
    /// Rejects (TCP reset / ICMP port unreachable).
    pub(crate) const REJECT_CHAIN: &str = "reject-chain";
    /// Dispatch to Services (nat prerouting and output).
    pub(crate) const SERVICES: &str = "services";
    /// `addr . proto . port : <count>`: the endpoint count of a Service reached only at its
    /// ClusterIP (the chain-free layout, [`super::MAX_PICK`]).
    pub(crate) const SERVICE_COUNTS: &str = "service-counts";
    /// `addr . proto . port . bucket : endpoint . port` of those Services.
    pub(crate) const SERVICE_ENDPOINTS: &str = "service-endpoints";
    /// `<count> : goto pick-<count>`.
    pub(crate) const SERVICE_PICK: &str = "service-pick";
}

/// The largest endpoint count a Service reached only at its ClusterIP is programmed for
/// without a chain of its own. Such a Service is two kinds of map elements: its endpoint
/// count and its endpoints by bucket. A rule in `services`, before the `service-ips`
/// dispatch, writes the count into the packet's destination address (the dnat rewrites it
/// anyway; nft cannot feed a map's value into a verdict map) and goes on to the static chain
/// `pick-<count>`, whose rule is `dnat … to ct original ip daddr . meta l4proto . th dport .
/// numgen random mod <count> map @service-endpoints`. A change of endpoints is then element
/// updates only: no rule with a validation hook, no chain, so the kernel's commit costs the
/// same at any number of Services (bench/README.md, issue 14's sixth pass).
pub(crate) const MAX_PICK: u32 = 64;

/// The count `n` as the address `service-counts` holds (`0.0.0.n`, `::n`).
pub(crate) fn count_addr(family: Family, n: u32) -> IpAddr {
    match family {
        Family::Ip => Ipv4Addr::from(n).into(),
        Family::Ip6 => Ipv6Addr::from(u128::from(n)).into(),
    }
}

use names::*;

/// The base ruleset for `cfg` but the hooked chains: the sets and maps, and the chains
/// that dispatch to Services.
pub(crate) fn render_base(cfg: &NftConfig) -> Desired {
    let mut d = Desired::default();
    sets(cfg, &mut d);
    dispatch_chains(cfg, &mut d);
    d
}

/// The base chains at the netfilter hooks: the table's only entries. Kept apart from
/// [`render_base`] so that a table programmed in parts gets them last (see
/// `state::Owner::Hooks`).
pub(crate) fn render_hooks() -> Desired {
    let mut d = Desired::default();
    base_chains(&mut d);
    d
}

fn set(name: &str, key: Vec<KeyType>, verdict_map: bool, comment: &str) -> SetDef {
    SetDef {
        verdict_map,
        comment: Some(comment.into()),
        ..SetDef::set(name, key)
    }
}

fn sets(cfg: &NftConfig, d: &mut Desired) {
    use KeyType::{Addr, Port, Proto};
    d.set(set(CLUSTER_IPS, vec![Addr], false, "Active ClusterIPs"));
    d.set(set(
        SERVICE_IPS,
        vec![Addr, Proto, Port],
        true,
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ));
    d.set(set(
        SERVICE_NODEPORTS,
        vec![Proto, Port],
        true,
        "NodePort traffic",
    ));
    d.set(set(
        FIREWALL_IPS,
        vec![Addr, Proto, Port],
        true,
        "destinations that are subject to LoadBalancerSourceRanges",
    ));
    d.set(set(
        NO_ENDPOINT_SERVICES,
        vec![Addr, Proto, Port],
        true,
        "vmap to drop or reject packets to services with no endpoints",
    ));
    d.set(set(
        NO_ENDPOINT_NODEPORTS,
        vec![Proto, Port],
        true,
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ));
    d.set(set(
        HAIRPIN,
        vec![Addr, Addr, Port],
        false,
        "endpoints reaching themselves through a Service (masqueraded)",
    ));
    let mut counts = SetDef::data_map(SERVICE_COUNTS, vec![Addr, Proto, Port], MapData::Addr);
    counts.comment = Some("endpoint counts of Services reached only at their ClusterIP".into());
    d.set(counts);
    let mut endpoints = SetDef::data_map(
        SERVICE_ENDPOINTS,
        vec![Addr, Proto, Port, KeyType::Bucket],
        MapData::AddrPort,
    );
    endpoints.comment = Some("their endpoints, by bucket".into());
    d.set(endpoints);
    d.set(set(
        SERVICE_PICK,
        vec![Addr],
        true,
        "an endpoint count to the chain that draws a bucket",
    ));
    for n in 1..=MAX_PICK {
        let count = Element::map(
            vec![KeyValue::Addr(count_addr(cfg.family, n))],
            Verdict::Goto(pick_chain(n)),
        );
        d.element(SERVICE_PICK, count);
    }
    if let Some(addrs) = &cfg.nodeport_addresses {
        d.set(set(
            NODEPORT_IPS,
            vec![Addr],
            false,
            "IPs that accept NodePort traffic",
        ));
        for a in addrs {
            d.element(NODEPORT_IPS, Element::key(vec![KeyValue::Addr(*a)]));
        }
    }
    if !cfg.local_cidrs().is_empty() {
        let mut s = set(LOCAL_CIDRS, vec![Addr], false, "sources that are pods");
        s.interval = true;
        d.set(s);
        for net in cfg.local_cidrs() {
            let mut e = Element::key(vec![KeyValue::Addr(net.trunc().addr())]);
            e.prefix = Some(net.prefix_len());
            d.element(LOCAL_CIDRS, e);
        }
    }
}

fn base(name: &str, kind: ChainType, hook: Hook, priority: i32) -> ChainDef {
    ChainDef {
        name: name.into(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
    }
}

fn jump(chain: &str) -> Stmt {
    Stmt::Verdict(Verdict::Jump(chain.into()))
}

fn new_jump(chain: &str) -> Rule {
    Rule::new(vec![Stmt::CtStateNew, jump(chain)])
}

fn base_chains(d: &mut Desired) {
    use ChainType::{Filter, Nat};
    d.chain(
        base("filter-prerouting-pre-dnat", Filter, Hook::Prerouting, -110),
        vec![new_jump("firewall-check")],
    );
    d.chain(
        base("filter-output-pre-dnat", Filter, Hook::Output, -110),
        vec![new_jump("firewall-check")],
    );
    d.chain(
        base("filter-forward", Filter, Hook::Forward, 0),
        vec![
            new_jump("service-endpoints-check"),
            new_jump("cluster-ips-check"),
        ],
    );
    d.chain(
        base("filter-input", Filter, Hook::Input, 0),
        vec![
            new_jump("nodeport-endpoints-check"),
            new_jump("service-endpoints-check"),
        ],
    );
    d.chain(
        base("filter-output", Filter, Hook::Output, 0),
        vec![
            new_jump("service-endpoints-check"),
            new_jump("cluster-ips-check"),
        ],
    );
    d.chain(
        base("nat-prerouting", Nat, Hook::Prerouting, -100),
        vec![Rule::new(vec![jump(SERVICES)])],
    );
    d.chain(
        base("nat-output", Nat, Hook::Output, -100),
        vec![Rule::new(vec![jump(SERVICES)])],
    );
    d.chain(
        base("nat-postrouting", Nat, Hook::Postrouting, 100),
        vec![Rule::new(vec![jump("masquerading")])],
    );
}

fn vmap(key: &[Field], map: &str) -> Stmt {
    Stmt::Vmap {
        key: key.to_vec(),
        map: map.into(),
    }
}

/// `ip daddr @nodeport-ips`, or "any local address but loopback".
fn nodeport_match(cfg: &NftConfig, in_input: bool) -> Vec<Stmt> {
    let not_loopback = Stmt::Prefix {
        field: Field::Daddr,
        net: cfg.loopback(),
        negate: true,
    };
    match &cfg.nodeport_addresses {
        Some(_) => vec![Stmt::InSet {
            field: Field::Daddr,
            set: NODEPORT_IPS.into(),
            negate: false,
        }],
        // The input hook only sees local destinations already.
        None if in_input => vec![not_loopback],
        None => vec![Stmt::FibLocal(Field::Daddr), not_loopback],
    }
}

/// ClusterIP traffic from outside the pod network is masqueraded (all of it with
/// `--masquerade-all`), so replies come back through this node; none when pods cannot be
/// told apart. kube-proxy puts this rule, for one ClusterIP and port, at the head of each
/// Service's cluster chain; one rule here does the same before the dispatch: traffic to a
/// ClusterIP either reaches such a chain or is rejected or dropped, mark or no mark.
fn cluster_ip_masquerade(cfg: &NftConfig) -> Option<Rule> {
    let mut stmts = vec![Stmt::InSet {
        field: Field::Daddr,
        set: CLUSTER_IPS.into(),
        negate: false,
    }];
    if !cfg.masquerade_all {
        stmts.push(local_match(cfg, true)?);
    }
    stmts.push(jump(MARK_FOR_MASQUERADE));
    Some(Rule::new(stmts).with_comment("masquerade ClusterIP traffic from outside the pod network"))
}

fn pick_chain(n: u32) -> String {
    format!("pick-{n}")
}

/// The `services` rule of the chain-free layout ([`MAX_PICK`]): a Service found in
/// `service-counts` has its count written into the destination address, which picks the
/// chain that draws its bucket. Any other packet misses the lookup and goes on unchanged.
fn counted_dispatch() -> Rule {
    Rule::new(vec![
        Stmt::DaddrFromMap {
            key: vec![Field::Daddr, Field::L4Proto, Field::Dport],
            map: SERVICE_COUNTS.into(),
        },
        vmap(&[Field::Daddr], SERVICE_PICK),
    ])
}

/// The `pick-<n>` chains of the chain-free layout ([`MAX_PICK`]).
fn pick_chains(d: &mut Desired) {
    for n in 1..=MAX_PICK {
        let key = vec![
            Field::CtOriginalDaddr,
            Field::L4Proto,
            Field::Dport,
            Field::Numgen(n),
        ];
        let rules = [Proto::Tcp, Proto::Udp, Proto::Sctp].map(|p| {
            Rule::new(vec![
                Stmt::L4Proto(p),
                Stmt::DnatFromMap {
                    key: key.clone(),
                    map: SERVICE_ENDPOINTS.into(),
                },
            ])
        });
        d.regular(&pick_chain(n), rules.into());
    }
}

fn dispatch_chains(cfg: &NftConfig, d: &mut Desired) {
    pick_chains(d);
    let tuple = [Field::Daddr, Field::L4Proto, Field::Dport];
    let port = [Field::L4Proto, Field::Dport];
    let mark = cfg.masquerade_mark;
    d.regular(
        "firewall-check",
        vec![Rule::new(vec![vmap(&tuple, FIREWALL_IPS)])],
    );
    let mut cluster_checks = vec![
        Rule::new(vec![
            Stmt::InSet {
                field: Field::Daddr,
                set: CLUSTER_IPS.into(),
                negate: false,
            },
            Stmt::Verdict(Verdict::Goto(REJECT_CHAIN.into())),
        ])
        .with_comment("Reject traffic to invalid ports of ClusterIPs"),
    ];
    cluster_checks.extend(cfg.service_cidrs.iter().map(|net| {
        Rule::new(vec![
            Stmt::Prefix {
                field: Field::Daddr,
                net: *net,
                negate: false,
            },
            Stmt::Verdict(Verdict::Drop),
        ])
        .with_comment("Drop traffic to unallocated ClusterIPs")
    }));
    d.regular("cluster-ips-check", cluster_checks);
    d.regular(
        MARK_FOR_MASQUERADE,
        vec![Rule::new(vec![Stmt::MarkOr(mark)])],
    );
    d.regular(
        "masquerading",
        vec![
            Rule::new(vec![
                Stmt::InConcat {
                    key: vec![Field::Saddr, Field::Daddr, Field::Dport],
                    set: HAIRPIN.into(),
                },
                Stmt::MarkOr(mark),
            ]),
            Rule::new(vec![Stmt::MarkClear(mark), Stmt::Verdict(Verdict::Return)]),
            Rule::new(vec![Stmt::MarkXor(mark)]),
            Rule::new(vec![Stmt::Masquerade { fully_random: true }]),
        ],
    );
    let mut np_check = nodeport_match(cfg, true);
    np_check.push(vmap(&port, NO_ENDPOINT_NODEPORTS));
    d.regular("nodeport-endpoints-check", vec![Rule::new(np_check)]);
    d.regular(
        REJECT_CHAIN,
        vec![
            Rule::new(vec![
                Stmt::L4Proto(sluice_nft::Proto::Tcp),
                Stmt::Reject { tcp_reset: true },
            ]),
            Rule::new(vec![Stmt::Reject { tcp_reset: false }]),
        ],
    );
    let mut np = nodeport_match(cfg, false);
    np.push(vmap(&port, SERVICE_NODEPORTS));
    let mut services: Vec<Rule> = cluster_ip_masquerade(cfg).into_iter().collect();
    services.extend([
        counted_dispatch(),
        Rule::new(vec![vmap(&tuple, SERVICE_IPS)]),
        Rule::new(np),
    ]);
    d.regular(SERVICES, services);
    d.regular(
        "service-endpoints-check",
        vec![Rule::new(vec![vmap(&tuple, NO_ENDPOINT_SERVICES)])],
    );
}
