//! A blocking rtnetlink client: one socket per network namespace, one request at a time.
//!
//! The plugin lives for a few milliseconds and sends a handful of requests, so an async
//! runtime (netlink-proto + tokio) would cost more to start than the work itself. This is the
//! plugin's only way into the kernel's network configuration: every link, address and route
//! change goes through [`Netlink::ack`], every read through [`Netlink::dump`] or
//! [`Netlink::get`].

mod addr;
mod link;
mod route;

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::libc;

pub use link::{Link, VethSpec};
pub use route::Route;

/// What can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a request.
    #[error("{op}: {source}")]
    Kernel {
        /// What was asked, for the error message.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("{op}: undecodable netlink reply: {reason}")]
    Decode {
        /// What was asked.
        op: String,
        /// Why decoding failed.
        reason: String,
    },
}

impl NlError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True for "no such device / address / route" answers, which idempotent callers ignore.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}

/// A route-netlink socket bound in the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace; it stays in that
    /// namespace for its whole life, whatever the thread does next.
    pub fn open() -> Result<Self, NlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NlError::Socket)?;
        socket.bind_auto().map_err(NlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NlError::Socket)?;
        // Extended ACKs make the kernel's refusals readable; harmless when unsupported.
        let _ = socket.set_ext_ack(true);
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Sends a change request and waits for the kernel's ACK.
    pub fn ack(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        self.request(op, msg, NLM_F_REQUEST | NLM_F_ACK | flags, |_| {})
    }

    /// Sends a dump request and collects every answer.
    pub fn dump(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let mut out = Vec::new();
        self.request(op, msg, NLM_F_REQUEST | NLM_F_DUMP, |m| out.push(m))?;
        Ok(out)
    }

    /// Sends a single-object get; `None` when the kernel says it does not exist.
    pub fn get(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Option<RouteNetlinkMessage>, NlError> {
        let mut out = None;
        match self.request(op, msg, NLM_F_REQUEST, |m| out = Some(m)) {
            Ok(()) => Ok(out),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(NlError::Socket)?;
        let single = flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0;
        loop {
            self.buf.clear();
            self.socket
                .recv(&mut self.buf, 0)
                .map_err(NlError::Socket)?;
            if self.parse_batch(op, &mut each)? || single {
                return Ok(());
            }
        }
    }

    /// Parses one datagram; true once the request is answered (ACK, error or end of dump).
    fn parse_batch(
        &self,
        op: &str,
        each: &mut impl FnMut(RouteNetlinkMessage),
    ) -> Result<bool, NlError> {
        let mut offset = 0;
        while offset < self.buf.len() {
            let bytes = &self.buf[offset..];
            let len = NetlinkBuffer::new_checked(bytes)
                .map_err(|e| decode(op, e))?
                .length() as usize;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                .map_err(|e| decode(op, e))?;
            offset += len.max(1).next_multiple_of(4);
            if msg.header.sequence_number != self.seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => each(m),
                NetlinkPayload::Done(_) => return Ok(true),
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(true),
                NetlinkPayload::Error(e) => {
                    return Err(NlError::Kernel {
                        op: op.to_owned(),
                        source: e.to_io(),
                    });
                }
                _ => {}
            }
        }
        Ok(false)
    }
}

fn decode(op: &str, e: impl std::fmt::Display) -> NlError {
    NlError::Decode {
        op: op.to_owned(),
        reason: e.to_string(),
    }
}
