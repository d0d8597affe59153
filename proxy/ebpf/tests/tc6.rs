//! The IPv6 tc path under `BPF_PROG_TEST_RUN`: Ethernet/IPv6 packets in, packets out, with
//! the maps filled by the backend's own render → diff → write path from an IPv6 snapshot.
//! DNAT of TCP, UDP and SCTP with their checksums verified here (the TCP/UDP ones over the
//! IPv6 pseudo-header, a UDP result of zero sent as 0xffff), the flow recorded in
//! `SLUICE_CT6`/`SLUICE_NATREV6`, the reply given the Service address back, SNAT for
//! `externalTrafficPolicy: Cluster` through `SLUICE_IFADDR6` and back, REJECT as a TCP reset
//! and an ICMPv6 port unreachable, drops (no local endpoint, outside the source ranges, an
//! unallocated service-CIDR address) and extension headers left alone. Needs root; skipped
//! when the programs are not built in.

mod common;

use std::net::{IpAddr, Ipv6Addr};

use aya::maps::HashMap;
use common::{Bpffs, classifier, fold, load_tc, ones_sum, programmed, tc_pair, test_run as run};
use sluice_ebpf_common::{NatValue6, Tuple6, ip6_words, map_names, proto};
use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePort, ServicePortName, ServiceType,
    TrafficPolicy,
};
use sluice_proxy_core::fixture::{self, svc};
use sluice_proxy_ebpf::kernel::{KernelMaps, write_service_cidrs};
use sluice_proxy_ebpf::render::RenderConfig;

const CLIENT: &str = "fd00:c::250";
const OUTSIDER: &str = "fd00:d::1";
const NODE: &str = "fd00::2";
const SNAT_ADDR: &str = "fd00::99";

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ep(addr: &str, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::new(addr.parse::<IpAddr>().unwrap(), 8080)
    }
}

fn port(name: &str, protocol: Protocol, cip: &str, port: u16) -> ServicePort {
    let name = ServicePortName::new(&ServiceName::new("ns", name), "p", protocol);
    ServicePort::plain(name, vec![cip.parse().unwrap()], port)
}

/// `web`: node port 30080 (eTP Local, one local endpoint), external IP `fd00:e::1`;
/// `clus`: node port 30081, eTP Cluster (SNAT), its endpoint on another node; `ranged`: a LB
/// IP open to `fd00:c::/64` only; `local0`: eTP Local without a local endpoint (drop);
/// `none`/`none-udp`: no endpoints (reject); `dns`: UDP; `assoc`: SCTP 80 → 8080.
fn loaded(bpffs: &Bpffs) -> anyhow::Result<aya::Ebpf> {
    let web = ServicePort {
        service_type: ServiceType::NodePort,
        node_port: Some(30080),
        external_ips: vec!["fd00:e::1".parse().unwrap()],
        external_traffic_policy: TrafficPolicy::Local,
        ..svc("web", "fd00:96::10")
    };
    let clus = ServicePort {
        service_type: ServiceType::NodePort,
        node_port: Some(30081),
        external_traffic_policy: TrafficPolicy::Cluster,
        ..svc("clus", "fd00:96::11")
    };
    let ranged = ServicePort {
        service_type: ServiceType::LoadBalancer,
        load_balancer_vips: vec!["fd00:1b::1".parse().unwrap()],
        load_balancer_source_ranges: vec!["fd00:c::/64".parse().unwrap()],
        external_traffic_policy: TrafficPolicy::Cluster,
        ..svc("ranged", "fd00:96::12")
    };
    let local0 = ServicePort {
        service_type: ServiceType::NodePort,
        node_port: Some(30082),
        external_traffic_policy: TrafficPolicy::Local,
        ..svc("local0", "fd00:96::13")
    };
    let snap = fixture::snapshot_in(
        IpFamily::V6,
        "node-a",
        None,
        vec![
            (web, vec![ep("fd10::1", "node-a")]),
            (clus, vec![ep("fd10::2", "node-b")]),
            (ranged, vec![ep("fd10::3", "node-a")]),
            (local0, vec![ep("fd10::4", "node-b")]),
            (svc("none", "fd00:96::14"), vec![]),
            (port("none-udp", Protocol::Udp, "fd00:96::15", 53), vec![]),
            (
                port("dns", Protocol::Udp, "fd00:96::16", 53),
                vec![ep("fd10::5", "node-a")],
            ),
            (
                port("assoc", Protocol::Sctp, "fd00:96::17", 80),
                vec![ep("fd10::6", "node-a")],
            ),
        ],
    );
    let cfg = RenderConfig {
        nodeport_ips: vec![NODE.parse().unwrap()],
        node_ips: vec![NODE.parse().unwrap()],
    };
    let mut ebpf = programmed(bpffs, &cfg, &snap)?;
    write_service_cidrs(&mut ebpf, &["fd00:96::/112".parse()?])?;
    // BPF_PROG_TEST_RUN runs the packet on this namespace's loopback (ifindex 1).
    let mut ifaddr: HashMap<_, u32, [u32; 4]> =
        HashMap::try_from(ebpf.map_mut(map_names::IFADDR6).unwrap())?;
    ifaddr.insert(1, ip6_words(&ip(SNAT_ADDR)), 0)?;
    load_tc(&mut ebpf)?;
    Ok(ebpf)
}

const L4: usize = 14 + 40;

/// The L4 checksum over the IPv6 pseudo-header and the segment: 0 when the packet's verifies.
fn l4_csum(p: &[u8]) -> u16 {
    let len = (p.len() - L4) as u32;
    fold(ones_sum(&p[22..54]) + len + u32::from(p[20]) + ones_sum(&p[L4..]))
}

/// Ethernet + IPv6 + an L4 header of `proto` (TCP SYN: 20 bytes; UDP: 8 + `payload`; SCTP:
/// 12 + an INIT chunk), checksums filled in.
fn packet(protocol: u8, src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let l4_len = match protocol {
        proto::TCP => 20,
        proto::UDP => 8 + payload.len(),
        _ => 32,
    };
    let mut p = vec![0u8; L4 + l4_len];
    p[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    p[14] = 0x60;
    p[18..20].copy_from_slice(&(l4_len as u16).to_be_bytes());
    p[20] = protocol;
    p[21] = 64;
    p[22..38].copy_from_slice(&ip(src).octets());
    p[38..54].copy_from_slice(&ip(dst).octets());
    p[L4..L4 + 2].copy_from_slice(&sport.to_be_bytes());
    p[L4 + 2..L4 + 4].copy_from_slice(&dport.to_be_bytes());
    match protocol {
        proto::TCP => {
            p[L4 + 4..L4 + 8].copy_from_slice(&1000u32.to_be_bytes());
            p[L4 + 12] = 5 << 4;
            p[L4 + 13] = 0x02; // SYN
            let c = l4_csum(&p);
            p[L4 + 16..L4 + 18].copy_from_slice(&c.to_be_bytes());
        }
        proto::UDP => {
            p[L4 + 4..L4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            p[L4 + 8..].copy_from_slice(payload);
            let c = l4_csum(&p);
            p[L4 + 6..L4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        _ => {
            p[L4 + 12] = 1; // INIT
            p[L4 + 14..L4 + 16].copy_from_slice(&20u16.to_be_bytes());
            p[L4 + 16..L4 + 20].copy_from_slice(&0x0102_0304u32.to_be_bytes());
            let want = crc32c(&p[L4..]);
            p[L4 + 8..L4 + 12].copy_from_slice(&want.to_le_bytes());
        }
    }
    p
}

/// CRC32c as SCTP computes it, over a packet whose CRC field is zeroed.
fn crc32c(data: &[u8]) -> u32 {
    let mut body = data.to_vec();
    body[8..12].fill(0);
    sluice_ebpf_common::crc32c::checksum(&body)
}

fn ends(p: &[u8]) -> String {
    let a = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    format!("[{}]:{} -> [{}]:{}", a(22), port(L4), a(38), port(L4 + 2))
}

fn tuple(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> Tuple6 {
    Tuple6 {
        saddr: ip6_words(&ip(src)),
        daddr: ip6_words(&ip(dst)),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: protocol,
        pad: [0; 3],
    }
}

fn flow(ebpf: &aya::Ebpf, map: &str, t: &Tuple6) -> Option<NatValue6> {
    let m: HashMap<_, Tuple6, NatValue6> = HashMap::try_from(ebpf.map(map).unwrap()).unwrap();
    m.get(t, 0).ok()
}

#[test]
fn ipv6_tcp_is_dnated_recorded_and_reversed_with_valid_checksums() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, egress) = tc_pair(&ebpf);
    // The node port, the external IP and the ClusterIP routed in: all to the local backend.
    for (dst, dport, sport) in [(NODE, 30080, 40000), ("fd00:e::1", 80, 40001)] {
        let pkt = packet(proto::TCP, CLIENT, sport, dst, dport, &[]);
        let (rc, out) = run(ingress, &pkt);
        assert_eq!(rc, 0, "TC_ACT_OK");
        assert_eq!(
            ends(&out),
            format!("[{CLIENT}]:{sport} -> [fd10::1]:8080"),
            "eTP Local keeps the client's source"
        );
        assert_eq!(l4_csum(&out), 0, "TCP checksum verifies");
        assert_eq!(run(ingress, &pkt).1, out, "the same flow: the same backend");
        let ct = flow(
            &ebpf,
            map_names::CT6,
            &tuple(CLIENT, sport, dst, dport, proto::TCP),
        );
        assert_eq!(
            ct.map(|v| (v.addr, u16::from_be(v.port), v.flags)),
            Some((ip6_words(&ip("fd10::1")), 8080, 0)),
            "the flow is recorded, no SNAT"
        );
        // The backend's reply on its way out: the Service address as source.
        let reply = packet(proto::TCP, "fd10::1", 8080, CLIENT, sport, &[]);
        let (rc, back) = run(egress, &reply);
        assert_eq!(rc, 0);
        assert_eq!(
            ends(&back),
            format!("[{dst}]:{dport} -> [{CLIENT}]:{sport}")
        );
        assert_eq!(l4_csum(&back), 0, "the reply's TCP checksum verifies");
    }
    let cip = packet(proto::TCP, CLIENT, 40002, "fd00:96::10", 80, &[]);
    let (_, out) = run(ingress, &cip);
    assert_eq!(
        ends(&out),
        format!("[{CLIENT}]:40002 -> [fd10::1]:8080"),
        "a ClusterIP routed in from outside"
    );
    assert_eq!(l4_csum(&out), 0);
    // Not a Service address: untouched.
    let plain = packet(proto::TCP, CLIENT, 40003, "fd10::9", 80, &[]);
    assert_eq!(run(ingress, &plain), (0, plain.clone()));
    Ok(())
}

#[test]
fn ipv6_etp_cluster_is_snated_to_the_interface_address_and_back() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, egress) = tc_pair(&ebpf);
    let (_, dnated) = run(
        ingress,
        &packet(proto::TCP, CLIENT, 41000, NODE, 30081, &[]),
    );
    assert_eq!(ends(&dnated), format!("[{CLIENT}]:41000 -> [fd10::2]:8080"));
    // Leaving towards the backend on another node: SNATed to this interface's address.
    let (rc, snated) = run(egress, &dnated);
    assert_eq!(rc, 0);
    assert_eq!(
        ends(&snated),
        format!("[{SNAT_ADDR}]:41000 -> [fd10::2]:8080")
    );
    assert_eq!(l4_csum(&snated), 0, "TCP checksum verifies after SNAT");
    // The backend's reply to the SNAT address: the client again, then the Service address.
    let reply = packet(proto::TCP, "fd10::2", 8080, SNAT_ADDR, 41000, &[]);
    let (_, unsnated) = run(ingress, &reply);
    assert_eq!(
        ends(&unsnated),
        format!("[fd10::2]:8080 -> [{CLIENT}]:41000")
    );
    assert_eq!(l4_csum(&unsnated), 0);
    let (_, back) = run(egress, &unsnated);
    assert_eq!(ends(&back), format!("[{NODE}]:30081 -> [{CLIENT}]:41000"));
    assert_eq!(l4_csum(&back), 0);
    // A second client on the same port: another SNAT port, no collision.
    let other = "fd00:c::251";
    let (_, dnated2) = run(ingress, &packet(proto::TCP, other, 41000, NODE, 30081, &[]));
    let (_, snated2) = run(egress, &dnated2);
    assert!(snated2[22..38] == ip(SNAT_ADDR).octets());
    assert_ne!(
        &snated2[L4..L4 + 2],
        &41000u16.to_be_bytes(),
        "a fresh port"
    );
    assert_eq!(l4_csum(&snated2), 0);
    Ok(())
}

#[test]
fn ipv6_udp_never_carries_a_zero_checksum_and_sctp_gets_its_crc_patched() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, _) = tc_pair(&ebpf);
    // A payload word chosen so the DNATed datagram's checksum computes to zero (the probe
    // and the datagram are one flow: the same backend).
    let probe = packet(proto::UDP, CLIENT, 42001, "fd00:96::16", 53, &[0, 0]);
    let (_, out) = run(ingress, &probe);
    assert_eq!(ends(&out), format!("[{CLIENT}]:42001 -> [fd10::5]:8080"));
    assert_eq!(l4_csum(&out), 0, "UDP checksum verifies");
    let mut zeroed = out.clone();
    zeroed[L4 + 6..L4 + 8].fill(0);
    let word = l4_csum(&zeroed); // the checksum of the DNATed datagram with payload 0
    let pkt = packet(
        proto::UDP,
        CLIENT,
        42001,
        "fd00:96::16",
        53,
        &word.to_be_bytes(),
    );
    let (_, out) = run(ingress, &pkt);
    assert_eq!(ends(&out), format!("[{CLIENT}]:42001 -> [fd10::5]:8080"));
    assert_eq!(
        &out[L4 + 6..L4 + 8],
        &[0xff, 0xff],
        "a computed zero is sent as 0xffff"
    );
    assert_eq!(l4_csum(&out), 0, "and still verifies");

    let init = packet(proto::SCTP, CLIENT, 42002, "fd00:96::17", 80, &[]);
    let (rc, out) = run(ingress, &init);
    assert_eq!(rc, 0);
    assert_eq!(ends(&out), format!("[{CLIENT}]:42002 -> [fd10::6]:8080"));
    let carried = u32::from_le_bytes(out[L4 + 8..L4 + 12].try_into()?);
    assert_eq!(carried, crc32c(&out[L4..]), "the patched CRC32c verifies");
    Ok(())
}

#[test]
fn ipv6_reject_answers_with_a_reset_or_an_icmpv6_port_unreachable() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, _) = tc_pair(&ebpf);
    let syn = packet(proto::TCP, CLIENT, 43000, "fd00:96::14", 80, &[]);
    let (rc, rst) = run(ingress, &syn);
    assert_eq!(rc, 7, "TC_ACT_REDIRECT back out");
    assert_eq!(ends(&rst), format!("[fd00:96::14]:80 -> [{CLIENT}]:43000"));
    assert_eq!(rst[L4 + 13], 0x14, "RST|ACK");
    assert_eq!(
        u32::from_be_bytes(rst[L4 + 8..L4 + 12].try_into()?),
        1001,
        "acks the SYN"
    );
    assert_eq!(l4_csum(&rst), 0, "TCP checksum verifies");

    let dgram = packet(proto::UDP, CLIENT, 43001, "fd00:96::15", 53, &[1, 2, 3, 4]);
    let (rc, icmp) = run(ingress, &dgram);
    assert_eq!(rc, 7, "TC_ACT_REDIRECT back out");
    assert_eq!(icmp.len(), 14 + 40 + 8 + 48);
    assert_eq!(&icmp[12..14], &[0x86, 0xdd]);
    assert_eq!(icmp[14] >> 4, 6);
    assert_eq!(
        u16::from_be_bytes([icmp[18], icmp[19]]),
        56,
        "payload length"
    );
    assert_eq!(icmp[20], 58, "ICMPv6");
    assert_eq!(
        &icmp[22..38],
        &ip("fd00:96::15").octets(),
        "from the Service"
    );
    assert_eq!(&icmp[38..54], &ip(CLIENT).octets(), "to the client");
    assert_eq!((icmp[L4], icmp[L4 + 1]), (1, 4), "port unreachable");
    assert_eq!(
        l4_csum(&icmp),
        0,
        "ICMPv6 checksum over the pseudo-header verifies"
    );
    assert_eq!(
        &icmp[L4 + 8..],
        &dgram[14..62],
        "quotes the IPv6 + UDP headers"
    );
    Ok(())
}

#[test]
fn ipv6_drops_and_extension_headers() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, egress) = tc_pair(&ebpf);
    let shot = 2;
    // eTP Local without a local endpoint.
    let p = packet(proto::TCP, CLIENT, 44000, NODE, 30082, &[]);
    assert_eq!(run(ingress, &p).0, shot, "no local endpoint: dropped");
    // The source-ranged LB IP: inside the ranges forwarded, outside dropped (also the node's
    // own packet leaving for it from outside the ranges).
    let p = packet(proto::TCP, CLIENT, 44001, "fd00:1b::1", 80, &[]);
    let (rc, out) = run(ingress, &p);
    assert_eq!(
        (rc, ends(&out)),
        (0, format!("[{CLIENT}]:44001 -> [fd10::3]:8080"))
    );
    let p = packet(proto::TCP, OUTSIDER, 44002, "fd00:1b::1", 80, &[]);
    assert_eq!(run(ingress, &p).0, shot, "outside the source ranges");
    let p = packet(proto::TCP, NODE, 44003, "fd00:1b::1", 80, &[]);
    assert_eq!(run(egress, &p).0, shot, "the node, outside the ranges");
    // An unallocated address of the service CIDR; one outside it passes.
    let p = packet(proto::TCP, CLIENT, 44004, "fd00:96::99", 80, &[]);
    assert_eq!(run(ingress, &p).0, shot, "unallocated service address");
    assert_eq!(run(egress, &p).0, shot, "also from the node");
    let p = packet(proto::TCP, CLIENT, 44005, "fd00:97::99", 80, &[]);
    assert_eq!(run(ingress, &p), (0, p.clone()));
    // Hop-by-hop options before TCP: not parsed, passed untouched.
    let mut p = packet(proto::TCP, CLIENT, 44006, NODE, 30080, &[]);
    p[20] = 0;
    assert_eq!(
        run(ingress, &p),
        (0, p.clone()),
        "extension header: untouched"
    );
    Ok(())
}

/// The kernel memory (`memlock` in fdinfo) of a pinned map, in bytes.
fn memlock(bpffs: &Bpffs, name: &str) -> anyhow::Result<u64> {
    use std::os::fd::{AsFd, AsRawFd};
    let data = aya::maps::MapData::from_pin(bpffs.path().join("t").join(name))?;
    let fd = data.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let v = (text.lines())
        .find_map(|l| l.strip_prefix("memlock:"))
        .ok_or_else(|| anyhow::anyhow!("no memlock in fdinfo"))?;
    Ok(v.trim().parse()?)
}

/// LRU maps are always preallocated: the IPv6 flow maps are sized below IPv4's (a quarter of
/// the entries), and what they cost is printed (`--nocapture`) for the README, with the
/// verifier's work on the tc programs.
#[test]
fn the_ipv6_flow_maps_cost_less_kernel_memory_than_ipv4s() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    // What the verifier walked (`verified_insns`, its "processed N insns"), both families'
    // paths in one program: far below the 1M limit.
    for name in ["sluice_tc_ingress", "sluice_tc_egress"] {
        let n = classifier(&ebpf, name).info()?.verified_instruction_count();
        eprintln!("{name}: verifier processed {n:?} insns");
        assert!(n.is_some_and(|n| n < 1_000_000));
    }
    let mut total6 = 0;
    for (v4, v6) in [
        (map_names::CT, map_names::CT6),
        (map_names::NAT_REV, map_names::NAT_REV6),
        (map_names::SNAT, map_names::SNAT6),
        (map_names::SNAT_REV, map_names::SNAT_REV6),
    ] {
        let (m4, m6) = (memlock(&bpffs, v4)?, memlock(&bpffs, v6)?);
        eprintln!(
            "{v4}: {:.1} MiB, {v6}: {:.1} MiB",
            m4 as f64 / 1048576.0,
            m6 as f64 / 1048576.0
        );
        assert!(m6 < m4, "{v6} ({m6}) is not smaller than {v4} ({m4})");
        total6 += m6;
    }
    for name in [
        map_names::IFADDR6,
        map_names::SERVICE_CIDRS6,
        map_names::SOURCE_RANGES6,
    ] {
        let m = memlock(&bpffs, name)?;
        eprintln!("{name}: {:.1} KiB", m as f64 / 1024.0);
        total6 += m;
    }
    eprintln!("IPv6 tc maps: {:.1} MiB", total6 as f64 / 1048576.0);
    let all: u64 = (map_names::ALL.iter())
        .map(|name| memlock(&bpffs, name))
        .sum::<anyhow::Result<u64>>()?;
    eprintln!("every map: {:.1} MiB", all as f64 / 1048576.0);
    Ok(())
}
