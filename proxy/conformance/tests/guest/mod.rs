//! The plan's cluster ([`sluice_conformance::plan`]) as network namespaces of one User-Mode
//! Linux guest, for sending each scenario packet for real: both nodes (underlay address on
//! `eth0`, a `cni0` bridge holding the pod gateway, `flannel.1` holding 10.244.N.0), their pods
//! behind `cni0` (hairpin on, as a CNI sets it), an underlay bridge joining the nodes and the
//! external client, and a `flannel.1` link between the nodes carrying the pod subnets. Only the node a packet starts
//! at has a proxy (the IPVS backend programmed for that node's view); the other node is a
//! plain router to its pods, so its endpoints are "remote endpoints behind a route".
//!
//! Every pod answers TCP and UDP on 8080 and 8081 with its name, the port and the source it
//! saw; the underlay (which owns the service CIDR and the scenarios' external ranges through
//! `local` routes, as in the lab) and each node answer on every port the scenarios use, so a
//! packet no rule touched is answered by where it really went.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use sluice_conformance::judge::Seen;
use sluice_conformance::plan::{self, NodePlan};
use sluice_conformance::{Scenario, Source};
use sluice_model::service::Protocol;
use sluice_testbed::NetNs;
use sluice_testbed::traffic::{EchoServer, Proto};

/// How long a request may go unanswered before it counts as dropped (the lab's).
pub(crate) const TIMEOUT: Duration = Duration::from_millis(800);

/// The ranges the underlay owns (the lab's).
const UNDERLAY_OWNS: [&str; 3] = [plan::SERVICE_CIDR, "203.0.113.0/24", "198.51.100.0/24"];

/// The namespaces and the echo servers in them; everything goes when it drops.
pub(crate) struct Topology {
    pub(crate) nodes: Vec<(&'static str, NetNs)>,
    pub(crate) pods: Vec<(&'static str, NetNs)>,
    pub(crate) client: NetNs,
    _underlay: NetNs,
    _echo: Vec<EchoServer>,
}

/// Runs `ip -batch` of `lines` in `ns` (one process per namespace: processes are what costs
/// in UML).
fn batch(ns: &NetNs, lines: &[String]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines.join("\n") + "\n").unwrap();
    ns.ip(["-batch", file.path().to_str().unwrap()])
        .unwrap_or_else(|e| panic!("ip -batch in {}: {e}\n{}", ns.name(), lines.join("\n")));
}

fn sysctl(ns: &NetNs, path: &str, value: &str) {
    let path = format!("/proc/sys/{path}");
    ns.run(|| std::fs::write(&path, value)).unwrap().unwrap();
}

impl Topology {
    /// Builds the plan's cluster with sinks on every port `scenarios` send to.
    pub(crate) fn build(scenarios: &[Scenario]) -> Self {
        let underlay = NetNs::new("ul").unwrap();
        let client = NetNs::new("client").unwrap();
        let mut u = vec![
            "link add br0 type bridge".to_owned(),
            "link set br0 up".into(),
        ];
        u.push("addr add 192.168.0.1/24 dev br0".into());
        for net in UNDERLAY_OWNS {
            u.push(format!("route add local {net} dev lo"));
        }
        for n in plan::NODES {
            u.push(format!("route add {} via {}", n.pod_cidr(), n.ip));
        }
        let attach = |u: &mut Vec<String>, port: &str, peer: &NetNs| {
            u.push(format!(
                "link add {port} type veth peer name eth0 netns {}",
                peer.name()
            ));
            u.push(format!("link set {port} master br0 up"));
        };
        attach(&mut u, "u-client", &client);
        let mut nodes = Vec::new();
        for n in plan::NODES {
            let ns = NetNs::new(n.name).unwrap();
            attach(&mut u, &format!("u-{}", n.name), &ns);
            nodes.push((n.name, ns));
        }
        batch(&underlay, &u);
        // The overlay: one link between the nodes named as flannel's, holding 10.244.N.0, so a
        // node masquerades towards the other node's pods to that address, as in the lab.
        let (n1, n2) = (&nodes[0].1, &nodes[1].1);
        batch(
            n1,
            &[format!(
                "link add flannel.1 type veth peer name flannel.1 netns {}",
                n2.name()
            )],
        );
        batch(
            &client,
            &[
                "link set eth0 up".into(),
                format!("addr add {}/24 dev eth0", plan::CLIENT),
                "addr add 192.168.0.251/24 dev eth0".into(),
            ],
        );
        let mut pods = Vec::new();
        for (n, (_, ns)) in plan::NODES.iter().zip(&nodes) {
            pods.extend(build_node(n, ns));
        }
        let ports: BTreeSet<u16> = (scenarios.iter())
            .flat_map(|s| s.packets.iter().map(|p| p.to.0.port()))
            .collect();
        let mut echo = Vec::new();
        for (name, ns) in &pods {
            for port in plan::POD_PORTS {
                echo.extend(serve(ns, name, port));
            }
        }
        for port in ports {
            echo.extend(serve(&underlay, "underlay", port));
            for (name, ns) in &nodes {
                echo.extend(serve(ns, name, port));
            }
        }
        Self {
            nodes,
            pods,
            client,
            _underlay: underlay,
            _echo: echo,
        }
    }

    /// The namespace of node `name`.
    pub(crate) fn node(&self, name: &str) -> &NetNs {
        &self.nodes.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// The namespace a packet is sent from and the address it is bound to (the kernel picks
    /// for pods and nodes); the client gets a route to the destination through the packet's
    /// node (the lab's `sender`).
    pub(crate) fn sender(&self, from: &Source, dst: SocketAddr) -> (&NetNs, Option<IpAddr>) {
        match from {
            Source::Pod(p) => (
                &self.pods.iter().find(|(n, _)| *n == p.name).unwrap().1,
                None,
            ),
            Source::Node(n) => (self.node(n.name), None),
            Source::Outside { ip, at } => {
                let via = at.ip.to_string();
                let dst = format!("{}/32", dst.ip());
                self.client
                    .ip(["route", "replace", dst.as_str(), "via", via.as_str()])
                    .unwrap();
                (&self.client, Some(*ip))
            }
        }
    }
}

/// One node: its addresses (the IPv6 twins too, for programming the dual-stack scenario),
/// `cni0` with its pods, routes to the other node's pods and to the underlay.
fn build_node(n: &NodePlan, ns: &NetNs) -> Vec<(&'static str, NetNs)> {
    let gw = IpAddr::from([10, 244, n.subnet, 1]);
    let mut lines = vec![
        "link set eth0 up".to_owned(),
        format!("addr add {}/24 dev eth0", n.ip),
        format!("addr add {}/64 dev eth0 nodad", n.ip6()),
        "link add cni0 type bridge".into(),
        "link set cni0 up".into(),
        format!("addr add {gw}/24 dev cni0"),
        format!("addr add fd10:244:{}::1/64 dev cni0 nodad", n.subnet),
        "link set flannel.1 up".into(),
        format!("addr add 10.244.{}.0/32 dev flannel.1", n.subnet),
        "route add default via 192.168.0.1".into(),
    ];
    for other in plan::NODES.iter().filter(|o| o.name != n.name) {
        lines.push(format!(
            "route add {} via 10.244.{}.0 dev flannel.1 onlink",
            other.pod_cidr(),
            other.subnet
        ));
    }
    let mut pods = Vec::new();
    for p in plan::PODS.iter().filter(|p| p.node == n.name) {
        let pod = NetNs::new(p.name).unwrap();
        let port = format!("v-{}", p.name);
        lines.push(format!(
            "link add {port} type veth peer name eth0 netns {}",
            pod.name()
        ));
        lines.push(format!("link set {port} master cni0 up"));
        lines.push(format!("link set {port} type bridge_slave hairpin on"));
        pods.push((p.name, pod, p.ip));
    }
    batch(ns, &lines);
    sysctl(ns, "net/ipv4/ip_forward", "1");
    (pods.into_iter())
        .map(|(name, pod, ip)| {
            batch(
                &pod,
                &[
                    "link set eth0 up".into(),
                    format!("addr add {ip}/24 dev eth0"),
                    format!("route add default via {gw}"),
                ],
            );
            (name, pod)
        })
        .collect()
}

/// TCP and UDP echo servers named `NAME@PORT` on `0.0.0.0:PORT`.
fn serve(ns: &NetNs, name: &str, port: u16) -> Vec<EchoServer> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let label = format!("{name}@{port}");
    [Proto::Tcp, Proto::Udp]
        .into_iter()
        .map(|p| EchoServer::start(ns, p, &label, addr).unwrap())
        .collect()
}

/// The source address the kernel of the calling thread's namespace gives a packet to `dst`
/// (a node's connection to an address it holds on `kube-ipvs0` leaves from that address, not
/// from its underlay one).
pub(crate) fn source_for(dst: SocketAddr) -> IpAddr {
    let socket = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    socket.connect(dst).unwrap();
    socket.local_addr().unwrap().ip()
}

/// One request to `dst`, from `src` when given, in the calling thread's namespace (the lab's
/// probe, over the test bed's echo servers).
pub(crate) fn send(proto: Protocol, src: Option<IpAddr>, dst: SocketAddr) -> Seen {
    let text = match proto {
        Protocol::Tcp => tcp(src, dst),
        Protocol::Udp => udp(src, dst),
        Protocol::Sctp => return Seen::Error("SCTP is not sent".into()),
    };
    match text {
        Ok(text) => parse(&text).unwrap_or_else(|| Seen::Error(format!("answer {text:?}"))),
        Err(e) => Seen::of_error(&e),
    }
}

/// `sluice-echo NAME@PORT PEER`.
fn parse(text: &str) -> Option<Seen> {
    let mut w = text.split_whitespace();
    let (Some("sluice-echo"), Some(label), Some(peer)) = (w.next(), w.next(), w.next()) else {
        return None;
    };
    let (by, port) = label.split_once('@')?;
    Some(Seen::Answer {
        by: by.to_owned(),
        seen: peer.parse().ok()?,
        local: Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?))),
    })
}

fn tcp(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<String> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    if let Some(ip) = src {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&dst.into(), TIMEOUT)?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

fn udp(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<String> {
    let socket = UdpSocket::bind(SocketAddr::new(src.unwrap_or([0, 0, 0, 0].into()), 0))?;
    socket.connect(dst)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.send(b"ping")?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
