//! The IPVS backend over its fakes: what a sync programs (virtual and real servers, the
//! dummy link's addresses, set members, the rules), that partial syncs cost what changed,
//! that a restart adopts without writing, graceful termination, and cleanup.

use std::net::IpAddr;

use sluice_model::service::{
    Endpoint, Protocol, ServiceName, ServicePort, ServicePortName, ServiceType, SessionAffinity,
    TrafficPolicy,
};
use sluice_proxy_core::ProxyState;
use sluice_proxy_core::backend::Backend;
use sluice_proxy_core::fixture::{self, ep, svc};
use sluice_proxy_iptables::FakeIptables;
use sluice_proxy_ipvs::types::{F_PERSISTENT, F_SOURCE_HASH, RsKey, TCP, UDP, VsKey};
use sluice_proxy_ipvs::{FakeIpset, FakeIpvs, FakeVips, IpvsBackend, IpvsConfig, render};

type Fakes = IpvsBackend<FakeIpvs, FakeVips, FakeIpset, FakeIptables>;

const NODE: &str = "node-1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg() -> IpvsConfig {
    IpvsConfig::v4(&[ip("192.168.0.2")])
}

fn backend() -> Fakes {
    IpvsBackend::new(
        FakeIpvs::default(),
        FakeVips::default(),
        FakeIpset::default(),
        [(FakeIptables::new(), cfg())],
    )
}

fn key(addr: &str, protocol: u16, port: u16) -> VsKey {
    VsKey {
        addr: ip(addr),
        protocol,
        port,
    }
}

fn rs(addr: &str, port: u16) -> RsKey {
    RsKey {
        addr: ip(addr),
        port,
    }
}

fn web() -> ServicePort {
    ServicePort {
        service_type: ServiceType::LoadBalancer,
        node_port: Some(30080),
        external_ips: vec![ip("203.0.113.7")],
        load_balancer_vips: vec![ip("198.51.100.9")],
        session_affinity: Some(SessionAffinity {
            timeout_seconds: 600,
        }),
        ..svc("web", "172.30.0.10")
    }
}

fn sync(state: &mut ProxyState, b: &mut Fakes) {
    let (snap, changes) = state.sync();
    b.apply(&snap, &changes).unwrap();
}

#[test]
fn every_service_address_gets_a_virtual_server_with_persistence_and_its_endpoints() {
    let snap = fixture::snapshot(
        NODE,
        None,
        vec![(
            web(),
            vec![ep("10.180.0.1", NODE), ep("10.180.1.1", "node-2")],
        )],
    );
    let all = render::union(render(&cfg(), &snap).values());
    let want_rs = [rs("10.180.0.1", 80), rs("10.180.1.1", 80)].into();
    for k in [
        key("172.30.0.10", TCP, 80),
        key("203.0.113.7", TCP, 80),
        key("198.51.100.9", TCP, 80),
        key("192.168.0.2", TCP, 30080),
    ] {
        let (vs, real) = all.servers.get(&k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(
            (vs.scheduler.as_str(), vs.flags, vs.timeout),
            ("rr", F_PERSISTENT, 600)
        );
        assert_eq!(real, &want_rs, "{k}");
    }
    assert_eq!(all.servers.len(), 4);
    // The ClusterIP, the external IP (not a node address) and the LB IP on kube-ipvs0.
    assert_eq!(
        all.vips,
        [ip("172.30.0.10"), ip("198.51.100.9"), ip("203.0.113.7")].into()
    );
    let has = |set: &str, m: &str| all.sets.get(set).is_some_and(|s| s.contains(m));
    assert!(has("KUBE-CLUSTER-IP", "172.30.0.10,tcp:80"));
    assert!(has("KUBE-EXTERNAL-IP", "203.0.113.7,tcp:80"));
    assert!(has("KUBE-LOAD-BALANCER", "198.51.100.9,tcp:80"));
    assert!(has("KUBE-NODE-PORT-TCP", "30080"));
    assert!(
        has("KUBE-LOOP-BACK", "10.180.0.1,tcp:80,10.180.0.1"),
        "local endpoint only"
    );
    assert!(!has("KUBE-LOOP-BACK", "10.180.1.1,tcp:80,10.180.1.1"));
    assert!(has("KUBE-IPVS-IPS", "172.30.0.10"));
}

#[test]
fn local_policies_use_local_endpoints_and_fall_back_to_the_cluster_set_without_any() {
    let local = ServicePort {
        external_traffic_policy: TrafficPolicy::Local,
        session_affinity: None,
        ..web()
    };
    let eps = vec![ep("10.180.0.1", NODE), ep("10.180.1.1", "node-2")];
    let snap = fixture::snapshot(NODE, None, vec![(local.clone(), eps)]);
    let all = render::union(render(&cfg(), &snap).values());
    assert_eq!(
        all.servers[&key("192.168.0.2", TCP, 30080)].1,
        [rs("10.180.0.1", 80)].into()
    );
    assert_eq!(
        all.servers[&key("172.30.0.10", TCP, 80)].1.len(),
        2,
        "ClusterIP: Cluster"
    );
    assert!(all.sets["KUBE-NODE-PORT-LOCAL-TCP"].contains("30080"));
    // No local endpoint: kube-proxy's IPVS mode serves the node port from all endpoints.
    let snap = fixture::snapshot(NODE, None, vec![(local, vec![ep("10.180.1.1", "node-2")])]);
    let all = render::union(render(&cfg(), &snap).values());
    assert_eq!(
        all.servers[&key("192.168.0.2", TCP, 30080)].1,
        [rs("10.180.1.1", 80)].into()
    );
}

#[test]
fn the_mh_scheduler_hashes_ports_and_no_endpoints_is_a_virtual_server_without_real_servers() {
    let mut c = cfg();
    c.scheduler = "mh".into();
    let snap = fixture::snapshot(NODE, None, vec![(svc("a", "172.30.0.1"), vec![])]);
    let all = render::union(render(&c, &snap).values());
    let (vs, real) = &all.servers[&key("172.30.0.1", TCP, 80)];
    assert_eq!((vs.scheduler.as_str(), vs.flags), ("mh", F_SOURCE_HASH));
    assert!(real.is_empty());
}

#[test]
fn a_full_sync_programs_everything_and_a_restart_adopts_it_without_a_write() {
    let mut state = fixture::state(NODE, None);
    fixture::apply(&mut state, vec![(web(), vec![ep("10.180.0.1", NODE)])]);
    let mut b = backend();
    sync(&mut state, &mut b);
    let k = key("172.30.0.10", TCP, 80);
    assert_eq!(b.ipvs().services.len(), 4);
    assert!(b.ipvs().services[&k].1.contains_key(&rs("10.180.0.1", 80)));
    assert!(b.vips().exists && b.vips().addrs.contains(&ip("172.30.0.10")));
    assert!(b.ipset().sets["KUBE-CLUSTER-IP"].contains("172.30.0.10,tcp:80"));
    let rules = b.ipvs().writes;
    assert_eq!(rules, 4 + 4, "4 virtual servers, 4 real servers");

    // A new process over the same kernel state: a full sync that writes nothing.
    let ipvs = std::mem::take(b.ipvs());
    let vips = std::mem::take(b.vips());
    let sets = std::mem::take(b.ipset());
    let mut restarted = IpvsBackend::new(ipvs, vips, sets, [(FakeIptables::new(), cfg())]);
    restarted.ipvs().writes = 0;
    restarted.vips().writes = 0;
    let before = restarted.ipset().lines;
    let snap = state.snapshot();
    restarted.apply_full(&snap, &Default::default()).unwrap();
    assert_eq!(restarted.ipvs().writes, 0);
    assert_eq!(restarted.vips().writes, 0);
    assert_eq!(restarted.ipset().lines, before, "no set member rewritten");
}

#[test]
fn drift_and_strangers_are_repaired_by_a_full_sync_except_in_excluded_cidrs() {
    let mut state = fixture::state(NODE, None);
    fixture::apply(
        &mut state,
        vec![(svc("a", "172.30.0.1"), vec![ep("10.180.0.1", NODE)])],
    );
    let mut b = backend();
    sync(&mut state, &mut b);
    // Someone deletes our real server and adds two virtual servers of their own.
    let k = key("172.30.0.1", TCP, 80);
    b.ipvs().services.get_mut(&k).unwrap().1.clear();
    for addr in ["10.1.2.3", "172.30.9.9"] {
        let stranger = sluice_proxy_ipvs::types::VirtualServer {
            key: key(addr, TCP, 80),
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
        };
        sluice_proxy_ipvs::Ipvs::add_service(b.ipvs(), &stranger).unwrap();
    }
    let mut c = cfg();
    c.exclude_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    let (ipvs, vips, sets) = (
        std::mem::take(b.ipvs()),
        std::mem::take(b.vips()),
        std::mem::take(b.ipset()),
    );
    let mut b = IpvsBackend::new(ipvs, vips, sets, [(FakeIptables::new(), c)]);
    b.apply_full(&state.snapshot(), &Default::default())
        .unwrap();
    let keys: Vec<VsKey> = b.ipvs().services.keys().copied().collect();
    assert_eq!(
        keys,
        vec![key("10.1.2.3", TCP, 80), k],
        "excluded kept, stale gone"
    );
    assert!(b.ipvs().services[&k].1.contains_key(&rs("10.180.0.1", 80)));
}

#[test]
fn a_partial_sync_writes_only_what_one_service_changed() {
    let mut state = fixture::state(NODE, None);
    let services: Vec<(ServicePort, Vec<Endpoint>)> = (0..200)
        .map(|i| {
            (
                svc(
                    &format!("s{i}"),
                    &format!("172.30.{}.{}", i / 200, i % 200 + 1),
                ),
                vec![ep(&format!("10.180.{}.{}", i / 200, i % 200 + 1), NODE)],
            )
        })
        .collect();
    fixture::apply(&mut state, services);
    let mut b = backend();
    sync(&mut state, &mut b);
    assert_eq!(b.ipvs().services.len(), 200);
    let (writes, restores) = (b.ipvs().writes, b.ipset().restores);
    // s7 gets a second endpoint.
    fixture::apply(
        &mut state,
        vec![(
            svc("s7", "172.30.0.8"),
            vec![ep("10.180.0.8", NODE), ep("10.180.5.5", "node-2")],
        )],
    );
    sync(&mut state, &mut b);
    assert_eq!(b.ipvs().writes - writes, 1, "one real server added");
    assert_eq!(b.ipset().restores - restores, 0, "no member changed");
    // s9 goes away: its virtual server, its address and its members.
    state.update_service(&ServiceName::new("ns", "s9"), &[]);
    sync(&mut state, &mut b);
    assert!(!b.ipvs().services.contains_key(&key("172.30.0.10", TCP, 80)));
    assert!(!b.vips().addrs.contains(&ip("172.30.0.10")));
    assert!(!b.ipset().sets["KUBE-CLUSTER-IP"].contains("172.30.0.10,tcp:80"));
    assert!(!b.ipset().sets["KUBE-IPVS-IPS"].contains("172.30.0.10"));
    assert_eq!(b.ipvs().services.len(), 199);
}

#[test]
fn removed_tcp_real_servers_drain_at_weight_zero_and_udp_ones_go_at_once() {
    let mut state = fixture::state(NODE, None);
    let udp = ServicePort {
        name: ServicePortName::new(&ServiceName::new("ns", "dns"), "p80", Protocol::Udp),
        ..svc("dns", "172.30.0.53")
    };
    fixture::apply(
        &mut state,
        vec![
            (
                svc("web", "172.30.0.10"),
                vec![ep("10.180.0.1", NODE), ep("10.180.0.2", NODE)],
            ),
            (
                udp.clone(),
                vec![ep("10.180.0.1", NODE), ep("10.180.0.2", NODE)],
            ),
        ],
    );
    let mut b = backend();
    sync(&mut state, &mut b);
    let (t, u) = (key("172.30.0.10", TCP, 80), key("172.30.0.53", UDP, 80));
    let gone = rs("10.180.0.2", 80);
    b.ipvs().set_connections(&t, &gone, 1, 2);
    fixture::apply(
        &mut state,
        vec![
            (svc("web", "172.30.0.10"), vec![ep("10.180.0.1", NODE)]),
            (udp, vec![ep("10.180.0.1", NODE)]),
        ],
    );
    sync(&mut state, &mut b);
    assert_eq!(b.ipvs().services[&t].1[&gone].weight, 0, "TCP: drained");
    assert!(!b.ipvs().services[&u].1.contains_key(&gone), "UDP: deleted");
    assert!(b.terminating().contains(&(t, gone)));
    // The periodic sweep keeps it while it has connections, deletes it once none are left.
    assert!(!b.tick().unwrap().full_sync);
    assert!(b.ipvs().services[&t].1.contains_key(&gone));
    b.ipvs().set_connections(&t, &gone, 0, 0);
    b.tick().unwrap();
    assert!(!b.ipvs().services[&t].1.contains_key(&gone));
    assert!(b.terminating().is_empty());
}

#[test]
fn a_draining_real_server_that_comes_back_gets_its_weight_back() {
    let mut state = fixture::state(NODE, None);
    let two = vec![ep("10.180.0.1", NODE), ep("10.180.0.2", NODE)];
    fixture::apply(&mut state, vec![(svc("web", "172.30.0.10"), two.clone())]);
    let mut b = backend();
    sync(&mut state, &mut b);
    fixture::apply(
        &mut state,
        vec![(svc("web", "172.30.0.10"), vec![ep("10.180.0.1", NODE)])],
    );
    sync(&mut state, &mut b);
    let (t, back) = (key("172.30.0.10", TCP, 80), rs("10.180.0.2", 80));
    assert_eq!(b.ipvs().services[&t].1[&back].weight, 0);
    fixture::apply(&mut state, vec![(svc("web", "172.30.0.10"), two)]);
    sync(&mut state, &mut b);
    assert_eq!(b.ipvs().services[&t].1[&back].weight, 1);
    assert!(b.terminating().is_empty());
}

#[test]
fn the_rules_parse_as_iptables_restore_input_and_cleanup_removes_everything() {
    let mut state = fixture::state(NODE, None);
    fixture::apply(&mut state, vec![(web(), vec![ep("10.180.0.1", NODE)])]);
    let mut b = backend();
    sync(&mut state, &mut b);
    b.cleanup().unwrap();
    assert!(b.ipvs().services.is_empty());
    assert!(!b.vips().exists && b.vips().addrs.is_empty());
    assert!(
        b.ipset().sets.keys().all(|s| !s.starts_with("KUBE-")),
        "{:?}",
        b.ipset().sets.keys()
    );
}

/// The backend's metrics in Prometheus' text format.
fn metrics_text(b: &Fakes) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    b.register_metrics(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

#[test]
fn the_iptables_restores_are_counted_as_kube_proxy_counts_them() {
    let mut state = fixture::state(NODE, None);
    fixture::apply(&mut state, vec![(web(), vec![ep("10.180.0.1", "node-2")])]);
    // A restore the kernel refuses: counted as a failure, no rule count.
    let mut refusing = FakeIptables::new();
    refusing.fail_next_restore = true;
    let mut b: Fakes = IpvsBackend::new(
        FakeIpvs::default(),
        FakeVips::default(),
        FakeIpset::default(),
        [(refusing, cfg())],
    );
    let (snap, changes) = state.sync();
    assert!(b.apply(&snap, &changes).is_err());
    let text = metrics_text(&b);
    assert!(
        text.contains("sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 1"),
        "{text}"
    );
    assert!(!text.contains("sync_proxy_rules_iptables_total{"), "{text}");
    // The retry goes through: the rules of each table written.
    b.apply(&snap, &changes).unwrap();
    let text = metrics_text(&b);
    let rules = |table: &str| -> i64 {
        let head =
            format!("sync_proxy_rules_iptables_total{{table=\"{table}\",ip_family=\"IPv4\"}} ");
        let line = text.lines().find(|l| l.starts_with(&head));
        line.and_then(|l| l[head.len()..].parse().ok())
            .unwrap_or(-1)
    };
    assert!(rules("nat") > 5, "{text}");
    assert!(rules("filter") > 0, "{text}");
}
