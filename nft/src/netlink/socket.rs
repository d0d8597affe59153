//! The blocking `NETLINK_NETFILTER` socket: sends a batch as one datagram and collects the
//! kernel's answers, and runs `GET` requests and dumps for reading back.
//!
//! The kernel processes a batch synchronously inside `send`, so once `send` returns every
//! answer is already queued: we drain without blocking instead of guessing how many answers
//! will come. Each op message carries `NLM_F_ACK` (positive confirmation of every message)
//! up to [`ACK_EACH_MAX`] messages; past that, acknowledgements would cost ~1 KiB of receive
//! buffer each for no information, so only refusals come back — the kernel always reports a
//! failing message, with its sequence number, whether or not it was asked to acknowledge.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};

use super::attr::{Msg, Writer, messages};
use super::consts::*;
use crate::error::NftError;

/// Most op messages a batch acknowledges one by one.
pub(crate) const ACK_EACH_MAX: usize = 4096;
/// Receive buffer reserved per acknowledged message (an ACK's skb truesize, rounded up).
const ACK_TRUESIZE: usize = 1024;
/// Receive buffer for everything else (dumps, refusals).
const BASE_RCVBUF: usize = 4 << 20;
/// `NLM_F_DUMP_INTR`: the dump saw the ruleset change under it.
const NLM_F_DUMP_INTR: u16 = 0x10;

/// One answer to a batch message.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) seq: u32,
    pub(crate) errno: i32,
    pub(crate) detail: Option<String>,
}

/// A `NETLINK_NETFILTER` socket, bound in the network namespace of the thread that opened it.
pub(crate) struct NfSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    rcvbuf: usize,
    sndbuf: usize,
}

impl NfSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        socket.bind_auto().map_err(NftError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NftError::Socket)?;
        // Readable refusals and small ACKs (no echo of the request); harmless if unsupported.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        let mut s = Self {
            socket,
            seq: seed | 1,
            buf: Vec::with_capacity(1 << 20),
            rcvbuf: 0,
            sndbuf: 0,
        };
        s.ensure_buffers(0, BASE_RCVBUF)?;
        Ok(s)
    }

    /// The next `n` sequence numbers (returns the first), never spanning the wrap of `u32`.
    pub(crate) fn take_seqs(&mut self, n: u32) -> u32 {
        if self.seq.checked_add(n).is_none() {
            self.seq = 1;
        }
        let s = self.seq;
        self.seq += n;
        s
    }

    /// The next sequence number, not yet taken.
    pub(crate) fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Marks every number up to `last` as taken.
    pub(crate) fn resume_after(&mut self, last: u32) {
        self.seq = last.checked_add(1).unwrap_or(1);
    }

    /// Grows the socket buffers for a `send` of `send` bytes and `recv` bytes of answers
    /// (`SO_*BUFFORCE`: we run with CAP_NET_ADMIN, like every nftables user).
    pub(crate) fn ensure_buffers(&mut self, send: usize, recv: usize) -> Result<(), NftError> {
        let send = send + 64 * 1024;
        if send > self.sndbuf {
            setsockopt(&self.socket, sockopt::SndBufForce, &send)
                .map_err(|e| NftError::Socket(io::Error::from(e)))?;
            self.sndbuf = send;
        }
        let recv = recv.max(BASE_RCVBUF);
        if recv > self.rcvbuf {
            setsockopt(&self.socket, sockopt::RcvBufForce, &recv)
                .map_err(|e| NftError::Socket(io::Error::from(e)))?;
            self.rcvbuf = recv;
        }
        Ok(())
    }

    /// Room needed to queue `acks` acknowledgements.
    pub(crate) fn ack_room(acks: usize) -> usize {
        BASE_RCVBUF + acks * ACK_TRUESIZE
    }

    /// Sends a batch and returns the answers to sequence numbers in `seqs` (inclusive), and
    /// whether some answers were lost to a receive-buffer overrun.
    pub(crate) fn send_batch(
        &mut self,
        bytes: &[u8],
        seqs: (u32, u32),
    ) -> Result<(Vec<Answer>, bool), NftError> {
        self.socket.send(bytes, 0).map_err(NftError::Socket)?;
        let mut answers = Vec::new();
        let mut lost = false;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, nix::libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(NftError::Socket(e)),
            }
            for m in messages(&self.buf) {
                if m.ty == NLMSG_ERROR && (seqs.0..=seqs.1).contains(&m.seq) {
                    answers.push(answer(&m));
                }
            }
        }
        Ok((answers, lost))
    }

    /// Sends a `GET` (dump when `dump`) and feeds every answer message to `f`. Returns
    /// `Ok(false)` when a dump was interrupted by a concurrent change.
    pub(crate) fn request(
        &mut self,
        what: &str,
        ty: u16,
        family: u8,
        dump: bool,
        body: impl FnOnce(&mut Writer),
        mut f: impl FnMut(Msg<'_>) -> Result<(), NftError>,
    ) -> Result<bool, NftError> {
        let seq = self.take_seqs(1);
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let mut w = Writer::new();
        let start = w.begin_msg(ty, flags, seq, family, 0);
        body(&mut w);
        w.end_msg(start);
        self.socket
            .send(&w.into_inner(), 0)
            .map_err(NftError::Socket)?;
        let mut complete = true;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Err(NftError::Lost { what: what.into() });
                }
                Err(e) => return Err(NftError::Socket(e)),
            }
            for m in messages(&self.buf) {
                if m.seq != seq {
                    continue;
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    complete = false;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(complete),
                    NLMSG_ERROR => {
                        let a = answer(&m);
                        if a.errno == 0 {
                            return Ok(complete);
                        }
                        return Err(NftError::Refused {
                            op: what.into(),
                            errno: a.errno,
                            detail: a.detail,
                        });
                    }
                    _ => f(m)?,
                }
            }
        }
    }
}

/// Decodes an `NLMSG_ERROR` (an ACK when errno is 0).
fn answer(m: &Msg<'_>) -> Answer {
    let p = m.payload;
    let err = p
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let detail = if m.flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if m.flags & NLM_F_CAPPED != 0 {
            16
        } else {
            p.get(4..8)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(16)
        };
        p.get((4 + echoed).next_multiple_of(4)..)
            .and_then(|tlvs| super::attr::Attrs::new(tlvs).str(NLMSGERR_ATTR_MSG))
    } else {
        None
    };
    Answer {
        seq: m.seq,
        errno: -err,
        detail,
    }
}
