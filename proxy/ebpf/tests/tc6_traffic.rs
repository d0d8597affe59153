//! The IPv6 tc path with real traffic through the real backend: three namespaces the test
//! creates — an outside client, a node (IPv6 forwarding on, the tc programs attached by
//! `EbpfBackend` to its two veths) and a backend "pod" behind it. The client connects over
//! IPv6 to a node port (eTP Local: the backend sees the client), a node port with eTP Cluster
//! and a ClusterIP routed in (both SNATed to the node's address on the backend side), sends
//! UDP to a ClusterIP (the answer comes from the Service address), is refused by a Service
//! without endpoints (TCP reset; UDP: ICMPv6 port unreachable, `ECONNREFUSED` on the
//! socket), and is dropped by an eTP Local port without local endpoints, an unallocated
//! service-CIDR address and a load-balancer IP whose source ranges it is outside of (and let
//! through from inside them). Needs root; skipped (with a note) when the programs are not
//! built in.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Bpffs, Cgroup};
use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePort, ServicePortName, ServiceType,
    TrafficPolicy,
};
use sluice_proxy_core::Changes;
use sluice_proxy_core::backend::{Backend, BackendOptions, EbpfOptions};
use sluice_proxy_core::fixture;
use sluice_proxy_ebpf::{KernelEbpf, KernelMaps};
use sluice_testbed::NetNs;
use sluice_testbed::link::Veth;

fn port(service: &str, proto: Protocol, cip: &str, port: u16) -> ServicePort {
    let name = ServicePortName::new(&ServiceName::new("ns", service), "p", proto);
    ServicePort::plain(name, vec![cip.parse().unwrap()], port)
}

fn ep(port: u16, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::new("fd00:b::2".parse::<IpAddr>().unwrap(), port)
    }
}

fn services() -> Vec<(ServicePort, Vec<Endpoint>)> {
    let node_port = |name: &str, cip: &str, np: u16, etp: TrafficPolicy| ServicePort {
        service_type: ServiceType::NodePort,
        node_port: Some(np),
        external_traffic_policy: etp,
        ..port(name, Protocol::Tcp, cip, 80)
    };
    let ranged = ServicePort {
        service_type: ServiceType::LoadBalancer,
        load_balancer_vips: vec!["fd00:1b::1".parse().unwrap()],
        load_balancer_source_ranges: vec!["fd00:c::/64".parse().unwrap()],
        ..port("ranged", Protocol::Tcp, "fd00:96::13", 80)
    };
    vec![
        (
            node_port("web", "fd00:96::10", 30080, TrafficPolicy::Local),
            vec![ep(8080, "node-a")],
        ),
        (
            node_port("clus", "fd00:96::14", 30081, TrafficPolicy::Cluster),
            vec![ep(8081, "node-b")],
        ),
        (
            node_port("local0", "fd00:96::16", 30082, TrafficPolicy::Local),
            vec![ep(8080, "node-b")],
        ),
        (ranged, vec![ep(8080, "node-a")]),
        (
            port("dns", Protocol::Udp, "fd00:96::11", 53),
            vec![ep(5353, "node-a")],
        ),
        (port("none", Protocol::Tcp, "fd00:96::12", 80), vec![]),
        (port("none-udp", Protocol::Udp, "fd00:96::15", 53), vec![]),
    ]
}

const CLIENT: &str = r#"
import socket, errno
def conn(addr, src=None, timeout=2):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    try:
        s.connect(addr)
        data = s.recv(128).decode().strip()
        peer = s.getpeername()
        s.close()
        return data + ' via [%s]:%d' % peer[:2]
    except socket.timeout:
        return 'timeout'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print(conn(('fd00:c::1', 30080)))
print(conn(('fd00:c::1', 30081)))
print(conn(('fd00:96::10', 80)))
print(conn(('fd00:96::12', 80)))
print(conn(('fd00:c::1', 30082), timeout=1))
print(conn(('fd00:96::99', 80), timeout=1))
print(conn(('fd00:1b::1', 80), src='fd00:c::250'))
print(conn(('fd00:1b::1', 80), src='fd00:d::5', timeout=1))
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(b'x', ('fd00:96::11', 53))
data, addr = u.recvfrom(128)
print(data.decode() + ' from [%s]:%d' % addr[:2])
r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
r.settimeout(2)
r.connect(('fd00:96::15', 53))
r.send(b'x')
try:
    r.recv(64)
    print('answered')
except socket.timeout:
    print('timeout')
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Answers every TCP connection and UDP datagram on `addr` inside `ns` with the peer address
/// it sees (so the test can tell a kept client source from a SNATed one).
fn serve_peer(ns: &NetNs, addr: SocketAddr, udp: bool) -> anyhow::Result<()> {
    if udp {
        let sock = ns.run(|| std::net::UdpSocket::bind(addr))??;
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(format!("peer {}", from.ip()).as_bytes(), from);
            }
        });
        return Ok(());
    }
    let listener = ns.run(|| std::net::TcpListener::bind(addr))??;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let peer = s
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = std::io::Write::write_all(&mut s, format!("peer {peer}\n").as_bytes());
        }
    });
    Ok(())
}

/// client (fd00:c::250, fd00:d::5) — vc [node fd00:c::1 | fd00:b::1] vb — backend fd00:b::2.
/// The veths live as long as the namespaces (the test drops them together).
fn topology(client: &NetNs, node: &NetNs, backend: &NetNs) -> anyhow::Result<[Veth; 2]> {
    for ns in [client, node, backend] {
        ns.sysctl_set("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl_set("net.ipv6.conf.default.accept_dad", "0")?;
    }
    node.sysctl_set("net.ipv6.conf.all.forwarding", "1")?;
    let veths = [
        Veth::new(node, "vc", client, "eth0")?,
        Veth::new(node, "vb", backend, "eth0")?,
    ];
    let addrs: [(&NetNs, &str, &str); 5] = [
        (client, "eth0", "fd00:c::250/64"),
        (client, "eth0", "fd00:d::5/64"),
        (node, "vc", "fd00:c::1/64"),
        (node, "vb", "fd00:b::1/64"),
        (backend, "eth0", "fd00:b::2/64"),
    ];
    for (ns, dev, addr) in addrs {
        ns.ip(["addr", "add", addr, "dev", dev, "nodad"])?;
    }
    client.ip(["-6", "route", "add", "default", "via", "fd00:c::1"])?;
    backend.ip(["-6", "route", "add", "default", "via", "fd00:b::1"])?;
    node.ip(["-6", "route", "add", "fd00:d::/64", "via", "fd00:c::250"])?;
    Ok(veths)
}

#[test]
fn ipv6_from_outside_the_node_is_translated_snated_refused_and_dropped() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let cgroup = Cgroup::new("tc6")?;
    let (client, node, backend) = (
        NetNs::new("tc6-client")?,
        NetNs::new("tc6-node")?,
        NetNs::new("tc6-backend")?,
    );
    let _veths = topology(&client, &node, &backend)?;
    serve_peer(&backend, "[fd00:b::2]:8080".parse()?, false)?;
    serve_peer(&backend, "[fd00:b::2]:8081".parse()?, false)?;
    serve_peer(&backend, "[fd00:b::2]:5353".parse()?, true)?;
    let pins = bpffs.path().join("sluice");
    let opts = BackendOptions {
        families: vec![IpFamily::V6],
        node_ips: vec!["fd00:c::1".parse()?],
        service_cidrs: vec!["fd00:96::/112".parse()?],
        ebpf: EbpfOptions {
            cgroup: Some(cgroup.path().to_owned()),
            pin_dir: Some(pins.clone()),
            interfaces: vec!["vc".into(), "vb".into()],
        },
        ..BackendOptions::default()
    };
    // The proxy runs in the node's namespace: interfaces are found and attached there.
    let snap = fixture::snapshot_in(IpFamily::V6, "node-a", None, services());
    let programmed = node.run(move || -> anyhow::Result<_> {
        let mut proxy = KernelEbpf::open(&opts)?;
        proxy.apply_full(&snap, &Changes::default())?;
        Ok(proxy.programmed())
    })??;
    let tc_links = std::fs::read_dir(&pins)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("tc_"))
        })
        .count();
    assert_eq!(tc_links, 4, "ingress and egress on both veths");
    let read = sluice_proxy_ebpf::kernel::read_pinned(&pins)?;
    assert_eq!(
        read.maps, programmed,
        "the IPv6 ranges and entries read back"
    );
    assert!(read.service_cidrs.contains(&"fd00:96::/112".parse()?));

    // (The client has two addresses: the source-ranged connections pick theirs.)
    let out = client.exec(["python3", "-c", CLIENT])?;
    let lines: Vec<&str> = out.lines().collect();
    let want = [
        "peer fd00:c::250 via [fd00:c::1]:30080",
        "peer fd00:b::1 via [fd00:c::1]:30081",
        "peer fd00:b::1 via [fd00:96::10]:80",
        "ECONNREFUSED",
        "timeout",
        "timeout",
        "peer fd00:b::1 via [fd00:1b::1]:80",
        "timeout",
        "peer fd00:b::1 from [fd00:96::11]:53",
        "ECONNREFUSED",
    ];
    assert_eq!(
        lines, want,
        "node port eTP Local (client kept), eTP Cluster and a ClusterIP (SNATed), no \
         endpoints (reset), eTP Local without local endpoints, an unallocated service address, \
         the source-ranged LB IP from inside and outside the ranges, UDP, UDP without \
         endpoints (ICMPv6 port unreachable)"
    );
    Ok(())
}
