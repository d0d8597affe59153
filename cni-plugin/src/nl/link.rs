//! Links: the bridge, the veth pair and their settings, as netlink messages.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};

use super::{Netlink, NlError};

/// What the plugin needs to know of a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, `aa:bb:…`.
    pub mac: String,
    /// Administratively up.
    pub up: bool,
    /// The bridge (or other controller) it is enslaved to.
    pub master: Option<u32>,
    /// `bridge`, `veth`, … when the kernel reports a kind.
    pub kind: Option<String>,
    /// The interface alias (Sluice marks its host veths with it).
    pub alias: Option<String>,
    /// For a veth: its peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// Set when the peer lives in another namespace.
    pub peer_netns_id: Option<i32>,
}

/// A veth pair to create: the host end here, the peer directly in another namespace.
pub struct VethSpec<'a> {
    /// Host-side name.
    pub host: &'a str,
    /// Container-side name (`CNI_IFNAME`).
    pub peer: &'a str,
    /// The container's network namespace.
    pub peer_netns: BorrowedFd<'a>,
    /// MTU of both ends.
    pub mtu: u32,
    /// Bridge to enslave the host end to.
    pub master: u32,
    /// A fixed MAC for the container end (the `mac` capability).
    pub peer_mac: Option<[u8; 6]>,
}

impl Netlink {
    /// The link called `name`, if any.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let op = format!("get link {name}");
        Ok(match self.get(&op, RouteNetlinkMessage::GetLink(msg))? {
            Some(RouteNetlinkMessage::NewLink(m)) => Some(link_of(&m)),
            _ => None,
        })
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        let answers = self.dump(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates an up bridge with a fixed MAC; `EEXIST` when another link took the name first.
    pub fn create_bridge(&mut self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<(), NlError> {
        let mut msg = up_message();
        msg.attributes.extend([
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ]);
        let op = format!("create bridge {name}");
        self.ack(
            &op,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a veth pair, the host end enslaved and the peer created directly inside the
    /// container's namespace — one request, no move afterwards. Both ends start down: the
    /// kernel cannot open either before the pair is linked (`ENOTCONN`).
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<(), NlError> {
        let mut peer = LinkMessage::default();
        peer.attributes.extend([
            LinkAttribute::IfName(spec.peer.to_owned()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::NetNsFd(spec.peer_netns.as_raw_fd()),
        ]);
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.extend([
            LinkAttribute::IfName(spec.host.to_owned()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::Controller(spec.master),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ]);
        let op = format!("create veth {} <-> {}", spec.host, spec.peer);
        self.ack(
            &op,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Sets a bridge port up, with hairpin mode and the alias that ties it to its attachment.
    pub fn set_bridge_port(
        &mut self,
        index: u32,
        hairpin: bool,
        alias: &str,
    ) -> Result<(), NlError> {
        let mut msg = up_message();
        msg.header.index = index;
        msg.attributes.extend([
            LinkAttribute::IfAlias(alias.to_owned()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                    hairpin,
                )])),
            ]),
        ]);
        self.ack(
            &format!("set bridge port {index}"),
            RouteNetlinkMessage::NewLink(msg),
            0,
        )
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = up_message();
        msg.header.index = index;
        self.ack(
            &format!("set link {index} up"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Deletes a link by index (a name may meanwhile belong to a newer link); `Ok(false)` when
    /// there was none.
    pub fn delete_link_index(&mut self, index: u32) -> Result<bool, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.ack(
            &format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a link by name; `Ok(false)` when there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.ack(
            &format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn up_message() -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg
}

fn link_of(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::Address(mac) => link.mac = format_mac(mac),
            LinkAttribute::Controller(i) => link.master = Some(*i),
            LinkAttribute::Link(i) => link.peer_index = Some(*i),
            LinkAttribute::LinkNetNsId(id) => link.peer_netns_id = Some(*id),
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::LinkInfo(infos) => link.kind = kind_of(infos),
            _ => {}
        }
    }
    link
}

fn kind_of(infos: &[LinkInfo]) -> Option<String> {
    infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k.to_string()),
        _ => None,
    })
}

/// `aa:bb:cc:dd:ee:ff`, as CNI results and `ip link` print it.
pub(crate) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
