//! Clusters made of namespaces: an underlay (a bridge every node attaches to), nodes with their
//! own underlay address, forwarding and pod CIDR, and pods wired into a node.
//!
//! Pods attach to a test-bed bridge named [`POD_BRIDGE`] (`tb0`), never `cni0`, which belongs to
//! the CNI plugin under test; a [`BarePod`] is just a namespace for tests where the plugin wires
//! the pod itself. All addresses and routes live inside our own namespaces. Dropping a
//! [`Cluster`] (or any part) removes everything.
//!
//! Addressing: node `i` (1-based) has `192.168.0.(10+i)/24` on `eth0` and pod CIDR
//! `10.244.i.0/24` with gateway `10.244.i.1` on `tb0`; pods get `.2`, `.3`, … in order.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::link::{Address, Bridge, Route, Veth};
use crate::names;
use crate::netns::NetNs;

/// The underlay bridge, inside the underlay namespace.
pub const UNDERLAY_BRIDGE: &str = "ul0";
/// A node's link to the underlay.
pub const NODE_UPLINK: &str = "eth0";
/// The test bed's pod bridge inside a node (the CNI plugin owns `cni0`).
pub const POD_BRIDGE: &str = "tb0";
/// A pod's interface.
pub const POD_IF: &str = "eth0";
/// Highest node index: keeps node addresses inside the /24.
pub const MAX_NODES: u8 = 240;

/// The network every node attaches to: a namespace holding bridge [`UNDERLAY_BRIDGE`].
#[derive(Debug)]
pub struct Underlay {
    bridge: Bridge,
    ns: NetNs,
}

impl Underlay {
    /// Underlay subnet; node `i` is `192.168.0.(10+i)`.
    pub const SUBNET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 24);

    /// Creates the underlay namespace and bridge.
    pub fn new() -> Result<Self> {
        let ns = NetNs::new("underlay")?;
        let bridge = Bridge::new(&ns, UNDERLAY_BRIDGE)?;
        Ok(Self { bridge, ns })
    }

    /// The underlay namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The underlay bridge.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// A test API server on the underlay at `ip` (given the underlay's /24 on its bridge), as
    /// the nodes' daemons reach a real one, with a kubeconfig for it in a temp dir.
    pub fn api_server(&self, ip: Ipv4Addr) -> Result<UnderlayApi> {
        let addr = Address::new(&self.ns, self.bridge.name(), slash24(ip))?;
        let config = crate::apiserver::Config {
            bind: ip.into(),
            ..crate::apiserver::Config::default()
        };
        let op = format!("start the test API server on {ip}");
        let server = (self
            .ns
            .run(move || crate::apiserver::TestApiServer::start_with(config)))?
        .map_err(|e| Error::Io {
            op: op.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            op: op.clone(),
            source,
        })?;
        (server.write_kubeconfig(dir.path().join("kubeconfig"))).map_err(|source| Error::Io {
            op: format!("{op}: write its kubeconfig"),
            source,
        })?;
        Ok(UnderlayApi {
            server,
            dir,
            _addr: addr,
        })
    }
}

/// A test API server on the underlay ([`Underlay::api_server`]); dropping it stops the server
/// and removes its address and kubeconfig.
pub struct UnderlayApi {
    /// The server, for creating objects and injecting faults.
    pub server: crate::apiserver::TestApiServer,
    dir: tempfile::TempDir,
    _addr: Address,
}

impl UnderlayApi {
    /// The temp dir holding `kubeconfig` (a test may put more files there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The kubeconfig pointing at the server.
    pub fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }
}

/// `addr/24`.
fn slash24(addr: Ipv4Addr) -> Ipv4Net {
    // Invariant: 24 is a valid IPv4 prefix length, so this cannot panic.
    Ipv4Net::new_assert(addr, 24)
}

/// Underlay address of node `index`.
pub fn node_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 10u8.saturating_add(index))
}

/// Pod CIDR of node `index`.
pub fn node_pod_cidr(index: u8) -> Ipv4Net {
    slash24(Ipv4Addr::new(10, 244, index, 0))
}

/// A node: its own namespace on the underlay with forwarding on and a pod CIDR.
#[derive(Debug)]
pub struct Node {
    name: String,
    index: u8,
    pod_bridge: Mutex<Option<(Bridge, Address)>>,
    next_host: AtomicU8,
    _uplink_addr: Address,
    _uplink: Veth,
    ns: NetNs,
}

impl Node {
    /// Creates node `index` (1..=[`MAX_NODES`]) named `node<index>` on `underlay`.
    pub fn new(underlay: &Underlay, index: u8) -> Result<Self> {
        if index == 0 || index > MAX_NODES {
            return Err(Error::invalid(
                format!("create node {index}"),
                format!("index must be 1..={MAX_NODES}"),
            ));
        }
        let name = format!("node{index}");
        let ns = NetNs::new(&name)?;
        let port = format!("n{index}");
        let uplink = Veth::new(&ns, NODE_UPLINK, underlay.ns(), &port)?;
        underlay.bridge().attach(&port)?;
        let cidr = slash24(node_addr(index));
        let uplink_addr = Address::new(&ns, NODE_UPLINK, cidr)?;
        ns.set_ip_forward(true)?;
        Ok(Self {
            name,
            index,
            pod_bridge: Mutex::new(None),
            next_host: AtomicU8::new(2),
            _uplink_addr: uplink_addr,
            _uplink: uplink,
            ns,
        })
    }

    /// The node's name, `node<index>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's index (1-based).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The node's namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The node's underlay address (on [`NODE_UPLINK`]).
    pub fn addr(&self) -> Ipv4Addr {
        node_addr(self.index)
    }

    /// The node's pod CIDR.
    pub fn pod_cidr(&self) -> Ipv4Net {
        node_pod_cidr(self.index)
    }

    /// The pod gateway, the first address of the pod CIDR (on [`POD_BRIDGE`]).
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.pod_cidr().network().octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Creates [`POD_BRIDGE`] with the gateway address the first time a pod needs it.
    fn ensure_pod_bridge(&self) -> Result<()> {
        let mut slot = self.pod_bridge.lock().map_err(|_| {
            Error::protocol(format!("pod bridge of {}", self.name), "lock poisoned")
        })?;
        if slot.is_none() {
            let bridge = Bridge::new(&self.ns, POD_BRIDGE)?;
            let gw = slash24(self.gateway());
            let addr = Address::new(&self.ns, POD_BRIDGE, gw)?;
            *slot = Some((bridge, addr));
        }
        Ok(())
    }

    /// The next free pod address.
    fn allocate(&self) -> Result<Ipv4Addr> {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        if !(2..=254).contains(&host) {
            return Err(Error::invalid(
                format!("allocate a pod address on {}", self.name),
                "pod CIDR exhausted",
            ));
        }
        let [a, b, c, _] = self.pod_cidr().network().octets();
        Ok(Ipv4Addr::new(a, b, c, host))
    }

    /// Creates pod `name` on this node: a veth from [`POD_BRIDGE`] to the pod's [`POD_IF`],
    /// the next address of the pod CIDR and a default route via the gateway.
    pub fn add_pod(&self, name: &str) -> Result<Pod> {
        self.ensure_pod_bridge()?;
        let ip = self.allocate()?;
        let ns = NetNs::new(name)?;
        let host_if = names::ifname("vp");
        let veth = Veth::new(&self.ns, &host_if, &ns, POD_IF)?;
        crate::link::set_master(&self.ns, &host_if, POD_BRIDGE)?;
        let addr = Address::new(&ns, POD_IF, slash24(ip))?;
        let route = Route::via(&ns, "default", self.gateway(), Some(POD_IF))?;
        Ok(Pod {
            name: name.to_owned(),
            node: self.name.clone(),
            ip,
            host_if,
            _route: route,
            _addr: addr,
            _veth: veth,
            ns,
        })
    }

    /// Creates a bare pod: just a namespace, for a CNI plugin to wire.
    pub fn bare_pod(&self, name: &str) -> Result<BarePod> {
        Ok(BarePod {
            name: name.to_owned(),
            node: self.name.clone(),
            ns: NetNs::new(name)?,
        })
    }
}

/// A pod wired by the test bed.
#[derive(Debug)]
pub struct Pod {
    name: String,
    node: String,
    ip: Ipv4Addr,
    host_if: String,
    _route: Route,
    _addr: Address,
    _veth: Veth,
    ns: NetNs,
}

impl Pod {
    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the node it runs on.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The pod's namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The pod's IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The node-side end of the pod's veth.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }
}

/// A pod namespace that nobody has wired yet.
#[derive(Debug)]
pub struct BarePod {
    name: String,
    node: String,
    ns: NetNs,
}

impl BarePod {
    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the node it belongs to.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The pod's namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }
}

/// An underlay with `n` nodes (`node1`…); routes between pod CIDRs are opt-in.
#[derive(Debug)]
pub struct Cluster {
    routes: Vec<Route>,
    nodes: Vec<Node>,
    underlay: Underlay,
}

impl Cluster {
    /// Creates an underlay and nodes `1..=n`.
    pub fn new(n: u8) -> Result<Self> {
        let underlay = Underlay::new()?;
        let nodes = (1..=n)
            .map(|i| Node::new(&underlay, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            routes: Vec::new(),
            nodes,
            underlay,
        })
    }

    /// Like [`Cluster::new`], plus host-gw routes between all pod CIDRs.
    pub fn with_pod_routes(n: u8) -> Result<Self> {
        let mut cluster = Self::new(n)?;
        cluster.route_pod_cidrs()?;
        Ok(cluster)
    }

    /// The nodes, in index order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: u8) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .ok_or_else(|| Error::invalid(format!("node {index}"), "no such node"))
    }

    /// The underlay.
    pub fn underlay(&self) -> &Underlay {
        &self.underlay
    }

    /// Routes every node's pod CIDR via that node's underlay address on every other node
    /// (flannel's host-gw backend), so pods on different nodes reach each other.
    pub fn route_pod_cidrs(&mut self) -> Result<()> {
        for node in &self.nodes {
            for peer in self.nodes.iter().filter(|p| p.index != node.index) {
                let dst = peer.pod_cidr().to_string();
                let route = Route::via(&node.ns, &dst, peer.addr(), Some(NODE_UPLINK))?;
                self.routes.push(route);
            }
        }
        Ok(())
    }
}
