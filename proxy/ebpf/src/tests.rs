//! Pure tests: snapshot → map entries (the shared categorisation decides), the diff's safe
//! order, and the backend over [`FakeMaps`] (partial applies write only the change, a full
//! apply repairs drift, shared keys survive their first holder). No kernel, no root.

use std::net::{Ipv4Addr, SocketAddrV4};

use sluice_ebpf_common::{Backend as Be, ServiceKey, SlotKey, proto, scope, service_flags};
use sluice_model::service::{Endpoint, SessionAffinity};
use sluice_proxy_core::backend::Backend;
use sluice_proxy_core::fixture::{self, Svc, ep, lb_local, port_name, svc};
use sluice_proxy_core::{Changes, Snapshot};

use crate::diff::{Op, diff, order};
use crate::render::{Ids, MapSet, RenderConfig, render, union};
use crate::{EbpfBackend, FakeMaps};

fn cfg() -> RenderConfig {
    RenderConfig {
        nodeport_ips: vec![Ipv4Addr::new(192, 168, 0, 2).into()],
        node_ips: vec![Ipv4Addr::new(192, 168, 0, 2).into()],
    }
}

fn key(ip: &str, port: u16, scope: u8) -> ServiceKey {
    ServiceKey::new(
        SocketAddrV4::new(ip.parse().unwrap(), port),
        proto::TCP,
        scope,
    )
}

fn all(snap: &Snapshot) -> MapSet {
    union(render(&cfg(), snap, &mut Ids::default()).values())
}

/// The backends of the entry at `k`, in slot order.
fn backends(set: &MapSet, k: &ServiceKey) -> Vec<String> {
    let v = set.services[k];
    (1..=u32::from(v.backend_count))
        .map(|slot| {
            let b = set.slots[&SlotKey {
                service_id: v.service_id,
                slot,
            }];
            b.socket_addr().to_string()
        })
        .collect()
}

fn snap(services: Vec<(sluice_model::service::ServicePort, Vec<Endpoint>)>) -> Snapshot {
    fixture::snapshot("node-a", None, services)
}

#[test]
fn a_cluster_ip_gets_its_endpoints_a_wildcard_reject_and_an_external_entry() {
    let s = snap(vec![(
        svc("web", "172.30.0.1"),
        vec![ep("10.180.0.1", "node-a"), ep("10.180.0.2", "node-b")],
    )]);
    let set = all(&s);
    let k = key("172.30.0.1", 80, scope::SOCKET);
    assert_eq!(backends(&set, &k), ["10.180.0.1:80", "10.180.0.2:80"]);
    let wild = set.services[&k.wildcard()];
    assert_eq!(wild.flags, service_flags::REJECT);
    let ext = set.services[&key("172.30.0.1", 80, scope::EXTERNAL)];
    assert_eq!(ext.flags & service_flags::SNAT, service_flags::SNAT);
    assert_eq!(
        ext.service_id, set.services[&k].service_id,
        "same endpoints, same slots"
    );
    assert_eq!(set.services.len(), 3);
}

#[test]
fn no_endpoints_rejects_and_itp_local_without_local_endpoints_drops() {
    let s = snap(vec![
        (svc("none", "172.30.0.1"), vec![]),
        (
            Svc::itp_local(svc("local", "172.30.0.2")),
            vec![ep("10.180.0.2", "node-b")],
        ),
    ]);
    let set = all(&s);
    let none = set.services[&key("172.30.0.1", 80, scope::SOCKET)];
    assert_eq!((none.flags, none.backend_count), (service_flags::REJECT, 0));
    let local = set.services[&key("172.30.0.2", 80, scope::SOCKET)];
    assert_eq!((local.flags, local.backend_count), (service_flags::DROP, 0));
}

#[test]
fn etp_local_keeps_the_source_outside_and_uses_the_cluster_set_inside() {
    let port = lb_local("lb", "172.30.0.1", "5.6.7.8", 30000);
    let s = snap(vec![(
        port,
        vec![ep("10.180.0.1", "node-a"), ep("10.180.0.2", "node-b")],
    )]);
    let set = all(&s);
    // From outside: local endpoints only, no SNAT.
    let ext = key("5.6.7.8", 80, scope::EXTERNAL);
    assert_eq!(backends(&set, &ext), ["10.180.0.1:80"]);
    assert_eq!(set.services[&ext].flags & service_flags::SNAT, 0);
    let np = key("192.168.0.2", 3001, scope::EXTERNAL);
    assert_eq!(backends(&set, &np), ["10.180.0.1:80"]);
    // From pods and the node (socket layer): short-circuited to the Cluster set.
    let inside = key("5.6.7.8", 80, scope::SOCKET);
    assert_eq!(backends(&set, &inside), ["10.180.0.1:80", "10.180.0.2:80"]);
    let np_inside = key("192.168.0.2", 3001, scope::SOCKET);
    assert_eq!(
        backends(&set, &np_inside),
        ["10.180.0.1:80", "10.180.0.2:80"]
    );
}

#[test]
fn terminating_fallback_and_affinity_come_from_the_shared_categorisation() {
    let terminating = Endpoint {
        ready: false,
        serving: true,
        terminating: true,
        ..ep("10.180.0.3", "node-a")
    };
    let sticky = sluice_model::service::ServicePort {
        session_affinity: Some(SessionAffinity {
            timeout_seconds: 60,
        }),
        ..svc("sticky", "172.30.0.2")
    };
    let s = snap(vec![
        (svc("term", "172.30.0.1"), vec![terminating]),
        (sticky, vec![ep("10.180.0.1", "node-a")]),
    ]);
    let set = all(&s);
    assert_eq!(
        backends(&set, &key("172.30.0.1", 80, scope::SOCKET)),
        ["10.180.0.3:80"]
    );
    let v = set.services[&key("172.30.0.2", 80, scope::SOCKET)];
    assert_eq!(
        (v.flags & service_flags::AFFINITY, v.affinity_timeout),
        (service_flags::AFFINITY, 60)
    );
}

#[test]
fn the_diff_grows_slots_before_the_count_and_shrinks_them_after() {
    let k = key("172.30.0.1", 80, 0);
    let mut have = MapSet::default();
    let b = |i: u8| {
        Be::new(
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 80),
            proto::TCP,
        )
    };
    let value = |n: u16| sluice_ebpf_common::ServiceValue {
        service_id: 1,
        backend_count: n,
        flags: 0,
        affinity_timeout: 0,
    };
    have.services.insert(k, value(1));
    have.slots.insert(
        SlotKey {
            service_id: 1,
            slot: 1,
        },
        b(1),
    );
    let mut want = have.clone();
    want.services.insert(k, value(2));
    want.slots.insert(
        SlotKey {
            service_id: 1,
            slot: 2,
        },
        b(2),
    );
    let mut ops = diff(&want, &have);
    order(&mut ops);
    assert!(matches!(ops[0], Op::PutSlot(..)) && matches!(ops[1], Op::PutService(..)));
    let mut ops = diff(&have, &want);
    order(&mut ops);
    assert!(matches!(ops[0], Op::PutService(..)) && matches!(ops[1], Op::DeleteSlot(..)));
}

#[test]
fn partial_applies_write_only_the_change_and_a_full_one_repairs_drift() {
    let maps = FakeMaps::default();
    let mut backend = EbpfBackend::new(maps.clone(), cfg());
    let mut services: Vec<_> = (1..=50)
        .map(|i| {
            let mut port = svc(&format!("s{i}"), &format!("172.30.1.{i}"));
            port.name = port_name(&format!("s{i}"));
            (port, vec![ep(&format!("10.180.1.{i}"), "node-a")])
        })
        .collect();
    let mut state = fixture::state("node-a", None);
    fixture::apply(&mut state, services.clone());
    let (s, changes) = state.sync();
    backend.apply(&s, &changes).unwrap();
    assert_eq!(maps.maps(), backend.programmed());
    let before = maps.writes();

    // One endpoint added to one Service: its slot and its two count entries.
    services[7].1.push(ep("10.180.2.8", "node-b"));
    fixture::apply(&mut state, vec![services[7].clone()]);
    let (s, changes) = state.sync();
    assert!(!changes.full);
    backend.apply(&s, &changes).unwrap();
    assert_eq!(maps.writes() - before, 3, "one slot, two service entries");
    assert_eq!(maps.maps(), backend.programmed());

    // Someone deletes an entry; the next full apply puts it back, and only it.
    let k = key("172.30.1.3", 80, 0);
    maps.tamper(|m| {
        m.services.remove(&k);
    });
    let before = maps.writes();
    backend.apply_full(&s, &Changes::default()).unwrap();
    assert_eq!(maps.writes() - before, 1);
    assert!(maps.maps().services.contains_key(&k));
}

#[test]
fn a_wildcard_entry_stays_while_another_port_of_the_address_lives() {
    let maps = FakeMaps::default();
    let mut backend = EbpfBackend::new(maps.clone(), cfg());
    let a = svc("a", "172.30.0.1");
    let mut b = svc("a", "172.30.0.1");
    b.port = 81;
    b.name = sluice_model::service::ServicePortName::new(
        &sluice_model::service::ServiceName::new("ns", "a"),
        "p81",
        sluice_model::service::Protocol::Tcp,
    );
    let mut state = fixture::state("node-a", None);
    fixture::apply(
        &mut state,
        vec![
            (a.clone(), vec![ep("10.180.0.1", "node-a")]),
            (b, vec![ep("10.180.0.1", "node-a")]),
        ],
    );
    let (s, changes) = state.sync();
    backend.apply(&s, &changes).unwrap();
    // Port 81 goes away.
    fixture::apply(&mut state, vec![(a, vec![ep("10.180.0.1", "node-a")])]);
    let (s, changes) = state.sync();
    backend.apply(&s, &changes).unwrap();
    let wild = key("172.30.0.1", 0, 0).wildcard();
    assert!(maps.maps().services.contains_key(&wild));
    assert!(!maps.maps().services.contains_key(&key("172.30.0.1", 81, 0)));
    assert_eq!(maps.maps(), backend.programmed());
}

#[test]
fn a_failed_write_makes_the_next_apply_full() {
    let maps = FakeMaps::default();
    let mut backend = EbpfBackend::new(maps.clone(), cfg());
    let mut state = fixture::state("node-a", None);
    fixture::apply(
        &mut state,
        vec![(svc("a", "172.30.0.1"), vec![ep("10.180.0.1", "node-a")])],
    );
    let (s, changes) = state.sync();
    maps.fail_next(1);
    assert!(backend.apply(&s, &changes).is_err());
    backend.apply_partial(&s, &Changes::default()).unwrap();
    assert_eq!(maps.maps(), backend.programmed());
    assert!(!maps.maps().services.is_empty());
}

#[test]
fn source_ranges_guard_the_load_balancer_ip_only() {
    let port = sluice_model::service::ServicePort {
        load_balancer_source_ranges: vec!["192.168.0.0/24".parse().unwrap()],
        external_traffic_policy: sluice_model::service::TrafficPolicy::Cluster,
        ..lb_local("lb", "172.30.0.1", "5.6.7.8", 30000)
    };
    let s = snap(vec![(port, vec![ep("10.180.0.1", "node-a")])]);
    let set = all(&s);
    let guarded = service_flags::SOURCE_RANGES;
    let ext = set.services[&key("5.6.7.8", 80, scope::EXTERNAL)];
    assert_eq!(ext.flags & guarded, guarded);
    assert_eq!(
        set.services[&key("5.6.7.8", 80, scope::SOCKET)].flags & guarded,
        guarded,
        "the socket layer leaves it to tc, which knows the source"
    );
    let np = set.services[&key("192.168.0.2", 3001, scope::EXTERNAL)];
    assert_eq!(np.flags & guarded, 0, "node ports bypass the ranges");
    let want: std::collections::BTreeSet<_> =
        [(ext.service_id, "192.168.0.0/24".parse().unwrap())].into();
    assert_eq!(set.ranges, want);
}

#[test]
fn the_node_passes_the_ranges_at_the_socket_layer_only_when_its_ip_is_inside() {
    let lb = |ranges: &str| sluice_model::service::ServicePort {
        load_balancer_source_ranges: vec![ranges.parse().unwrap()],
        ..lb_local("lb", "172.30.0.1", "5.6.7.8", 30000)
    };
    let node = service_flags::NODE_ALLOWED;
    let inside = all(&snap(vec![(
        lb("192.168.0.0/24"),
        vec![ep("10.180.0.1", "node-a")],
    )]));
    let sock = inside.services[&key("5.6.7.8", 80, scope::SOCKET)];
    assert_eq!(sock.flags & node, node, "192.168.0.2 is inside");
    let ext = inside.services[&key("5.6.7.8", 80, scope::EXTERNAL)];
    assert_eq!(
        ext.flags & node,
        0,
        "only the socket layer knows the node's sockets"
    );
    let outside = all(&snap(vec![(
        lb("192.168.1.0/24"),
        vec![ep("10.180.0.1", "node-a")],
    )]));
    let sock = outside.services[&key("5.6.7.8", 80, scope::SOCKET)];
    assert_eq!(sock.flags & node, 0, "192.168.0.2 is outside");
    assert_eq!(
        sock.flags & service_flags::SOURCE_RANGES,
        service_flags::SOURCE_RANGES
    );
}

mod tracer {
    use std::net::{IpAddr, SocketAddr};

    use sluice_model::service::Protocol;
    use sluice_proxy_core::explain::{Origin, Outcome, Packet, Tracer as _};

    use super::*;
    use crate::Tracer;

    fn trace(set: &MapSet, src: &str, dst: &str, origin: Origin) -> Outcome {
        let pods: Vec<ipnet::IpNet> = vec!["10.180.0.0/24".parse().unwrap()];
        let cidrs: Vec<ipnet::IpNet> = vec!["172.30.0.0/16".parse().unwrap()];
        let packet = Packet {
            src: src.parse::<IpAddr>().unwrap(),
            dst: dst.parse::<SocketAddr>().unwrap(),
            protocol: Protocol::Tcp,
        };
        Tracer::new(set, &cidrs, &pods).trace(&packet, origin)
    }

    fn dnat(eps: &[(&str, bool)]) -> Outcome {
        Outcome::Dnat {
            endpoints: eps.iter().map(|(e, m)| (e.parse().unwrap(), *m)).collect(),
        }
    }

    #[test]
    fn it_follows_the_socket_layer_then_tc_as_the_programs_do() {
        let lb = sluice_model::service::ServicePort {
            load_balancer_source_ranges: vec!["192.168.0.0/24".parse().unwrap()],
            external_traffic_policy: sluice_model::service::TrafficPolicy::Cluster,
            ..lb_local("lb", "172.30.0.1", "5.6.7.8", 30000)
        };
        let s = snap(vec![
            (lb, vec![ep("10.180.0.1", "node-a")]),
            (svc("none", "172.30.0.2"), vec![]),
        ]);
        let set = all(&s);
        let (remote, local) = (Origin::Remote, Origin::Local);
        // Pods: the ClusterIP at the socket, source kept.
        let kept = dnat(&[("10.180.0.1:80", false)]);
        assert_eq!(trace(&set, "10.180.0.9", "172.30.0.1:80", remote), kept);
        // The LB IP's ranges: a pod outside them meets tc and is dropped; the node (its IP
        // inside) is translated at its socket; a client inside is SNATed by tc.
        let lb_ip = "5.6.7.8:80";
        assert_eq!(trace(&set, "10.180.0.9", lb_ip, remote), Outcome::Drop);
        let masq = dnat(&[("10.180.0.1:80", true)]);
        assert_eq!(trace(&set, "192.168.0.2", lb_ip, local), masq);
        assert_eq!(trace(&set, "192.168.0.77", lb_ip, remote), masq);
        assert_eq!(trace(&set, "192.168.1.77", lb_ip, remote), Outcome::Drop);
        // No endpoints: REJECT; an unserved port: REJECT at the socket; unallocated: DROP.
        let none = "172.30.0.2:80";
        assert_eq!(trace(&set, "10.180.0.9", none, remote), Outcome::Reject);
        assert_eq!(
            trace(&set, "10.180.0.9", "172.30.0.1:81", remote),
            Outcome::Reject
        );
        assert_eq!(
            trace(&set, "10.180.0.9", "172.30.9.9:80", remote),
            Outcome::Drop
        );
        assert_eq!(
            trace(&set, "10.180.0.9", "8.8.8.8:80", remote),
            Outcome::Untouched
        );
    }

    #[test]
    fn what_is_missing_from_the_maps_shows() {
        let s = snap(vec![(
            svc("web", "172.30.0.1"),
            vec![ep("10.180.0.1", "node-a")],
        )]);
        let mut set = all(&s);
        let k = key("172.30.0.1", 80, scope::SOCKET);
        let id = set.services[&k].service_id;
        set.slots.remove(&SlotKey {
            service_id: id,
            slot: 1,
        });
        assert_eq!(
            trace(&set, "10.180.0.9", "172.30.0.1:80", Origin::Remote),
            Outcome::Untouched,
            "a missing slot: the programs leave it alone"
        );
        set.services.clear();
        assert_eq!(
            trace(&set, "10.180.0.9", "172.30.0.1:80", Origin::Remote),
            Outcome::Drop,
            "no entry at all: an unallocated address of the service CIDR"
        );
    }
}
