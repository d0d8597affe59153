//! Mode switches between `iptables` and `ipvs` over the fakes: what each mode's start
//! removes of the other leaves the tables, after the starting mode's first full sync,
//! exactly as that mode alone writes them — and a restart in the same mode removes nothing.

use std::net::IpAddr;

use sluice_conntrack::NoConntrack;
use sluice_model::service::{IpFamily, ServicePort, ServiceType};
use sluice_proxy_core::ProxyState;
use sluice_proxy_core::backend::Backend;
use sluice_proxy_core::fixture::{self, ep, svc};
use sluice_proxy_iptables::dump::Dump;
use sluice_proxy_iptables::{FakeIptables, IptConfig, IptablesBackend};
use sluice_proxy_ipvs::switch::{remove_iptables_mode, remove_ipvs_rules};
use sluice_proxy_ipvs::{FakeIpset, FakeIpvs, FakeVips, IpvsBackend, IpvsConfig};

type IpvsFakes = IpvsBackend<FakeIpvs, FakeVips, FakeIpset, FakeIptables>;

const NODE: &str = "node-1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A NodePort Service with a source-range-free load balancer: every kind of chain.
fn state() -> ProxyState {
    let web = ServicePort {
        service_type: ServiceType::LoadBalancer,
        node_port: Some(30080),
        external_ips: vec![ip("203.0.113.7")],
        load_balancer_vips: vec![ip("198.51.100.9")],
        ..svc("web", "172.30.0.10")
    };
    let mut state = fixture::state(NODE, None);
    fixture::apply(
        &mut state,
        vec![
            (
                web,
                vec![ep("10.180.0.1", NODE), ep("10.180.1.1", "node-2")],
            ),
            (svc("db", "172.30.0.11"), vec![ep("10.180.0.2", NODE)]),
        ],
    );
    state
}

/// The iptables mode's full sync of [`state`] over `ipt`; the fake back.
fn iptables_sync(ipt: FakeIptables) -> FakeIptables {
    // Without localhost NodePorts: the kubelet's KUBE-FIREWALL chain, which the iptables
    // mode also ensures, belongs to the kubelet and is never removed (as upstream).
    let cfg = IptConfig {
        localhost_nodeports: false,
        ..IptConfig::new(IpFamily::V4)
    };
    let mut b = IptablesBackend::new([(ipt, cfg)], NoConntrack);
    let (snap, changes) = state().sync();
    b.apply(&snap, &changes).unwrap();
    std::mem::take(b.iptables(IpFamily::V4).unwrap())
}

fn ipvs_backend(ipt: FakeIptables) -> IpvsFakes {
    let cfg = IpvsConfig::v4(&[ip("192.168.0.2")]);
    IpvsBackend::new(
        FakeIpvs::default(),
        FakeVips::default(),
        FakeIpset::default(),
        [(ipt, cfg)],
    )
}

fn ipvs_sync(b: &mut IpvsFakes) {
    let (snap, changes) = state().sync();
    b.apply(&snap, &changes).unwrap();
}

/// Every table's chains and rules, sorted (restores and `-I` order the same rules
/// differently; what is there is what counts).
fn tables(ipt: &FakeIptables) -> Vec<(String, String, Vec<String>)> {
    let dump: Dump = ipt.dump();
    let mut all: Vec<_> = (dump.tables.iter())
        .flat_map(|t| {
            t.chains.iter().map(|c| {
                let mut rules = c.rules.clone();
                rules.sort();
                (t.name.clone(), c.name.clone(), rules)
            })
        })
        .collect();
    all.sort();
    all
}

#[test]
fn starting_ipvs_after_iptables_leaves_exactly_the_ipvs_rules() {
    let mut ipt = iptables_sync(FakeIptables::new());
    let chains = |ipt: &FakeIptables| -> Vec<String> {
        tables(ipt)
            .into_iter()
            .map(|(t, c, _)| format!("{t}/{c}"))
            .collect()
    };
    assert!(chains(&ipt).iter().any(|c| c.starts_with("nat/KUBE-SVC-")));
    let removed = remove_iptables_mode(&mut ipt).unwrap();
    assert!(
        removed
            .chains
            .iter()
            .any(|c| c.starts_with("nat/KUBE-SEP-"))
    );
    let left = chains(&ipt);
    for gone in [
        "nat/KUBE-SVC-",
        "nat/KUBE-SEP-",
        "nat/KUBE-EXT-",
        "nat/KUBE-NODEPORTS",
        "filter/KUBE-SERVICES",
        "filter/KUBE-EXTERNAL-SERVICES",
        "filter/KUBE-NODEPORTS",
        "mangle/KUBE-PROXY-CANARY",
        "nat/KUBE-PROXY-CANARY",
        "filter/KUBE-PROXY-CANARY",
    ] {
        assert!(
            !left.iter().any(|c| c.starts_with(gone)),
            "{gone} left: {left:?}"
        );
    }
    // The chains both modes write stay for the first sync to rewrite.
    for kept in [
        "nat/KUBE-SERVICES",
        "nat/KUBE-POSTROUTING",
        "filter/KUBE-FORWARD",
    ] {
        assert!(left.iter().any(|c| c == kept), "{kept} removed: {left:?}");
    }
    let mut b = ipvs_backend(ipt);
    ipvs_sync(&mut b);
    let mut alone = ipvs_backend(FakeIptables::new());
    ipvs_sync(&mut alone);
    assert_eq!(
        tables(b.iptables(IpFamily::V4).unwrap()),
        tables(alone.iptables(IpFamily::V4).unwrap())
    );
}

#[test]
fn starting_iptables_after_ipvs_leaves_exactly_the_iptables_rules() {
    let mut b = ipvs_backend(FakeIptables::new());
    ipvs_sync(&mut b);
    assert!(!b.ipvs().services.is_empty() && b.vips().exists);
    b.remove_for_iptables_mode().unwrap();
    assert!(b.ipvs().services.is_empty());
    assert!(!b.vips().exists && b.vips().addrs.is_empty());
    assert!(b.ipset().sets.keys().all(|s| !s.starts_with("KUBE-")));
    let ipt = std::mem::take(b.iptables(IpFamily::V4).unwrap());
    let left = tables(&ipt);
    for (t, c, rules) in &left {
        for gone in [
            "KUBE-NODE-PORT",
            "KUBE-LOAD-BALANCER",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
        ] {
            assert_ne!(c, gone, "{t}/{c} left");
        }
        // A set cannot be destroyed while a rule matches it.
        assert!(
            rules.iter().all(|r| !r.contains("--match-set")),
            "{rules:?}"
        );
        assert!(
            rules
                .iter()
                .all(|r| !r.contains("kube-proxy firewall rules")),
            "{rules:?}"
        );
    }
    assert!(
        left.iter()
            .any(|(t, c, _)| t == "nat" && c == "KUBE-SERVICES")
    );
    let switched = iptables_sync(ipt);
    let alone = iptables_sync(FakeIptables::new());
    assert_eq!(tables(&switched), tables(&alone));
}

#[test]
fn a_restart_in_the_same_mode_removes_nothing() {
    let mut ipt = iptables_sync(FakeIptables::new());
    let before = tables(&ipt);
    let restores = ipt.last_restore().to_owned();
    let removed = remove_ipvs_rules(&mut ipt, IpFamily::V4).unwrap();
    assert_eq!(removed, Default::default());
    assert_eq!(tables(&ipt), before);
    assert_eq!(ipt.last_restore(), restores);

    let mut b = ipvs_backend(FakeIptables::new());
    ipvs_sync(&mut b);
    let ipt = b.iptables(IpFamily::V4).unwrap();
    let before = tables(ipt);
    let restores = ipt.last_restore().to_owned();
    assert_eq!(remove_iptables_mode(ipt).unwrap(), Default::default());
    assert_eq!(tables(ipt), before);
    assert_eq!(ipt.last_restore(), restores);
}
