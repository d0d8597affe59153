//! IPv6 through the real backend: a dual-stack cluster (one snapshot per family, as the shared
//! core hands it over) synced by `EbpfBackend` into the kernel's maps, with the IPv4 and IPv6
//! socket-LB programs it attaches to a child cgroup the test creates; clients in that cgroup,
//! in a namespace the test creates, connect and send over both families. A partial sync of an
//! IPv6 endpoint change shows in traffic, a Service without endpoints refuses `connect()`,
//! ClientIP affinity holds, and `read_pinned` decodes the IPv6 maps as programmed.
//! Needs root; skipped (with a note) when the programs are not built in.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Bpffs, Cgroup, client, serve};
use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePort, ServicePortName, ServiceType,
    SessionAffinity,
};
use sluice_proxy_core::Changes;
use sluice_proxy_core::backend::{Backend, BackendOptions, EbpfOptions};
use sluice_proxy_core::fixture;
use sluice_proxy_ebpf::{KernelEbpf, KernelMaps};
use sluice_testbed::NetNs;

fn name(service: &str, proto: Protocol) -> ServicePortName {
    ServicePortName::new(&ServiceName::new("ns", service), "p", proto)
}

fn port(service: &str, proto: Protocol, cip: &str, port: u16) -> ServicePort {
    ServicePort::plain(name(service, proto), vec![cip.parse().unwrap()], port)
}

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        node_name: Some("node-a".into()),
        ..Endpoint::new(ip.parse::<IpAddr>().unwrap(), port)
    }
}

/// The IPv6 Services: `web` (NodePort 30080) over `web_ports` of `[::1]`, `dns` (UDP),
/// `none` (no endpoints) and `sticky` (ClientIP affinity).
fn services6(web_ports: &[u16]) -> Vec<(ServicePort, Vec<Endpoint>)> {
    let web = ServicePort {
        service_type: ServiceType::NodePort,
        node_port: Some(30080),
        ..port("web", Protocol::Tcp, "fd00:96::10", 80)
    };
    let sticky = ServicePort {
        session_affinity: Some(SessionAffinity {
            timeout_seconds: 600,
        }),
        ..port("sticky", Protocol::Tcp, "fd00:96::13", 80)
    };
    let both = || vec![ep("::1", 18080), ep("::1", 18081)];
    vec![
        (web, web_ports.iter().map(|p| ep("::1", *p)).collect()),
        (port("dns", Protocol::Udp, "fd00:96::11", 53), both()),
        (port("none", Protocol::Tcp, "fd00:96::12", 80), vec![]),
        (sticky, both()),
    ]
}

fn services4() -> Vec<(ServicePort, Vec<Endpoint>)> {
    vec![(
        port("web", Protocol::Tcp, "10.96.0.10", 80),
        vec![ep("127.0.0.1", 18080)],
    )]
}

const CLIENT6: &str = r#"
import socket, collections, errno
def tcp(addr, n):
    seen = collections.Counter()
    for i in range(n):
        s = socket.create_connection(addr, timeout=2)
        peer = s.getpeername()
        seen[s.recv(64).decode().strip() + ' peer [%s]:%d' % peer[:2]] += 1
        s.close()
    return sorted(seen)
print(tcp(('fd00:96::10', 80), 30))
print(tcp(('fd00::2', 30080), 30))
print(tcp(('fd00:96::13', 80), 20))
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(b'x', ('fd00:96::11', 53))
data, addr = u.recvfrom(64)
print(data.decode(), '[%s]:%d' % addr[:2])
for addr in (('fd00:96::12', 80), ('fd00:96::10', 81)):
    try:
        socket.create_connection(addr, timeout=2)
        print('connected')
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno))
"#;

const CLIENT4: &str = r#"
import socket
s = socket.create_connection(('10.96.0.10', 80), timeout=2)
print(s.recv(64).decode().strip(), '%s:%d' % s.getpeername())
"#;

const WEB6: &str = r#"
import socket, collections
seen = collections.Counter()
for i in range(30):
    s = socket.create_connection(('fd00:96::10', 80), timeout=2)
    seen[s.recv(64).decode().strip()] += 1
    s.close()
print(sorted(seen))
"#;

#[test]
fn a_dual_stack_cluster_is_load_balanced_in_both_families_by_the_backend() -> anyhow::Result<()> {
    if !KernelMaps::built_for_tests() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let cgroup = Cgroup::new("dual")?;
    let ns = NetNs::new("ebpf-dual")?;
    // The node's IPv6 address (node ports are served on it), in the test's namespace.
    ns.ip(["addr", "add", "fd00::2/128", "dev", "lo", "nodad"])?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 1], 18080)), "four")?;
    serve(&ns, "[::1]:18080".parse()?, "one")?;
    serve(&ns, "[::1]:18081".parse()?, "two")?;
    let pins = bpffs.path().join("sluice");
    let opts = BackendOptions {
        families: vec![IpFamily::V4, IpFamily::V6],
        node_ips: vec!["fd00::2".parse()?],
        ebpf: EbpfOptions {
            cgroup: Some(cgroup.path().to_owned()),
            pin_dir: Some(pins.clone()),
            ..EbpfOptions::default()
        },
        ..BackendOptions::default()
    };
    let mut backend = KernelEbpf::open(&opts)?;
    let v4 = fixture::snapshot("node-a", None, services4());
    let v6 = fixture::snapshot_in(IpFamily::V6, "node-a", None, services6(&[18080, 18081]));
    backend.apply_full(&v4, &Changes::default())?;
    backend.apply_full(&v6, &Changes::default())?;

    let out = client(&cgroup, &ns, CLIENT6)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(
        lines[0], "['one peer [fd00:96::10]:80', 'two peer [fd00:96::10]:80']",
        "ClusterIP over TCP: both backends, getpeername() gives the Service address"
    );
    assert_eq!(
        lines[1], "['one peer [fd00::2]:30080', 'two peer [fd00::2]:30080']",
        "the node port on the node's IPv6 address"
    );
    assert!(
        lines[2] == "['one peer [fd00:96::13]:80']" || lines[2] == "['two peer [fd00:96::13]:80']",
        "ClientIP affinity: one backend for every connection: {}",
        lines[2]
    );
    assert!(
        lines[3] == "one [fd00:96::11]:53" || lines[3] == "two [fd00:96::11]:53",
        "UDP: the reply comes from the Service address: {}",
        lines[3]
    );
    assert_eq!(
        lines[4..],
        ["ECONNREFUSED", "ECONNREFUSED"],
        "no endpoints, and a port the ClusterIP does not serve: refused at connect()"
    );
    assert_eq!(
        client(&cgroup, &ns, CLIENT4)?.trim(),
        "four 10.96.0.10:80",
        "IPv4 beside it"
    );

    // What explain reads back: the IPv6 maps as programmed.
    let read = sluice_proxy_ebpf::kernel::read_pinned(&pins)?;
    assert_eq!(read.maps, backend.programmed());
    assert!(!read.maps.services6.is_empty() && !read.maps.services.is_empty());
    let links = std::fs::read_dir(&pins)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("link_"))
        })
        .count();
    assert_eq!(links, 8, "four IPv4 and four IPv6 socket programs");

    // A partial IPv6 sync: web loses a backend; traffic sees it.
    let v6b = fixture::snapshot_in(IpFamily::V6, "node-a", None, services6(&[18081]));
    let changes = Changes {
        ports: [name("web", Protocol::Tcp)].into(),
        ..Changes::default()
    };
    backend.apply_partial(&v6b, &changes)?;
    assert_eq!(client(&cgroup, &ns, WEB6)?.trim(), "['two']");
    assert_eq!(
        sluice_proxy_ebpf::kernel::read_pinned(&pins)?.maps,
        backend.programmed()
    );

    // Drift: someone detaches the IPv6 connect program; the next tick re-attaches it.
    let link = pins.join("link_sluice_connect6");
    sluice_proxy_ebpf::pin::unpin_link(&link)?;
    assert!(
        client(&cgroup, &ns, WEB6).is_err(),
        "detached: the ClusterIP is not translated"
    );
    backend.tick()?;
    assert!(link.exists(), "re-attached and pinned again");
    assert_eq!(client(&cgroup, &ns, WEB6)?.trim(), "['two']");
    // Drift: someone deletes the ClusterIP's IPv6 entry (its wildcard refuses the port now);
    // the next full sync puts it back.
    remove_entry(&pins, "[fd00:96::10]:80")?;
    assert!(client(&cgroup, &ns, WEB6).is_err(), "the entry is gone");
    backend.apply_full(&v6b, &Changes::default())?;
    assert_eq!(client(&cgroup, &ns, WEB6)?.trim(), "['two']");

    // A restart adopts the pinned maps and links and converges by diff.
    drop(backend);
    assert_eq!(
        client(&cgroup, &ns, WEB6)?.trim(),
        "['two']",
        "the pins serve"
    );
    let mut backend = KernelEbpf::open(&opts)?;
    backend.apply_full(&v4, &Changes::default())?;
    backend.apply_full(&v6, &Changes::default())?;
    assert_eq!(
        sluice_proxy_ebpf::kernel::read_pinned(&pins)?.maps,
        backend.programmed()
    );
    assert_eq!(client(&cgroup, &ns, WEB6)?.trim(), "['one', 'two']");

    backend.cleanup()?;
    assert!(
        !pins.exists(),
        "cleanup removes every pin, the IPv6 links too"
    );
    let after = client(&cgroup, &ns, WEB6);
    assert!(
        after.is_err(),
        "nothing translates after cleanup (the ClusterIP is unreachable): {after:?}"
    );
    Ok(())
}

/// Deletes the IPv6 socket-layer TCP entry of `vip` from the pinned service map.
fn remove_entry(pins: &std::path::Path, vip: &str) -> anyhow::Result<()> {
    use sluice_ebpf_common::{ServiceKey6, ServiceValue, map_names};
    let key = ServiceKey6::new(vip.parse()?, 6, 0);
    let data = aya::maps::MapData::from_pin(pins.join(map_names::SERVICES6))?;
    let mut map: aya::maps::HashMap<_, ServiceKey6, ServiceValue> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    map.remove(&key)?;
    Ok(())
}
