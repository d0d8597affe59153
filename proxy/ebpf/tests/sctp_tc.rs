//! SCTP through the tc path under `BPF_PROG_TEST_RUN`: this machine's kernel has no SCTP, so
//! no socket can send it, but the tc programs see SCTP packets as bytes like any other. Packet
//! in, packet out: the DNAT to a backend on another port (the CRC32c patched without reading
//! the packet, and still right), the reply given the Service address back, a CRC left for
//! the device to compute (zero) left zero, an unchanged port leaving the CRC alone, and a
//! Service with no endpoints answered with an ICMP port unreachable. Needs root; skipped when
//! the programs are not built in.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{
    Bpffs, internet_checksum as csum, ipv4_packet, load_tc, programmed, tc_pair, test_run as run,
};
use sluice_ebpf_common::crc32c::checksum as crc32c;
use sluice_model::service::{Endpoint, Protocol, ServiceName, ServicePort, ServicePortName};
use sluice_proxy_core::fixture;
use sluice_proxy_ebpf::kernel::KernelMaps;
use sluice_proxy_ebpf::render::RenderConfig;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 250);
const MOVED: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 5); // port 80 → targetPort 8080
const SAME: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 6); // port 8080 → targetPort 8080
const EMPTY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 7); // no endpoints
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 180, 0, 1);

fn sctp(name: &str, cip: Ipv4Addr, port: u16) -> ServicePort {
    let name = ServicePortName::new(&ServiceName::new("ns", name), "sctp", Protocol::Sctp);
    ServicePort::plain(name, vec![IpAddr::V4(cip)], port)
}

fn backend() -> Vec<Endpoint> {
    vec![Endpoint {
        node_name: Some("node-a".into()),
        ..Endpoint::new(IpAddr::V4(BACKEND), 8080)
    }]
}

const SCTP: usize = 14 + 20;

/// The CRC32c an SCTP packet carries (stored little-endian) and the one its bytes call for.
fn crcs(p: &[u8]) -> (u32, u32) {
    let carried = u32::from_le_bytes(p[SCTP + 8..SCTP + 12].try_into().unwrap());
    let mut body = p[SCTP..].to_vec();
    body[8..12].fill(0);
    (carried, crc32c(&body))
}

/// Ethernet + IPv4 + SCTP INIT from `src:sport` to `dst:dport`; the CRC filled in unless
/// `offloaded` (left zero, as a sender with checksum offload hands it over).
fn init(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, offloaded: bool) -> Vec<u8> {
    let mut p = ipv4_packet(132, src, dst, 12 + 20);
    let s = &mut p[SCTP..];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    // INIT chunk: type 1, length 20, initiate tag, a_rwnd, streams out/in, initial TSN.
    s[12] = 1;
    s[14..16].copy_from_slice(&20u16.to_be_bytes());
    s[16..20].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    s[20..24].copy_from_slice(&65535u32.to_be_bytes());
    s[24..28].copy_from_slice(&[0, 10, 0, 10]);
    s[28..32].copy_from_slice(&1u32.to_be_bytes());
    if !offloaded {
        let (_, want) = crcs(&p);
        p[SCTP + 8..SCTP + 12].copy_from_slice(&want.to_le_bytes());
    }
    p
}

fn ends(p: &[u8]) -> String {
    let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    format!("{}:{} -> {}:{}", ip(26), port(SCTP), ip(30), port(SCTP + 2))
}

fn loaded(bpffs: &Bpffs) -> anyhow::Result<aya::Ebpf> {
    let snap = fixture::snapshot(
        "node-a",
        None,
        vec![
            (sctp("moved", MOVED, 80), backend()),
            (sctp("same", SAME, 8080), backend()),
            (sctp("empty", EMPTY, 80), vec![]),
        ],
    );
    let mut ebpf = programmed(bpffs, &RenderConfig::default(), &snap)?;
    load_tc(&mut ebpf)?;
    Ok(ebpf)
}

#[test]
fn sctp_is_dnated_and_reversed_with_a_patched_crc32c() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, egress) = tc_pair(&ebpf);

    let pkt = init(CLIENT, 40000, MOVED, 80, false);
    let (rc, out) = run(ingress, &pkt);
    assert_eq!(rc, 0, "TC_ACT_OK");
    assert_eq!(ends(&out), "192.168.0.250:40000 -> 10.180.0.1:8080");
    assert_eq!(csum(&out[14..SCTP]), 0, "IPv4 checksum verifies");
    let (carried, want) = crcs(&out);
    assert_eq!(carried, want, "the patched CRC32c verifies");
    assert_ne!(carried, crcs(&pkt).0, "the port change changed it");

    // The backend's answer (an INIT ACK, for the test any chunk) on its way to the client.
    let reply = init(BACKEND, 8080, CLIENT, 40000, false);
    let (rc, back) = run(egress, &reply);
    assert_eq!(rc, 0, "TC_ACT_OK");
    assert_eq!(ends(&back), "172.30.0.5:80 -> 192.168.0.250:40000");
    assert_eq!(csum(&back[14..SCTP]), 0, "IPv4 checksum verifies");
    let (carried, want) = crcs(&back);
    assert_eq!(carried, want, "the reply's CRC32c verifies");
    Ok(())
}

#[test]
fn an_sctp_crc_left_to_the_device_stays_unset_and_an_unchanged_port_keeps_it() -> anyhow::Result<()>
{
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let (ingress, _) = tc_pair(&ebpf);

    let (_, out) = run(ingress, &init(CLIENT, 40001, MOVED, 80, true));
    assert_eq!(ends(&out), "192.168.0.250:40001 -> 10.180.0.1:8080");
    assert_eq!(
        crcs(&out).0,
        0,
        "still zero: the device computes it from these bytes"
    );

    let pkt = init(CLIENT, 40002, SAME, 8080, false);
    let (_, out) = run(ingress, &pkt);
    assert_eq!(ends(&out), "192.168.0.250:40002 -> 10.180.0.1:8080");
    assert_eq!(
        &out[SCTP..],
        &pkt[SCTP..],
        "no pseudo-header: the SCTP bytes as they were"
    );
    assert_eq!(csum(&out[14..SCTP]), 0, "IPv4 checksum verifies");
    Ok(())
}

#[test]
fn sctp_to_a_service_without_endpoints_gets_a_port_unreachable() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let ebpf = loaded(&bpffs)?;
    let pkt = init(CLIENT, 40003, EMPTY, 80, false);
    let (rc, icmp) = run(tc_pair(&ebpf).0, &pkt);
    assert_eq!(rc, 7, "TC_ACT_REDIRECT back out");
    assert_eq!(icmp.len(), 14 + 20 + 8 + 28);
    assert_eq!(icmp[23], 1, "ICMP");
    assert_eq!((icmp[34], icmp[35]), (3, 3), "port unreachable");
    assert_eq!(&icmp[26..30], &EMPTY.octets(), "from the Service address");
    assert_eq!(&icmp[30..34], &CLIENT.octets(), "to the client");
    assert_eq!(csum(&icmp[34..]), 0, "ICMP checksum verifies");
    assert_eq!(
        &icmp[42..70],
        &pkt[14..42],
        "quotes the IP header and the ports"
    );
    Ok(())
}
