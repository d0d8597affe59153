//! The `kube-ipvs0` dummy link that holds every virtual address, so the node accepts packets
//! to them and IPVS (in the INPUT path) sees them. Behind [`Vips`]: the kernel through
//! rtnetlink by hand ([`KernelVips`]), or [`FakeVips`] in memory.
//!
//! As kube-proxy, the link stays down: its addresses are still local (the local routing
//! table has them), but the node never answers ARP for them through it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sluice_netlink::consts::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use sluice_netlink::socket::NETLINK_ROUTE;
use sluice_netlink::{Attrs, NetlinkError, Socket, decode_addr};

/// kube-proxy's dummy link.
pub const DUMMY: &str = "kube-ipvs0";

/// The dummy link and its addresses.
pub trait Vips: Send {
    /// Creates the link when missing.
    fn ensure_link(&mut self) -> Result<(), NetlinkError>;
    /// The addresses on the link (empty when it does not exist).
    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, NetlinkError>;
    /// Adds `ip` (host prefix); present already is fine.
    fn add(&mut self, ip: IpAddr) -> Result<(), NetlinkError>;
    /// Removes `ip`; absent is fine.
    fn del(&mut self, ip: IpAddr) -> Result<(), NetlinkError>;
    /// Deletes the link (and so its addresses); absent is fine.
    fn delete_link(&mut self) -> Result<(), NetlinkError>;
    /// Every address of this node not on the link: node ports are served on these when
    /// `--nodeport-addresses` selects all (loopback and IPv6 link-local left out).
    fn node_addresses(&mut self) -> Result<Vec<IpAddr>, NetlinkError>;
}

/// The addresses in memory (tests).
#[derive(Debug, Default)]
pub struct FakeVips {
    /// Whether the link exists.
    pub exists: bool,
    /// Its addresses.
    pub addrs: BTreeSet<IpAddr>,
    /// Adds and deletes done (for O(changes) checks).
    pub writes: usize,
    /// The node's other addresses.
    pub node: Vec<IpAddr>,
}

impl Vips for FakeVips {
    fn ensure_link(&mut self) -> Result<(), NetlinkError> {
        self.exists = true;
        Ok(())
    }
    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, NetlinkError> {
        Ok(self.addrs.clone())
    }
    fn add(&mut self, ip: IpAddr) -> Result<(), NetlinkError> {
        self.writes += 1;
        self.addrs.insert(ip);
        Ok(())
    }
    fn del(&mut self, ip: IpAddr) -> Result<(), NetlinkError> {
        self.writes += 1;
        self.addrs.remove(&ip);
        Ok(())
    }
    fn delete_link(&mut self) -> Result<(), NetlinkError> {
        self.exists = false;
        self.addrs.clear();
        Ok(())
    }
    fn node_addresses(&mut self) -> Result<Vec<IpAddr>, NetlinkError> {
        Ok(self.node.clone())
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

/// The link through rtnetlink, in the namespace it was opened in.
pub struct KernelVips {
    socket: Socket,
    index: Option<u32>,
}

impl std::fmt::Debug for KernelVips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelVips")
            .field("index", &self.index)
            .finish()
    }
}

fn ifaddrmsg(ip: &IpAddr, index: u32) -> [u8; IFADDRMSG_LEN] {
    let (family, prefix) = match ip {
        IpAddr::V4(_) => (2u8, 32u8),
        IpAddr::V6(_) => (10, 128),
    };
    let i = index.to_ne_bytes();
    [family, prefix, 0, 0, i[0], i[1], i[2], i[3]]
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl KernelVips {
    /// Opens rtnetlink in the calling thread's namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            socket: Socket::open(NETLINK_ROUTE)?,
            index: None,
        })
    }

    /// Whether `kube-ipvs0` exists (the IPVS mode ran in this namespace).
    pub fn exists(&mut self) -> Result<bool, NetlinkError> {
        self.index().map(|i| i.is_some())
    }

    /// The link's index, `None` when it does not exist.
    fn index(&mut self) -> Result<Option<u32>, NetlinkError> {
        if let Some(i) = self.index {
            return Ok(Some(i));
        }
        let mut index = None;
        let found = self.socket.exchange::<NetlinkError>(
            "look up kube-ipvs0",
            NLM_F_ACK,
            |w, seq, flags| w.begin_raw(RTM_GETLINK, flags, seq, &[0; IFINFOMSG_LEN]),
            |w| w.str(IFLA_IFNAME, DUMMY),
            |m| {
                if let Some(b) = m.payload.get(4..8) {
                    index = Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                }
                Ok(())
            },
        );
        match found {
            Ok(_) => {}
            Err(e) if e.errno() == Some(ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        }
        self.index = index;
        Ok(index)
    }

    /// Every address of the namespace with its link's index.
    fn dump_addrs(&mut self) -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
        let mut out = Vec::new();
        self.socket.exchange::<NetlinkError>(
            "list addresses",
            NLM_F_DUMP,
            |w, seq, flags| w.begin_raw(RTM_GETADDR, flags, seq, &[0; IFADDRMSG_LEN]),
            |_| {},
            |m| {
                let p = m.payload;
                let index = p
                    .get(4..8)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if let (Some(index), Some(attrs)) = (index, p.get(IFADDRMSG_LEN..)) {
                    let attrs = Attrs::new(attrs);
                    let addr = attrs.get(IFA_LOCAL).or_else(|| attrs.get(IFA_ADDRESS));
                    out.extend(addr.and_then(decode_addr).map(|a| (index, a)));
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn addr_request(&mut self, ty: u16, flags: u16, ip: IpAddr) -> Result<(), NetlinkError> {
        let Some(index) = self.index()? else {
            return Ok(());
        };
        let what = format!(
            "{} {ip} on {DUMMY}",
            if ty == RTM_NEWADDR { "add" } else { "delete" }
        );
        let header = ifaddrmsg(&ip, index);
        let bytes = octets(&ip);
        self.socket
            .exchange::<NetlinkError>(
                &what,
                NLM_F_ACK | flags,
                |w, seq, flags| w.begin_raw(ty, flags, seq, &header),
                |w| {
                    w.bytes(IFA_LOCAL, &bytes);
                    w.bytes(IFA_ADDRESS, &bytes);
                },
                |_| Ok(()),
            )
            .map(drop)
    }
}

impl Vips for KernelVips {
    fn ensure_link(&mut self) -> Result<(), NetlinkError> {
        if self.index()?.is_some() {
            return Ok(());
        }
        let created = self.socket.exchange::<NetlinkError>(
            "create kube-ipvs0",
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            |w, seq, flags| w.begin_raw(RTM_NEWLINK, flags, seq, &[0; IFINFOMSG_LEN]),
            |w| {
                w.str(IFLA_IFNAME, DUMMY);
                w.nest(IFLA_LINKINFO, |w| w.str(IFLA_INFO_KIND, "dummy"));
            },
            |_| Ok(()),
        );
        match created {
            Err(e) if e.errno() != Some(EEXIST) => return Err(e),
            _ => {}
        }
        self.index()?;
        Ok(())
    }

    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, NetlinkError> {
        let Some(index) = self.index()? else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .dump_addrs()?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| a)
            .collect())
    }

    fn node_addresses(&mut self) -> Result<Vec<IpAddr>, NetlinkError> {
        let index = self.index()?;
        Ok((self.dump_addrs()?.into_iter())
            .filter(|(i, a)| Some(*i) != index && !a.is_loopback() && !is_link_local(a))
            .map(|(_, a)| a)
            .collect())
    }

    fn add(&mut self, ip: IpAddr) -> Result<(), NetlinkError> {
        match self.addr_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ip) {
            Err(e) if e.errno() == Some(EEXIST) => Ok(()),
            other => other,
        }
    }

    fn del(&mut self, ip: IpAddr) -> Result<(), NetlinkError> {
        match self.addr_request(RTM_DELADDR, 0, ip) {
            Err(e) if e.errno() == Some(EADDRNOTAVAIL) => Ok(()),
            other => other,
        }
    }

    fn delete_link(&mut self) -> Result<(), NetlinkError> {
        let Some(index) = self.index()? else {
            return Ok(());
        };
        let i = index.to_ne_bytes();
        let header = [0, 0, 0, 0, i[0], i[1], i[2], i[3], 0, 0, 0, 0, 0, 0, 0, 0];
        let deleted = self.socket.exchange::<NetlinkError>(
            "delete kube-ipvs0",
            NLM_F_ACK,
            |w, seq, flags| w.begin_raw(RTM_DELLINK, flags, seq, &header),
            |_| {},
            |_| Ok(()),
        );
        self.index = None;
        match deleted {
            Err(e) if e.errno() != Some(ENODEV) => Err(e),
            _ => Ok(()),
        }
    }
}
