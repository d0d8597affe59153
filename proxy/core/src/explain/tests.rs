use std::collections::BTreeSet;
use std::net::SocketAddr;

use sluice_model::service::{Endpoint, Protocol, ServicePort};

use super::*;
use crate::fixture::{Svc, ep, lb_local, snapshot, svc};
use crate::snapshot::Snapshot;

fn hinted(ip: &str, node: &str, zone: &str) -> Endpoint {
    Endpoint {
        zone: Some(zone.into()),
        ..ep(ip, node).with_hints(BTreeSet::from([zone.to_owned()]), BTreeSet::new())
    }
}

fn terminating(ip: &str, node: &str, serving: bool) -> Endpoint {
    Endpoint {
        ready: false,
        serving,
        terminating: true,
        ..ep(ip, node)
    }
}

fn not_ready(ip: &str, node: &str) -> Endpoint {
    Endpoint {
        ready: false,
        serving: false,
        ..ep(ip, node)
    }
}

fn world() -> Snapshot {
    let lb = ServicePort {
        load_balancer_source_ranges: vec!["203.0.113.0/25".parse().unwrap()],
        ..lb_local("lb", "172.30.0.42", "1.2.3.4", 30000)
    };
    snapshot(
        "node-a",
        Some("zone-a"),
        vec![
            (
                svc("svc1", "172.30.0.41"),
                vec![ep("10.180.0.1", "node-a"), ep("10.180.0.2", "node-b")],
            ),
            (lb, vec![ep("10.180.0.3", "node-b")]),
            (svc("empty", "172.30.0.43"), vec![]),
            (
                Svc::itp_local(svc("itp", "172.30.0.44")),
                vec![ep("10.180.0.4", "node-b")],
            ),
            (
                svc("zoned", "172.30.0.45"),
                vec![
                    hinted("10.180.0.5", "node-c", "zone-a"),
                    hinted("10.180.0.6", "node-d", "zone-b"),
                    terminating("10.180.0.7", "node-c", true),
                    not_ready("10.180.0.8", "node-c"),
                    terminating("10.180.0.9", "node-c", false),
                ],
            ),
            (
                svc("term", "172.30.0.46"),
                vec![terminating("10.180.0.10", "node-b", true)],
            ),
        ],
    )
}

fn node(name: &str) -> NodeContext {
    let ip: std::net::IpAddr = "192.168.0.2".parse().unwrap();
    NodeContext {
        topology: crate::config::NodeTopology {
            name: name.to_owned(),
            zone: Some("zone-a".to_owned()),
            ..Default::default()
        },
        node_ips: vec![ip, "127.0.0.1".parse().unwrap()],
        primary_ips: vec![ip],
        nodeport_ips: vec![ip],
        pod_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
        ..NodeContext::default()
    }
}

fn run(node_name: &str, src: &str, dst: &str, protocol: Protocol) -> Explanation {
    let packet = Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol,
    };
    explain(&world(), &node(node_name), &packet).unwrap()
}

fn dnat(addrs: &[&str]) -> VerdictView {
    VerdictView::Dnat {
        endpoints: addrs
            .iter()
            .map(|a| a.parse::<SocketAddr>().unwrap())
            .collect(),
        masquerade: false,
        hairpin_masquerade: false,
    }
}

fn masq(addrs: &[&str]) -> VerdictView {
    let VerdictView::Dnat { endpoints, .. } = dnat(addrs) else {
        unreachable!()
    };
    VerdictView::Dnat {
        endpoints,
        masquerade: true,
        hairpin_masquerade: false,
    }
}

/// Name, source, destination, node, protocol, destination kind, verdict.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Protocol,
    Option<DestinationKind>,
    VerdictView,
);

#[test]
fn verdict_table() {
    use DestinationKind::*;
    let tcp = Protocol::Tcp;
    let cases: Vec<Case> = vec![
        (
            "cluster IP from a pod",
            "10.0.1.1",
            "172.30.0.41:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            dnat(&["10.180.0.1:80", "10.180.0.2:80"]),
        ),
        (
            "LB from an allowed source, no local endpoint",
            "203.0.113.5",
            "1.2.3.4:80",
            "node-a",
            tcp,
            Some(LoadBalancer),
            VerdictView::DropNoLocalEndpoints,
        ),
        (
            "LB from outside the source ranges",
            "198.51.100.1",
            "1.2.3.4:80",
            "node-a",
            tcp,
            Some(LoadBalancer),
            VerdictView::DropSourceRange,
        ),
        (
            "LB on the node with the endpoint",
            "203.0.113.5",
            "1.2.3.4:80",
            "node-b",
            tcp,
            Some(LoadBalancer),
            dnat(&["10.180.0.3:80"]),
        ),
        (
            "node port from outside: no source ranges, ETP Local",
            "8.8.8.8",
            "192.168.0.2:3001",
            "node-a",
            tcp,
            Some(NodePort),
            VerdictView::DropNoLocalEndpoints,
        ),
        (
            "node port from a pod short-circuits",
            "10.0.1.1",
            "192.168.0.2:3001",
            "node-a",
            tcp,
            Some(NodePort),
            dnat(&["10.180.0.3:80"]),
        ),
        (
            "node port from the node itself short-circuits, masqueraded",
            "192.168.0.2",
            "192.168.0.2:3001",
            "node-a",
            tcp,
            Some(NodePort),
            masq(&["10.180.0.3:80"]),
        ),
        (
            "cluster IP from outside the pod network is masqueraded",
            "192.168.0.7",
            "172.30.0.41:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            masq(&["10.180.0.1:80", "10.180.0.2:80"]),
        ),
        (
            "loopback is not a NodePort address in nftables mode",
            "127.0.0.1",
            "127.0.0.1:3001",
            "node-a",
            tcp,
            None,
            VerdictView::NoService,
        ),
        (
            "unallocated ClusterIP",
            "10.0.1.1",
            "172.30.9.9:80",
            "node-a",
            tcp,
            None,
            VerdictView::DropUnallocatedClusterIp,
        ),
        (
            "LB's cluster IP uses the Cluster policy",
            "10.0.1.1",
            "172.30.0.42:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            dnat(&["10.180.0.3:80"]),
        ),
        (
            "no endpoints anywhere",
            "10.0.1.1",
            "172.30.0.43:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            VerdictView::RejectNoEndpoints,
        ),
        (
            "ITP Local, endpoint elsewhere",
            "10.0.1.1",
            "172.30.0.44:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            VerdictView::DropNoLocalEndpoints,
        ),
        (
            "ITP Local from the endpoint's node",
            "10.0.1.1",
            "172.30.0.44:80",
            "node-b",
            tcp,
            Some(ClusterIP),
            dnat(&["10.180.0.4:80"]),
        ),
        (
            "topology hints pick the zone",
            "10.0.1.1",
            "172.30.0.45:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            dnat(&["10.180.0.5:80"]),
        ),
        (
            "terminating fallback",
            "10.0.1.1",
            "172.30.0.46:80",
            "node-a",
            tcp,
            Some(ClusterIP),
            dnat(&["10.180.0.10:80"]),
        ),
        (
            "wrong port",
            "10.0.1.1",
            "172.30.0.41:81",
            "node-a",
            tcp,
            None,
            VerdictView::RejectUnservedPort,
        ),
        (
            "wrong protocol",
            "10.0.1.1",
            "172.30.0.41:80",
            "node-a",
            Protocol::Udp,
            None,
            VerdictView::RejectUnservedPort,
        ),
        (
            "not a Service",
            "10.0.1.1",
            "9.9.9.9:80",
            "node-a",
            tcp,
            None,
            VerdictView::NoService,
        ),
        (
            "node port on a non-node IP",
            "8.8.8.8",
            "192.168.0.9:3001",
            "node-a",
            tcp,
            None,
            VerdictView::NoService,
        ),
    ];
    for (name, src, dst, node_name, protocol, destination, verdict) in cases {
        let e = run(node_name, src, dst, protocol);
        assert_eq!(e.destination, destination, "{name}");
        assert_eq!(e.verdict, verdict, "{name}");
    }
}

#[test]
fn endpoint_reasons() {
    let e = run("node-a", "10.0.1.1", "172.30.0.45:80", Protocol::Tcp);
    assert_eq!(e.topology, Some("PreferSameZone"));
    let reasons: Vec<(String, Option<Exclusion>)> = e
        .endpoints
        .iter()
        .map(|ep| (ep.address.to_string(), ep.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("10.180.0.5:80".to_owned(), None),
            ("10.180.0.6:80".to_owned(), Some(Exclusion::OtherZone)),
            ("10.180.0.7:80".to_owned(), Some(Exclusion::Terminating)),
            ("10.180.0.8:80".to_owned(), Some(Exclusion::NotReady)),
            (
                "10.180.0.9:80".to_owned(),
                Some(Exclusion::TerminatingNotServing)
            ),
        ]
    );
    let local = run("node-a", "203.0.113.5", "1.2.3.4:80", Protocol::Tcp);
    assert_eq!(local.endpoints[0].reason, Some(Exclusion::NotLocal));
    let policy = local.policy.as_ref().unwrap();
    assert_eq!(
        (policy.traffic, policy.policy, policy.short_circuit),
        ("external", "Local", false)
    );
    assert_eq!(local.source_ranges.as_ref().map(|r| r.allowed), Some(true));
    let fallback = run("node-a", "10.0.1.1", "172.30.0.46:80", Protocol::Tcp);
    assert!(fallback.terminating_fallback);
}

#[test]
fn policies_and_notes() {
    let short = run("node-a", "10.0.1.1", "192.168.0.2:3001", Protocol::Tcp);
    let policy = short.policy.as_ref().unwrap();
    assert_eq!((policy.source, policy.short_circuit), ("pod", true));
    assert!(
        short.notes[0].contains("as if the policy were Cluster"),
        "{:?}",
        short.notes
    );
    let miss = run("node-a", "10.0.1.1", "172.30.0.41:81", Protocol::Tcp);
    assert!(
        miss.notes[0].contains("belongs to Service ns/svc1"),
        "{:?}",
        miss.notes
    );
}

#[test]
fn families_must_match() {
    let packet = |src: &str, dst: &str| Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: Protocol::Tcp,
    };
    let err = explain(
        &world(),
        &node("node-a"),
        &packet("fd00::1", "[fd00::2]:80"),
    )
    .unwrap_err();
    assert!(matches!(err, ExplainError::WrongFamily { .. }), "{err}");
    let err = explain(
        &world(),
        &node("node-a"),
        &packet("10.0.0.1", "[fd00::2]:80"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("different address families"),
        "{err}"
    );
}

#[test]
fn plain_words() {
    let text = render_text(&run("node-a", "10.0.1.1", "172.30.0.45:80", Protocol::Tcp));
    for needle in [
        "packet:   TCP 10.0.1.1 -> 172.30.0.45:80 on node node-a",
        "service:  ns/zoned:p80 (ClusterIP 172.30.0.45:80)",
        "policy:   internal traffic from pod, internalTrafficPolicy: Cluster",
        "topology: PreferSameZone",
        "not eligible: hinted for another zone",
        "not eligible: not ready",
        "verdict:  DNAT to one of 10.180.0.5:80",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    let drop = render_text(&run("node-a", "198.51.100.1", "1.2.3.4:80", Protocol::Tcp));
    assert!(drop.contains("198.51.100.1 NOT allowed"), "{drop}");
    assert!(
        drop.contains("verdict:  DROP: the source is outside loadBalancerSourceRanges"),
        "{drop}"
    );
    let none = render_text(&run("node-a", "10.0.1.1", "9.9.9.9:80", Protocol::Tcp));
    assert!(
        none.contains("service:  none") && none.contains("no Service"),
        "{none}"
    );
}

#[test]
fn json() {
    let json: serde_json::Value = serde_json::from_str(&render_json(&run(
        "node-a",
        "10.0.1.1",
        "172.30.0.41:80",
        Protocol::Tcp,
    )))
    .unwrap();
    assert_eq!(json["servicePort"], "ns/svc1:p80");
    assert_eq!(json["destination"], "ClusterIP");
    assert_eq!(json["packet"]["protocol"], "tcp");
    assert_eq!(json["policy"]["traffic"], "internal");
    assert_eq!(json["verdict"]["action"], "dnat");
    assert_eq!(json["verdict"]["endpoints"][1], "10.180.0.2:80");
    assert_eq!(json["endpoints"][0]["eligible"], true);
    let reject: serde_json::Value = serde_json::from_str(&render_json(&run(
        "node-a",
        "10.0.1.1",
        "172.30.0.43:80",
        Protocol::Tcp,
    )))
    .unwrap();
    assert_eq!(reject["verdict"]["action"], "reject-no-endpoints");
    let zoned: serde_json::Value = serde_json::from_str(&render_json(&run(
        "node-a",
        "10.0.1.1",
        "172.30.0.45:80",
        Protocol::Tcp,
    )))
    .unwrap();
    assert_eq!(zoned["endpoints"][1]["reason"], "other-zone");
}

/// The eBPF mode's IPv6 (socket layer and tc path) gives kube-proxy's ip6 verdicts: what
/// nftables drops it drops, and traffic from outside the node is translated.
#[test]
fn ebpf_ipv6_explains_as_nftables_does() {
    use sluice_model::service::IpFamily;
    let ep6 = |ip: &str, node: &str| Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::new(ip.parse::<std::net::IpAddr>().unwrap(), 80)
    };
    let snap = crate::fixture::snapshot_in(
        IpFamily::V6,
        "node-a",
        None,
        vec![
            (svc("web", "fd00:96::1"), vec![ep6("fd10::1", "node-b")]),
            (
                Svc::itp_local(svc("itp", "fd00:96::2")),
                vec![ep6("fd10::1", "node-b")],
            ),
            (svc("empty", "fd00:96::3"), vec![]),
        ],
    );
    let node6 = |dialect: Dialect| NodeContext {
        node_ips: vec!["fd00::2".parse().unwrap()],
        primary_ips: vec!["fd00::2".parse().unwrap()],
        pod_cidrs: vec!["fd10::/64".parse().unwrap()],
        service_cidrs: vec!["fd00:96::/112".parse().unwrap()],
        dialect,
        ..node("node-a")
    };
    let verdict = |dialect: Dialect, src: &str, dst: &str| {
        let packet = Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: Protocol::Tcp,
        };
        explain(&snap, &node6(dialect), &packet).unwrap().verdict
    };
    let (ebpf, nft) = (Dialect::EBPF, Dialect::NFTABLES);
    let pod = "fd10::9";
    assert_eq!(
        verdict(ebpf, pod, "[fd00:96::3]:80"),
        VerdictView::RejectNoEndpoints
    );
    assert_eq!(
        verdict(ebpf, pod, "[fd00:96::2]:80"),
        VerdictView::DropNoLocalEndpoints
    );
    assert_eq!(
        verdict(ebpf, pod, "[fd00:96::99]:80"),
        VerdictView::DropUnallocatedClusterIp
    );
    for (src, dst) in [
        (pod, "[fd00:96::1]:80"),
        ("fd00::250", "[fd00:96::1]:80"),
        (pod, "[fd00:96::2]:80"),
        (pod, "[fd00:96::99]:80"),
    ] {
        let (e, n) = (verdict(ebpf, src, dst), verdict(nft, src, dst));
        assert_eq!(
            std::mem::discriminant(&e),
            std::mem::discriminant(&n),
            "{src} -> {dst}: {e:?} / {n:?}"
        );
    }
}
