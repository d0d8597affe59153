//! Upstream's `TestCategorizeEndpoints` table (kubernetes/kubernetes
//! `pkg/proxy/topology_test.go`, including the PreferSameNode cases), plus the
//! verdicts derived from it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use sluice_model::service::{
    Endpoint, Protocol, ServiceName, ServicePort, ServicePortName, TrafficPolicy,
};

use super::*;

const NODE: &str = "node-1";

/// One endpoint of a case; `..EP` gives a ready, remote, unhinted endpoint.
#[derive(Clone, Copy)]
struct Ep {
    addr: &'static str,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zones: &'static [&'static str],
    nodes: &'static [&'static str],
}

const EP: Ep = Ep {
    addr: "",
    ready: true,
    serving: true,
    terminating: false,
    local: false,
    zones: &[],
    nodes: &[],
};

/// A serving-terminating endpoint.
const TERM: Ep = Ep {
    ready: false,
    terminating: true,
    ..EP
};

impl Ep {
    fn build(self) -> Endpoint {
        let addr: SocketAddr = self.addr.parse().unwrap();
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Endpoint {
            ready: self.ready,
            serving: self.serving,
            terminating: self.terminating,
            node_name: Some(if self.local { NODE } else { "elsewhere" }.into()),
            ..Endpoint::new(addr.ip(), addr.port()).with_hints(names(self.zones), names(self.nodes))
        }
    }
}

/// The Service port of a case: `(itp local, etp local, node port)`.
fn port(itp: bool, etp: bool, node_port: bool) -> ServicePort {
    let policy = |local| match local {
        true => TrafficPolicy::Local,
        false => TrafficPolicy::Cluster,
    };
    let name = ServicePortName::new(&ServiceName::new("ns", "svc"), "p80", Protocol::Tcp);
    ServicePort {
        node_port: node_port.then_some(8080),
        external_traffic_policy: policy(etp),
        internal_traffic_policy: policy(itp),
        ..ServicePort::plain(name, vec!["10.96.0.1".parse().unwrap()], 80)
    }
}

type Set = Option<&'static [&'static str]>;

struct Case {
    name: &'static str,
    prefer_same_node: bool,
    zone: Option<&'static str>,
    node: &'static str,
    port: ServicePort,
    endpoints: Vec<Ep>,
    /// `None`: the port does not use this kind of endpoint.
    cluster: Set,
    local: Set,
    /// Only needed when both `cluster` and `local` are `Some`.
    all: Set,
    /// `has_any_endpoints` although `all_reachable` is empty.
    only_remote: bool,
}

const BASE: fn() -> Case = || Case {
    name: "",
    prefer_same_node: true,
    zone: Some("zone-a"),
    node: NODE,
    port: port(false, false, false),
    endpoints: vec![],
    cluster: None,
    local: None,
    all: None,
    only_remote: false,
};

fn e(addr: &'static str, zones: &'static [&'static str]) -> Ep {
    Ep { addr, zones, ..EP }
}

fn el(addr: &'static str, zones: &'static [&'static str]) -> Ep {
    Ep {
        local: true,
        ..e(addr, zones)
    }
}

fn en(addr: &'static str, zone: &'static [&'static str], nodes: &'static [&'static str]) -> Ep {
    Ep {
        nodes,
        ..e(addr, zone)
    }
}

fn four_zoned() -> Vec<Ep> {
    vec![
        e("10.1.2.3:80", &["zone-a"]),
        e("10.1.2.4:80", &["zone-b"]),
        e("10.1.2.5:80", &["zone-c"]),
        e("10.1.2.6:80", &["zone-a"]),
    ]
}

fn four_node_hinted() -> Vec<Ep> {
    vec![
        en("10.1.2.3:80", &["zone-a"], &["node-1"]),
        en("10.1.2.4:80", &["zone-b"], &["node-2"]),
        en("10.1.2.5:80", &["zone-c"], &["node-3"]),
        en("10.1.2.6:80", &["zone-a"], &["node-4"]),
    ]
}

fn local_and_remote_zoned() -> Vec<Ep> {
    vec![
        el("10.1.2.3:80", &["zone-a"]),
        el("10.1.2.4:80", &["zone-b"]),
        e("10.1.2.5:80", &["zone-c"]),
        e("10.1.2.6:80", &["zone-a"]),
    ]
}

fn two(first: Ep, second: Ep) -> Vec<Ep> {
    vec![
        Ep {
            addr: "10.0.0.0:80",
            ..first
        },
        Ep {
            addr: "10.0.0.1:80",
            ..second
        },
    ]
}

const LOCAL: Ep = Ep { local: true, ..EP };
const NOT_READY: Ep = Ep {
    ready: false,
    serving: false,
    ..EP
};

fn zone_cases() -> Vec<Case> {
    vec![
        Case {
            name: "topology used: every endpoint hinted, node zone labelled and matched",
            endpoints: four_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "eTP: Local, topology ignored for Local endpoints",
            port: port(false, true, true),
            endpoints: local_and_remote_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "iTP: Local, topology ignored for Local endpoints",
            port: port(true, false, true),
            endpoints: local_and_remote_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "empty node labels",
            zone: None,
            endpoints: vec![e("10.1.2.3:80", &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..BASE()
        },
        Case {
            name: "node in different zone, no endpoint filtering",
            zone: Some("zone-b"),
            endpoints: vec![e("10.1.2.3:80", &["zone-a"]), e("10.1.2.5:80", &["zone-c"])],
            cluster: Some(&["10.1.2.3:80", "10.1.2.5:80"]),
            ..BASE()
        },
        Case {
            name: "unready endpoint",
            endpoints: {
                let mut eps = four_zoned();
                eps[3].ready = false;
                eps[3].serving = false;
                eps
            },
            cluster: Some(&["10.1.2.3:80"]),
            ..BASE()
        },
        Case {
            name: "only unready endpoints in same zone (should not filter)",
            endpoints: {
                let mut eps = four_zoned();
                for i in [0, 3] {
                    eps[i].ready = false;
                    eps[i].serving = false;
                }
                eps
            },
            cluster: Some(&["10.1.2.4:80", "10.1.2.5:80"]),
            ..BASE()
        },
        Case {
            name: "missing hints, no filtering applied",
            endpoints: {
                let mut eps = four_zoned();
                eps[2].zones = &[];
                eps
            },
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "multiple hints per endpoint, filtering includes any endpoint with zone included",
            zone: Some("zone-c"),
            endpoints: vec![
                e("10.1.2.3:80", &["zone-a", "zone-b", "zone-c"]),
                e("10.1.2.4:80", &["zone-b", "zone-c"]),
                e("10.1.2.5:80", &["zone-b", "zone-d"]),
                e("10.1.2.6:80", &["zone-c"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "conflicting topology and localness require merging allEndpoints",
            port: port(false, true, true),
            endpoints: vec![
                el("10.0.0.0:80", &["zone-a"]),
                el("10.0.0.1:80", &["zone-b"]),
                e("10.0.0.2:80", &["zone-a"]),
                e("10.0.0.3:80", &["zone-b"]),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]),
            ..BASE()
        },
    ]
}

fn node_cases() -> Vec<Case> {
    vec![
        Case {
            name: "PreferSameNode falls back to same-zone when feature gate disabled",
            prefer_same_node: false,
            endpoints: four_node_hinted(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "PreferSameNode available",
            endpoints: four_node_hinted(),
            cluster: Some(&["10.1.2.3:80"]),
            ..BASE()
        },
        Case {
            name: "PreferSameNode ignored if some endpoints unhinted",
            endpoints: {
                let mut eps = four_node_hinted();
                eps[1].zones = &[];
                eps[1].nodes = &[];
                eps
            },
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "PreferSameNode falls back to PreferSameZone if no endpoint for node",
            node: "node-0",
            endpoints: four_node_hinted(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..BASE()
        },
        Case {
            name: "PreferSameNode hints of unready endpoints do not count",
            endpoints: {
                let mut eps = four_node_hinted();
                eps[0].ready = false;
                eps[0].serving = false;
                eps
            },
            cluster: Some(&["10.1.2.6:80"]),
            ..BASE()
        },
    ]
}

fn policy_cases() -> Vec<Case> {
    vec![
        Case {
            name: "internalTrafficPolicy: Local, with empty endpoints",
            port: port(true, false, false),
            local: Some(&[]),
            ..BASE()
        },
        Case {
            name: "internalTrafficPolicy: Local, but all endpoints are remote",
            port: port(true, false, false),
            endpoints: two(EP, EP),
            local: Some(&[]),
            only_remote: true,
            ..BASE()
        },
        Case {
            name: "internalTrafficPolicy: Local, all endpoints are local",
            port: port(true, false, false),
            endpoints: two(LOCAL, LOCAL),
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "internalTrafficPolicy: Local, some endpoints are local",
            port: port(true, false, false),
            endpoints: two(LOCAL, EP),
            local: Some(&["10.0.0.0:80"]),
            ..BASE()
        },
        Case {
            name: "Cluster traffic policy, endpoints not Ready",
            endpoints: two(NOT_READY, NOT_READY),
            cluster: Some(&[]),
            ..BASE()
        },
        Case {
            name: "Cluster traffic policy, some endpoints are Ready",
            endpoints: two(NOT_READY, EP),
            cluster: Some(&["10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "Cluster traffic policy, all endpoints are terminating",
            endpoints: two(
                Ep {
                    local: true,
                    ..TERM
                },
                TERM,
            ),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "iTP: Local, eTP: Cluster, some endpoints local",
            port: port(true, false, true),
            endpoints: two(LOCAL, EP),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "iTP: Cluster, eTP: Local, some endpoints local",
            port: port(false, true, true),
            endpoints: two(LOCAL, EP),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "iTP: Local, eTP: Local, some endpoints local",
            port: port(true, true, true),
            endpoints: two(LOCAL, EP),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "iTP: Local, eTP: Local, all endpoints remote",
            port: port(true, true, true),
            endpoints: two(EP, EP),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "iTP: Local, eTP: Local, all endpoints remote and terminating",
            port: port(true, true, true),
            endpoints: two(TERM, TERM),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: true,
            ..BASE()
        },
        Case {
            name: "iTP: Cluster, eTP: Local, with terminating endpoints",
            port: port(false, true, true),
            endpoints: vec![
                Ep {
                    addr: "10.0.0.0:80",
                    ..EP
                },
                Ep {
                    addr: "10.0.0.1:80",
                    local: true,
                    ..NOT_READY
                },
                Ep {
                    addr: "10.0.0.2:80",
                    local: true,
                    ..TERM
                },
                Ep {
                    addr: "10.0.0.3:80",
                    ..TERM
                },
            ],
            cluster: Some(&["10.0.0.0:80"]),
            local: Some(&["10.0.0.2:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            ..BASE()
        },
        Case {
            name: "externalTrafficPolicy ignored if not externally accessible",
            port: port(false, true, false),
            endpoints: two(EP, LOCAL),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "no cluster endpoints for iTP:Local internal-only service",
            port: port(true, false, false),
            endpoints: two(EP, LOCAL),
            local: Some(&["10.0.0.1:80"]),
            ..BASE()
        },
        Case {
            name: "publishNotReadyAddresses: not-ready endpoints count as ready",
            port: ServicePort {
                publish_not_ready_addresses: true,
                ..port(false, false, false)
            },
            endpoints: two(NOT_READY, TERM),
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..BASE()
        },
    ]
}

fn addrs(list: &[&Endpoint]) -> BTreeSet<String> {
    list.iter().map(|ep| ep.to_string()).collect()
}

fn expected(set: Set) -> Option<BTreeSet<String>> {
    set.map(|s| s.iter().map(|a| (*a).to_owned()).collect())
}

fn check(case: &Case) {
    let endpoints: Vec<Endpoint> = case.endpoints.iter().map(|ep| ep.build()).collect();
    let node = NodeTopology {
        name: case.node.to_owned(),
        zone: case.zone.map(Into::into),
        ..NodeTopology::default()
    };
    let got = categorize(&endpoints, &case.port, &node, case.prefer_same_node);
    let name = case.name;
    assert_eq!(
        got.cluster.as_deref().map(addrs),
        expected(case.cluster),
        "{name}: cluster"
    );
    assert_eq!(
        got.local.as_deref().map(addrs),
        expected(case.local),
        "{name}: local"
    );
    let all = match (case.cluster, case.local) {
        (Some(_), Some(_)) => case.all,
        (Some(cluster), None) => Some(cluster),
        (None, local) => local,
    };
    let all = expected(all).unwrap_or_default();
    assert_eq!(addrs(&got.all_reachable), all, "{name}: all reachable");
    let mut sorted = got.all_reachable.clone();
    sorted.sort_by_key(|ep| ep.to_string());
    assert_eq!(sorted, got.all_reachable, "{name}: all reachable is sorted");
    let has_any = !all.is_empty() || case.only_remote;
    assert_eq!(got.has_any_endpoints, has_any, "{name}: has any endpoints");
}

#[test]
fn categorize_endpoints() {
    for case in zone_cases()
        .iter()
        .chain(&node_cases())
        .chain(&policy_cases())
    {
        check(case);
    }
}

fn categorized_modes(case: Case) -> (TopologyMode, bool, bool) {
    let endpoints: Vec<Endpoint> = case.endpoints.iter().map(|ep| ep.build()).collect();
    let node = NodeTopology {
        name: case.node.to_owned(),
        zone: case.zone.map(Into::into),
        ..NodeTopology::default()
    };
    let got = categorize(&endpoints, &case.port, &node, case.prefer_same_node);
    (
        got.topology,
        got.cluster_terminating_fallback,
        got.local_terminating_fallback,
    )
}

#[test]
fn topology_mode_and_fallbacks_are_reported() {
    let mode = |case| categorized_modes(case);
    let zoned = Case {
        endpoints: four_zoned(),
        ..BASE()
    };
    assert_eq!(mode(zoned), (TopologyMode::PreferSameZone, false, false));
    let by_node = Case {
        endpoints: four_node_hinted(),
        ..BASE()
    };
    assert_eq!(mode(by_node), (TopologyMode::PreferSameNode, false, false));
    let terminating = Case {
        port: port(false, true, true),
        endpoints: two(
            Ep {
                local: true,
                ..TERM
            },
            TERM,
        ),
        ..BASE()
    };
    assert_eq!(mode(terminating), (TopologyMode::None, true, true));
}

#[test]
fn local_fallback_merges_all_reachable() {
    // No topology, but the Local set fell back to a terminating endpoint that
    // is not in the (ready) Cluster set: the union must contain both.
    let case = Case {
        port: port(false, true, true),
        endpoints: two(
            EP,
            Ep {
                local: true,
                ..TERM
            },
        ),
        cluster: Some(&["10.0.0.0:80"]),
        local: Some(&["10.0.0.1:80"]),
        all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
        ..BASE()
    };
    check(&case);
}

#[test]
fn verdicts() {
    let node = NodeTopology {
        name: NODE.to_owned(),
        zone: None,
        ..NodeTopology::default()
    };
    let eps = |list: Vec<Ep>| -> Vec<Endpoint> { list.iter().map(|ep| ep.build()).collect() };
    // (port, endpoints) → (internal, external) as Forward(n) / "reject" / "drop"
    let cases = [
        (port(false, false, true), vec![], ("reject", "reject")),
        (
            port(false, false, true),
            two(NOT_READY, NOT_READY),
            ("reject", "reject"),
        ),
        (port(true, false, false), two(EP, EP), ("drop", "drop")),
        (port(false, true, true), two(EP, EP), ("2", "drop")),
        (port(false, true, true), two(EP, LOCAL), ("2", "1")),
        (port(true, true, true), two(LOCAL, LOCAL), ("2", "2")),
        (port(true, false, false), two(TERM, TERM), ("drop", "drop")),
        (port(true, false, true), two(TERM, TERM), ("drop", "2")),
    ];
    let show = |v: Verdict<'_, '_>| match v {
        Verdict::Forward(list) => list.len().to_string(),
        Verdict::Reject => "reject".to_owned(),
        Verdict::Drop => "drop".to_owned(),
    };
    for (i, (port, list, (internal, external))) in cases.into_iter().enumerate() {
        let endpoints = eps(list);
        let got = categorize(&endpoints, &port, &node, true);
        assert_eq!(show(got.internal()), internal, "case {i}: internal");
        assert_eq!(show(got.external()), external, "case {i}: external");
    }
}
