//! The socket load balancer for real: the programs loaded into this kernel, attached to a
//! child cgroup the test creates, and clients in that cgroup (and in a test namespace)
//! calling connect(), sendto(), recvfrom() and getpeername() on Service addresses. Also the
//! pins: a restarted backend adopts the maps and links, and cleanup removes them all; and a
//! restart under a running TCP and UDP load (proxy gone, then a new one converging) loses
//! no exchange.
//! Needs root; skipped (with a note) when the programs are not built in.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Bpffs, Cgroup, client, serve};
use sluice_model::service::{Endpoint, Protocol, ServiceName, ServicePort, ServicePortName};
use sluice_proxy_core::Changes;
use sluice_proxy_core::backend::{Backend, BackendOptions, EbpfOptions};
use sluice_proxy_core::explain::{Origin, Outcome, Packet, Tracer as _};
use sluice_proxy_core::fixture;
use sluice_proxy_ebpf::{KernelEbpf, KernelMaps};
use sluice_testbed::NetNs;

fn built() -> bool {
    KernelMaps::built_for_tests()
}

fn port(name: &str, proto: Protocol, cip: &str, port: u16) -> ServicePort {
    let pn = ServicePortName::new(&ServiceName::new("ns", name), "p", proto);
    ServicePort::plain(pn, vec![cip.parse().unwrap()], port)
}

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        node_name: Some("node-a".into()),
        ..Endpoint::new(ip.parse::<IpAddr>().unwrap(), port)
    }
}

fn services(web_backends: &[&str]) -> Vec<(ServicePort, Vec<Endpoint>)> {
    vec![
        (
            port("web", Protocol::Tcp, "10.96.0.10", 80),
            web_backends.iter().map(|ip| ep(ip, 18080)).collect(),
        ),
        (
            port("dns", Protocol::Udp, "10.96.0.11", 53),
            vec![ep("127.0.0.1", 18080), ep("127.0.0.2", 18080)],
        ),
        (port("none", Protocol::Tcp, "10.96.0.12", 80), vec![]),
    ]
}

fn options(cgroup: &Cgroup, pins: &std::path::Path) -> BackendOptions {
    BackendOptions {
        ebpf: EbpfOptions {
            cgroup: Some(cgroup.path().to_owned()),
            pin_dir: Some(pins.to_owned()),
            ..EbpfOptions::default()
        },
        ..BackendOptions::default()
    }
}

const TCP_CLIENT: &str = r#"
import socket, collections
seen = collections.Counter()
for i in range(30):
    s = socket.create_connection(('10.96.0.10', 80), timeout=2)
    seen[s.recv(64).decode().strip() + ' peer ' + '%s:%d' % s.getpeername()] += 1
    s.close()
print(sorted(seen))
"#;

const UDP_CLIENT: &str = r#"
import socket
for connect in (False, True):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    if connect:
        u.connect(('10.96.0.11', 53))
        u.send(b'x')
    else:
        u.sendto(b'x', ('10.96.0.11', 53))
    data, addr = u.recvfrom(64)
    print(data.decode(), '%s:%d' % addr)
"#;

const REFUSED_CLIENT: &str = r#"
import socket, errno
for addr in (('10.96.0.12', 80), ('10.96.0.10', 81)):
    try:
        socket.create_connection(addr, timeout=2)
        print('connected')
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno))
"#;

#[test]
fn connect_sendmsg_recvmsg_and_getpeername_see_services() -> anyhow::Result<()> {
    if !built() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let cgroup = Cgroup::new("socklb")?;
    let ns = NetNs::new("ebpf-socklb")?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 1], 18080)), "one")?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 2], 18080)), "two")?;

    let pins = bpffs.path().join("sluice");
    let mut backend = KernelEbpf::open(&options(&cgroup, &pins))?;
    let snap = fixture::snapshot("node-a", None, services(&["127.0.0.1", "127.0.0.2"]));
    backend.apply_full(&snap, &Changes::default())?;

    let tcp = client(&cgroup, &ns, TCP_CLIENT)?;
    assert_eq!(
        tcp.trim(),
        "['one peer 10.96.0.10:80', 'two peer 10.96.0.10:80']",
        "both backends answer, getpeername() says the ClusterIP"
    );
    let udp = client(&cgroup, &ns, UDP_CLIENT)?;
    for line in udp.lines() {
        assert!(
            line.ends_with(" 10.96.0.11:53"),
            "reply from the Service address: {udp}"
        );
    }
    assert_eq!(udp.lines().count(), 2, "{udp}");
    let refused = client(&cgroup, &ns, REFUSED_CLIENT)?;
    assert_eq!(
        refused.split_whitespace().collect::<Vec<_>>(),
        ["ECONNREFUSED", "ECONNREFUSED"],
        "no endpoints, and a port the ClusterIP does not serve: refused at connect()"
    );

    // A partial apply: web loses a backend, only its entries change.
    let snap2 = fixture::snapshot("node-a", None, services(&["127.0.0.2"]));
    let changes = Changes {
        ports: [ServicePortName::new(
            &ServiceName::new("ns", "web"),
            "p",
            Protocol::Tcp,
        )]
        .into(),
        ..Changes::default()
    };
    backend.apply_partial(&snap2, &changes)?;
    let tcp = client(&cgroup, &ns, TCP_CLIENT)?;
    assert_eq!(tcp.trim(), "['two peer 10.96.0.10:80']");

    backend.cleanup()?;
    assert!(!pins.exists(), "cleanup removes the pin directory");
    let after = client(&cgroup, &ns, REFUSED_CLIENT)?;
    assert!(
        !after.contains("ECONNREFUSED"),
        "nothing translates after cleanup: {after}"
    );
    Ok(())
}

/// A client holding one TCP connection and one connected UDP socket to Services, exchanging
/// a message on each every 20 ms and printing one line per round (`ok` or the error) until
/// the stop file (its path replaces `os.environ['STOP']`) exists.
const LOAD_CLIENT: &str = r#"
import socket, os, sys, time
stop = os.environ['STOP']
t = socket.create_connection(('10.96.0.10', 80), timeout=2)
t.recv(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.connect(('10.96.0.11', 53))
while not os.path.exists(stop):
    try:
        t.sendall(b'ping')
        assert t.recv(64) == b'ping'
        u.send(b'x')
        u.recv(64)
        print('ok', flush=True)
    except Exception as e:
        print('error', repr(e), flush=True)
    time.sleep(0.02)
"#;

/// Lines of `path` (a client's output so far).
fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) until `path` has more than `n` lines.
fn more_than(path: &std::path::Path, n: usize) -> anyhow::Result<()> {
    for _ in 0..500 {
        if lines(path).len() > n {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    anyhow::bail!(
        "the load client stopped making progress: {:?} {:?}",
        lines(path),
        std::fs::read_to_string(path.with_extension("err"))
    )
}

#[test]
fn a_restart_under_tcp_and_udp_load_loses_nothing() -> anyhow::Result<()> {
    if !built() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let cgroup = Cgroup::new("load")?;
    let ns = NetNs::new("ebpf-load")?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 1], 18080)), "one")?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 2], 18080)), "two")?;
    let pins = bpffs.path().join("sluice");
    let snap = fixture::snapshot("node-a", None, services(&["127.0.0.1", "127.0.0.2"]));
    let mut first = KernelEbpf::open(&options(&cgroup, &pins))?;
    first.apply_full(&snap, &Changes::default())?;
    let dir = tempfile::tempdir()?;
    let (out, stop) = (dir.path().join("out"), dir.path().join("stop"));
    let code = LOAD_CLIENT.replace(
        "os.environ['STOP']",
        &format!("{:?}", stop.display().to_string()),
    );
    let mut child = common::start_client(&cgroup, &ns, &code, &out)?;
    more_than(&out, 5)?;
    drop(first); // the proxy is gone; pins keep the dataplane
    let before = lines(&out).len();
    more_than(&out, before + 5)?;
    let mut second = KernelEbpf::open(&options(&cgroup, &pins))?;
    second.apply_full(&snap, &Changes::default())?;
    let after = lines(&out).len();
    more_than(&out, after + 5)?;
    std::fs::write(&stop, "")?;
    child.wait()?;
    let all = lines(&out);
    assert!(
        all.iter().all(|l| l == "ok"),
        "every exchange answered: {all:?}"
    );
    second.cleanup()?;
    Ok(())
}

#[test]
fn a_restarted_backend_adopts_pinned_maps_and_links() -> anyhow::Result<()> {
    if !built() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let cgroup = Cgroup::new("restart")?;
    let ns = NetNs::new("ebpf-restart")?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 1], 18080)), "one")?;
    serve(&ns, SocketAddr::from(([127, 0, 0, 2], 18080)), "two")?;
    let pins = bpffs.path().join("sluice");
    let snap = fixture::snapshot("node-a", None, services(&["127.0.0.1", "127.0.0.2"]));
    {
        let mut first = KernelEbpf::open(&options(&cgroup, &pins))?;
        first.apply_full(&snap, &Changes::default())?;
    }
    // The proxy is gone; the pinned links and maps keep serving.
    let tcp = client(&cgroup, &ns, TCP_CLIENT)?;
    assert_eq!(
        tcp.trim(),
        "['one peer 10.96.0.10:80', 'two peer 10.96.0.10:80']"
    );

    let mut second = KernelEbpf::open(&options(&cgroup, &pins))?;
    second.apply_full(&snap, &Changes::default())?;
    let programmed = sluice_proxy_ebpf::kernel::dump_maps(&mut KernelMaps::load_object(&pins)?)?;
    assert_eq!(
        programmed,
        second.programmed(),
        "the maps hold exactly the render"
    );
    // What explain reads: the pins opened by path (nothing loaded or attached), decoded,
    // equal to the render; the tracer over them gives the Service's backends, and an entry
    // deleted behind the proxy's back shows.
    let read = sluice_proxy_ebpf::kernel::read_pinned(&pins)?;
    assert_eq!(read.maps, second.programmed());
    let packet = Packet {
        src: "127.0.0.1".parse()?,
        dst: "10.96.0.10:80".parse()?,
        protocol: Protocol::Tcp,
    };
    let traced = |maps: &sluice_proxy_ebpf::MapSet| {
        sluice_proxy_ebpf::Tracer::new(maps, &read.service_cidrs, &[]).trace(&packet, Origin::Local)
    };
    let want: std::collections::BTreeMap<SocketAddr, bool> = [
        ("127.0.0.1:18080".parse()?, true),
        ("127.0.0.2:18080".parse()?, true),
    ]
    .into();
    assert_eq!(traced(&read.maps), Outcome::Dnat { endpoints: want });
    let key = sluice_ebpf_common::ServiceKey::new("10.96.0.10:80".parse()?, 6, 0);
    let svc_map = aya::maps::MapData::from_pin(pins.join(sluice_ebpf_common::map_names::SERVICES))?;
    let mut svc_map: aya::maps::HashMap<
        _,
        sluice_ebpf_common::ServiceKey,
        sluice_ebpf_common::ServiceValue,
    > = aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(svc_map)?)?;
    svc_map.remove(&key)?;
    let tampered = sluice_proxy_ebpf::kernel::read_pinned(&pins)?;
    assert_eq!(
        traced(&tampered.maps),
        Outcome::Reject,
        "only the wildcard entry is left"
    );
    second.apply_full(&snap, &Changes::default())?;

    let links = std::fs::read_dir(&pins)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("link_"))
        })
        .count();
    assert_eq!(
        links, 8,
        "one pinned link per program (IPv4 and IPv6), the old ones replaced"
    );
    let tcp = client(&cgroup, &ns, TCP_CLIENT)?;
    assert_eq!(
        tcp.trim(),
        "['one peer 10.96.0.10:80', 'two peer 10.96.0.10:80']"
    );
    second.cleanup()?;
    assert!(!pins.exists());
    Ok(())
}

const TCP6_CLIENT: &str = r#"
import socket, collections, errno
seen = collections.Counter()
for i in range(20):
    s = socket.create_connection(('fd00:96::10', 80), timeout=2)
    peer = s.getpeername()
    seen[s.recv(64).decode().strip() + ' peer [%s]:%d' % peer[:2]] += 1
    s.close()
print(sorted(seen))
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(b'x', ('fd00:96::10', 80))
data, addr = u.recvfrom(64)
print(data.decode(), '[%s]:%d' % addr[:2])
try:
    socket.create_connection(('fd00:96::12', 80), timeout=2)
    print('connected')
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"#;

/// The IPv6 programs on their own: loaded, attached to a child cgroup, their maps filled by
/// hand (`dual_stack.rs` goes through the backend) with two backends (`[::1]`, two ports) and a
/// Service with no endpoints; a client in the cgroup connects, sends and receives over IPv6.
#[test]
fn ipv6_connect_sendmsg_recvmsg_and_getpeername_see_services() -> anyhow::Result<()> {
    use aya::maps::HashMap;
    use aya::programs::{CgroupAttachMode, CgroupSockAddr};
    use sluice_ebpf_common::{
        Backend6, ServiceKey6, ServiceValue, SlotKey, map_names, service_flags,
    };
    if !built() {
        return Ok(());
    }
    let bpffs = Bpffs::new()?;
    let cgroup = Cgroup::new("socklb6")?;
    let ns = NetNs::new("ebpf-socklb6")?;
    serve(&ns, "[::1]:18080".parse()?, "one")?;
    serve(&ns, "[::1]:18081".parse()?, "two")?;
    let mut ebpf = KernelMaps::load_object(&bpffs.path().join("p"))?;
    {
        let mut svc: HashMap<_, ServiceKey6, ServiceValue> =
            HashMap::try_from(ebpf.map_mut(map_names::SERVICES6).unwrap())?;
        for proto in [6, 17] {
            let web = ServiceKey6::new("[fd00:96::10]:80".parse()?, proto, 0);
            let value = ServiceValue {
                service_id: u32::from(proto),
                backend_count: 2,
                flags: 0,
                affinity_timeout: 0,
            };
            svc.insert(web, value, 0)?;
        }
        let none = ServiceKey6::new("[fd00:96::12]:80".parse()?, 6, 0);
        let reject = ServiceValue {
            service_id: 0,
            backend_count: 0,
            flags: service_flags::REJECT,
            affinity_timeout: 0,
        };
        svc.insert(none, reject, 0)?;
    }
    {
        let mut slots: HashMap<_, SlotKey, Backend6> =
            HashMap::try_from(ebpf.map_mut(map_names::SLOTS6).unwrap())?;
        for proto in [6u8, 17] {
            for (slot, port) in [(1, 18080), (2, 18081)] {
                let key = SlotKey {
                    service_id: u32::from(proto),
                    slot,
                };
                let addr = std::net::SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, port, 0, 0);
                slots.insert(key, Backend6::new(addr, proto), 0)?;
            }
        }
    }
    let dir = std::fs::File::open(cgroup.path())?;
    for name in sluice_proxy_ebpf::kernel::SOCK_PROGRAMS6 {
        let prog: &mut CgroupSockAddr = ebpf.program_mut(name).unwrap().try_into()?;
        prog.load()?;
        prog.attach(&dir, CgroupAttachMode::Single)?;
    }
    let out = client(&cgroup, &ns, TCP6_CLIENT)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0], "['one peer [fd00:96::10]:80', 'two peer [fd00:96::10]:80']",
        "TCP: both backends, getpeername() gives the Service address"
    );
    assert_eq!(
        lines[2], "ECONNREFUSED",
        "no endpoints: refused at connect()"
    );
    assert!(
        lines[1] == "one [fd00:96::10]:80" || lines[1] == "two [fd00:96::10]:80",
        "UDP: the reply comes from the Service address: {out}"
    );
    Ok(())
}
