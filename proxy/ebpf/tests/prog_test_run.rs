//! The programs' logic under `BPF_PROG_TEST_RUN` (no interfaces, no cgroups): the socket-LB
//! translation through its test twin `sluice_xlate_test` (the kernel cannot test-run
//! `cgroup/connect4`), and the tc ingress program on a real Ethernet/IPv4/TCP packet —
//! packet in, packet out, checksums, the flow recorded. Maps are filled by the same
//! render → diff → write path the backend uses, in a private bpffs. Needs root; skipped when
//! the programs are not built in.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use aya::programs::SchedClassifier;
use common::{Bpffs, internet_checksum as csum, ipv4_packet, programmed, test_run};
use sluice_ebpf_common::xlate_verdict;
use sluice_model::service::{Endpoint, SessionAffinity};
use sluice_proxy_core::fixture::{self, svc};
use sluice_proxy_ebpf::kernel::KernelMaps;
use sluice_proxy_ebpf::render::RenderConfig;

fn ep(ip: &str, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::new(ip.parse::<IpAddr>().unwrap(), 8080)
    }
}

/// Loads the object into `bpffs` with the maps holding this snapshot's entries.
fn loaded(bpffs: &Bpffs) -> anyhow::Result<aya::Ebpf> {
    let sticky = sluice_model::service::ServicePort {
        session_affinity: Some(SessionAffinity {
            timeout_seconds: 100,
        }),
        ..svc("sticky", "172.30.0.3")
    };
    let snap = fixture::snapshot(
        "node-a",
        None,
        vec![
            (
                svc("web", "172.30.0.1"),
                vec![ep("10.180.0.1", "node-a"), ep("10.180.0.2", "node-b")],
            ),
            (svc("none", "172.30.0.2"), vec![]),
            (
                sluice_model::service::ServicePort::plain(
                    sluice_model::service::ServicePortName::new(
                        &sluice_model::service::ServiceName::new("ns", "none-udp"),
                        "dns",
                        sluice_model::service::Protocol::Udp,
                    ),
                    vec!["172.30.0.4".parse().unwrap()],
                    53,
                ),
                vec![],
            ),
            (
                sticky,
                vec![
                    ep("10.180.0.1", "node-a"),
                    ep("10.180.0.2", "node-b"),
                    ep("10.180.0.3", "node-b"),
                ],
            ),
        ],
    );
    programmed(bpffs, &RenderConfig::default(), &snap)
}

fn program<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into()?;
    prog.load()?;
    Ok(prog)
}

/// One `XlateTest` record: asks for `dst:port`, returns (verdict, answer).
fn xlate(
    prog: &SchedClassifier,
    dst: Ipv4Addr,
    port: u16,
    netns: u64,
    random: u32,
) -> (u8, String) {
    let mut rec = [0u8; 40];
    rec[0..4].copy_from_slice(&dst.octets());
    rec[4..6].copy_from_slice(&port.to_be_bytes());
    rec[6] = 6; // TCP
    rec[8..16].copy_from_slice(&7u64.to_ne_bytes());
    rec[16..24].copy_from_slice(&netns.to_ne_bytes());
    rec[24..28].copy_from_slice(&random.to_ne_bytes());
    let (_, out) = test_run(prog, &rec);
    let addr = Ipv4Addr::new(out[28], out[29], out[30], out[31]);
    let port = u16::from_be_bytes([out[32], out[33]]);
    (out[7], format!("{addr}:{port}"))
}

#[test]
fn the_socket_translation_picks_slots_rejects_and_sticks() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let mut ebpf = loaded(&bpffs)?;
    let prog = program(&mut ebpf, "sluice_xlate_test")?;
    let web = Ipv4Addr::new(172, 30, 0, 1);
    let fwd = xlate_verdict::FORWARD;
    assert_eq!(xlate(prog, web, 80, 1, 0), (fwd, "10.180.0.1:8080".into()));
    assert_eq!(xlate(prog, web, 80, 1, 1), (fwd, "10.180.0.2:8080".into()));
    assert_eq!(
        xlate(prog, web, 80, 1, 2),
        (fwd, "10.180.0.1:8080".into()),
        "random % 2"
    );
    assert_eq!(
        xlate(prog, web, 81, 1, 0).0,
        xlate_verdict::REJECT,
        "unserved port"
    );
    let none = Ipv4Addr::new(172, 30, 0, 2);
    assert_eq!(
        xlate(prog, none, 80, 1, 0).0,
        xlate_verdict::REJECT,
        "no endpoints"
    );
    let other = Ipv4Addr::new(172, 31, 0, 1);
    assert_eq!(xlate(prog, other, 80, 1, 0).0, xlate_verdict::PASS);
    // Affinity: the first pick sticks for the same client, whatever the random number.
    let sticky = Ipv4Addr::new(172, 30, 0, 3);
    let first = xlate(prog, sticky, 80, 42, 2);
    assert_eq!(first, (fwd, "10.180.0.3:8080".into()));
    for r in 0..5 {
        assert_eq!(xlate(prog, sticky, 80, 42, r), first);
    }
    assert_eq!(
        xlate(prog, sticky, 80, 43, 0),
        (fwd, "10.180.0.1:8080".into()),
        "another client"
    );
    Ok(())
}

/// `loadBalancerSourceRanges` at the socket layer: the node's own sockets (its network
/// namespace's cookie in `SLUICE_NODE`) are translated when a node IP is inside the ranges;
/// every other socket is left to the tc path, which knows the source.
#[test]
fn the_node_reaches_a_source_ranged_lb_ip_only_when_its_ip_is_inside() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let lb = |name: &str, cip: &str, vip: &str, ranges: &str| sluice_model::service::ServicePort {
        load_balancer_source_ranges: vec![ranges.parse().unwrap()],
        external_traffic_policy: sluice_model::service::TrafficPolicy::Cluster,
        ..fixture::lb_local(name, cip, vip, 30000)
    };
    let snap = fixture::snapshot(
        "node-a",
        None,
        vec![
            (
                lb("inside", "172.30.0.1", "198.51.100.1", "192.168.0.0/24"),
                vec![ep("10.180.0.1", "node-a")],
            ),
            (
                lb("outside", "172.30.0.2", "198.51.100.2", "192.168.9.0/24"),
                vec![ep("10.180.0.2", "node-a")],
            ),
        ],
    );
    let cfg = RenderConfig {
        node_ips: vec![Ipv4Addr::new(192, 168, 0, 2).into()],
        ..RenderConfig::default()
    };
    let bpffs = Bpffs::new()?;
    let mut ebpf = programmed(&bpffs, &cfg, &snap)?;
    let node = sluice_ebpf_common::netns_cookie()?;
    sluice_proxy_ebpf::kernel::write_node_cookie(&mut ebpf, node)?;
    let prog = program(&mut ebpf, "sluice_xlate_test")?;
    let (inside, outside) = (
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(198, 51, 100, 2),
    );
    assert_eq!(
        xlate(prog, inside, 80, node, 0),
        (xlate_verdict::FORWARD, "10.180.0.1:8080".into()),
        "the node, its IP inside the ranges"
    );
    assert_eq!(
        xlate(prog, inside, 80, node + 1, 0).0,
        xlate_verdict::PASS,
        "a pod: left to tc"
    );
    assert_eq!(
        xlate(prog, outside, 80, node, 0).0,
        xlate_verdict::PASS,
        "the node, its IP outside the ranges: left to tc (which drops it)"
    );
    Ok(())
}

/// Ethernet + IPv4 + TCP SYN from `src:sport` to `dst:dport`, checksums filled in.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = ipv4_packet(6, src, dst, 20);
    let tcp = &mut p[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    let c = tcp_csum(&p);
    p[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
    p
}

/// The TCP checksum over the pseudo header and segment (0 when it verifies).
fn tcp_csum(p: &[u8]) -> u16 {
    let mut buf = Vec::new();
    buf.extend_from_slice(&p[26..34]);
    buf.extend_from_slice(&[0, 6, 0, 20]);
    buf.extend_from_slice(&p[34..54]);
    csum(&buf)
}

#[test]
fn tc_ingress_dnats_a_flow_with_valid_checksums_and_keeps_it() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let mut ebpf = loaded(&bpffs)?;
    let prog = program(&mut ebpf, "sluice_tc_ingress")?;
    let client = Ipv4Addr::new(192, 168, 0, 250);
    let web = Ipv4Addr::new(172, 30, 0, 1);
    let run = |pkt: &[u8]| test_run(prog, pkt);
    let pkt = syn(client, 40000, web, 80);
    let (rc, out) = run(&pkt);
    assert_eq!(rc, 0, "TC_ACT_OK");
    let dst = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let dport = u16::from_be_bytes([out[36], out[37]]);
    assert!(
        ["10.180.0.1", "10.180.0.2"].contains(&dst.to_string().as_str()),
        "{dst}"
    );
    assert_eq!(dport, 8080);
    assert_eq!(csum(&out[14..34]), 0, "IPv4 checksum verifies");
    assert_eq!(tcp_csum(&out), 0, "TCP checksum verifies");
    assert_eq!(&out[26..30], &client.octets(), "source kept on ingress");
    // The same flow again: the same backend (from the flow map, whatever the random pick).
    for _ in 0..8 {
        let (_, again) = run(&pkt);
        assert_eq!(again, out);
    }
    // Not a Service: untouched.
    let plain = syn(client, 40001, Ipv4Addr::new(10, 180, 0, 9), 80);
    assert_eq!(run(&plain).1, plain);
    // No endpoints: a reset back to the client (TC_ACT_REDIRECT to where it came from).
    let mut to_none = syn(client, 40002, Ipv4Addr::new(172, 30, 0, 2), 80);
    to_none[34 + 4..34 + 8].copy_from_slice(&1000u32.to_be_bytes()); // seq 1000
    let c = {
        to_none[50] = 0;
        to_none[51] = 0;
        tcp_csum(&to_none)
    };
    to_none[50..52].copy_from_slice(&c.to_be_bytes());
    let (rc, rst) = run(&to_none);
    assert_eq!(rc, 7, "TC_ACT_REDIRECT");
    assert_eq!(&rst[26..30], &[172, 30, 0, 2], "from the Service address");
    assert_eq!(&rst[30..34], &client.octets(), "to the client");
    assert_eq!(u16::from_be_bytes([rst[34], rst[35]]), 80);
    assert_eq!(u16::from_be_bytes([rst[36], rst[37]]), 40002);
    assert_eq!(rst[47], 0x14, "RST|ACK");
    assert_eq!(
        u32::from_be_bytes([rst[42], rst[43], rst[44], rst[45]]),
        1001,
        "acks the SYN"
    );
    assert_eq!(csum(&rst[14..34]), 0, "IPv4 checksum verifies");
    assert_eq!(tcp_csum(&rst), 0, "TCP checksum verifies");
    // The same over UDP: an ICMP port unreachable quoting the datagram's headers.
    let mut dgram = syn(client, 40003, Ipv4Addr::new(172, 30, 0, 4), 53);
    dgram[23] = 17; // UDP; the rest of the "TCP" header is payload the reply drops
    dgram[24] = 0;
    dgram[25] = 0;
    let c = csum(&dgram[14..34]);
    dgram[24..26].copy_from_slice(&c.to_be_bytes());
    dgram[34 + 6] = 0; // no UDP checksum
    dgram[34 + 7] = 0;
    dgram[34 + 4..34 + 6].copy_from_slice(&28u16.to_be_bytes());
    let (rc, icmp) = run(&dgram);
    assert_eq!(rc, 7, "TC_ACT_REDIRECT");
    assert_eq!(icmp.len(), 14 + 20 + 8 + 28);
    assert_eq!(icmp[23], 1, "ICMP");
    assert_eq!(&icmp[26..30], &[172, 30, 0, 4]);
    assert_eq!(&icmp[30..34], &client.octets());
    assert_eq!((icmp[34], icmp[35]), (3, 3), "port unreachable");
    assert_eq!(csum(&icmp[14..34]), 0, "IPv4 checksum verifies");
    assert_eq!(csum(&icmp[34..]), 0, "ICMP checksum verifies");
    assert_eq!(
        &icmp[42..62],
        &dgram[14..34],
        "quotes the original IP header"
    );
    Ok(())
}
