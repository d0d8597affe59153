//! Pure tests of the IPv6 half: an IPv6 snapshot renders into the IPv6 maps with the same
//! categorisation (socket-layer and tc entries, source ranges in their own trie), each family keeps
//! its own record (a full sync of one family never touches the other's maps), partial
//! applies write only the change in safe order, drift is repaired, and the tracer walks the
//! IPv6 maps.

use std::net::{IpAddr, SocketAddr};

use sluice_ebpf_common::{ServiceKey6, SlotKey, proto, scope, service_flags};
use sluice_model::service::{Endpoint, IpFamily, Protocol, ServicePort, ServiceType};
use sluice_proxy_core::backend::Backend;
use sluice_proxy_core::explain::{Origin, Outcome, Packet, Tracer as _};
use sluice_proxy_core::fixture::{self, port_name, svc};
use sluice_proxy_core::{Changes, Snapshot};

use crate::diff::Op;
use crate::render::{Ids, MapSet, RenderConfig, render, union};
use crate::{EbpfBackend, FakeMaps, Tracer};

const NODE4: &str = "192.168.0.2";
const NODE6: &str = "fd00::2";

fn cfg() -> RenderConfig {
    let ips: Vec<IpAddr> = vec![NODE4.parse().unwrap(), NODE6.parse().unwrap()];
    RenderConfig {
        nodeport_ips: ips.clone(),
        node_ips: ips,
    }
}

fn key6(addr: &str, scope: u8) -> ServiceKey6 {
    ServiceKey6::new(addr.parse().unwrap(), proto::TCP, scope)
}

fn ep6(ip: &str, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::new(ip.parse::<IpAddr>().unwrap(), 80)
    }
}

/// `web`: a NodePort Service on `fd00:96::10` with an external IP and a LB IP.
fn web6() -> ServicePort {
    ServicePort {
        service_type: ServiceType::LoadBalancer,
        node_port: Some(30080),
        external_ips: vec!["fd00:e::1".parse().unwrap()],
        load_balancer_vips: vec!["fd00:1b::1".parse().unwrap()],
        ..svc("web", "fd00:96::10")
    }
}

fn snap6(services: Vec<(ServicePort, Vec<Endpoint>)>) -> Snapshot {
    fixture::snapshot_in(IpFamily::V6, "node-a", None, services)
}

fn backends6(set: &MapSet, k: &ServiceKey6) -> Vec<String> {
    let v = set.services6[k];
    (1..=u32::from(v.backend_count))
        .map(|slot| {
            let key = SlotKey {
                service_id: v.service_id,
                slot,
            };
            set.backend(true, &key).unwrap().to_string()
        })
        .collect()
}

#[test]
fn an_ipv6_snapshot_fills_the_ipv6_maps_at_both_scopes() {
    let s = snap6(vec![
        (
            web6(),
            vec![ep6("fd10::1", "node-a"), ep6("fd10::2", "node-b")],
        ),
        (svc("none", "fd00:96::12"), vec![]),
    ]);
    let set = union(render(&cfg(), &s, &mut Ids::default()).values());
    assert!(set.services.is_empty() && set.slots.is_empty() && set.ranges.is_empty());
    let want = ["[fd10::1]:80", "[fd10::2]:80"];
    for addr in [
        "[fd00:96::10]:80",
        "[fd00:e::1]:80",
        "[fd00:1b::1]:80",
        "[fd00::2]:30080",
    ] {
        assert_eq!(backends6(&set, &key6(addr, scope::SOCKET)), want, "{addr}");
    }
    // The tc path's entries: the external verdict (eTP Cluster: SNAT) for the node port,
    // external and LB IPs, the internal one (SNATed) for the ClusterIP routed in.
    for addr in [
        "[fd00:96::10]:80",
        "[fd00:e::1]:80",
        "[fd00:1b::1]:80",
        "[fd00::2]:30080",
    ] {
        let k = key6(addr, scope::EXTERNAL);
        assert_eq!(backends6(&set, &k), want, "{addr}");
        assert_eq!(set.services6[&k].flags, service_flags::SNAT, "{addr}");
    }
    // No node port on the node's IPv4 address in an IPv6 snapshot.
    assert_eq!(
        set.services6.len(),
        2 * 4 + 1 + 3,
        "web, and none: two scopes + wildcard"
    );

    let wild = key6("[fd00:96::10]:0", scope::SOCKET).wildcard();
    assert_eq!(set.services6[&wild].flags, service_flags::REJECT);
    let none = set.services6[&key6("[fd00:96::12]:80", scope::SOCKET)];
    assert_eq!((none.flags, none.backend_count), (service_flags::REJECT, 0));
}

#[test]
fn itp_local_without_local_endpoints_drops_and_affinity_is_kept_in_ipv6() {
    let local = ServicePort {
        internal_traffic_policy: sluice_model::service::TrafficPolicy::Local,
        ..svc("local", "fd00:96::20")
    };
    let sticky = ServicePort {
        session_affinity: Some(sluice_model::service::SessionAffinity {
            timeout_seconds: 600,
        }),
        ..svc("sticky", "fd00:96::21")
    };
    let s = snap6(vec![
        (local, vec![ep6("fd10::1", "node-b")]),
        (sticky, vec![ep6("fd10::1", "node-b")]),
    ]);
    let set = union(render(&cfg(), &s, &mut Ids::default()).values());
    let drop = set.services6[&key6("[fd00:96::20]:80", scope::SOCKET)];
    assert_eq!((drop.flags, drop.backend_count), (service_flags::DROP, 0));
    let aff = set.services6[&key6("[fd00:96::21]:80", scope::SOCKET)];
    assert_eq!(aff.flags, service_flags::AFFINITY);
    assert_eq!(aff.affinity_timeout, 600);
}

fn dual() -> (Snapshot, Snapshot) {
    let v4 = fixture::snapshot(
        "node-a",
        None,
        vec![(
            svc("web", "172.30.0.1"),
            vec![fixture::ep("10.180.0.1", "node-a")],
        )],
    );
    let v6 = snap6(vec![(web6(), vec![ep6("fd10::1", "node-a")])]);
    (v4, v6)
}

#[test]
fn each_family_keeps_its_own_record_and_a_full_sync_repairs_only_its_maps() {
    let maps = FakeMaps::default();
    let mut backend = EbpfBackend::new(maps.clone(), cfg());
    let (v4, v6) = dual();
    backend.apply_full(&v4, &Changes::default()).unwrap();
    backend.apply_full(&v6, &Changes::default()).unwrap();
    let both = maps.maps();
    assert!(!both.services.is_empty() && !both.services6.is_empty());
    assert_eq!(both, backend.programmed());
    let mut registry = prometheus_client::registry::Registry::default();
    backend.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let gauge = |map: &str| {
        let prefix = format!("sync_proxy_rules_ebpf_map_entries{{map=\"{map}\"}} ");
        (text.lines()).find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
    };
    // IPv4: the ClusterIP's socket and tc entries and its wildcard; IPv6: four addresses in
    // both scopes and the wildcard.
    assert_eq!(gauge("services").as_deref(), Some("3"), "{text}");
    assert_eq!(gauge("services6").as_deref(), Some("9"), "{text}");
    assert_eq!(gauge("slots6").as_deref(), Some("1"), "{text}");
    // A full IPv4 sync leaves the IPv6 maps alone (and writes nothing: nothing changed).
    let before = maps.writes();
    backend.apply_full(&v4, &Changes::default()).unwrap();
    assert_eq!(maps.writes(), before);
    assert_eq!(maps.maps(), both);
    // Drift in the IPv6 maps: the next full IPv6 sync puts back the entry and only it.
    let k = key6("[fd00:96::10]:80", scope::SOCKET);
    maps.tamper(|m| {
        m.services6.remove(&k);
    });
    backend.apply_full(&v6, &Changes::default()).unwrap();
    assert_eq!(maps.writes() - before, 1);
    assert_eq!(maps.maps(), both);
    // An IPv6 snapshot without Services removes only the IPv6 entries.
    backend
        .apply_full(&snap6(vec![]), &Changes::default())
        .unwrap();
    let left = maps.maps();
    assert!(left.services6.is_empty() && left.slots6.is_empty());
    assert_eq!(left.services, both.services);
}

#[test]
fn an_ipv6_partial_apply_writes_new_slots_before_the_count_and_drops_old_ones_after() {
    let maps = FakeMaps::default();
    let mut backend = EbpfBackend::new(maps.clone(), cfg());
    let mut state = fixture::state_in(IpFamily::V6, "node-a", None);
    let web = web6();
    fixture::apply_in(
        &mut state,
        IpFamily::V6,
        vec![(web.clone(), vec![ep6("fd10::1", "node-a")])],
    );
    let (s, changes) = state.sync();
    backend.apply(&s, &changes).unwrap();
    let before = maps.writes();
    fixture::apply_in(
        &mut state,
        IpFamily::V6,
        vec![(
            web,
            vec![ep6("fd10::1", "node-a"), ep6("fd10::2", "node-a")],
        )],
    );
    let (s, changes) = state.sync();
    assert!(!changes.full);
    assert_eq!(changes.ports, [port_name("web")].into());
    backend.apply(&s, &changes).unwrap();
    // One new slot, eight entries (ClusterIP, external IP, LB IP, node port; socket and tc
    // scopes: one endpoint set, one service id) get count 2.
    assert_eq!(maps.writes() - before, 1 + 8);
    assert_eq!(maps.maps(), backend.programmed());
    assert_eq!(
        backends6(&maps.maps(), &key6("[fd00:96::10]:80", scope::SOCKET)),
        ["[fd10::1]:80", "[fd10::2]:80"]
    );
}

#[test]
fn ipv6_operations_keep_the_safe_order() {
    let a = snap6(vec![(
        web6(),
        vec![ep6("fd10::1", "node-a"), ep6("fd10::2", "node-a")],
    )]);
    let b = snap6(vec![(web6(), vec![ep6("fd10::3", "node-a")])]);
    let mut ids = Ids::default();
    let old = union(render(&cfg(), &a, &mut ids).values());
    let new = union(render(&cfg(), &b, &mut ids).values());
    let ops = crate::diff::diff(&new, &old);
    let rank = |op: &Op| match op {
        Op::PutSlot6(..) => 0,
        Op::PutService6(..) => 1,
        Op::DeleteService6(..) => 2,
        Op::DeleteSlot6(..) => 3,
        other => panic!("an IPv4 operation in an IPv6 diff: {other:?}"),
    };
    assert!(
        ops.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
        "{ops:?}"
    );
    assert!(ops.iter().any(|op| matches!(op, Op::DeleteSlot6(..))));
}

fn trace(set: &MapSet, src: &str, dst: &str, origin: Origin) -> Outcome {
    let pods: Vec<ipnet::IpNet> = vec!["fd10::/64".parse().unwrap()];
    let cidrs: Vec<ipnet::IpNet> = vec!["fd00:96::/112".parse().unwrap()];
    let packet = Packet {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<SocketAddr>().unwrap(),
        protocol: Protocol::Tcp,
    };
    Tracer::new(set, &cidrs, &pods).trace(&packet, origin)
}

#[test]
fn the_tracer_walks_the_ipv6_maps_at_the_socket_layer_and_on_tc() {
    let s = snap6(vec![
        (web6(), vec![ep6("fd10::1", "node-a")]),
        (svc("none", "fd00:96::12"), vec![]),
    ]);
    let set = union(render(&cfg(), &s, &mut Ids::default()).values());
    let kept = Outcome::Dnat {
        endpoints: [("[fd10::1]:80".parse().unwrap(), false)].into(),
    };
    let (remote, local) = (Origin::Remote, Origin::Local);
    assert_eq!(trace(&set, "fd10::9", "[fd00:96::10]:80", remote), kept);
    let masq = Outcome::Dnat {
        endpoints: [("[fd10::1]:80".parse().unwrap(), true)].into(),
    };
    assert_eq!(trace(&set, NODE6, "[fd00::2]:30080", local), masq);
    let none = "[fd00:96::12]:80";
    assert_eq!(trace(&set, "fd10::9", none, remote), Outcome::Reject);
    assert_eq!(
        trace(&set, "fd10::9", "[fd00:96::10]:81", remote),
        Outcome::Reject
    );
    // From outside the node: the tc path (eTP Cluster: SNATed).
    assert_eq!(trace(&set, "fd00::250", "[fd00::2]:30080", remote), masq);
    assert_eq!(
        trace(&set, "fd00::250", "[fd00:96::12]:80", remote),
        Outcome::Reject
    );
    // An unallocated address of the service CIDR: dropped, from outside and from the node.
    assert_eq!(
        trace(&set, "fd00::250", "[fd00:96::99]:80", remote),
        Outcome::Drop
    );
    assert_eq!(trace(&set, NODE6, "[fd00:96::99]:80", local), Outcome::Drop);
    assert_eq!(
        trace(&set, "fd00::250", "[fd00:97::99]:80", remote),
        Outcome::Untouched
    );
}

/// `loadBalancerSourceRanges` over IPv6: the prefixes go to the IPv6 trie with the tc
/// entry's id; sources outside are dropped (pods too: the socket layer leaves them to tc),
/// sources inside reach the endpoints.
#[test]
fn ipv6_source_ranges_are_rendered_and_traced() {
    let ranged = ServicePort {
        load_balancer_source_ranges: vec![
            "fd00:c::/64".parse().unwrap(),
            "192.168.0.0/24".parse().unwrap(),
        ],
        external_traffic_policy: sluice_model::service::TrafficPolicy::Local,
        ..web6()
    };
    let s = snap6(vec![(ranged, vec![ep6("fd10::1", "node-a")])]);
    let set = union(render(&cfg(), &s, &mut Ids::default()).values());
    let lb = set.services6[&key6("[fd00:1b::1]:80", scope::EXTERNAL)];
    assert_eq!(
        lb.flags & service_flags::SOURCE_RANGES,
        service_flags::SOURCE_RANGES
    );
    let want: std::collections::BTreeSet<(u32, ipnet::IpNet)> =
        [(lb.service_id, "fd00:c::/64".parse().unwrap())].into();
    assert_eq!(
        set.ranges, want,
        "the IPv6 prefix only, with the tc entry's id"
    );
    let ops = crate::diff::diff(&set, &MapSet::default());
    assert!(ops.contains(&Op::PutRange(lb.service_id, "fd00:c::/64".parse().unwrap())));
    let kept = Outcome::Dnat {
        endpoints: [("[fd10::1]:80".parse().unwrap(), false)].into(),
    };
    let lb_ip = "[fd00:1b::1]:80";
    assert_eq!(trace(&set, "fd00:c::5", lb_ip, Origin::Remote), kept);
    assert_eq!(
        trace(&set, "fd00:d::5", lb_ip, Origin::Remote),
        Outcome::Drop
    );
    assert_eq!(trace(&set, "fd10::9", lb_ip, Origin::Remote), Outcome::Drop);
    // The node port is not guarded by the ranges.
    let np = "[fd00::2]:30080";
    assert_eq!(trace(&set, "fd00:d::5", np, Origin::Remote), kept);
}

/// Source ranges of both families live in one record but two tries: a full sync of one
/// family neither deletes nor rewrites the other's prefixes.
#[test]
fn a_full_sync_of_one_family_keeps_the_other_familys_source_ranges() {
    let lb = |cip: &str, vip: &str, range: &str| ServicePort {
        service_type: ServiceType::LoadBalancer,
        load_balancer_vips: vec![vip.parse().unwrap()],
        load_balancer_source_ranges: vec![range.parse().unwrap()],
        ..svc("ranged", cip)
    };
    let v4 = fixture::snapshot(
        "node-a",
        None,
        vec![(
            lb("172.30.0.9", "198.51.100.9", "192.168.0.0/24"),
            vec![fixture::ep("10.180.0.1", "node-a")],
        )],
    );
    let v6 = snap6(vec![(
        lb("fd00:96::9", "fd00:1b::9", "fd00:c::/64"),
        vec![ep6("fd10::1", "node-a")],
    )]);
    let maps = FakeMaps::default();
    let mut backend = EbpfBackend::new(maps.clone(), cfg());
    backend.apply_full(&v4, &Changes::default()).unwrap();
    backend.apply_full(&v6, &Changes::default()).unwrap();
    let both = maps.maps();
    let families: Vec<bool> = both
        .ranges
        .iter()
        .map(|(_, n)| n.addr().is_ipv6())
        .collect();
    assert_eq!(families, [false, true], "{:?}", both.ranges);
    let before = maps.writes();
    backend.apply_full(&v4, &Changes::default()).unwrap();
    backend.apply_full(&v6, &Changes::default()).unwrap();
    assert_eq!(maps.writes(), before, "nothing to write");
    assert_eq!(maps.maps(), both);
}
