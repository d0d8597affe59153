//! The nftables rendering for a canonical set of Services: a sorted golden file, and the
//! packet tracer walking the rendered rules for every feature, held against `explain`'s
//! verdict from the model. Regenerate the golden file with `SLUICE_BLESS=1`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use sluice_model::service::{Endpoint, Protocol, ServicePort, ServicePortName, SessionAffinity};
use sluice_nft::{Family, text};

use super::*;
use sluice_proxy_core::Snapshot;
use sluice_proxy_core::backend::LocalDetect;
use sluice_proxy_core::config::NodeTopology;
use sluice_proxy_core::explain::{self, BackendCheck, NodeContext, Outcome};
use sluice_proxy_core::fixture::{Svc, apply, ep, lb_local, snapshot, svc};

const NODE_IP: &str = "192.168.0.2";
const POD_CIDR: &str = "10.180.0.0/16";

fn port(name: &str, cip: &str, f: impl FnOnce(ServicePort) -> ServicePort) -> ServicePort {
    f(svc(name, cip))
}

fn terminating(ip: &str, node: &str) -> Endpoint {
    Endpoint {
        ready: false,
        serving: true,
        terminating: true,
        ..ep(ip, node)
    }
}

/// Every feature once.
fn world() -> Snapshot {
    let udp = |mut p: ServicePort| {
        p.name = ServicePortName::new(&p.name.service(), "dns", Protocol::Udp);
        p.port = 53;
        p
    };
    let sctp = |mut p: ServicePort| {
        p.name = ServicePortName::new(&p.name.service(), "s", Protocol::Sctp);
        p.port = 9000;
        p
    };
    let e53 = |ip: &str| Endpoint {
        port: 5353,
        ..ep(ip, "node-b")
    };
    snapshot(
        "node-a",
        None,
        vec![
            (
                svc("svc1", "172.30.0.41"),
                vec![ep("10.180.0.1", "node-a"), ep("10.180.0.2", "node-b")],
            ),
            (
                port("np", "172.30.0.42", |p| ServicePort {
                    node_port: Some(3001),
                    ..p
                }),
                vec![ep("10.180.0.3", "node-b")],
            ),
            (
                port("ext", "172.30.0.43", |p| ServicePort {
                    external_ips: vec!["192.168.99.11".parse().unwrap()],
                    ..p
                }),
                vec![ep("10.180.0.4", "node-a")],
            ),
            (
                port("lb", "172.30.0.44", |p| ServicePort {
                    node_port: Some(3002),
                    load_balancer_vips: vec!["1.2.3.4".parse().unwrap()],
                    load_balancer_source_ranges: vec!["203.0.113.0/25".parse().unwrap()],
                    ..p
                }),
                vec![ep("10.180.0.5", "node-b")],
            ),
            (
                ServicePort {
                    node_port: Some(3003),
                    ..lb_local("lbl", "172.30.0.45", "5.6.7.8", 30001)
                },
                vec![ep("10.180.0.6", "node-a"), ep("10.180.0.7", "node-b")],
            ),
            (
                ServicePort {
                    node_port: Some(3004),
                    ..lb_local("lbn", "172.30.0.46", "5.6.7.9", 30002)
                },
                vec![ep("10.180.0.8", "node-b")],
            ),
            (
                Svc::itp_local(svc("itp", "172.30.0.47")),
                vec![ep("10.180.0.9", "node-b")],
            ),
            (
                port("aff", "172.30.0.48", |p| ServicePort {
                    session_affinity: Some(SessionAffinity::default()),
                    ..p
                }),
                vec![ep("10.180.0.10", "node-b"), ep("10.180.0.11", "node-b")],
            ),
            (svc("none", "172.30.0.49"), vec![]),
            (
                udp(svc("dns", "172.30.0.50")),
                vec![e53("10.180.0.12"), e53("10.180.0.13")],
            ),
            (
                sctp(svc("sctp", "172.30.0.51")),
                vec![ep("10.180.0.14", "node-b")],
            ),
            (
                svc("term", "172.30.0.52"),
                vec![terminating("10.180.0.15", "node-b")],
            ),
            (
                port("lbh", "172.30.0.53", |p| ServicePort {
                    load_balancer_vips: vec!["1.2.3.5".parse().unwrap()],
                    load_balancer_source_ranges: vec!["192.168.0.0/24".parse().unwrap()],
                    ..p
                }),
                vec![ep("10.180.0.16", "node-b")],
            ),
        ],
    )
}

fn cfg() -> NftConfig {
    NftConfig {
        local: LocalDetect::Cidrs(vec![POD_CIDR.parse().unwrap()]),
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
        node_ips: vec![NODE_IP.parse().unwrap()],
        ..NftConfig::new(Family::Ip)
    }
}

fn programmed(snap: &Snapshot) -> Desired {
    crate::rendered(&cfg(), snap)
}

#[test]
fn golden_ruleset() {
    let snap = world();
    let mut state = NftState::new(cfg());
    let pending = state.plan_full(&snap, None);
    let mut lines: Vec<String> = text::script(&pending.tx)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    let got = lines.join("\n") + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/nftables-ipv4.nft"
    );
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        got == want,
        "rendered rules differ from {path} (SLUICE_BLESS=1 regenerates):\n{got}"
    );
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn node() -> NodeContext {
    let ip: IpAddr = NODE_IP.parse().unwrap();
    NodeContext {
        topology: NodeTopology {
            name: "node-a".into(),
            ..NodeTopology::default()
        },
        node_ips: vec![ip],
        primary_ips: vec![ip],
        nodeport_ips: vec![ip],
        pod_cidrs: vec![POD_CIDR.parse().unwrap()],
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
        dialect: DIALECT,
        ..NodeContext::default()
    }
}

/// Traces `src` → `dst` and checks both the tracer's outcome and explain's verdict.
fn case(snap: &Snapshot, table: &Desired, src: &str, dst: &str, proto: Protocol, want: Outcome) {
    let node = node();
    let packet = explain::Packet {
        src: src.parse().unwrap(),
        dst: sock(dst),
        protocol: proto,
    };
    let tracer = Tracer::new(table, &node.node_ips);
    let check = BackendCheck::run("nftables", "rendered", &tracer, &packet, &node, &{
        explain::explain(snap, &node, &packet).unwrap().verdict
    });
    assert_eq!(check.traced, want, "tracer: {src} -> {dst}");
    assert!(
        check.agrees,
        "explain: {src} -> {dst}: {}",
        check.describe()
    );
}

/// DNAT to `list`, every branch masqueraded (or none).
fn dnat(list: &[&str], masquerade: bool) -> Outcome {
    Outcome::Dnat {
        endpoints: list.iter().map(|s| (sock(s), masquerade)).collect(),
    }
}

const POD: &str = "10.180.7.7";
const OUTSIDE: &str = "198.51.100.1";

#[test]
fn the_rendered_rules_do_what_the_model_says() {
    let snap = world();
    let t = programmed(&snap);
    let tcp = Protocol::Tcp;
    let both = ["10.180.0.1:80", "10.180.0.2:80"];
    // ClusterIP: pods keep their source, others are masqueraded; hairpin is masqueraded.
    case(&snap, &t, POD, "172.30.0.41:80", tcp, dnat(&both, false));
    case(&snap, &t, OUTSIDE, "172.30.0.41:80", tcp, dnat(&both, true));
    let hairpin = Outcome::Dnat {
        endpoints: [(sock(both[0]), true), (sock(both[1]), false)].into(),
    };
    case(&snap, &t, "10.180.0.1", "172.30.0.41:80", tcp, hairpin);
    // NodePort from outside and from the node itself; ExternalIP.
    case(
        &snap,
        &t,
        OUTSIDE,
        "192.168.0.2:3001",
        tcp,
        dnat(&["10.180.0.3:80"], true),
    );
    case(
        &snap,
        &t,
        NODE_IP,
        "192.168.0.2:3001",
        tcp,
        dnat(&["10.180.0.3:80"], true),
    );
    case(
        &snap,
        &t,
        OUTSIDE,
        "192.168.99.11:80",
        tcp,
        dnat(&["10.180.0.4:80"], true),
    );
    // Load balancer with source ranges.
    case(
        &snap,
        &t,
        "203.0.113.5",
        "1.2.3.4:80",
        tcp,
        dnat(&["10.180.0.5:80"], true),
    );
    case(&snap, &t, OUTSIDE, "1.2.3.4:80", tcp, Outcome::Drop);
    // The LB's own address passes only when the node's IP is inside the ranges.
    case(&snap, &t, "1.2.3.4", "1.2.3.4:80", tcp, Outcome::Drop);
    let lbh = dnat(&["10.180.0.16:80"], true);
    case(&snap, &t, "1.2.3.5", "1.2.3.5:80", tcp, lbh);
    case(&snap, &t, "203.0.113.5", "1.2.3.5:80", tcp, Outcome::Drop);
    // eTP=Local: outsiders keep their source and reach local endpoints only; pods and the
    // node short-circuit to all endpoints.
    case(
        &snap,
        &t,
        OUTSIDE,
        "5.6.7.8:80",
        tcp,
        dnat(&["10.180.0.6:80"], false),
    );
    case(
        &snap,
        &t,
        POD,
        "5.6.7.8:80",
        tcp,
        dnat(&["10.180.0.6:80", "10.180.0.7:80"], false),
    );
    case(
        &snap,
        &t,
        NODE_IP,
        "5.6.7.8:80",
        tcp,
        dnat(&["10.180.0.6:80", "10.180.0.7:80"], true),
    );
    case(
        &snap,
        &t,
        OUTSIDE,
        "192.168.0.2:30001",
        tcp,
        Outcome::Untouched,
    );
    // eTP=Local without local endpoints: outsiders are dropped, pods and the node itself
    // still short-circuit to every endpoint (kube-proxy's rules); iTP=Local without local
    // endpoints: drop.
    case(&snap, &t, OUTSIDE, "5.6.7.9:80", tcp, Outcome::Drop);
    case(&snap, &t, OUTSIDE, "192.168.0.2:3004", tcp, Outcome::Drop);
    let remote = ["10.180.0.8:80"];
    case(&snap, &t, POD, "5.6.7.9:80", tcp, dnat(&remote, false));
    case(&snap, &t, NODE_IP, "5.6.7.9:80", tcp, dnat(&remote, true));
    case(
        &snap,
        &t,
        POD,
        "192.168.0.2:3004",
        tcp,
        dnat(&remote, false),
    );
    case(
        &snap,
        &t,
        NODE_IP,
        "192.168.0.2:3004",
        tcp,
        dnat(&remote, true),
    );
    case(&snap, &t, POD, "172.30.0.47:80", tcp, Outcome::Drop);
    // Affinity, no endpoints (reject), UDP, SCTP, terminating fallback.
    case(
        &snap,
        &t,
        POD,
        "172.30.0.48:80",
        tcp,
        dnat(&["10.180.0.10:80", "10.180.0.11:80"], false),
    );
    case(&snap, &t, POD, "172.30.0.49:80", tcp, Outcome::Reject);
    case(
        &snap,
        &t,
        POD,
        "172.30.0.50:53",
        Protocol::Udp,
        dnat(&["10.180.0.12:5353", "10.180.0.13:5353"], false),
    );
    case(
        &snap,
        &t,
        POD,
        "172.30.0.51:9000",
        Protocol::Sctp,
        dnat(&["10.180.0.14:80"], false),
    );
    case(
        &snap,
        &t,
        POD,
        "172.30.0.52:80",
        tcp,
        dnat(&["10.180.0.15:80"], false),
    );
    // Not a Service; another port of a ClusterIP; an unallocated ClusterIP; NodePorts are
    // not served on loopback.
    case(&snap, &t, POD, "10.180.0.1:80", tcp, Outcome::Untouched);
    case(&snap, &t, POD, "172.30.0.41:81", tcp, Outcome::Reject);
    case(&snap, &t, POD, "172.30.9.9:80", tcp, Outcome::Drop);
    case(
        &snap,
        &t,
        "127.0.0.1",
        "127.0.0.1:3001",
        tcp,
        Outcome::Untouched,
    );
}

#[test]
fn a_partial_sync_touches_only_the_changed_port() {
    let mut st = sluice_proxy_core::fixture::state("node-a", None);
    let mut services: Vec<(ServicePort, Vec<Endpoint>)> = (0..50)
        .map(|i| {
            (
                svc(&format!("s{i}"), &format!("172.30.1.{i}")),
                vec![ep(&format!("10.180.1.{i}"), "node-b")],
            )
        })
        .collect();
    sluice_proxy_core::fixture::apply(&mut st, services.clone());
    let (snap, changes) = st.sync();
    let mut nft = NftState::new(cfg());
    let first = nft.plan_partial(&snap, &changes);
    let elements = |tx: &sluice_nft::Transaction| -> usize {
        (tx.ops.iter())
            .map(|op| match op {
                sluice_nft::Op::AddElements { elements, .. }
                | sluice_nft::Op::DeleteElements { elements, .. } => elements.len(),
                _ => 0,
            })
            .sum()
    };
    assert!(
        elements(&first.tx) > 50 * 3,
        "the first sync programs everything"
    );
    first.commit(&mut nft);
    drop(snap);
    // One endpoint added to one Service.
    services[7].1.push(ep("10.180.2.7", "node-b"));
    sluice_proxy_core::fixture::apply(&mut st, vec![services[7].clone()]);
    let (snap, changes) = st.sync();
    assert_eq!(changes.ports.len(), 1);
    let pending = nft.plan_partial(&snap, &changes);
    let touched: BTreeSet<String> = pending
        .tx
        .ops
        .iter()
        .filter_map(|op| match op {
            sluice_nft::Op::AddChain(c) => Some(c.name.clone()),
            sluice_nft::Op::FlushChain(c) | sluice_nft::Op::DeleteChain(c) => Some(c.clone()),
            sluice_nft::Op::AddRule { chain, .. } => Some(chain.clone()),
            _ => None,
        })
        .collect();
    // A Service reached only at its ClusterIP has no chain: its count is replaced (deleted,
    // added), its second endpoint and its hairpin element added. Elements only.
    assert!(touched.is_empty(), "{touched:#?}");
    let sets: BTreeSet<&str> = (pending.tx.ops.iter())
        .filter_map(|op| match op {
            sluice_nft::Op::AddElements { set, .. }
            | sluice_nft::Op::DeleteElements { set, .. } => Some(set.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets,
        BTreeSet::from(["hairpin", "service-counts", "service-endpoints"]),
        "{:#?}",
        pending.tx.ops
    );
    assert_eq!(elements(&pending.tx), 4, "{:#?}", pending.tx.ops);
    assert_eq!(pending.tx.ops.len(), 4, "{:#?}", pending.tx.ops);
    pending.commit(&mut nft);
    // Nothing changed: nothing to do.
    let (snap, changes) = st.sync();
    assert!(nft.plan_partial(&snap, &changes).is_empty());
    // A full sync against the beliefs finds nothing to repair.
    assert!(nft.plan_full(&snap, None).is_empty());
}

#[test]
fn removing_a_service_removes_all_of_it() {
    let mut st = sluice_proxy_core::fixture::state("node-a", None);
    let svcs = vec![
        (svc("a", "172.30.0.1"), vec![ep("10.180.0.1", "node-b")]),
        (svc("b", "172.30.0.2"), vec![ep("10.180.0.2", "node-b")]),
    ];
    sluice_proxy_core::fixture::apply(&mut st, svcs);
    let (snap, changes) = st.sync();
    let mut nft = NftState::new(cfg());
    nft.plan_partial(&snap, &changes).commit(&mut nft);
    let before = nft.believed();
    drop(snap);
    st.delete_service(&sluice_model::service::ServiceName::new("ns", "b"));
    let (snap, changes) = st.sync();
    let pending = nft.plan_partial(&snap, &changes);
    pending.commit(&mut nft);
    let after = nft.believed();
    assert!(after.chains.iter().all(|c| !c.contains("ns/b/")));
    for (set, n) in [
        ("service-counts", 1),
        ("service-endpoints", 1),
        ("hairpin", 1),
    ] {
        assert_eq!(
            (before.elements[set], after.elements[set]),
            (n + 1, n),
            "{set}"
        );
    }
    assert_eq!(after.elements["cluster-ips"], 1);
}

/// A full sync removes what the record holds and the snapshot no longer has (a Service
/// deleted while the partial sync that would have removed it failed), in Service order
/// between the ones that stay.
#[test]
fn a_full_sync_removes_what_only_the_record_still_has() {
    let mut st = sluice_proxy_core::fixture::state("node-a", None);
    let svcs = [("a", 1), ("b", 2), ("c", 3)].map(|(n, i)| {
        let cip = format!("172.30.0.{i}");
        (svc(n, &cip), vec![ep(&format!("10.180.0.{i}"), "node-b")])
    });
    sluice_proxy_core::fixture::apply(&mut st, svcs.to_vec());
    let (snap, _) = st.sync();
    let mut nft = NftState::new(cfg());
    nft.plan_full(&snap, None).commit(&mut nft);
    drop(snap);
    st.delete_service(&sluice_model::service::ServiceName::new("ns", "b"));
    let (snap, _) = st.sync();
    let pending = nft.plan_full(&snap, None);
    // b is map elements only: its count and endpoint go, and nothing else.
    let b_ip = sluice_nft::KeyValue::Addr("172.30.0.2".parse().unwrap());
    let deleted: Vec<(&str, &sluice_nft::Element)> = (pending.tx.ops.iter())
        .flat_map(|op| match op {
            sluice_nft::Op::DeleteElements { set, elements } => {
                elements.iter().map(|e| (set.as_str(), e)).collect()
            }
            _ => vec![],
        })
        .filter(|(set, _)| set.starts_with("service-"))
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted.iter().all(|(_, e)| e.key[0] == b_ip), "{deleted:?}");
    pending.commit(&mut nft);
    let after = nft.believed();
    assert_eq!(after.elements["service-counts"], 2);
    assert!(nft.claims_match_pieces());
    // Converged: nothing to send, and nothing to record (no second copy of the record).
    let again = nft.plan_full(&snap, None);
    assert!(again.is_empty());
    assert_eq!(again.to_record_len(), 0);
}

/// Writes the unsorted script of the world for a manual `nft -f` check (debug aid).
#[test]
fn script_of_the_world_is_written_when_asked() {
    if let Some(path) = std::env::var_os("SLUICE_NFT_SCRIPT") {
        let mut state = NftState::new(cfg());
        let pending = state.plan_full(&world(), None);
        std::fs::write(path, text::script(&pending.tx)).unwrap();
    }
}

#[test]
fn a_hairpin_element_two_services_share_stays_until_both_are_gone() {
    let mut st = sluice_proxy_core::fixture::state("node-a", None);
    let shared = ep("10.180.0.1", "node-a");
    apply(
        &mut st,
        vec![
            (svc("a", "172.30.0.1"), vec![shared.clone()]),
            (svc("b", "172.30.0.2"), vec![shared.clone()]),
        ],
    );
    let (snap, changes) = st.sync();
    let mut nft = NftState::new(cfg());
    nft.plan_partial(&snap, &changes).commit(&mut nft);
    drop(snap);
    let hairpin = |nft: &NftState| nft.believed().elements.get("hairpin").copied().unwrap_or(0);
    assert_eq!(hairpin(&nft), 1);
    st.delete_service(&sluice_model::service::ServiceName::new("ns", "a"));
    let (snap, changes) = st.sync();
    let pending = nft.plan_partial(&snap, &changes);
    assert!(
        !pending
            .tx
            .ops
            .iter()
            .any(|op| matches!(op, sluice_nft::Op::DeleteElements { set, .. } if set == "hairpin")),
        "b still needs it: {:#?}",
        pending.tx.ops
    );
    pending.commit(&mut nft);
    assert_eq!(hairpin(&nft), 1);
    drop(snap);
    st.delete_service(&sluice_model::service::ServiceName::new("ns", "b"));
    let (snap, changes) = st.sync();
    let pending = nft.plan_partial(&snap, &changes);
    assert!(
        pending
            .tx
            .ops
            .iter()
            .any(|op| matches!(op, sluice_nft::Op::DeleteElements { set, .. } if set == "hairpin"))
    );
    pending.commit(&mut nft);
    assert_eq!(hairpin(&nft), 0);
}

#[test]
fn an_interface_detector_tells_pods_by_their_interface() {
    use sluice_proxy_core::explain::Tracer as _;
    let snap = world();
    let mut state = NftState::new(NftConfig {
        local: LocalDetect::Bridge("cni0".into()),
        ..cfg()
    });
    let pending = state.plan_full(&snap, None);
    let text = text::script(&pending.tx);
    let table = state.render_all(&snap);
    assert!(
        text.contains("iifname != \"cni0\" jump mark-for-masquerade"),
        "{text}"
    );
    assert!(!text.contains("@local-cidrs"), "{text}");
    let node = node();
    let tracer = Tracer::new(&table, &node.node_ips).with_pod_sources(&node.pod_cidrs);
    let packet = |src: &str| explain::Packet {
        src: src.parse().unwrap(),
        dst: sock("172.30.0.41:80"),
        protocol: Protocol::Tcp,
    };
    let both = ["10.180.0.1:80", "10.180.0.2:80"];
    let pod = tracer.trace(&packet(POD), explain::Origin::Remote);
    assert_eq!(pod, dnat(&both, false), "pods (on cni0) keep their source");
    let outside = tracer.trace(&packet(OUTSIDE), explain::Origin::Remote);
    assert_eq!(outside, dnat(&both, true), "others are masqueraded");
}
