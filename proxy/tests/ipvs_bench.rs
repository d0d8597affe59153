//! IPVS mode against iptables mode in the same User-Mode Linux guest, through the real backends
//! (IPVS netlink + ipset + iptables-legacy; iptables-legacy-restore), at 1,000 and 10,000
//! Services (one endpoint each): a full sync and a one-Service change, and the connection
//! set-up rate from a pod through a ClusterIP against straight to the pod's IP (sequential TCP
//! connections to a test-bed echo server, each pod on its own routed link so both paths cross
//! the node alike). Absolute times inside UML are not comparable with the host's; the ratios
//! are what the README reports.
//! Ignored in the suite (minutes of guest time); run with
//! `cargo test -p sluice-proxy --test ipvs_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use sluice_proxy::dataplane::Any;
use sluice_proxy_core::backend::{Backend, BackendOptions, LocalDetect, ProxyMode};
use sluice_proxy_core::fixture::{self, ep, svc};
use sluice_testbed::uml::{self, Uml};
use sluice_testbed::{NetNs, require_root};

fn options() -> BackendOptions {
    BackendOptions {
        local: LocalDetect::Cidrs(vec!["10.244.0.0/16".parse().unwrap()]),
        node_ips: vec!["192.168.0.11".parse().unwrap()],
        nodeport_addresses: Some(vec!["192.168.0.11".parse().unwrap()]),
        iptables_variant: Some("legacy".into()),
        ..BackendOptions::default()
    }
}

fn ip(i: usize, base: u8) -> String {
    format!("10.{base}.{}.{}", i / 250, i % 250 + 1)
}

/// (full sync, one-Service change) for `mode` at `n` Services, in a fresh namespace.
fn measure(mode: ProxyMode, n: usize) -> (Duration, Duration) {
    let ns = NetNs::new("bench").unwrap();
    ns.run(|| {
        let mut state = fixture::state("node-1", None);
        let services = (0..n)
            .map(|i| {
                (
                    svc(&format!("s{i}"), &ip(i, 96)),
                    vec![ep(&ip(i, 244), "node-2")],
                )
            })
            .collect();
        fixture::apply(&mut state, services);
        let mut backend = Any::build(mode, &options()).unwrap();
        backend.init().unwrap();
        let (snap, mut changes) = state.sync();
        changes.full = true;
        let start = Instant::now();
        backend.apply(&snap, &changes).unwrap();
        let full = start.elapsed();
        drop(snap);
        fixture::apply(
            &mut state,
            vec![(
                svc("s7", &ip(7, 96)),
                vec![ep(&ip(7, 244), "node-2"), ep("10.250.0.1", "node-2")],
            )],
        );
        let (snap, changes) = state.sync();
        let start = Instant::now();
        backend.apply(&snap, &changes).unwrap();
        (full, start.elapsed())
    })
    .unwrap()
}

#[test]
#[ignore = "minutes of guest time; run by hand for the README's figures"]
fn ipvs_and_iptables_sync_costs_in_one_guest() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .mem("1024M")
            .timeout(Duration::from_secs(900))
            .run_test("ipvs_and_iptables_sync_costs_in_one_guest")
            .unwrap();
        println!("{}", out.output);
        out.assert_success();
        return;
    }
    for n in [1_000, 10_000] {
        let ipvs = measure(ProxyMode::Ipvs, n);
        let ipt = measure(ProxyMode::Iptables, n);
        println!(
            "{n} Services: full sync ipvs {:?} iptables {:?} (ipvs/iptables {:.2}); \
             one-Service change ipvs {:?} iptables {:?} (ipvs/iptables {:.2})",
            ipvs.0,
            ipt.0,
            ipvs.0.as_secs_f64() / ipt.0.as_secs_f64(),
            ipvs.1,
            ipt.1,
            ipvs.1.as_secs_f64() / ipt.1.as_secs_f64(),
        );
    }
}

/// How long each connection-rate measurement runs.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Sequential TCP connections (connect, read the echo server's line, close) to `dst` for
/// [`RATE_WINDOW`], in the calling thread's namespace: connections per second.
fn connection_rate(dst: std::net::SocketAddr) -> f64 {
    use std::io::Read as _;
    let start = Instant::now();
    let mut done = 0u32;
    while start.elapsed() < RATE_WINDOW {
        let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("sluice-echo server "), "{text:?}");
        done += 1;
    }
    f64::from(done) / start.elapsed().as_secs_f64()
}

/// A node namespace with two pods, each on its own routed link: the client (10.244.1.2) and
/// the server (10.244.2.3, answering TCP on 80, the fixture's endpoint port, and on [`DIRECT_PORT`]); the namespaces go when the handles drop.
struct PodPair {
    node: NetNs,
    client: NetNs,
    _server: NetNs,
    _echo: [sluice_testbed::traffic::EchoServer; 2],
}

const SERVER: &str = "10.244.2.3";

/// The server's second port, for the straight-to-the-pod measurement: the server keeps the
/// closed connections of one measurement in TIME_WAIT, and a new connection with the same
/// addresses and ports but another timestamp offset (the client's offset depends on the
/// destination it dialled, the ClusterIP or the pod) is refused by PAWS; another port keeps
/// the two measurements' connections apart.
const DIRECT_PORT: u16 = 81;

fn pod_pair() -> PodPair {
    let node = NetNs::new("rate-node").unwrap();
    let client = NetNs::new("rate-client").unwrap();
    let server = NetNs::new("rate-server").unwrap();
    let ip = |ns: &NetNs, args: &[&str]| {
        ns.ip(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    };
    ip(&node, &["link", "add", "eth0", "type", "dummy"]);
    ip(&node, &["link", "set", "eth0", "up"]);
    ip(&node, &["addr", "add", "192.168.0.11/24", "dev", "eth0"]);
    // Each pod on its own routed link, so both paths — through the ClusterIP and straight
    // to the pod — cross the node's IP layer (and its conntrack and filter rules) alike.
    for (pod, port, gw, addr) in [
        (&client, "v-client", "10.244.1.1", "10.244.1.2/24"),
        (&server, "v-server", "10.244.2.1", "10.244.2.3/24"),
    ] {
        ip(
            &node,
            &[
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ],
        );
        ip(&node, &["link", "set", port, "up"]);
        ip(&node, &["addr", "add", &format!("{gw}/24"), "dev", port]);
        ip(pod, &["link", "set", "eth0", "up"]);
        ip(pod, &["addr", "add", addr, "dev", "eth0"]);
        ip(pod, &["route", "add", "default", "via", gw]);
    }
    node.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    let echo = [80, DIRECT_PORT].map(|port| {
        sluice_testbed::traffic::EchoServer::tcp(
            &server,
            "server",
            format!("{SERVER}:{port}").parse().unwrap(),
        )
        .unwrap()
    });
    PodPair {
        node,
        client,
        _server: server,
        _echo: echo,
    }
}

/// (through the ClusterIP, straight to the pod) connections per second from a pod, with `n`
/// Services programmed by `mode`, Service `s{served}` served by the server pod (`s0` is first
/// in iptables mode's `KUBE-SERVICES`, `s{n-1}` last: the chain is in name order).
fn rates(mode: ProxyMode, n: usize, served: usize) -> (f64, f64) {
    let pods = pod_pair();
    let mut backend = pods
        .node
        .run(|| {
            let mut state = fixture::state("node-1", None);
            let services = (0..n)
                .map(|i| {
                    let endpoint = match i == served {
                        true => ep(SERVER, "node-1"),
                        false => ep(&ip(i, 244), "node-2"),
                    };
                    (svc(&format!("s{i}"), &ip(i, 96)), vec![endpoint])
                })
                .collect();
            fixture::apply(&mut state, services);
            let mut backend = Any::build(mode, &options()).unwrap();
            backend.init().unwrap();
            let (snap, mut changes) = state.sync();
            changes.full = true;
            backend.apply(&snap, &changes).unwrap();
            backend
        })
        .unwrap();
    let vip: std::net::SocketAddr = format!("{}:80", ip(served, 96)).parse().unwrap();
    let direct: std::net::SocketAddr = format!("{SERVER}:{DIRECT_PORT}").parse().unwrap();
    let measured = pods
        .client
        .run(|| {
            // Warm up both paths (neighbours, first-packet work), then measure each.
            connection_rate_once(vip);
            connection_rate_once(direct);
            (connection_rate(vip), connection_rate(direct))
        })
        .unwrap();
    pods.node.run(|| backend.cleanup().unwrap()).unwrap();
    measured
}

fn connection_rate_once(dst: std::net::SocketAddr) {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
}

#[test]
#[ignore = "minutes of guest time; run by hand for the README's figures"]
fn ipvs_and_iptables_connection_rates_in_one_guest() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .mem("1024M")
            .timeout(Duration::from_secs(900))
            .run_test("ipvs_and_iptables_connection_rates_in_one_guest")
            .unwrap();
        println!("{}", out.output);
        out.assert_success();
        return;
    }
    // The guest kernel's conntrack table is sized from its memory (a few thousand entries);
    // a few seconds of sequential connections fill it with TIME_WAIT entries and new
    // connections are dropped. Raised here, in the guest's initial namespace only.
    std::fs::write("/proc/sys/net/netfilter/nf_conntrack_max", "1048576").unwrap();
    for n in [1_000, 10_000] {
        for (served, place) in [(0, "first"), (n - 1, "last")] {
            for mode in [ProxyMode::Ipvs, ProxyMode::Iptables] {
                let (vip, direct) = rates(mode, n, served);
                println!(
                    "{n} Services, served Service {place} by name, {mode}: through the ClusterIP \
                     {vip:.0} conn/s, straight to the pod {direct:.0} conn/s (ClusterIP/pod {:.2})",
                    vip / direct
                );
            }
        }
    }
}
