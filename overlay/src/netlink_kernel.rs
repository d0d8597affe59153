//! The overlay's [`Kernel`] over rtnetlink: the only code in the daemon that changes the
//! kernel. Ownership is explicit so a reconcile can never touch what is not ours: neighbour
//! and FDB entries only on our VXLAN devices, routes only those tagged with Sluice's route
//! protocol number ([`ROUTE_PROTOCOL`]; a flannel-made route to the same destination is
//! replaced, and so adopted, by the first reconcile, while a connected, static or routing
//! daemon's route there is reported and left alone).

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::desired::{Desired, NextHop};
use crate::kernel::{Kernel, Observed, VxlanSpec};
use crate::mac::Mac;
use crate::plan::Plan;

/// The route protocol number Sluice tags its routes with (`ip route … proto 83`).
pub const ROUTE_PROTOCOL: u8 = 83;
const ENODEV: i32 = 19;
/// The main routing table.
const RT_TABLE_MAIN: u8 = 254;

/// A failed netlink operation, naming what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused or the conversation failed.
    #[error("netlink: {op}: {source}")]
    Op {
        /// What was attempted, in `ip` terms.
        op: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// An interface the operation needs does not exist.
    #[error("netlink: no interface {0}")]
    NoInterface(String),
    /// A route whose addresses do not fit together (e.g. IPv4 destination, IPv6 gateway).
    #[error("netlink: invalid route {0}")]
    InvalidRoute(String),
}

fn no_interface(name: &str) -> NetlinkError {
    NetlinkError::NoInterface(name.to_owned())
}

fn op(what: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Op { op: what(), source }
}

/// The kernel of the network namespace the connection was opened in.
#[derive(Clone)]
pub struct NetlinkKernel {
    handle: Handle,
}

impl NetlinkKernel {
    /// Opens a netlink connection in the calling thread's network namespace and drives it
    /// on the current tokio runtime.
    pub fn connect() -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(None),
            Err(e) => Err(op(|| format!("get link {name}"))(e)),
        }
    }

    async fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        let link = self.link(name).await?.ok_or_else(|| no_interface(name))?;
        Ok(link.header.index)
    }

    async fn name_of(&self, index: u32) -> Result<String, NetlinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(op(|| format!("get link #{index}")))?;
        Ok(link.and_then(|l| link_name(&l)).unwrap_or_default())
    }

    /// The first address that can carry the overlay (not an IPv6 link-local one, which the
    /// kernel adds to every device by itself).
    async fn first_address(&self, index: u32) -> Result<Option<IpNet>, NetlinkError> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .find(|n| !is_link_local(n)))
    }

    async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(op(|| format!("get addresses of #{index}")))?
        {
            let len = msg.header.prefix_len;
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && let Ok(net) = IpNet::new(*ip, len)
                {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    async fn neighbors(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, NetlinkError> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(op(|| format!("dump {family:?} neighbours")))
    }

    async fn routes(&self, v6: bool) -> Result<Vec<RouteMessage>, NetlinkError> {
        let query = if v6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        self.handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(op(|| "dump routes".to_owned()))
    }
}

fn is_link_local(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(n) if (n.addr().segments()[0] & 0xffc0) == 0xfe80)
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

/// What a VXLAN link message says about the device, without the underlay's name.
struct VxlanAttrs {
    vni: u32,
    local: Option<IpAddr>,
    underlay: u32,
    port: u16,
    mtu: u32,
    mac: Option<Mac>,
}

fn vxlan_attrs(link: &LinkMessage) -> Option<VxlanAttrs> {
    let mut out = VxlanAttrs {
        vni: 0,
        local: None,
        underlay: 0,
        port: 0,
        mtu: 0,
        mac: None,
    };
    let mut is_vxlan = false;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Mtu(m) => out.mtu = *m,
            LinkAttribute::Address(a) => out.mac = mac_of(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                        LinkInfo::Data(InfoData::Vxlan(data)) => read_vxlan_data(data, &mut out),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    is_vxlan.then_some(out)
}

fn read_vxlan_data(data: &[InfoVxlan], out: &mut VxlanAttrs) {
    for d in data {
        match d {
            InfoVxlan::Id(v) => out.vni = *v,
            InfoVxlan::Local(a) => out.local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) => out.local = Some(IpAddr::V6(*a)),
            InfoVxlan::Link(i) => out.underlay = *i,
            InfoVxlan::Port(p) => out.port = *p,
            _ => {}
        }
    }
}

impl Kernel for NetlinkKernel {
    type Error = NetlinkError;

    async fn device(&mut self, name: &str) -> Result<Option<VxlanSpec>, NetlinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(None);
        };
        // Not a VXLAN device (or one we cannot read): report something that never matches.
        let Some(a) = vxlan_attrs(&link) else {
            return Ok(Some(VxlanSpec {
                name: name.to_owned(),
                vni: 0,
                local: IpAddr::from([0, 0, 0, 0]),
                underlay: String::new(),
                port: 0,
                mtu: 0,
                mac: Mac([0; 6]),
                address: IpNet::default(),
            }));
        };
        let underlay = self.name_of(a.underlay).await?;
        let address = self
            .first_address(link.header.index)
            .await?
            .unwrap_or_default();
        Ok(Some(VxlanSpec {
            name: name.to_owned(),
            vni: a.vni,
            local: a.local.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            underlay,
            port: a.port,
            mtu: a.mtu,
            mac: a.mac.unwrap_or(Mac([0; 6])),
            address,
        }))
    }

    async fn create_device(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        let underlay = self.index(&spec.underlay).await?;
        let mut builder = LinkVxlan::new(&spec.name, spec.vni)
            .dev(underlay)
            .port(spec.port)
            .learning(false);
        builder = match spec.local {
            IpAddr::V4(a) => builder.local(a),
            IpAddr::V6(a) => builder.local6(a),
        };
        let msg = builder.mtu(spec.mtu).address(spec.mac.0.to_vec()).build();
        let name = spec.name.clone();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(op(|| format!("add vxlan {name}")))?;
        let index = self.index(&spec.name).await?;
        self.handle
            .address()
            .add(index, spec.address.addr(), spec.address.prefix_len())
            .execute()
            .await
            .map_err(op(|| {
                format!("add address {} to {}", spec.address, spec.name)
            }))?;
        let up = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(up)
            .execute()
            .await
            .map_err(op(|| format!("set {} up", spec.name)))
    }

    async fn delete_device(&mut self, name: &str) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(op(|| format!("delete {name}")))
    }

    async fn observe(
        &mut self,
        devices: &[String],
        networks: &[IpNet],
    ) -> Result<Observed, NetlinkError> {
        let mut by_index = std::collections::BTreeMap::new();
        for dev in devices {
            if let Some(link) = self.link(dev).await? {
                by_index.insert(link.header.index, dev.clone());
            }
        }
        let mut out = Desired::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for n in self.neighbors(family).await? {
                if let (Some(dev), Some((ip, mac))) =
                    (by_index.get(&n.header.ifindex), ip_neighbor(&n))
                {
                    out.neighbors.insert((dev.clone(), ip), mac);
                }
            }
        }
        for n in self.neighbors(AddressFamily::Bridge).await? {
            if let (Some(dev), Some((ip, mac))) = (by_index.get(&n.header.ifindex), fdb_entry(&n)) {
                out.fdb.insert((dev.clone(), mac), ip);
            }
        }
        let mut foreign = std::collections::BTreeMap::new();
        for v6 in [false, true] {
            for r in self.routes(v6).await? {
                if let Some((dst, hop)) = our_route(&r, &by_index, networks) {
                    out.routes.insert(dst, hop);
                } else if let Some(dst) = foreign_route(&r, networks) {
                    foreign.insert(dst, u8::from(r.header.protocol));
                }
            }
        }
        Ok(Observed {
            state: out,
            foreign,
        })
    }

    async fn apply(&mut self, plan: &Plan) -> Vec<NetlinkError> {
        let mut errors = Vec::new();
        for dst in &plan.del_routes {
            errors.extend(self.del_route(*dst).await.err());
        }
        for (dev, ip) in &plan.del_neighbors {
            errors.extend(self.del_neighbor(dev, *ip).await.err());
        }
        for (dev, mac) in &plan.del_fdb {
            errors.extend(self.del_fdb(dev, *mac).await.err());
        }
        for ((dev, ip), mac) in &plan.set_neighbors {
            errors.extend(self.set_neighbor(dev, *ip, *mac).await.err());
        }
        for ((dev, mac), ip) in &plan.set_fdb {
            errors.extend(self.set_fdb(dev, *mac, *ip).await.err());
        }
        for (dst, hop) in &plan.set_routes {
            errors.extend(self.set_route(*dst, hop).await.err());
        }
        errors
    }
}

fn ip_neighbor(n: &NeighbourMessage) -> Option<(IpAddr, Mac)> {
    if n.header.state != NeighbourState::Permanent {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            // Bridge-family (FDB) messages carry the remote as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => ip = raw_ip(bytes),
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            _ => {}
        }
    }
    Some((ip?, mac?))
}

fn raw_ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn fdb_entry(n: &NeighbourMessage) -> Option<(IpAddr, Mac)> {
    if !n.header.flags.contains(NeighbourFlags::Own) {
        return None;
    }
    ip_neighbor_any_state(n)
}

fn ip_neighbor_any_state(n: &NeighbourMessage) -> Option<(IpAddr, Mac)> {
    let mut copy = n.clone();
    copy.header.state = NeighbourState::Permanent;
    ip_neighbor(&copy)
}

fn our_route(
    r: &RouteMessage,
    devices: &std::collections::BTreeMap<u32, String>,
    networks: &[IpNet],
) -> Option<(IpNet, NextHop)> {
    if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
        return None;
    }
    let (mut dst, mut gw, mut oif) = (None, None, None);
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gw = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = IpNet::new(dst?, r.header.destination_prefix_length).ok()?;
    if !networks.iter().any(|n| n.contains(&dst)) {
        return None;
    }
    let via = gw?;
    let hop = match oif.and_then(|i| devices.get(&i)) {
        Some(dev) => NextHop::Overlay {
            dev: dev.clone(),
            via,
        },
        None => NextHop::Underlay { via },
    };
    Some((dst, hop))
}

/// A main-table unicast route inside `networks` that someone made on purpose: any protocol
/// but ours and the two a plain `ip route add` or flannel leaves (`boot`, unset), whose
/// routes Sluice adopts.
fn foreign_route(r: &RouteMessage, networks: &[IpNet]) -> Option<IpNet> {
    let adoptable = [RouteProtocol::Unspec, RouteProtocol::Boot];
    if r.header.table != RT_TABLE_MAIN
        || r.header.kind != RouteType::Unicast
        || adoptable.contains(&r.header.protocol)
    {
        return None;
    }
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(a) => route_ip(a),
        _ => None,
    });
    let dst = match dst {
        Some(ip) => IpNet::new(ip, r.header.destination_prefix_length).ok()?,
        None => return None,
    };
    networks.iter().any(|n| n.contains(&dst)).then_some(dst)
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

// === kernel writes ===

impl NetlinkKernel {
    async fn set_neighbor(&self, dev: &str, ip: IpAddr, mac: Mac) -> Result<(), NetlinkError> {
        let index = self.index(dev).await?;
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(op(|| format!("set neighbour {ip} lladdr {mac} dev {dev}")))
    }

    async fn set_fdb(&self, dev: &str, mac: Mac, ip: IpAddr) -> Result<(), NetlinkError> {
        let index = self.index(dev).await?;
        self.handle
            .neighbours()
            .add_bridge(index, &mac.0)
            .destination(ip)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(op(|| format!("set fdb {mac} dst {ip} dev {dev}")))
    }

    async fn del_neighbor(&self, dev: &str, ip: IpAddr) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = self.index(dev).await?;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(op(|| format!("delete neighbour {ip} dev {dev}")))
    }

    async fn del_fdb(&self, dev: &str, mac: Mac) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.ifindex = self.index(dev).await?;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(op(|| format!("delete fdb {mac} dev {dev}")))
    }

    fn route_base(dst: IpNet) -> RouteMessageBuilder<IpAddr> {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .unwrap_or_else(|_| RouteMessageBuilder::<IpAddr>::new());
        builder.protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
    }

    async fn set_route(&self, dst: IpNet, hop: &NextHop) -> Result<(), NetlinkError> {
        let msg = match hop {
            NextHop::Overlay { dev, via } => {
                let index = self.index(dev).await?;
                Self::route_base(dst)
                    .gateway(*via)
                    .map_err(|_| NetlinkError::InvalidRoute(format!("{dst} via {via}")))?
                    .output_interface(index)
                    .onlink()
                    .scope(RouteScope::Universe)
                    .build()
            }
            NextHop::Underlay { via } => Self::route_base(dst)
                .gateway(*via)
                .map_err(|_| NetlinkError::InvalidRoute(format!("{dst} via {via}")))?
                .build(),
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(op(|| format!("set route {dst} {hop:?}")))
    }

    async fn del_route(&self, dst: IpNet) -> Result<(), NetlinkError> {
        let msg = Self::route_base(dst).build();
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(op(|| format!("delete route {dst}")))
    }
}

// === underlay discovery ===

/// The interface the overlay runs over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    /// Interface name.
    pub name: String,
    /// Its first IPv4 address with prefix (the VTEP address unless `--public-ip`).
    pub addr: Option<ipnet::Ipv4Net>,
    /// Its first global IPv6 address with prefix (the v6 VTEP unless `--public-ipv6`).
    pub addr6: Option<ipnet::Ipv6Net>,
    /// Its MTU.
    pub mtu: u32,
}

impl NetlinkKernel {
    /// The underlay: `iface` by name or address, else the default route's interface
    /// (flannel's rule).
    pub async fn underlay(&self, iface: Option<&str>) -> Result<Underlay, NetlinkError> {
        let index = match iface {
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => self.index_with_address(ip).await?,
                Err(_) => self.index(text).await?,
            },
            None => self.default_route_index().await?,
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(op(|| format!("get link #{index}")))?
            .ok_or_else(|| no_interface(&format!("#{index}")))?;
        let mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500);
        let (mut addr, mut addr6) = (None, None);
        for net in self.addresses(index).await? {
            match net {
                IpNet::V4(n) if addr.is_none() => addr = Some(n),
                IpNet::V6(n) if addr6.is_none() && !is_link_local(&net) => addr6 = Some(n),
                _ => {}
            }
        }
        Ok(Underlay {
            name: link_name(&link).unwrap_or_default(),
            addr,
            addr6,
            mtu,
        })
    }

    async fn default_route_index(&self) -> Result<u32, NetlinkError> {
        for r in self.routes(false).await? {
            if r.header.destination_prefix_length != 0 {
                continue;
            }
            if let Some(i) = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }) {
                return Ok(i);
            }
        }
        Err(no_interface("of the default route (use --iface)"))
    }

    async fn index_with_address(&self, ip: IpAddr) -> Result<u32, NetlinkError> {
        let mut addrs = self.handle.address().get().set_address_filter(ip).execute();
        let msg = addrs
            .try_next()
            .await
            .map_err(op(|| format!("find address {ip}")))?;
        msg.map(|m| m.header.index)
            .ok_or_else(|| no_interface(&format!("with address {ip}")))
    }
}

// === deletion events ===

/// A stream that yields whenever the kernel reports the deletion of something the overlay
/// may own (a link, one of our routes, a permanent neighbour or FDB entry), so the loop can
/// repair it at once instead of at the next period. Opened in the calling thread's network
/// namespace; must be called inside the tokio runtime.
pub fn deletions() -> std::io::Result<impl futures::Stream<Item = ()> + Send + 'static> {
    use futures::StreamExt;
    use rtnetlink::MulticastGroup;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage as M;
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&groups)?;
    tokio::spawn(connection);
    Ok(messages.filter_map(|(msg, _)| {
        let ours = match msg.payload {
            NetlinkPayload::InnerMessage(M::DelLink(_)) => true,
            NetlinkPayload::InnerMessage(M::DelRoute(r)) => {
                r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)
            }
            NetlinkPayload::InnerMessage(M::DelNeighbour(n)) => {
                n.header.state == NeighbourState::Permanent
                    || n.header.family == AddressFamily::Bridge
            }
            _ => false,
        };
        futures::future::ready(ours.then_some(()))
    }))
}
