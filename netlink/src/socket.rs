//! The blocking netlink socket: sends a batch as one datagram and collects the kernel's
//! answers, and runs requests and dumps.
//!
//! The kernel processes a batch synchronously inside `send`, so once `send` returns every
//! answer is already queued: we drain without blocking instead of guessing how many answers
//! will come. Each op message carries `NLM_F_ACK` (positive confirmation of every message)
//! up to [`ACK_EACH_MAX`] messages; past that, acknowledgements would cost ~1 KiB of receive
//! buffer each for no information, so only refusals come back — the kernel always reports a
//! failing message, with its sequence number, and a refused commit, whether or not it was
//! asked to acknowledge. (Each acknowledgement is also an skb the kernel builds and we read:
//! at 4,096 per batch they were a fifth of a 10,000-Service cold sync, issue 14.)

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket as RawSocket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};

pub use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE};

use crate::attr::{Attrs, Msg, Writer, messages};
use crate::consts::*;
use crate::error::NetlinkError;

/// Most op messages a batch acknowledges one by one.
pub const ACK_EACH_MAX: usize = 256;
/// Receive buffer reserved per acknowledged message (an ACK's skb truesize, rounded up).
const ACK_TRUESIZE: usize = 1024;
/// Receive buffer for everything else (dumps, refusals).
const BASE_RCVBUF: usize = 4 << 20;
/// `NLM_F_DUMP_INTR`: the dump saw the ruleset change under it.
const NLM_F_DUMP_INTR: u16 = 0x10;

/// One answer to a batch message.
#[derive(Debug)]
pub struct Answer {
    pub seq: u32,
    pub errno: i32,
    pub detail: Option<String>,
    /// The request as the kernel echoed it back with a refusal (`nlmsghdr` first); empty for
    /// acknowledgements. ipset writes the failing member's line number into it.
    pub echo: Vec<u8>,
}

/// A netlink socket, bound in the network namespace of the thread that opened it.
pub struct Socket {
    socket: RawSocket,
    seq: u32,
    buf: Vec<u8>,
    rcvbuf: usize,
    sndbuf: usize,
}

impl Socket {
    /// Opens a socket of `protocol` ([`NETLINK_NETFILTER`], [`NETLINK_GENERIC`]) in the
    /// calling thread's network namespace.
    pub fn open(protocol: isize) -> Result<Self, NetlinkError> {
        let mut socket = RawSocket::new(protocol).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
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
    pub fn take_seqs(&mut self, n: u32) -> u32 {
        if self.seq.checked_add(n).is_none() {
            self.seq = 1;
        }
        let s = self.seq;
        self.seq += n;
        s
    }

    /// The next sequence number, not yet taken.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Marks every number up to `last` as taken.
    pub fn resume_after(&mut self, last: u32) {
        self.seq = last.checked_add(1).unwrap_or(1);
    }

    /// Grows the socket buffers for a `send` of `send` bytes and `recv` bytes of answers
    /// (`SO_*BUFFORCE`: we run with CAP_NET_ADMIN, like every nftables user).
    pub fn ensure_buffers(&mut self, send: usize, recv: usize) -> Result<(), NetlinkError> {
        let send = send + 64 * 1024;
        if send > self.sndbuf {
            setsockopt(&self.socket, sockopt::SndBufForce, &send)
                .map_err(|e| NetlinkError::Socket(io::Error::from(e)))?;
            self.sndbuf = send;
        }
        let recv = recv.max(BASE_RCVBUF);
        if recv > self.rcvbuf {
            setsockopt(&self.socket, sockopt::RcvBufForce, &recv)
                .map_err(|e| NetlinkError::Socket(io::Error::from(e)))?;
            self.rcvbuf = recv;
        }
        Ok(())
    }

    /// Room needed to queue `acks` acknowledgements.
    pub fn ack_room(acks: usize) -> usize {
        BASE_RCVBUF + acks * ACK_TRUESIZE
    }

    /// Sends a batch — the concatenation of `chunks`, as one datagram — and returns the
    /// answers to sequence numbers in `seqs` (inclusive), and whether some answers were lost
    /// to a receive-buffer overrun. Chunks spare a large batch one contiguous buffer that
    /// doubles as it grows (32 MiB of peak memory for the ~20 MiB cold sync of 10,000
    /// Services); the kernel gathers them into one message either way.
    pub fn send_batch(
        &mut self,
        chunks: &[Vec<u8>],
        seqs: (u32, u32),
    ) -> Result<(Vec<Answer>, bool), NetlinkError> {
        let iov: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
        let total: usize = chunks.iter().map(Vec::len).sum();
        let sent = nix::sys::socket::sendmsg::<()>(
            self.socket.as_raw_fd(),
            &iov,
            &[],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .map_err(|e| NetlinkError::Socket(io::Error::from(e)))?;
        if sent != total {
            return Err(NetlinkError::Socket(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the batch was sent short: {sent} of {total} bytes"),
            )));
        }
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
                Err(e) => return Err(NetlinkError::Socket(e)),
            }
            for m in messages(&self.buf) {
                if m.ty == NLMSG_ERROR && (seqs.0..=seqs.1).contains(&m.seq) {
                    answers.push(answer(&m));
                }
            }
        }
        Ok((answers, lost))
    }

    /// Sends an nfnetlink request (a dump when `dump`, else acknowledged) and feeds every
    /// answer message to `f`. Returns `Ok(false)` when a dump was interrupted by a concurrent
    /// change.
    pub fn request<E: From<NetlinkError>>(
        &mut self,
        what: &str,
        ty: u16,
        family: u8,
        dump: bool,
        body: impl FnOnce(&mut Writer),
        f: impl FnMut(Msg<'_>) -> Result<(), E>,
    ) -> Result<bool, E> {
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        self.exchange(
            what,
            flags,
            |w, seq, flags| w.begin_msg(ty, flags, seq, family, 0),
            body,
            f,
        )
    }

    /// Sends one message whose header `header` writes (with the sequence number and
    /// `NLM_F_REQUEST | flags`) and whose attributes `body` writes, and feeds every answer
    /// message to `f` until the kernel's ACK, `NLMSG_DONE` or refusal. Returns `Ok(false)`
    /// when a dump was interrupted by a concurrent change.
    pub fn exchange<E: From<NetlinkError>>(
        &mut self,
        what: &str,
        flags: u16,
        header: impl FnOnce(&mut Writer, u32, u16) -> usize,
        body: impl FnOnce(&mut Writer),
        mut f: impl FnMut(Msg<'_>) -> Result<(), E>,
    ) -> Result<bool, E> {
        let seq = self.take_seqs(1);
        let mut w = Writer::new();
        let start = header(&mut w, seq, NLM_F_REQUEST | flags);
        body(&mut w);
        w.end_msg(start);
        self.socket
            .send(&w.into_inner(), 0)
            .map_err(NetlinkError::Socket)?;
        let mut complete = true;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Err(NetlinkError::Lost { what: what.into() }.into());
                }
                Err(e) => return Err(NetlinkError::Socket(e).into()),
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
                        return Err(NetlinkError::Refused {
                            op: what.into(),
                            errno: a.errno,
                            detail: a.detail,
                        }
                        .into());
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
            .and_then(|tlvs| Attrs::new(tlvs).str(NLMSGERR_ATTR_MSG))
    } else {
        None
    };
    let echo = match err {
        0 => Vec::new(),
        _ => p.get(4..).unwrap_or(&[]).to_vec(),
    };
    Answer {
        seq: m.seq,
        errno: -err,
        detail,
        echo,
    }
}
