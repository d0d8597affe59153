//! The chokepoint: every IPVS change Sluice makes goes through [`Ipvs`]. The kernel client
//! ([`KernelIpvs`]) speaks generic netlink directly (no `ipvsadm`); [`FakeIpvs`](crate::FakeIpvs)
//! keeps the same tables in memory for the pure tests.

use sluice_netlink::socket::NETLINK_GENERIC;
use sluice_netlink::{Msg, NetlinkError, Socket};

use crate::genl::{self, cmd};
use crate::types::{RealServer, VirtualServer, VsKey};

/// Why an IPVS request failed.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS (module not loaded, not built).
    #[error("IPVS is not available in this kernel (generic netlink family {0:?} not found)")]
    Unavailable(&'static str),
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl IpvsError {
    /// Whether the kernel said the object does not exist (ENOENT / ESRCH).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Netlink(e) if matches!(e.errno(), Some(2) | Some(3)))
    }
}

/// IPVS's virtual and real servers, in the network namespace the implementation was opened in.
pub trait Ipvs: Send {
    /// Every virtual server (firewall-mark services, never Sluice's, are left out).
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError>;
    /// Adds a virtual server.
    fn add_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError>;
    /// Changes a virtual server's scheduler, flags or timeout.
    fn edit_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError>;
    /// Deletes a virtual server and its real servers.
    fn del_service(&mut self, key: &VsKey) -> Result<(), IpvsError>;
    /// The real servers of a virtual server, with their connection counts.
    fn destinations(&mut self, key: &VsKey) -> Result<Vec<RealServer>, IpvsError>;
    /// Adds a real server.
    fn add_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError>;
    /// Changes a real server's weight.
    fn edit_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError>;
    /// Deletes a real server.
    fn del_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError>;
    /// Sets the connection timeouts in seconds (TCP, TCP FIN, UDP; zero: unchanged).
    fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<(), IpvsError>;
}

/// IPVS over generic netlink.
pub struct KernelIpvs {
    socket: Socket,
    family: u16,
}

impl std::fmt::Debug for KernelIpvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelIpvs")
            .field("family", &self.family)
            .finish()
    }
}

/// nlctrl: `GENL_ID_CTRL`, `CTRL_CMD_GETFAMILY`, `CTRL_ATTR_FAMILY_ID` / `_NAME`.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

impl KernelIpvs {
    /// Opens generic netlink in the calling thread's namespace and resolves the IPVS family.
    pub fn open() -> Result<Self, IpvsError> {
        let mut socket = Socket::open(NETLINK_GENERIC)?;
        let mut family = None;
        let found = socket.exchange::<NetlinkError>(
            "resolve generic netlink family IPVS",
            sluice_netlink::consts::NLM_F_ACK,
            |w, seq, flags| w.begin_genl(GENL_ID_CTRL, flags, seq, CTRL_CMD_GETFAMILY, 1),
            |w| w.str(CTRL_ATTR_FAMILY_NAME, genl::FAMILY),
            |m: Msg<'_>| {
                if let Some(b) = m.attrs().get(CTRL_ATTR_FAMILY_ID)
                    && b.len() >= 2
                {
                    family = Some(u16::from_ne_bytes([b[0], b[1]]));
                }
                Ok(())
            },
        );
        match found {
            Ok(_) => {}
            Err(e) if e.errno() == Some(2) => return Err(IpvsError::Unavailable(genl::FAMILY)),
            Err(e) => return Err(e.into()),
        }
        let family = family.ok_or(IpvsError::Unavailable(genl::FAMILY))?;
        Ok(Self { socket, family })
    }

    fn request(
        &mut self,
        what: &str,
        command: u8,
        body: impl FnOnce(&mut sluice_netlink::Writer),
    ) -> Result<(), IpvsError> {
        let family = self.family;
        self.socket
            .exchange::<NetlinkError>(
                what,
                sluice_netlink::consts::NLM_F_ACK,
                |w, seq, flags| w.begin_genl(family, flags, seq, command, genl::VERSION),
                body,
                |_| Ok(()),
            )
            .map(drop)
            .map_err(Into::into)
    }

    fn dump<T>(
        &mut self,
        what: &str,
        command: u8,
        body: impl FnOnce(&mut sluice_netlink::Writer),
        mut parse: impl FnMut(Msg<'_>) -> Option<T>,
    ) -> Result<Vec<T>, IpvsError> {
        let family = self.family;
        let mut out = Vec::new();
        self.socket.exchange::<NetlinkError>(
            what,
            sluice_netlink::consts::NLM_F_DUMP,
            |w, seq, flags| w.begin_genl(family, flags, seq, command, genl::VERSION),
            body,
            |m| {
                out.extend(parse(m));
                Ok(())
            },
        )?;
        Ok(out)
    }
}

impl Ipvs for KernelIpvs {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        self.dump(
            "list IPVS services",
            cmd::GET_SERVICE,
            |_| {},
            |m| genl::parse_service(m.attrs()),
        )
    }

    fn add_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let what = format!("add IPVS service {}", vs.key);
        self.request(&what, cmd::NEW_SERVICE, |w| genl::service(w, vs))
    }

    fn edit_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let what = format!("edit IPVS service {}", vs.key);
        self.request(&what, cmd::SET_SERVICE, |w| genl::service(w, vs))
    }

    fn del_service(&mut self, key: &VsKey) -> Result<(), IpvsError> {
        let what = format!("delete IPVS service {key}");
        self.request(&what, cmd::DEL_SERVICE, |w| genl::service_id(w, key))
    }

    fn destinations(&mut self, key: &VsKey) -> Result<Vec<RealServer>, IpvsError> {
        let what = format!("list real servers of {key}");
        let addr = key.addr;
        self.dump(
            &what,
            cmd::GET_DEST,
            |w| genl::service_id(w, key),
            |m| genl::parse_destination(m.attrs(), &addr),
        )
    }

    fn add_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError> {
        let what = format!("add real server {} to {key}", rs.key);
        self.request(&what, cmd::NEW_DEST, |w| {
            genl::service_id(w, key);
            genl::destination(w, rs);
        })
    }

    fn edit_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError> {
        let what = format!(
            "set weight {} of real server {} of {key}",
            rs.weight, rs.key
        );
        self.request(&what, cmd::SET_DEST, |w| {
            genl::service_id(w, key);
            genl::destination(w, rs);
        })
    }

    fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<(), IpvsError> {
        let what = format!("set IPVS timeouts tcp {tcp}s tcpfin {tcp_fin}s udp {udp}s");
        self.request(&what, cmd::SET_CONFIG, |w| {
            genl::timeouts(w, tcp, tcp_fin, udp)
        })
    }

    fn del_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError> {
        let what = format!("delete real server {} of {key}", rs.key);
        self.request(&what, cmd::DEL_DEST, |w| {
            genl::service_id(w, key);
            genl::destination(w, rs);
        })
    }
}
